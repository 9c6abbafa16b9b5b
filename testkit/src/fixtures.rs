//! Review requests and verdicts, as runners would submit them.

use crate::util::random_hex;
use holdpoint_shared::annotation::Annotation;
use holdpoint_shared::protocol::ReviewRequest;
use holdpoint_shared::{Context, Decision, Hit, Policy, Risk, Verdict};
use sha2::{Digest, Sha256};

/// A [`ReviewRequest`] under construction; [`review`] starts one.
///
/// Defaults: a random 32-digit id and a random 64-digit command hash, the
/// built-in policy's verdict on the command (with a fixed context), no
/// annotations, host `build-7`, cwd `/srv/app`, front end `exec`, no agent,
/// session or requester.
#[derive(Clone, Debug)]
pub struct RequestBuilder {
    req: ReviewRequest,
    verdict: Option<Verdict>,
}

/// Starts a request for `command`.
///
/// ```
/// use holdpoint_testkit::review;
/// use holdpoint_shared::Risk;
/// let req = review("terraform destroy")
///     .hit("terraform.destroy", Risk::High, "terraform destroy")
///     .agent("claude-code")
///     .build();
/// assert_eq!(req.verdict.hits[0].rule, "terraform.destroy");
/// ```
pub fn review(command: &str) -> RequestBuilder {
    RequestBuilder {
        req: ReviewRequest {
            id: random_hex(16),
            command: command.to_string(),
            command_hash: random_hex(32),
            verdict: Verdict::from_hits(Vec::new()),
            annotations: Vec::new(),
            host: "build-7".into(),
            cwd: "/srv/app".into(),
            agent: None,
            session: None,
            front_end: "exec".into(),
            requested_by: None,
        },
        verdict: None,
    }
}

impl RequestBuilder {
    pub fn id(mut self, id: &str) -> Self {
        self.req.id = id.into();
        self
    }

    /// The SHA-256 of the command as its hash, as the runner computes it.
    pub fn hash_of_command(mut self) -> Self {
        self.req.command_hash = hex::encode(Sha256::digest(self.req.command.as_bytes()));
        self
    }

    pub fn verdict(mut self, v: Verdict) -> Self {
        self.verdict = Some(v);
        self
    }

    /// A verdict of one `review` hit of `rule` on `part`, reason
    /// "RULE needs a human".
    pub fn hit(self, rule: &str, risk: Risk, part: &str) -> Self {
        let reason = format!("{rule} needs a human");
        self.verdict(Verdict::from_hits(vec![hit(
            rule,
            Decision::Review,
            risk,
            &reason,
            part,
        )]))
    }

    pub fn annotations(mut self, a: Vec<Annotation>) -> Self {
        self.req.annotations = a;
        self
    }

    pub fn host(mut self, host: &str) -> Self {
        self.req.host = host.into();
        self
    }

    pub fn cwd(mut self, cwd: &str) -> Self {
        self.req.cwd = cwd.into();
        self
    }

    pub fn agent(mut self, agent: &str) -> Self {
        self.req.agent = Some(agent.into());
        self
    }

    pub fn front_end(mut self, front_end: &str) -> Self {
        self.req.front_end = front_end.into();
        self
    }

    pub fn requested_by(mut self, who: Option<&str>) -> Self {
        self.req.requested_by = who.map(str::to_string);
        self
    }

    pub fn build(mut self) -> ReviewRequest {
        self.req.verdict = match self.verdict {
            Some(v) => v,
            None => Policy::builtin()
                .expect("the built-in policy loads")
                .classify(&self.req.command, &Context::fixed()),
        };
        self.req
    }
}

/// One rule's finding.
pub fn hit(rule: &str, decision: Decision, risk: Risk, reason: &str, part: &str) -> Hit {
    Hit {
        rule: rule.into(),
        decision,
        risk,
        reason: reason.into(),
        part: part.into(),
    }
}

/// A request of one `review` hit, from an agent on `build-7`.
pub fn request(
    command: &str,
    rule: &str,
    risk: Risk,
    part: &str,
    requested_by: Option<&str>,
) -> ReviewRequest {
    review(command)
        .hit(rule, risk, part)
        .agent("claude-code")
        .requested_by(requested_by)
        .build()
}

/// `git push origin main --force`, high risk.
pub fn force_push(requested_by: Option<&str>) -> ReviewRequest {
    request(
        "git push origin main --force",
        "git.push.force",
        Risk::High,
        "git push origin main --force",
        requested_by,
    )
}

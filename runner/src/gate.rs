//! The one decision every front end shares: given a command line, run it or
//! refuse it, and say why.

use crate::bot::{Answer, Progress};
use holdpoint_shared::protocol::{AuditEvent, ReviewRequest, Status};
use holdpoint_shared::redact::redact;
use holdpoint_shared::{Context, Decision, Policy, Verdict};

/// Exit code when the policy denies a command.
pub const EXIT_DENIED: i32 = 126;
/// Exit code when a command needs approval that was not given.
pub const EXIT_NOT_APPROVED: i32 = 125;
/// Exit code when the wait for a reviewer was interrupted (as a shell
/// reports SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;
/// Exit code when holdpoint itself cannot work (bad policy, bad input).
pub const EXIT_GATE_ERROR: i32 = 124;

/// What a front end must do with a command.
#[derive(Debug)]
pub enum Outcome {
    /// Run it now.
    Run,
    /// Refuse it: exit with `code` after printing `message` (to the agent).
    Refuse { code: i32, message: String },
}

/// Classifies and decides. Until an approval bot is configured, a command
/// that needs review is refused with a message that says so.
pub fn decide(policy: &Policy, line: &str, ctx: &Context) -> (Verdict, Outcome) {
    let verdict = policy.classify(line, ctx);
    let outcome = match verdict.decision {
        Decision::Allow => Outcome::Run,
        Decision::Deny => Outcome::Refuse {
            code: EXIT_DENIED,
            message: format!(
                "holdpoint: denied ({} risk): {}\nholdpoint: rules: {}",
                verdict.risk,
                verdict.deciding_reasons().join("; "),
                verdict.deciding_rules().join(", ")
            ),
        },
        Decision::Review => Outcome::Refuse {
            code: EXIT_NOT_APPROVED,
            message: format!(
                "holdpoint: this command needs a human's approval ({} risk): {}\nholdpoint: rules: {}\nholdpoint: no approval bot is configured (set HOLDPOINT_URL and HOLDPOINT_TOKEN), so it was not run",
                verdict.risk,
                verdict.deciding_reasons().join("; "),
                verdict.deciding_rules().join(", ")
            ),
        },
    };
    (verdict, outcome)
}

/// One command reaching the gate through a front end.
pub struct Invocation<'a> {
    pub line: &'a str,
    pub ctx: &'a Context,
    /// `exec`, `sh` or `hook`.
    pub front_end: &'static str,
    /// The agent, when the front end knows it (`claude-code`).
    pub agent: Option<String>,
    /// The agent's session id, when the front end knows it.
    pub session: Option<String>,
}

/// The host name, for requests and audit events.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

fn random_hex(bytes: usize) -> Option<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).ok()?;
    Some(hex::encode(buf))
}

/// Hex SHA-256 of the exact command and directory, salted with a secret the
/// bot never sees (so a redacted secret cannot be recovered by guessing).
fn command_hash(salt: &str, cwd: &str, line: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [salt, cwd, line] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Whether an allowed command may run when its verdict cannot be recorded
/// (`HOLDPOINT_WHEN_UNAUDITED=run`); the default refuses it.
fn unaudited_may_run() -> bool {
    std::env::var("HOLDPOINT_WHEN_UNAUDITED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("run"))
}

fn requester() -> String {
    if let Ok(r) = std::env::var("HOLDPOINT_REQUESTER")
        && !r.trim().is_empty()
    {
        return r.trim().to_string();
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", hostname())
}

/// A wait with an end: a hook that must answer its agent by `until`.
pub struct Hold {
    /// When the hook must stop waiting and answer.
    pub until: std::time::Instant,
    /// Where a request that outlasts the wait is kept for the retry; `None`
    /// when there is nowhere private to keep it (the retry then asks anew).
    pub store: Option<crate::pending::Store>,
}

/// Classifies, records the verdict in the audit spool, and for a command
/// that needs review asks the bot and waits. With no bot configured this is
/// [`decide`].
pub fn settle(policy: &Policy, inv: &Invocation) -> (Verdict, Outcome) {
    settle_with(policy, inv, None)
}

/// [`settle`] for a hook that may only wait until `hold.until`. A request
/// still pending then is refused with its id and kept (open on the bot, and
/// in `hold.store`); a retry of the same command in the same session and
/// directory takes it up again and uses its decision once.
pub fn settle_held(policy: &Policy, inv: &Invocation, hold: &Hold) -> (Verdict, Outcome) {
    settle_with(policy, inv, Some(hold))
}

fn settle_with(policy: &Policy, inv: &Invocation, hold: Option<&Hold>) -> (Verdict, Outcome) {
    let (verdict, outcome) = decide(policy, inv.line, inv.ctx);
    let bot = match crate::bot::BotConfig::load() {
        Ok(Some(b)) => b,
        Ok(None) => return (verdict, outcome),
        Err(e) => {
            return match verdict.decision {
                // The bot settings are broken, so the verdict cannot reach
                // the audit log: the same rule as an unwritable spool.
                Decision::Allow if unaudited_may_run() => {
                    eprintln!(
                        "holdpoint: warning: {e:#}; the command runs unaudited (HOLDPOINT_WHEN_UNAUDITED=run)"
                    );
                    (verdict, outcome)
                }
                Decision::Allow => (
                    verdict,
                    Outcome::Refuse {
                        code: EXIT_GATE_ERROR,
                        message: format!(
                            "holdpoint: the bot settings are broken ({e:#}), so this command's \
                             verdict could not be recorded and it was not run. Fix them, or set \
                             HOLDPOINT_WHEN_UNAUDITED=run to run allowed commands without an audit trail"
                        ),
                    },
                ),
                Decision::Deny => (verdict, outcome),
                Decision::Review => {
                    let message = format!(
                        "holdpoint: this command needs a human's approval, but the bot settings are broken: {e:#}; it was not run"
                    );
                    (
                        verdict,
                        Outcome::Refuse {
                            code: EXIT_NOT_APPROVED,
                            message,
                        },
                    )
                }
            };
        }
    };
    let cwd = inv.ctx.cwd.clone().unwrap_or_else(|| "/".into());
    let spool = crate::spool::dir();
    // Ok when the event is in the spool; otherwise why not.
    let record = |action: &str, request_id: Option<String>| -> Result<(), String> {
        let Some(dir) = &spool else {
            return Err("there is no audit spool (set HOLDPOINT_SPOOL_DIR or HOME)".into());
        };
        let Some(id) = random_hex(16) else {
            return Err("no randomness for an event id".into());
        };
        let event = AuditEvent {
            id,
            at: crate::bot::now(),
            // As typed: the spool stays on this machine, readable only by
            // this user (like shell history), and the flusher redacts before
            // sending. Redacting here would compile the redaction patterns
            // on every allowed command (milliseconds).
            command: inv.line.to_string(),
            decision: verdict.decision,
            risk: verdict.risk,
            rules: verdict
                .deciding_rules()
                .into_iter()
                .map(str::to_string)
                .collect(),
            host: hostname(),
            cwd: cwd.clone(),
            agent: inv.agent.clone(),
            front_end: inv.front_end.to_string(),
            action: action.to_string(),
            request_id,
        };
        let written = crate::spool::record(dir, &event).map_err(|e| {
            format!(
                "the audit spool {} cannot be written ({e:#})",
                dir.display()
            )
        });
        crate::spool::kick(dir);
        written
    };
    let warn = |why: String| {
        eprintln!("holdpoint: warning: {why}; this verdict is not audited");
    };
    match verdict.decision {
        Decision::Allow => match record("ran", None) {
            Ok(()) => (verdict, outcome),
            Err(why) if unaudited_may_run() => {
                eprintln!(
                    "holdpoint: warning: {why}; the command runs unaudited (HOLDPOINT_WHEN_UNAUDITED=run)"
                );
                (verdict, outcome)
            }
            Err(why) => {
                let message = format!(
                    "holdpoint: {why}; the command was not run, because its verdict could not be \
                     recorded. Free the spool, or set HOLDPOINT_WHEN_UNAUDITED=run to run allowed \
                     commands without an audit trail"
                );
                (
                    verdict,
                    Outcome::Refuse {
                        code: EXIT_GATE_ERROR,
                        message,
                    },
                )
            }
        },
        Decision::Deny => {
            if let Err(why) = record("refused", None) {
                warn(why);
            }
            (verdict, outcome)
        }
        Decision::Review => {
            if let Some(hold) = hold
                && let Some(outcome) = resume_held(&bot, inv, hold, &cwd)
            {
                return (verdict, outcome);
            }
            let (Some(request_id), Some(salt)) = (random_hex(16), random_hex(16)) else {
                let message =
                    "holdpoint: cannot make a request id (no randomness); the command was not run"
                        .to_string();
                return (
                    verdict,
                    Outcome::Refuse {
                        code: EXIT_GATE_ERROR,
                        message,
                    },
                );
            };
            if let Err(why) = record("submitted", Some(request_id.clone())) {
                // The bot records the request itself.
                warn(why);
            }
            let outcome = ask_bot(&bot, inv, &verdict, request_id, &salt, &cwd, hold);
            (verdict, outcome)
        }
    }
}

fn held_key(inv: &Invocation, cwd: &str) -> crate::pending::Key {
    crate::pending::Key {
        session: inv.session.clone().unwrap_or_default(),
        cwd: cwd.to_string(),
        line: inv.line.to_string(),
    }
}

/// What the agent is told when the wait ends before a reviewer decided.
fn held_message(id: &str, kept: Result<(), String>) -> String {
    let retry = match kept {
        Ok(()) => "Retry the same command later, in the same session and directory: if a reviewer approved it by then, it runs (once); if they denied it, the retry says why.".to_string(),
        Err(why) => format!(
            "This runner could not keep the request for a retry ({why}); a retry will ask a reviewer again."
        ),
    };
    format!(
        "holdpoint: request {id} is waiting for a human reviewer, who has not decided yet; the command was not run. {retry}"
    )
}

/// A retry of a command whose request outlasted an earlier hook: the
/// decision, if there is one; `None` when nothing is held for it.
fn resume_held(
    bot: &crate::bot::BotConfig,
    inv: &Invocation,
    hold: &Hold,
    cwd: &str,
) -> Option<Outcome> {
    let store = hold.store.as_ref()?;
    let claimed = store.claim(&held_key(inv, cwd), |salt| {
        command_hash(salt, cwd, inv.line)
    })?;
    let id = claimed.held.request.id.clone();
    eprintln!(
        "holdpoint: this command's request {id} is already with a reviewer; asking for its decision"
    );
    let answer = crate::bot::ask_until(bot, &claimed.held.request, Some(hold.until), |_| {});
    Some(match answer {
        Answer::StillPending => {
            claimed.release();
            refused(held_message(&id, Ok(())))
        }
        Answer::Unreachable(why) => {
            claimed.release();
            refused(format!(
                "holdpoint: request {id} needs a human's approval and was not run: {why}; a later retry asks again"
            ))
        }
        answer @ Answer::Decided(_) => {
            let outcome = outcome_of(answer);
            // An approval is used once: it is gone from the store before the
            // command may run, or the command does not run.
            match (claimed.consume(), outcome) {
                (Ok(()), o) => o,
                (Err(e), _) => refused(format!(
                    "holdpoint: request {id} was decided, but its record cannot be removed ({e}); refusing so that the approval is not used twice"
                )),
            }
        }
        other => {
            let _ = claimed.consume();
            outcome_of(other)
        }
    })
}

fn refused(message: String) -> Outcome {
    Outcome::Refuse {
        code: EXIT_NOT_APPROVED,
        message,
    }
}

fn ask_bot(
    bot: &crate::bot::BotConfig,
    inv: &Invocation,
    verdict: &Verdict,
    id: String,
    salt: &str,
    cwd: &str,
    hold: Option<&Hold>,
) -> Outcome {
    let opts = crate::annotate::AnnotateOptions::from_env();
    let annotations = crate::annotate::annotate(inv.line, inv.ctx, verdict, &opts);
    let mut shown = verdict.clone();
    for h in &mut shown.hits {
        h.part = redact(&h.part);
        h.reason = redact(&h.reason);
    }
    let request = ReviewRequest {
        id,
        command: redact(inv.line),
        command_hash: command_hash(salt, cwd, inv.line),
        verdict: shown,
        annotations,
        host: hostname(),
        cwd: cwd.to_string(),
        agent: inv.agent.clone(),
        session: inv.session.clone(),
        front_end: inv.front_end.to_string(),
        requested_by: Some(requester()),
    };
    let short = &request.id[..8];
    let why = format!(
        "{} risk; {}",
        verdict.risk,
        verdict
            .hits
            .iter()
            .filter(|h| h.decision == verdict.decision)
            .map(|h| format!("{}: {}", h.rule, h.reason))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let until = hold.map(|h| h.until);
    let answer = crate::bot::ask_until(bot, &request, until, |p| match p {
        Progress::Waiting { left, review_url } => {
            eprintln!(
                "holdpoint: waiting for a reviewer to approve this command ({why})\nholdpoint: request {short} expires in {}{}",
                human(left),
                review_url
                    .map(|u| format!("; review it at {u}"))
                    .unwrap_or_default()
            );
        }
        Progress::Reconnecting { why } => {
            eprintln!("holdpoint: lost the bot ({why}); reconnecting, request {short} still waits");
        }
        Progress::StillWaiting { left } => {
            eprintln!(
                "holdpoint: still waiting for a reviewer, request {short} expires in {}",
                human(left)
            );
        }
    });
    if let (Answer::StillPending, Some(hold)) = (&answer, hold) {
        let kept = match &hold.store {
            None => Err("no private directory for held requests".to_string()),
            Some(store) => store
                .put(
                    &crate::pending::Held {
                        session: inv.session.clone().unwrap_or_default(),
                        cwd: cwd.to_string(),
                        salt: salt.to_string(),
                        request: request.clone(),
                    },
                    inv.line,
                )
                .map_err(|e| e.to_string()),
        };
        return refused(held_message(&request.id, kept));
    }
    outcome_of(answer)
}

/// What a bot's answer means for the command.
fn outcome_of(answer: Answer) -> Outcome {
    let refuse = refused;
    match answer {
        Answer::Decided(d) if d.status == Status::Approved => {
            eprintln!("holdpoint: approved by {}; running it", d.decided_by);
            Outcome::Run
        }
        Answer::Decided(d) => {
            let reason = d.reason.map(|r| format!(": {r}")).unwrap_or_default();
            let what = match d.status {
                Status::Denied => format!("denied by {}{reason}", d.decided_by),
                Status::Expired => format!("not approved in time{reason}"),
                Status::Cancelled => format!("cancelled{reason}"),
                Status::Pending | Status::Approved => format!("not approved ({})", d.status),
            };
            refuse(format!("holdpoint: {what}; the command was not run"))
        }
        Answer::Rejected(why) => refuse(format!(
            "holdpoint: this command needs a human's approval and was not run: {why}"
        )),
        Answer::Interrupted => Outcome::Refuse {
            code: EXIT_INTERRUPTED,
            message: "holdpoint: interrupted while waiting; the request was cancelled and the command was not run".into(),
        },
        Answer::Unreachable(why) => refuse(format!(
            "holdpoint: this command needs a human's approval and was not run: {why}"
        )),
        Answer::StillPending => refuse(
            "holdpoint: no reviewer decided in time; the command was not run".into(),
        ),
    }
}

fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{}h {:02}m", s / 3600, (s / 60) % 60)
    }
}

/// Quotes words so that a POSIX shell reads them back as the same words.
pub fn shell_join<S: AsRef<str>>(words: &[S]) -> String {
    let mut out = String::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let w = w.as_ref();
        let plain = !w.is_empty()
            && w.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'_' | b'-' | b'.' | b'/' | b':' | b'=' | b'@' | b'%' | b'+' | b','
                    )
            });
        if plain {
            out.push_str(w);
        } else {
            out.push('\'');
            out.push_str(&w.replace('\'', "'\\''"));
            out.push('\'');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_quotes_what_needs_quoting() {
        assert_eq!(shell_join(&["git", "push", "--force"]), "git push --force");
        assert_eq!(
            shell_join(&["echo", "a b", "it's", ""]),
            "echo 'a b' 'it'\\''s' ''"
        );
        assert_eq!(shell_join(&["echo", "$(rm -rf /)"]), "echo '$(rm -rf /)'");
    }
}

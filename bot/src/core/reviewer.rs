//! Who decides, what they ask for, and why the core may refuse it.
//!
//! A reviewer is a realm (where the person proved who they are) and an id
//! inside it. The stored and displayed form is `realm:id` (`slack:U0123`,
//! `web:alice`, `cli:root`, `runner:ci-7`); the bot itself (expiry) is
//! `holdpoint`. Nothing outside this module builds or parses that text.

use std::fmt;

/// Where a reviewer's identity comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Realm {
    /// Someone logged in to the web queue with a login link.
    Web,
    /// Someone with the bot's database on the command line.
    Cli,
    /// A Slack user.
    Slack,
    /// A Matrix user.
    Matrix,
    /// A runner (it can only cancel its own requests).
    Runner,
    /// The bot itself: expiry.
    System,
}

impl Realm {
    /// The prefix in the stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Realm::Web => "web",
            Realm::Cli => "cli",
            Realm::Slack => "slack",
            Realm::Matrix => "matrix",
            Realm::Runner => "runner",
            Realm::System => "holdpoint",
        }
    }

    fn parse(s: &str) -> Option<Realm> {
        Some(match s {
            "web" => Realm::Web,
            "cli" => Realm::Cli,
            "slack" => Realm::Slack,
            "matrix" => Realm::Matrix,
            "runner" => Realm::Runner,
            _ => return None,
        })
    }
}

/// Someone who decides (or, for [`Realm::System`], the bot).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reviewer {
    pub realm: Realm,
    /// The id inside the realm: a Slack user id, a web login name, a user
    /// name, a runner name. Empty for the system.
    pub id: String,
}

impl Reviewer {
    pub fn new(realm: Realm, id: impl Into<String>) -> Reviewer {
        Reviewer {
            realm,
            id: id.into(),
        }
    }

    /// The bot itself.
    pub fn system() -> Reviewer {
        Reviewer::new(Realm::System, "")
    }

    /// Reads the stored form back; `None` for text no realm claims.
    pub fn parse(s: &str) -> Option<Reviewer> {
        if s == Realm::System.as_str() {
            return Some(Reviewer::system());
        }
        let (realm, id) = s.split_once(':')?;
        Some(Reviewer::new(Realm::parse(realm)?, id))
    }
}

impl fmt::Display for Reviewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.realm {
            Realm::System => f.write_str(Realm::System.as_str()),
            r => write!(f, "{}:{}", r.as_str(), self.id),
        }
    }
}

/// What a reviewer asks the core to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    Approve { reason: Option<String> },
    Deny { reason: Option<String> },
}

impl Intent {
    pub fn is_approval(&self) -> bool {
        matches!(self, Intent::Approve { .. })
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Intent::Approve { reason } | Intent::Deny { reason } => reason.as_deref(),
        }
    }
}

/// Why the core did not count an intent. Each door words it for its own
/// medium; the core never writes prose for a channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The requester may not approve their own request.
    #[error("the requester cannot approve their own request")]
    OwnRequest,
    /// The command hash the reviewer saw is not the stored one.
    #[error("the command changed since the reviewer saw it")]
    CommandChanged,
    /// The person is not one of the realm's reviewers.
    #[error("not one of the reviewers")]
    NotAReviewer,
    /// Whether the person is a reviewer could not be checked just now
    /// (their chat could not be asked); nothing was decided.
    #[error("the reviewer list could not be checked")]
    DirectoryUnavailable,
    /// A runner acted on a request another runner submitted.
    #[error("another runner submitted this request")]
    OtherRunner,
    /// This person's approval of the request is counted already (perhaps
    /// from another of their identities).
    #[error("this person already approved the request")]
    AlreadyVoted,
    /// The approvals still needed must come from members of these groups
    /// (how many from each), and this person is in none of them.
    #[error("the approvals still needed must come from {}", groups_needed(.0))]
    GroupsNeeded(Vec<(String, u32)>),
}

/// `1 from security and 2 from sre`.
pub fn groups_needed(missing: &[(String, u32)]) -> String {
    let parts: Vec<String> = missing
        .iter()
        .map(|(g, n)| format!("{n} from {g}"))
        .collect();
    parts.join(" and ")
}

/// Whether someone in a realm is a reviewer: a chat adapter's user and
/// group lists. The core asks it before every decision from that realm; a
/// realm without a directory (the web queue, whose login links an admin
/// hands out, and the CLI, which holds the database) admits everyone in it.
pub trait Directory: Send + Sync {
    /// `Ok(true)`: a reviewer; `Ok(false)`: not one;
    /// `Err(DirectoryUnavailable)` when it cannot tell.
    fn admits<'a>(
        &'a self,
        id: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, Refusal>> + Send + 'a>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_form_reads_back_as_the_same_reviewer() {
        for r in [
            Reviewer::new(Realm::Slack, "U0123"),
            Reviewer::new(Realm::Web, "alice:with:colons"),
            Reviewer::new(Realm::Cli, "root"),
            Reviewer::new(Realm::Runner, "ci-7"),
            Reviewer::system(),
        ] {
            assert_eq!(Reviewer::parse(&r.to_string()), Some(r));
        }
        assert_eq!(Reviewer::system().to_string(), "holdpoint");
        assert_eq!(Reviewer::parse("mail:bob"), None);
        assert_eq!(Reviewer::parse("nocolon"), None);
    }
}

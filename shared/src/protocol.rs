//! The runner–bot wire protocol: versioned JSON messages over a websocket.
//!
//! A runner connects to [`WS_PATH`] with `Authorization: Bearer TOKEN`, sends
//! [`RunnerMessage::Hello`] and gets [`BotMessage::Welcome`]. It then submits
//! [`ReviewRequest`]s (the runner picks the id, so sending the same request
//! again after a reconnect is harmless), receives a [`DecisionMessage`] for
//! each and acknowledges it, and sends batches of [`AuditEvent`]s that the bot
//! acknowledges by id. Every message is one JSON text frame with a `type`
//! field; unknown types and unknown fields are errors, never ignored, so a
//! runner and a bot that disagree find out at once.
//!
//! These are the only types for these concepts: the bot stores and shows a
//! [`ReviewRequest`], chat adapters render it, and the runner builds it.

use crate::annotation::Annotation;
use crate::verdict::{Decision, Risk, Verdict};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The websocket endpoint on the bot.
pub const WS_PATH: &str = "/v1/runners/ws";

/// Largest frame either side accepts, in bytes.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Largest command line a request may carry, in bytes (the policy engine's
/// own limit).
pub const MAX_COMMAND_BYTES: usize = 256 * 1024;

/// Most audit events in one [`RunnerMessage::Audit`] batch.
pub const MAX_AUDIT_BATCH: usize = 256;

/// Websocket close codes the bot uses, with a human-readable reason.
pub mod close {
    /// A frame was not a valid message (bad JSON, unknown type or field).
    pub const BAD_MESSAGE: u16 = 4000;
    /// The token was revoked while the connection was open.
    pub const REVOKED: u16 = 4001;
    /// The runner speaks a protocol version the bot does not.
    pub const UNSUPPORTED_VERSION: u16 = 4002;
    /// The runner did not say hello first, or said it twice.
    pub const OUT_OF_ORDER: u16 = 4003;
    /// A frame was larger than [`super::MAX_FRAME_BYTES`].
    pub const TOO_LARGE: u16 = 1009;
    /// Nothing was received for too long.
    pub const IDLE: u16 = 4008;
    /// The runner has as many connections open as the bot allows one
    /// runner.
    pub const TOO_MANY_CONNECTIONS: u16 = 4009;
    /// The bot is shutting down; reconnect later.
    pub const GOING_AWAY: u16 = 1001;
}

/// The state of a request. Every state but `pending` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Expired,
    Cancelled,
}

impl Status {
    /// The lowercase name used on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses the name written by [`Status::as_str`].
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "pending" => Status::Pending,
            "approved" => Status::Approved,
            "denied" => Status::Denied,
            "expired" => Status::Expired,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }

    /// Whether the command may run. Only an approval lets it.
    pub fn runs(self) -> bool {
        self == Status::Approved
    }

    /// Whether this state is final.
    pub fn is_final(self) -> bool {
        self != Status::Pending
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command that waits for a human, as the runner submits it.
///
/// Everything in it was written by the agent or derived from what the agent
/// wrote: it is untrusted input wherever it is shown. The command and every
/// text field are redacted by the runner before they leave the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// 32 lowercase hex digits, chosen at random by the runner.
    pub id: String,
    /// The command line, redacted.
    pub command: String,
    /// Hex SHA-256 of the exact (unredacted) command and working directory,
    /// salted with a secret that never leaves the runner. The decision
    /// carries it back, and the runner runs nothing whose hash differs.
    pub command_hash: String,
    /// The gate's verdict, with redacted parts and reasons.
    pub verdict: Verdict,
    /// What the runner's probes found (issue-specific facts for reviewers).
    #[serde(default)]
    pub annotations: Vec<Annotation>,
    /// The host the runner runs on.
    pub host: String,
    /// The working directory of the command.
    pub cwd: String,
    /// The agent, as the front end learnt it (e.g. `claude-code`), if known.
    #[serde(default)]
    pub agent: Option<String>,
    /// The agent's session id, if the front end knows it.
    #[serde(default)]
    pub session: Option<String>,
    /// How the command reached the gate: `exec`, `sh` or `hook`.
    pub front_end: String,
    /// The local user the agent runs as.
    #[serde(default)]
    pub requested_by: Option<String>,
}

/// Why a request is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRequest {
    #[error("the request id must be 32 lowercase hex digits")]
    BadId,
    #[error("the command hash must be 64 lowercase hex digits")]
    BadHash,
    #[error("the command is empty")]
    EmptyCommand,
    #[error("the command is longer than {MAX_COMMAND_BYTES} bytes")]
    CommandTooLong,
    #[error("only a `review` verdict can be submitted, not `{0}`")]
    NotReview(Decision),
}

/// Whether `s` is `n` lowercase hex digits.
pub fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl ReviewRequest {
    /// Checks what the type system cannot.
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        if !is_hex(&self.id, 32) {
            return Err(InvalidRequest::BadId);
        }
        if !is_hex(&self.command_hash, 64) {
            return Err(InvalidRequest::BadHash);
        }
        if self.command.trim().is_empty() {
            return Err(InvalidRequest::EmptyCommand);
        }
        if self.command.len() > MAX_COMMAND_BYTES {
            return Err(InvalidRequest::CommandTooLong);
        }
        if self.verdict.decision != Decision::Review {
            return Err(InvalidRequest::NotReview(self.verdict.decision));
        }
        Ok(())
    }

    /// The risk a reviewer should weigh.
    pub fn risk(&self) -> Risk {
        self.verdict.risk
    }
}

/// The final answer for one request, as the bot relays it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionMessage {
    pub request_id: String,
    /// Echoes the submitted [`ReviewRequest::command_hash`].
    pub command_hash: String,
    /// A final state: approved, denied, expired or cancelled.
    pub status: Status,
    /// Who decided (`web:local`, `cli:alice`, `slack:U123`), or `holdpoint`
    /// for an expiry.
    pub decided_by: String,
    /// The reviewer's reason, or why it expired.
    #[serde(default)]
    pub reason: Option<String>,
    /// Unix milliseconds.
    pub decided_at: i64,
}

/// One verdict the runner reached, for the audit log. Every command the gate
/// sees produces one, allowed ones too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// 32 lowercase hex digits, chosen at random by the runner; the bot
    /// stores an id once, however often it is sent.
    pub id: String,
    /// Unix milliseconds on the runner.
    pub at: i64,
    /// The command line, redacted.
    pub command: String,
    pub decision: Decision,
    pub risk: Risk,
    /// The rules that decided.
    pub rules: Vec<String>,
    pub host: String,
    pub cwd: String,
    #[serde(default)]
    pub agent: Option<String>,
    pub front_end: String,
    /// What the runner did: `ran`, `refused` or `submitted` (the request id
    /// then names the review request).
    pub action: String,
    #[serde(default)]
    pub request_id: Option<String>,
}

/// What a runner sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RunnerMessage {
    /// The first message on a connection.
    Hello {
        protocol: u32,
        runner_version: String,
        host: String,
    },
    /// Submits a request, or re-submits it after a reconnect.
    Submit {
        request: Box<ReviewRequest>,
    },
    /// The agent gave up waiting (interrupted): the request is cancelled.
    Cancel {
        request_id: String,
    },
    /// The runner has the decision for this request.
    Ack {
        request_id: String,
    },
    /// A batch of audit events.
    Audit {
        events: Vec<AuditEvent>,
    },
    /// Keep-alive; the bot answers with `pong`.
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
}

/// What the bot sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BotMessage {
    /// The answer to `hello`.
    Welcome {
        protocol: u32,
        /// The runner's name, as registered with `holdpoint-bot runner add`.
        runner: String,
        bot_version: String,
        /// Unix milliseconds on the bot, so a runner can correct for skew.
        server_time: i64,
    },
    /// A submitted request is stored and waits for a reviewer.
    Pending {
        request_id: String,
        /// Unix milliseconds (bot clock) when it expires as denied.
        expires_at: i64,
        server_time: i64,
        /// Where a reviewer can see it, if the bot knows its public URL.
        #[serde(default)]
        review_url: Option<String>,
    },
    /// The final answer for a request.
    Decision(DecisionMessage),
    /// A submission or cancel that the bot refused; the request was not
    /// stored (or not changed).
    Rejected {
        request_id: String,
        reason: String,
    },
    /// These audit events are stored (or were already).
    AuditAck {
        ids: Vec<String>,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
}

/// Why a frame could not be read as a message.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is larger than the limit of {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    #[error("not a valid message: {0}")]
    Malformed(#[from] serde_json::Error),
}

fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, FrameError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(text.len()));
    }
    Ok(serde_json::from_str(text)?)
}

impl RunnerMessage {
    /// Reads one frame.
    pub fn decode(text: &str) -> Result<RunnerMessage, FrameError> {
        decode(text)
    }

    /// Writes one frame.
    pub fn encode(&self) -> String {
        // Serialising these types cannot fail: no maps with non-string keys,
        // no non-finite floats.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl BotMessage {
    /// Reads one frame.
    pub fn decode(text: &str) -> Result<BotMessage, FrameError> {
        decode(text)
    }

    /// Writes one frame.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Hit;

    fn request() -> ReviewRequest {
        ReviewRequest {
            id: "0123456789abcdef0123456789abcdef".into(),
            command: "git push --force origin main".into(),
            command_hash: "a".repeat(64),
            verdict: Verdict::from_hits(vec![Hit {
                rule: "git.push.force".into(),
                decision: Decision::Review,
                risk: Risk::High,
                reason: "rewrites the remote's history".into(),
                part: "git push --force origin main".into(),
            }]),
            annotations: vec![],
            host: "ci-7".into(),
            cwd: "/srv/app".into(),
            agent: Some("claude-code".into()),
            session: None,
            front_end: "sh".into(),
            requested_by: Some("agent".into()),
        }
    }

    #[test]
    fn messages_round_trip_with_a_type_tag() {
        let m = RunnerMessage::Submit {
            request: Box::new(request()),
        };
        let text = m.encode();
        assert!(text.starts_with(r#"{"type":"submit""#), "{text}");
        assert_eq!(RunnerMessage::decode(&text).unwrap(), m);
        let d = BotMessage::Decision(DecisionMessage {
            request_id: request().id,
            command_hash: request().command_hash,
            status: Status::Denied,
            decided_by: "web:local".into(),
            reason: Some("not on a Friday".into()),
            decided_at: 1,
        });
        assert_eq!(BotMessage::decode(&d.encode()).unwrap(), d);
    }

    #[test]
    fn unknown_types_and_fields_are_errors() {
        assert!(RunnerMessage::decode(r#"{"type":"launch","x":1}"#).is_err());
        assert!(RunnerMessage::decode(r#"{"type":"ping","nonce":1,"extra":true}"#).is_err());
        assert!(RunnerMessage::decode("not json").is_err());
        let big = format!(
            r#"{{"type":"ping","nonce":1,"pad":"{}"}}"#,
            "x".repeat(MAX_FRAME_BYTES)
        );
        assert!(matches!(
            RunnerMessage::decode(&big),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn validation_refuses_what_the_types_allow() {
        assert_eq!(request().validate(), Ok(()));
        let mut r = request();
        r.id = "../../etc".into();
        assert_eq!(r.validate(), Err(InvalidRequest::BadId));
        let mut r = request();
        r.verdict.decision = Decision::Allow;
        assert!(r.validate().is_err());
        let mut r = request();
        r.command = "x".repeat(MAX_COMMAND_BYTES + 1);
        assert_eq!(r.validate(), Err(InvalidRequest::CommandTooLong));
    }
}

//! Clicks and modal submissions from Slack, whichever way they arrive: the
//! HTTP endpoint (`POST /slack/interactions`, signature verified, stale and
//! replayed requests refused) and Socket Mode both hand the payload to
//! [`handle`], after acknowledging it at once.
//!
//! It must never decide for anyone but a configured reviewer, never let a
//! requester approve their own command (the lifecycle refuses it), and never
//! trust anything in a payload that Slack did not sign: ids are checked and
//! the command hash the reviewer saw must match the stored one.

use super::Slack;
use super::render;
use crate::core::{Decided, Intent, Realm, Reviewer};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use holdpoint_shared::protocol::is_hex;
use serde_json::{Value, json};
use slack_morphism::SlackSigningSecret;
use slack_morphism::signature_verifier::{
    SlackEventSignatureVerifier, SlackEventSignatureVerifierError,
};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// How long a signature (or trigger id) is remembered: longer than the
/// five minutes a timestamp is accepted for.
const SEEN_FOR_SECS: i64 = 600;
/// The most remembered signatures; when full of fresh ones, new requests are
/// refused rather than risking a replay.
const SEEN_MAX: usize = 100_000;

/// Signatures and trigger ids already seen, oldest first.
#[derive(Default)]
pub struct Seen {
    order: VecDeque<(i64, String)>,
    set: HashMap<String, i64>,
}

impl Seen {
    /// Records `key` at `now` (seconds); false if it was seen already, or
    /// if the cache is full of entries too fresh to forget.
    pub fn first_time(&mut self, key: &str, now: i64) -> bool {
        while let Some((at, _)) = self.order.front() {
            if now - *at <= SEEN_FOR_SECS {
                break;
            }
            if let Some((_, k)) = self.order.pop_front() {
                self.set.remove(&k);
            }
        }
        if self.set.contains_key(key) || self.order.len() >= SEEN_MAX {
            return false;
        }
        self.set.insert(key.to_string(), now);
        self.order.push_back((now, key.to_string()));
        true
    }
}

fn now_secs() -> i64 {
    crate::time::now_ms().div_euclid(1000)
}

/// `POST /slack/interactions`.
pub async fn http(
    State(slack): State<Arc<Slack>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let Some(secret) = slack.cfg.signing_secret.as_deref() else {
        return (StatusCode::NOT_FOUND, "Socket Mode is configured\n");
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let signature = header(SlackEventSignatureVerifier::SLACK_SIGNED_HASH_HEADER);
    let timestamp = header(SlackEventSignatureVerifier::SLACK_SIGNED_TIMESTAMP);
    let Ok(text) = std::str::from_utf8(&body) else {
        slack.bot.metrics().slack_refused();
        return (StatusCode::BAD_REQUEST, "not UTF-8\n");
    };
    let verifier = SlackEventSignatureVerifier::new(&SlackSigningSecret(secret.to_string()));
    if let Err(e) = verifier.verify(signature, text, timestamp) {
        slack.bot.metrics().slack_refused();
        let why = match e {
            SlackEventSignatureVerifierError::IncorrectOrExpiredTimestampError(_) => {
                "stale or invalid timestamp"
            }
            _ => "bad signature",
        };
        tracing::warn!("Slack interaction refused: {why}");
        return (StatusCode::UNAUTHORIZED, "refused\n");
    }
    let first = slack
        .seen
        .lock()
        .map(|mut s| s.first_time(signature, now_secs()))
        .unwrap_or(false);
    if !first {
        slack.bot.metrics().slack_refused();
        tracing::warn!("Slack interaction refused: replayed signature");
        return (StatusCode::UNAUTHORIZED, "replayed\n");
    }
    let payload = payload_of_form(&body);
    let Some(payload) = payload else {
        return (StatusCode::BAD_REQUEST, "no payload\n");
    };
    // Answer within Slack's three seconds; the work happens after.
    tokio::spawn(handle(slack, payload));
    (StatusCode::OK, "")
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// The JSON `payload` field of an interaction's form body, if it has one.
pub fn payload_of_form(body: &[u8]) -> Option<Value> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .and_then(|(_, v)| serde_json::from_str::<Value>(&v).ok())
}

/// What one interaction asks for, read from its payload and checked: the
/// user and channel are Slack ids, the request id and command hash are hex
/// of their lengths. Nothing else in a payload is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interaction {
    /// A click on a request message's Approve or Deny button.
    Click {
        user: String,
        trigger: Option<String>,
        channel: Option<String>,
        id: String,
        hash: String,
        approve: bool,
    },
    /// The deny dialog, submitted with its (optional) reason.
    DenyReason {
        user: String,
        trigger: Option<String>,
        channel: Option<String>,
        id: String,
        hash: String,
        reason: Option<String>,
    },
}

impl Interaction {
    pub fn user(&self) -> &str {
        match self {
            Interaction::Click { user, .. } | Interaction::DenyReason { user, .. } => user,
        }
    }

    pub fn trigger(&self) -> Option<&str> {
        match self {
            Interaction::Click { trigger, .. } | Interaction::DenyReason { trigger, .. } => {
                trigger.as_deref()
            }
        }
    }

    /// The smallest payload Slack would send for this interaction: what
    /// [`parse`] reads back into the same value (tests and the fuzz target
    /// check that round trip).
    pub fn to_payload(&self) -> Value {
        match self {
            Interaction::Click {
                user,
                trigger,
                channel,
                id,
                hash,
                approve,
            } => json!({
                "type": "block_actions",
                "user": {"id": user},
                "trigger_id": trigger,
                "container": {"channel_id": channel},
                "actions": [{
                    "action_id": if *approve { render::APPROVE } else { render::DENY },
                    "value": format!("{id}:{hash}"),
                }],
            }),
            Interaction::DenyReason {
                user,
                trigger,
                channel,
                id,
                hash,
                reason,
            } => json!({
                "type": "view_submission",
                "user": {"id": user},
                "trigger_id": trigger,
                "view": {
                    "callback_id": render::DENY_VIEW,
                    "private_metadata": json!({"id": id, "hash": hash, "channel": channel}).to_string(),
                    "state": {"values": {render::REASON: {render::REASON: {"value": reason}}}},
                },
            }),
        }
    }
}

/// Why a payload asks for nothing holdpoint does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("no valid user id")]
    NoUser,
    #[error("an interaction of another kind")]
    NotOurs,
    #[error("a malformed {0}")]
    Malformed(&'static str),
}

/// Reads one interaction payload (see [`Interaction`]).
pub fn parse(payload: &Value) -> Result<Interaction, Ignored> {
    let user = str_at(payload, &["user", "id"])
        .filter(|u| render::is_slack_id(u))
        .ok_or(Ignored::NoUser)?
        .to_string();
    let trigger = str_at(payload, &["trigger_id"]).map(str::to_string);
    match str_at(payload, &["type"]) {
        Some("block_actions") => {
            let action = payload
                .get("actions")
                .and_then(|a| a.as_array())
                .and_then(|a| a.first())
                .ok_or(Ignored::NotOurs)?;
            let approve = match str_at(action, &["action_id"]) {
                Some(render::APPROVE) => true,
                Some(render::DENY) => false,
                _ => return Err(Ignored::NotOurs),
            };
            let (id, hash) = str_at(action, &["value"])
                .and_then(parse_value)
                .ok_or(Ignored::Malformed("button value"))?;
            let channel = str_at(payload, &["container", "channel_id"])
                .or_else(|| str_at(payload, &["channel", "id"]))
                .filter(|c| render::is_slack_id(c))
                .map(str::to_string);
            Ok(Interaction::Click {
                user,
                trigger,
                channel,
                id,
                hash,
                approve,
            })
        }
        Some("view_submission") => {
            let view = payload.get("view").ok_or(Ignored::NotOurs)?;
            if str_at(view, &["callback_id"]) != Some(render::DENY_VIEW) {
                return Err(Ignored::NotOurs);
            }
            let meta: Value = str_at(view, &["private_metadata"])
                .and_then(|m| serde_json::from_str(m).ok())
                .ok_or(Ignored::Malformed("dialog metadata"))?;
            let (Some(id), Some(hash)) = (str_at(&meta, &["id"]), str_at(&meta, &["hash"])) else {
                return Err(Ignored::Malformed("dialog metadata"));
            };
            if !(is_hex(id, 32) && is_hex(hash, 64)) {
                return Err(Ignored::Malformed("dialog metadata"));
            }
            let channel = str_at(&meta, &["channel"])
                .filter(|c| render::is_slack_id(c))
                .map(str::to_string);
            let reason = str_at(
                view,
                &["state", "values", render::REASON, render::REASON, "value"],
            )
            .map(str::to_string);
            Ok(Interaction::DenyReason {
                user,
                trigger,
                channel,
                id: id.to_string(),
                hash: hash.to_string(),
                reason,
            })
        }
        _ => Err(Ignored::NotOurs),
    }
}

/// The property the `slack` fuzz target checks on arbitrary bytes, read
/// both as the HTTP endpoint reads them (a form body) and as Socket Mode
/// hands them over (JSON): reading never panics, whatever is read has
/// checked ids, and it reads back from its own payload unchanged. Panics
/// when the property fails (the regression test runs it on every kept
/// input).
#[doc(hidden)]
pub fn check_input(data: &[u8]) {
    let payloads = [
        payload_of_form(data),
        serde_json::from_slice::<Value>(data).ok(),
    ];
    for payload in payloads.into_iter().flatten() {
        let Ok(read) = parse(&payload) else {
            continue;
        };
        let (user, channel, id, hash) = match &read {
            Interaction::Click {
                user,
                channel,
                id,
                hash,
                ..
            }
            | Interaction::DenyReason {
                user,
                channel,
                id,
                hash,
                ..
            } => (user, channel, id, hash),
        };
        assert!(
            render::is_slack_id(user),
            "user {user:?} read from {payload}"
        );
        assert!(
            channel.as_deref().is_none_or(render::is_slack_id),
            "channel {channel:?} read from {payload}"
        );
        assert!(
            is_hex(id, 32) && is_hex(hash, 64),
            "ids read from {payload}"
        );
        assert_eq!(
            parse(&read.to_payload()).as_ref(),
            Ok(&read),
            "the round trip of {payload}"
        );
    }
}

/// Handles one interaction payload (already acknowledged).
pub async fn handle(slack: Arc<Slack>, payload: Value) {
    let interaction = match parse(&payload) {
        Ok(i) => i,
        Err(why @ (Ignored::NoUser | Ignored::Malformed(_))) => {
            tracing::warn!("Slack interaction ignored: {why}");
            return;
        }
        Err(Ignored::NotOurs) => {
            tracing::debug!("Slack interaction of another kind ignored");
            return;
        }
    };
    // Socket Mode redelivers envelopes that were not acknowledged in time;
    // one click acts once.
    if let Some(trigger) = interaction.trigger() {
        let first = slack
            .seen
            .lock()
            .map(|mut s| s.first_time(&format!("trigger:{trigger}"), now_secs()))
            .unwrap_or(false);
        if !first {
            tracing::warn!("Slack interaction with a repeated trigger id ignored");
            return;
        }
    }
    let user = interaction.user().to_string();
    if let Err(why) = slack.bot.admits(&reviewer(&user)).await {
        let channel = match &interaction {
            Interaction::Click { channel, .. } | Interaction::DenyReason { channel, .. } => {
                channel.clone()
            }
        };
        slack
            .tell(channel.as_deref(), &user, &render::refusal(&why))
            .await;
        return;
    }
    match interaction {
        Interaction::Click {
            channel,
            id,
            hash,
            approve: true,
            ..
        } => {
            let intent = Intent::Approve { reason: None };
            decide(&slack, channel.as_deref(), &user, &id, &hash, intent).await;
        }
        Interaction::Click {
            channel,
            id,
            hash,
            trigger,
            approve: false,
            ..
        } => deny_dialog(&slack, &user, channel, id, hash, trigger).await,
        Interaction::DenyReason {
            channel,
            id,
            hash,
            reason,
            ..
        } => {
            let intent = Intent::Deny { reason };
            decide(&slack, channel.as_deref(), &user, &id, &hash, intent).await;
        }
    }
}

/// Deny: ask for a reason first, unless it is already decided.
async fn deny_dialog(
    slack: &Arc<Slack>,
    user: &str,
    channel: Option<String>,
    id: String,
    hash: String,
    trigger: Option<String>,
) {
    let req = match slack.bot.get(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            slack
                .tell(channel.as_deref(), user, "This request no longer exists.")
                .await;
            return;
        }
        Err(e) => {
            tracing::error!("Slack deny: cannot read request {id}: {e}");
            slack
                .tell(
                    channel.as_deref(),
                    user,
                    "holdpoint could not read this request; try again.",
                )
                .await;
            return;
        }
    };
    if req.status.is_final() {
        slack
            .tell(channel.as_deref(), user, &render::already_text(&req))
            .await;
        return;
    }
    let Some(trigger) = trigger else {
        return;
    };
    let meta = json!({"id": id, "hash": hash, "channel": channel}).to_string();
    let view = render::deny_modal(&req, &meta);
    if let Err(e) = slack
        .api
        .post("views.open", &json!({"trigger_id": trigger, "view": view}))
        .await
    {
        slack.bot.metrics().chat_failure("slack", "modal");
        tracing::error!("Slack: cannot open the deny dialog: {e}");
        slack
            .tell(
                channel.as_deref(),
                user,
                "holdpoint could not open the deny dialog; try again, or deny on the web queue.",
            )
            .await;
    }
}

/// `id:hash` from a button value, checked.
fn parse_value(v: &str) -> Option<(String, String)> {
    let (id, hash) = v.split_once(':')?;
    (is_hex(id, 32) && is_hex(hash, 64)).then(|| (id.to_string(), hash.to_string()))
}

/// The reviewer a Slack user id is.
fn reviewer(user: &str) -> Reviewer {
    Reviewer::new(Realm::Slack, user)
}

async fn decide(
    slack: &Arc<Slack>,
    channel: Option<&str>,
    user: &str,
    id: &str,
    hash: &str,
    intent: Intent,
) {
    match slack
        .bot
        .decide(&reviewer(user), id, Some(hash), intent)
        .await
    {
        // The message is updated by the change notification.
        Ok(Decided::Won(_)) => {}
        Ok(Decided::Already(_)) => match slack.bot.get(id).await {
            Ok(Some(r)) => slack.tell(channel, user, &render::already_text(&r)).await,
            _ => {
                slack
                    .tell(channel, user, "This request was already decided.")
                    .await
            }
        },
        Ok(Decided::Voted {
            approvals,
            required,
            missing,
        }) => {
            let from = if missing.is_empty() {
                String::new()
            } else {
                format!(" ({})", crate::core::groups_needed(&missing))
            };
            slack
                .tell(
                    channel,
                    user,
                    &format!(
                        "Your approval is counted: {approvals} of {required}. The command runs once {} more reviewers approve{from}.",
                        required.saturating_sub(approvals)
                    ),
                )
                .await
        }
        Ok(Decided::Refused(why)) => slack.tell(channel, user, &render::refusal(&why)).await,
        Ok(Decided::NotFound) => {
            slack
                .tell(channel, user, "This request no longer exists.")
                .await
        }
        Err(e) => {
            tracing::error!("Slack decision on {id} failed: {e}");
            slack
                .tell(
                    channel,
                    user,
                    "holdpoint could not record your decision; nothing was approved. Try again.",
                )
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_counts_once() {
        let mut s = Seen::default();
        assert!(s.first_time("a", 100));
        assert!(!s.first_time("a", 101));
        assert!(s.first_time("b", 101));
        // Forgotten only after it could no longer pass the timestamp check.
        assert!(!s.first_time("a", 100 + SEEN_FOR_SECS));
        assert!(s.first_time("a", 101 + SEEN_FOR_SECS));
    }

    fn click() -> Interaction {
        Interaction::Click {
            user: "U0123ABCD".into(),
            trigger: Some("123.456.abc".into()),
            channel: Some("C0123ABCD".into()),
            id: "0123456789abcdef0123456789abcdef".into(),
            hash: "a".repeat(64),
            approve: true,
        }
    }

    #[test]
    fn clicks_and_deny_reasons_read_back_from_their_payloads() {
        let c = click();
        assert_eq!(parse(&c.to_payload()), Ok(c));
        let d = Interaction::DenyReason {
            user: "W0123ABCD".into(),
            trigger: None,
            channel: None,
            id: "0123456789abcdef0123456789abcdef".into(),
            hash: "b".repeat(64),
            reason: Some("not on a Friday".into()),
        };
        assert_eq!(parse(&d.to_payload()), Ok(d));
    }

    #[test]
    fn payloads_that_are_not_ours_or_are_forged_ask_for_nothing() {
        let mut p = click().to_payload();
        p["actions"][0]["value"] = json!("../etc:passwd");
        assert_eq!(parse(&p), Err(Ignored::Malformed("button value")));
        let mut p = click().to_payload();
        p["user"]["id"] = json!("<@U0123ABCD>");
        assert_eq!(parse(&p), Err(Ignored::NoUser));
        let mut p = click().to_payload();
        p["actions"][0]["action_id"] = json!("someone_elses_button");
        assert_eq!(parse(&p), Err(Ignored::NotOurs));
        let mut p = click().to_payload();
        p["type"] = json!("message_action");
        assert_eq!(parse(&p), Err(Ignored::NotOurs));
        // A channel that is not an id is dropped, not trusted.
        let mut p = click().to_payload();
        p["container"]["channel_id"] = json!("#general");
        assert!(matches!(
            parse(&p),
            Ok(Interaction::Click { channel: None, .. })
        ));
        // The form body's payload field, and nothing else, is read.
        let body = format!(
            "token=x&payload={}",
            form_urlencoded::byte_serialize(click().to_payload().to_string().as_bytes())
                .collect::<String>()
        );
        assert_eq!(payload_of_form(body.as_bytes()), Some(click().to_payload()));
        assert_eq!(payload_of_form(b"payload=%7Bnot-json"), None);
    }

    #[test]
    fn the_fuzz_targets_seeds_and_regressions_keep_their_property() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut n = 0;
        for dir in ["seeds/slack", "regressions/slack"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                check_input(&bytes);
                n += 1;
            }
        }
        assert!(n >= 3, "the seeds are missing ({n} inputs read)");
    }

    #[test]
    fn button_values_are_checked() {
        let id = "0123456789abcdef0123456789abcdef";
        let hash = "a".repeat(64);
        assert!(parse_value(&format!("{id}:{hash}")).is_some());
        assert!(parse_value(&format!("../{id}:{hash}")).is_none());
        assert!(parse_value(id).is_none());
    }
}

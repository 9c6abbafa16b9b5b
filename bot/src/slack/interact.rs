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
    let payload = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "payload")
        .and_then(|(_, v)| serde_json::from_str::<Value>(&v).ok());
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

/// Handles one interaction payload (already acknowledged).
pub async fn handle(slack: Arc<Slack>, payload: Value) {
    let Some(user) = str_at(&payload, &["user", "id"]).filter(|u| render::is_slack_id(u)) else {
        tracing::warn!("Slack interaction without a valid user id ignored");
        return;
    };
    let user = user.to_string();
    // Socket Mode redelivers envelopes that were not acknowledged in time;
    // one click acts once.
    if let Some(trigger) = str_at(&payload, &["trigger_id"]) {
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
    match str_at(&payload, &["type"]) {
        Some("block_actions") => block_action(&slack, &user, &payload).await,
        Some("view_submission") => view_submission(&slack, &user, &payload).await,
        other => tracing::debug!("Slack interaction of type {other:?} ignored"),
    }
}

/// `id:hash` from a button value, checked.
fn parse_value(v: &str) -> Option<(String, String)> {
    let (id, hash) = v.split_once(':')?;
    (is_hex(id, 32) && is_hex(hash, 64)).then(|| (id.to_string(), hash.to_string()))
}

async fn block_action(slack: &Arc<Slack>, user: &str, payload: &Value) {
    let Some(action) = payload
        .get("actions")
        .and_then(|a| a.as_array())
        .and_then(|a| a.first())
    else {
        return;
    };
    let channel = str_at(payload, &["container", "channel_id"])
        .or_else(|| str_at(payload, &["channel", "id"]))
        .filter(|c| render::is_slack_id(c))
        .map(str::to_string);
    let action_id = str_at(action, &["action_id"]).unwrap_or("");
    let Some((id, hash)) = str_at(action, &["value"]).and_then(parse_value) else {
        tracing::warn!("Slack click with a malformed value ignored");
        return;
    };
    let approve = match action_id {
        render::APPROVE => true,
        render::DENY => false,
        _ => return,
    };
    if let Err(why) = slack.bot.admits(&reviewer(user)).await {
        slack
            .tell(channel.as_deref(), user, &render::refusal(&why))
            .await;
        return;
    }
    if approve {
        let intent = Intent::Approve { reason: None };
        decide(slack, channel.as_deref(), user, &id, &hash, intent).await;
        return;
    }
    // Deny: ask for a reason first, unless it is already decided.
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
    let Some(trigger) = str_at(payload, &["trigger_id"]) else {
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

async fn view_submission(slack: &Arc<Slack>, user: &str, payload: &Value) {
    let Some(view) = payload.get("view") else {
        return;
    };
    if str_at(view, &["callback_id"]) != Some(render::DENY_VIEW) {
        return;
    }
    let meta: Value = str_at(view, &["private_metadata"])
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or(Value::Null);
    let (Some(id), Some(hash)) = (str_at(&meta, &["id"]), str_at(&meta, &["hash"])) else {
        return;
    };
    if !(is_hex(id, 32) && is_hex(hash, 64)) {
        return;
    }
    let channel = str_at(&meta, &["channel"])
        .filter(|c| render::is_slack_id(c))
        .map(str::to_string);
    let reason = str_at(
        view,
        &["state", "values", render::REASON, render::REASON, "value"],
    )
    .map(str::to_string);
    if let Err(why) = slack.bot.admits(&reviewer(user)).await {
        slack
            .tell(channel.as_deref(), user, &render::refusal(&why))
            .await;
        return;
    }
    decide(
        slack,
        channel.as_deref(),
        user,
        id,
        hash,
        Intent::Deny { reason },
    )
    .await;
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
        }) => {
            slack
                .tell(
                    channel,
                    user,
                    &format!(
                        "Your approval is counted: {approvals} of {required}. The command runs once {} more reviewers approve.",
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

    #[test]
    fn button_values_are_checked() {
        let id = "0123456789abcdef0123456789abcdef";
        let hash = "a".repeat(64);
        assert!(parse_value(&format!("{id}:{hash}")).is_some());
        assert!(parse_value(&format!("../{id}:{hash}")).is_none());
        assert!(parse_value(id).is_none());
    }
}

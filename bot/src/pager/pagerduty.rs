//! PagerDuty, through the Events API v2 (`POST /v2/enqueue`).
//!
//! A page is a `trigger` event whose `dedup_key` is derived from the
//! request id, so a retry, a second replica or a restart never opens a
//! second incident; the request's end sends `resolve` with the same key.
//! The Events API's resolve event carries no text: who decided is on the
//! request's page, which the incident links to, and in the audit log.

use super::{Page, PageError, Pager, http::Http};
use crate::config::PagerDutyConfig;
use crate::view::cut;
use holdpoint_shared::Risk;
use serde_json::{Value, json};

/// The documented limits.
pub const MAX_SUMMARY: usize = 1024;
pub const MAX_DEDUP_KEY: usize = 255;
/// Not documented as a limit; kept short so one field cannot crowd out
/// the others.
const MAX_FIELD: usize = 255;
const MAX_COMMAND: usize = 4000;

/// PagerDuty's severity for a request's risk.
pub fn severity(risk: Risk) -> &'static str {
    match risk {
        Risk::Critical => "critical",
        Risk::High => "error",
        Risk::Medium => "warning",
        Risk::Low => "info",
    }
}

/// The `trigger` event for `page`.
pub fn trigger(routing_key: &str, page: &Page<'_>) -> Value {
    let v = page.view;
    let field = |name: &str| {
        v.fields
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, val)| cut(val, MAX_FIELD))
            .unwrap_or_default()
    };
    let rules: Vec<&str> = v.hits.iter().map(|h| h.rule.as_str()).collect();
    let mut details = json!({
        "request": v.id,
        "command": cut(&page.command, MAX_COMMAND),
        "rules": rules,
        "reasons": v.hits.iter().map(|h| cut(&h.reason, MAX_FIELD)).collect::<Vec<_>>(),
        "runner": field("Runner"),
        "host": field("Host"),
        "directory": field("Directory"),
        "agent": field("Agent"),
        "requested_by": field("Requested by"),
        "risk": v.risk.as_str(),
        "expires_at": crate::time::rfc3339(v.expires_at),
        "review": v.link,
    });
    if !v.annotations.is_empty() {
        details["annotations"] = json!(
            v.annotations
                .iter()
                .map(|a| cut(a, MAX_FIELD))
                .collect::<Vec<_>>()
        );
    }
    let mut payload = json!({
        "summary": cut(&page.summary(), MAX_SUMMARY),
        "source": cut(&field("Host"), MAX_FIELD),
        "severity": severity(v.risk),
        "timestamp": crate::time::rfc3339(v.created_at),
        "component": cut(&field("Runner"), MAX_FIELD),
        "group": "holdpoint",
        "custom_details": details,
    });
    if let Some(rule) = rules.first() {
        payload["class"] = json!(cut(rule, MAX_FIELD));
    }
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": cut(&page.key, MAX_DEDUP_KEY),
        "payload": payload,
        "client": "holdpoint",
        "client_url": v.link,
        "links": [{ "href": v.link, "text": format!("Review request {} in holdpoint", v.id) }],
    })
}

/// The `resolve` event that closes the incident of `key`.
pub fn resolve(routing_key: &str, key: &str) -> Value {
    json!({
        "routing_key": routing_key,
        "event_action": "resolve",
        "dedup_key": cut(key, MAX_DEDUP_KEY),
    })
}

/// The Events API v2 client.
pub struct PagerDuty {
    config: PagerDutyConfig,
    http: Http,
}

impl PagerDuty {
    pub fn new(config: PagerDutyConfig) -> PagerDuty {
        PagerDuty {
            config,
            http: Http::default(),
        }
    }
}

impl Pager for PagerDuty {
    const NAME: &'static str = "pagerduty";
    const LABEL: &'static str = "PagerDuty";

    async fn trigger(&self, page: &Page<'_>) -> Result<(), PageError> {
        let body = trigger(self.config.routing_key.expose(), page);
        self.http.post_json(&self.config.url, &[], &body).await
    }

    async fn resolve(&self, page: &Page<'_>) -> Result<(), PageError> {
        let body = resolve(self.config.routing_key.expose(), &page.key);
        self.http.post_json(&self.config.url, &[], &body).await
    }
}

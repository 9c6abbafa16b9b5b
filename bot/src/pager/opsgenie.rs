//! Opsgenie (and Jira Service Management Operations, which speaks the same
//! alert API): `POST /v2/alerts` creates the alert, whose `alias` is
//! derived from the request id so that a retry never opens a second one;
//! the request's end closes it (`POST /v2/alerts/{alias}/close?identifierType=alias`)
//! with a note that says who decided.

use super::{Page, PageError, Pager, http::Http};
use crate::config::OpsgenieConfig;
use crate::view::{cut, status_word};
use holdpoint_shared::Risk;
use serde_json::{Map, Value, json};

/// The documented limits.
pub const MAX_MESSAGE: usize = 130;
pub const MAX_ALIAS: usize = 512;
pub const MAX_DESCRIPTION: usize = 15_000;
pub const MAX_ENTITY: usize = 512;
pub const MAX_SOURCE: usize = 100;
pub const MAX_USER: usize = 100;
pub const MAX_NOTE: usize = 25_000;
pub const MAX_TAG: usize = 50;
/// All of `details`, keys and values together.
pub const MAX_DETAILS: usize = 8_000;

/// Opsgenie's priority for a request's risk.
pub fn priority(risk: Risk) -> &'static str {
    match risk {
        Risk::Critical => "P1",
        Risk::High => "P2",
        Risk::Medium => "P3",
        Risk::Low => "P4",
    }
}

/// The alert for `page`.
pub fn create(responders: &[String], page: &Page<'_>) -> Value {
    let v = page.view;
    let mut description = format!("{}\n\nCommand:\n{}\n", page.summary(), page.command);
    for h in &v.hits {
        description.push_str(&format!("\n• {}: {}", h.rule, h.reason));
    }
    for (k, val) in &v.fields {
        description.push_str(&format!("\n{k}: {val}"));
    }
    for a in &v.annotations {
        description.push_str(&format!("\n{a}"));
    }
    description.push_str(&format!("\n\nReview it: {}", v.link));
    // Details: short values, kept inside the total limit in this order.
    let mut details = Map::new();
    let mut used = 0usize;
    let field = |name: &str| {
        v.fields
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, val)| val.clone())
            .unwrap_or_default()
    };
    let rules: Vec<&str> = v.hits.iter().map(|h| h.rule.as_str()).collect();
    for (k, val) in [
        ("request", v.id.clone()),
        ("review", v.link.clone()),
        ("risk", v.risk.as_str().to_string()),
        ("runner", field("Runner")),
        ("host", field("Host")),
        ("agent", field("Agent")),
        ("requested_by", field("Requested by")),
        ("directory", field("Directory")),
        ("rules", rules.join(", ")),
        ("command", page.command.clone()),
    ] {
        let room = MAX_DETAILS.saturating_sub(used + k.len());
        if room < 2 {
            break;
        }
        let val = cut(&val, room.min(1000));
        used += k.len() + val.chars().count();
        details.insert(k.to_string(), Value::String(val));
    }
    let mut body = json!({
        "message": cut(&page.summary(), MAX_MESSAGE),
        "alias": cut(&page.key, MAX_ALIAS),
        "description": cut(&description, MAX_DESCRIPTION),
        "tags": ["holdpoint", cut(&format!("risk:{}", v.risk.as_str()), MAX_TAG)],
        "details": details,
        "entity": cut(&field("Runner"), MAX_ENTITY),
        "source": cut("holdpoint", MAX_SOURCE),
        "priority": priority(v.risk),
    });
    if !responders.is_empty() {
        body["responders"] = json!(
            responders
                .iter()
                .map(|t| json!({ "name": t, "type": "team" }))
                .collect::<Vec<_>>()
        );
    }
    body
}

/// The close request's body: a note that says how the request ended and
/// who decided.
pub fn close(page: &Page<'_>) -> Value {
    let v = page.view;
    let note = match &v.outcome {
        Some(o) => {
            let mut n = format!(
                "{} by {} (request {}).",
                status_word(o.status),
                o.decided_by,
                v.id
            );
            if let Some(r) = &o.reason {
                n.push_str(&format!(" Reason: {r}"));
            }
            n
        }
        None => format!("Request {} ended.", v.id),
    };
    json!({
        "user": cut("holdpoint", MAX_USER),
        "source": cut("holdpoint", MAX_SOURCE),
        "note": cut(&note, MAX_NOTE),
    })
}

/// The alert API client.
pub struct Opsgenie {
    config: OpsgenieConfig,
    http: Http,
}

impl Opsgenie {
    pub fn new(config: OpsgenieConfig) -> Opsgenie {
        Opsgenie {
            config,
            http: Http::default(),
        }
    }

    fn auth(&self) -> [(&'static str, String); 1] {
        [(
            "authorization",
            format!("GenieKey {}", self.config.api_key.expose()),
        )]
    }
}

impl Pager for Opsgenie {
    const NAME: &'static str = "opsgenie";
    const LABEL: &'static str = "Opsgenie";

    async fn trigger(&self, page: &Page<'_>) -> Result<(), PageError> {
        let body = create(&self.config.responders, page);
        let url = format!("{}/v2/alerts", self.config.url);
        self.http.post_json(&url, &self.auth(), &body).await
    }

    async fn resolve(&self, page: &Page<'_>) -> Result<(), PageError> {
        let alias: String = form_urlencoded::byte_serialize(page.key.as_bytes()).collect();
        let url = format!(
            "{}/v2/alerts/{alias}/close?identifierType=alias",
            self.config.url
        );
        self.http.post_json(&url, &self.auth(), &close(page)).await
    }
}

//! Slack: every request that waits for a human is posted to a channel as a
//! Block Kit message with Approve and Deny buttons; a reviewer's click goes
//! through the request lifecycle like any other decision, and the message
//! is updated in place (and answered in its thread) when the request ends,
//! however it ended.
//!
//! Slack is one [`chat::Adapter`]: it encodes the review view as Block
//! Kit, knows the channel routes, and turns clicks into intents. Claims,
//! leases, retries and reconcile are the shared delivery engine's
//! ([`chat::Engine`]); who may decide is the core's, asked through this
//! adapter's [`Directory`] (reviewer ids and user groups).

pub mod api;
pub mod interact;
pub mod render;
pub mod socket;

use crate::chat::{self, Posted};
use crate::config::SlackConfig;
use crate::core::{Bot, Delivery, Directory, Realm, Refusal, StoredRequest};
use crate::view::ReviewView;
use api::{Api, ApiError};
use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a user group's members are cached.
pub const GROUP_CACHE_FOR: Duration = Duration::from_secs(300);

/// Installs ring as rustls' process-wide crypto provider. Several crates
/// enable a second backend, and rustls refuses to guess between them.
pub fn install_crypto_provider() {
    // Already installed (by an earlier call) is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why Slack could not start.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// The Slack adapter.
pub struct Slack {
    pub bot: Arc<Bot>,
    pub cfg: SlackConfig,
    pub api: Api,
    pub(crate) seen: Mutex<interact::Seen>,
    groups: Mutex<HashMap<String, (Instant, Vec<String>)>>,
}

/// The router for `POST /slack/interactions`.
pub fn router(slack: Arc<Slack>) -> Router {
    Router::new()
        .route("/slack/interactions", post(interact::http))
        .with_state(slack)
}

/// Starts Slack if it is configured: returns the adapter (for the router)
/// after spawning its tasks.
pub fn start(bot: &Arc<Bot>) -> Result<Option<Arc<Slack>>, SlackError> {
    let Some(cfg) = bot.config().slack.clone() else {
        return Ok(None);
    };
    install_crypto_provider();
    let api = Api::new(&cfg.api_url, &cfg.bot_token, cfg.app_token.as_deref())?;
    let slack = Arc::new(Slack {
        bot: bot.clone(),
        cfg,
        api,
        seen: Mutex::new(interact::Seen::default()),
        groups: Mutex::new(HashMap::new()),
    });
    bot.set_directory(Realm::Slack, slack.clone());
    chat::Engine::start(slack.clone());
    if slack.cfg.app_token.is_some() {
        tokio::spawn(socket::run(slack.clone()));
    }
    tracing::info!(
        "Slack: posting to {} ({}), interactions over {}",
        slack.cfg.channel,
        slack.cfg.api_url,
        match (&slack.cfg.app_token, &slack.cfg.signing_secret) {
            (Some(_), Some(_)) => "Socket Mode and POST /slack/interactions",
            (Some(_), None) => "Socket Mode",
            _ => "POST /slack/interactions",
        }
    );
    Ok(Some(slack))
}

impl Slack {
    /// Whether Slack user `user` is one of the reviewers, directly or by a
    /// user group.
    async fn is_reviewer(&self, user: &str) -> Result<bool, Refusal> {
        if self.cfg.reviewers.iter().any(|r| r == user) {
            return Ok(true);
        }
        let mut unknown = false;
        for group in self.cfg.reviewers.iter().filter(|r| r.starts_with('S')) {
            match self.group_members(group).await {
                Some(members) if members.iter().any(|m| m == user) => return Ok(true),
                Some(_) => {}
                None => unknown = true,
            }
        }
        if unknown {
            return Err(Refusal::DirectoryUnavailable);
        }
        Ok(false)
    }

    /// The members of a user group, cached; a stale list is used when Slack
    /// cannot be asked. `None` when nothing is known.
    async fn group_members(&self, group: &str) -> Option<Vec<String>> {
        let cached = self.groups.lock().ok().and_then(|g| g.get(group).cloned());
        if let Some((at, members)) = &cached
            && at.elapsed() < GROUP_CACHE_FOR
        {
            return Some(members.clone());
        }
        match self
            .api
            .get("usergroups.users.list", &[("usergroup", group)])
            .await
        {
            Ok(v) => {
                let members: Vec<String> = v
                    .get("users")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                if let Ok(mut g) = self.groups.lock() {
                    g.insert(group.to_string(), (Instant::now(), members.clone()));
                }
                Some(members)
            }
            Err(e) => {
                self.bot.metrics().chat_failure("slack", "usergroups");
                tracing::error!("Slack: cannot list the members of {group}: {e}");
                cached.map(|(_, m)| m)
            }
        }
    }

    /// Tells `user` something only they see. Without a channel (a modal
    /// opened from elsewhere) the answer is logged instead.
    pub async fn tell(&self, channel: Option<&str>, user: &str, text: &str) {
        let Some(channel) = channel else {
            tracing::info!("Slack: could not tell {user}: {text}");
            return;
        };
        let body = json!({"channel": channel, "user": user, "text": text});
        if let Err(e) = self.api.post("chat.postEphemeral", &body).await {
            self.bot.metrics().chat_failure("slack", "ephemeral");
            tracing::error!("Slack: cannot answer {user}: {e}");
        }
    }

    /// Posts the audit digest in `channel`.
    pub async fn post_digest(
        &self,
        channel: &str,
        report: &crate::core::digest::Report,
        late: bool,
        base: &str,
    ) -> Result<(), String> {
        let msg = render::digest_message(report, late, base);
        let body = json!({
            "channel": channel,
            "text": msg.text,
            "blocks": msg.blocks,
            "unfurl_links": false,
            "unfurl_media": false,
        });
        let posted = self.call("chat.postMessage", &body).await?;
        // The charts, in the message's thread, through Slack's external
        // upload flow: an upload URL per file, the bytes, then one call
        // that shares them.
        let http = crate::pager::http::Http::default();
        let mut files = Vec::new();
        for chart in crate::chart::charts(report) {
            let length = chart.png.len().to_string();
            let alt = crate::view::cut(&chart.alt, 1000);
            let got = self
                .api
                .get(
                    "files.getUploadURLExternal",
                    &[
                        ("filename", chart.name),
                        ("length", &length),
                        ("alt_txt", &alt),
                    ],
                )
                .await
                .map_err(|e| e.to_string())?;
            let (Some(url), Some(id)) = (got["upload_url"].as_str(), got["file_id"].as_str())
            else {
                return Err(format!(
                    "files.getUploadURLExternal answered without an upload_url and file_id: {got}"
                ));
            };
            http.post(url, "image/png", &[], chart.png.into())
                .await
                .map_err(|e| format!("uploading {}: {e}", chart.name))?;
            files.push(json!({"id": id, "title": chart.title}));
        }
        let mut complete = json!({"files": files, "channel_id": channel});
        if let Some(ts) = posted["ts"].as_str() {
            complete["thread_ts"] = json!(ts);
        }
        self.call("files.completeUploadExternal", &complete)
            .await
            .map(drop)
    }

    /// A call to Slack that must report a result.
    async fn call(&self, method: &str, body: &Value) -> Result<Value, String> {
        self.api.post(method, body).await.map_err(|e| e.to_string())
    }
}

impl Directory for Slack {
    fn admits<'a>(
        &'a self,
        id: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<bool, Refusal>> + Send + 'a>> {
        Box::pin(self.is_reviewer(id))
    }
}

impl chat::Adapter for Slack {
    const NAME: &'static str = "slack";
    const LABEL: &'static str = "Slack";

    fn bot(&self) -> &Arc<Bot> {
        &self.bot
    }

    fn destination(&self, req: &StoredRequest) -> String {
        self.cfg
            .channel_for(&req.runner, req.request.risk())
            .to_string()
    }

    async fn post(&self, destination: &str, view: &ReviewView) -> Result<Posted, String> {
        let msg = render::request_message(view);
        let body = json!({
            "channel": destination,
            "text": msg.text,
            "blocks": msg.blocks,
            "unfurl_links": false,
            "unfurl_media": false,
        });
        let answer = self.call("chat.postMessage", &body).await?;
        let ts = answer
            .get("ts")
            .and_then(Value::as_str)
            .ok_or("chat.postMessage returned no timestamp")?;
        let channel = answer
            .get("channel")
            .and_then(Value::as_str)
            .unwrap_or(destination);
        Ok(Posted {
            destination: channel.to_string(),
            handle: ts.to_string(),
        })
    }

    async fn update(&self, at: &Delivery, view: &ReviewView) -> Result<(), String> {
        let msg = render::request_message(view);
        let body = json!({
            "channel": at.destination,
            "ts": at.handle,
            "text": msg.text,
            "blocks": msg.blocks,
        });
        self.call("chat.update", &body).await.map(drop)
    }

    async fn reply(&self, at: &Delivery, view: &ReviewView) -> Result<(), String> {
        let reply = json!({
            "channel": at.destination,
            "thread_ts": at.handle,
            "text": render::thread_reply(view),
            "unfurl_links": false,
            "unfurl_media": false,
        });
        self.call("chat.postMessage", &reply).await.map(drop)
    }

    const ESCALATES: bool = true;

    async fn remind(&self, at: &Delivery, view: &ReviewView) -> Result<(), String> {
        let reply = json!({
            "channel": at.destination,
            "thread_ts": at.handle,
            "text": render::reminder(view, &self.cfg.reviewers),
            "unfurl_links": false,
            "unfurl_media": false,
        });
        self.call("chat.postMessage", &reply).await.map(drop)
    }

    async fn tell_requester(
        &self,
        req: &StoredRequest,
        view: &ReviewView,
        news: chat::News,
    ) -> Result<bool, String> {
        let Some(user) = chat::requester_in(req, Realm::Slack, render::is_slack_id) else {
            return Ok(false);
        };
        let text = match news {
            chat::News::Ended => render::requester_outcome(view),
            chat::News::Escalated => render::requester_escalated(view),
        };
        // A user id as the channel: the app's direct messages with them.
        let body = json!({
            "channel": user.id,
            "text": text,
            "unfurl_links": false,
            "unfurl_media": false,
        });
        self.call("chat.postMessage", &body).await.map(|_| true)
    }

    async fn notify(
        &self,
        _req: &StoredRequest,
        view: &ReviewView,
    ) -> Result<Option<Posted>, String> {
        let Some(channel) = self.cfg.pager_channel.as_deref() else {
            return Ok(None);
        };
        let oncall = if self.cfg.oncall.is_empty() {
            &self.cfg.reviewers
        } else {
            &self.cfg.oncall
        };
        let msg = render::pager_message(view, oncall);
        let body = json!({
            "channel": channel,
            "text": msg.text,
            "blocks": msg.blocks,
            "unfurl_links": false,
            "unfurl_media": false,
        });
        let answer = self.call("chat.postMessage", &body).await?;
        let ts = answer
            .get("ts")
            .and_then(Value::as_str)
            .ok_or("chat.postMessage returned no timestamp")?;
        let channel = answer
            .get("channel")
            .and_then(Value::as_str)
            .unwrap_or(channel);
        Ok(Some(Posted {
            destination: channel.to_string(),
            handle: ts.to_string(),
        }))
    }
}

//! Slack: every request that waits for a human is posted to a channel as a
//! Block Kit message with Approve and Deny buttons; a reviewer's click goes
//! through the request lifecycle like any other decision, and the message
//! is updated in place (and answered in its thread) when the request ends,
//! however it ended.
//!
//! Slack is a window onto the lifecycle, never a source of truth: a message
//! that cannot be posted leaves the request pending on the web queue (logged
//! and counted), and no failure of Slack's ever approves anything. The
//! message's channel and timestamp are stored, so updates work after a
//! restart; a periodic reconcile catches whatever a failure or a restart
//! missed.
//!
//! Several replicas may share the database. The stored row is also the
//! claim on the message: posting starts by inserting it (one insert wins),
//! updating by a guarded move from `open` to `finishing` (one update wins),
//! and only the winner calls Slack. Claims are leases, so one held by a
//! replica that died is taken over later.

pub mod api;
pub mod interact;
pub mod render;
pub mod socket;

use crate::config::SlackConfig;
use crate::entity::slack_message;
use crate::lifecycle::StoredRequest;
use crate::state::{Bot, Change};
use crate::time::now_ms;
use api::{Api, ApiError};
use axum::Router;
use axum::routing::post;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, QuerySelect, Set, TryInsertResult,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;

/// How often the reconcile pass runs.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(3);
/// How long a user group's members are cached.
pub const GROUP_CACHE_FOR: Duration = Duration::from_secs(300);
/// How long a replica's claim on posting or updating a message holds. A
/// replica that dies holding one delays that message by at most this long;
/// then another takes it over.
pub const CLAIM_LEASE: Duration = Duration::from_secs(90);
/// The longest a claimed call to Slack (retries included) may take: well
/// inside [`CLAIM_LEASE`], so a live holder never loses its claim.
pub const CALL_DEADLINE: Duration = Duration::from_secs(60);

fn lease_ms() -> i64 {
    i64::try_from(CLAIM_LEASE.as_millis()).unwrap_or(i64::MAX)
}

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
    /// This process, in the claims it takes on messages (several replicas
    /// may share one database).
    pub replica: String,
    pub(crate) seen: Mutex<interact::Seen>,
    groups: Mutex<HashMap<String, (Instant, Vec<String>)>>,
    /// One message operation per request at a time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Requests whose message could not be posted or updated: when to try
    /// again, and how many tries so far.
    retry_at: Mutex<HashMap<String, (Instant, u32)>>,
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
    let Some(cfg) = bot.config.slack.clone() else {
        return Ok(None);
    };
    install_crypto_provider();
    let api = Api::new(&cfg.api_url, &cfg.bot_token, cfg.app_token.as_deref())?;
    let slack = Arc::new(Slack {
        bot: bot.clone(),
        cfg,
        api,
        replica: crate::db::random_hex(8),
        seen: Mutex::new(interact::Seen::default()),
        groups: Mutex::new(HashMap::new()),
        locks: Mutex::new(HashMap::new()),
        retry_at: Mutex::new(HashMap::new()),
    });
    tokio::spawn(messages(slack.clone()));
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

/// Follows request changes; reconciles on a timer and after missed changes.
async fn messages(slack: Arc<Slack>) {
    let mut changes = slack.bot.subscribe();
    let mut tick = tokio::time::interval(RECONCILE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            c = changes.recv() => match c {
                Ok(Change::Submitted(id)) => {
                    tokio::spawn(post_request(slack.clone(), id));
                }
                Ok(Change::Decided(id)) => {
                    tokio::spawn(finish_request(slack.clone(), id));
                }
                Err(RecvError::Lagged(_)) => {
                    tokio::spawn(reconcile(slack.clone()));
                }
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                reconcile(slack.clone()).await;
            }
        }
    }
}

impl Slack {
    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.locks.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        if locks.len() > 10_000 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(id.to_string()).or_default().clone()
    }

    /// Whether a failed request message should wait before the next try.
    fn backing_off(&self, id: &str) -> bool {
        self.retry_at
            .lock()
            .ok()
            .and_then(|m| m.get(id).map(|(at, _)| Instant::now() < *at))
            .unwrap_or(false)
    }

    /// Counts a failed call for `id`; returns how long to wait before the
    /// next try.
    fn failed(&self, id: &str) -> Duration {
        let mut m = match self.retry_at.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let tries = m.get(id).map_or(0, |(_, n)| *n) + 1;
        let wait = Duration::from_secs(5u64.saturating_mul(1 << tries.min(6)));
        m.insert(id.to_string(), (Instant::now() + wait, tries));
        wait
    }

    fn succeeded(&self, id: &str) {
        if let Ok(mut m) = self.retry_at.lock() {
            m.remove(id);
        }
    }

    /// Whether Slack user `user` may decide; `Err` says why not, in mrkdwn.
    pub async fn may_review(&self, user: &str) -> Result<(), String> {
        if self.cfg.reviewers.iter().any(|r| r == user) {
            return Ok(());
        }
        let mut unknown = false;
        for group in self.cfg.reviewers.iter().filter(|r| r.starts_with('S')) {
            match self.group_members(group).await {
                Some(members) if members.iter().any(|m| m == user) => return Ok(()),
                Some(_) => {}
                None => unknown = true,
            }
        }
        if unknown {
            return Err(
                "holdpoint could not check the reviewer groups with Slack just now; nothing was decided. Try again in a moment.".into(),
            );
        }
        Err("You are not one of holdpoint's reviewers, so this click was not counted. Ask an admin to add you to `reviewers`.".into())
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
                self.bot.metrics.slack_failure("usergroups");
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
            self.bot.metrics.slack_failure("ephemeral");
            tracing::error!("Slack: cannot answer {user}: {e}");
        }
    }

    fn base_url(&self) -> String {
        self.bot.config.base_url()
    }
}

async fn message_row(
    slack: &Slack,
    id: &str,
) -> Result<Option<slack_message::Model>, sea_orm::DbErr> {
    slack_message::Entity::find_by_id(id.to_string())
        .one(&slack.bot.db)
        .await
}

/// A call to Slack, cut off at [`CALL_DEADLINE`] so it ends well inside the
/// claim it runs under.
async fn call(slack: &Slack, method: &str, body: &Value) -> Result<Value, String> {
    match tokio::time::timeout(CALL_DEADLINE, slack.api.post(method, body)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "Slack {method} took longer than {} s",
            CALL_DEADLINE.as_secs()
        )),
    }
}

/// Claims the posting of `id`'s message for this replica: inserts the row
/// in `posting` state (the request id is the primary key, so one insert
/// wins), or takes over a `posting` claim whose lease lapsed. `Ok(false)`:
/// someone else has it, or it is posted already.
async fn claim_post(slack: &Slack, id: &str, channel: &str) -> Result<bool, sea_orm::DbErr> {
    let now = now_ms();
    let lease = now.saturating_add(lease_ms());
    let claim = slack_message::ActiveModel {
        request_id: Set(id.to_string()),
        channel: Set(channel.to_string()),
        ts: Set(String::new()),
        posted_at: Set(now),
        final_status: Set(None),
        updated_at: Set(None),
        state: Set(slack_message::POSTING.to_string()),
        claimed_by: Set(Some(slack.replica.clone())),
        lease_until: Set(Some(lease)),
    };
    let inserted = slack_message::Entity::insert(claim)
        .on_conflict_do_nothing()
        .exec_without_returning(&slack.bot.db)
        .await?;
    if matches!(inserted, TryInsertResult::Inserted(n) if n > 0) {
        return Ok(true);
    }
    let taken = slack_message::Entity::update_many()
        .col_expr(
            slack_message::Column::ClaimedBy,
            Expr::value(slack.replica.as_str()),
        )
        .col_expr(slack_message::Column::LeaseUntil, Expr::value(lease))
        .col_expr(slack_message::Column::Channel, Expr::value(channel))
        .filter(slack_message::Column::RequestId.eq(id))
        .filter(slack_message::Column::State.eq(slack_message::POSTING))
        .filter(lapsed(now))
        .exec(&slack.bot.db)
        .await?;
    Ok(taken.rows_affected == 1)
}

/// No lease, or a lease that ended before `now`.
fn lapsed(now: i64) -> Condition {
    Condition::any()
        .add(slack_message::Column::LeaseUntil.is_null())
        .add(slack_message::Column::LeaseUntil.lt(now))
}

/// Gives up this replica's claim on `id` in `state`, turning it into
/// `then`, with the next try due after `wait`.
async fn release(slack: &Slack, id: &str, state: &str, then: &str, wait: Duration) {
    let retry_at = now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
    let released = slack_message::Entity::update_many()
        .col_expr(slack_message::Column::State, Expr::value(then))
        .col_expr(
            slack_message::Column::ClaimedBy,
            Expr::value(Option::<String>::None),
        )
        .col_expr(slack_message::Column::LeaseUntil, Expr::value(retry_at))
        .filter(slack_message::Column::RequestId.eq(id))
        .filter(slack_message::Column::State.eq(state))
        .filter(slack_message::Column::ClaimedBy.eq(slack.replica.as_str()))
        .exec(&slack.bot.db)
        .await;
    if let Err(e) = released {
        tracing::error!("Slack: cannot release the claim on the message of {id}: {e}");
    }
}

/// Posts the message for a pending request, once across every replica on
/// this database.
pub async fn post_request(slack: Arc<Slack>, id: String) {
    let lock = slack.lock_for(&id);
    let held = lock.lock().await;
    match message_row(&slack, &id).await {
        Ok(Some(row)) if row.state != slack_message::POSTING => return,
        Ok(_) => {}
        Err(e) => {
            tracing::error!("Slack: cannot read the message of {id}: {e}");
            return;
        }
    }
    let req = match slack.bot.get(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::error!("Slack: cannot read request {id}: {e}");
            return;
        }
    };
    if req.status.is_final() {
        // Decided before it could be shown: nothing to ask anyone.
        return;
    }
    let channel = slack
        .cfg
        .channel_for(&req.runner, req.request.risk())
        .to_string();
    match claim_post(&slack, &id, &channel).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::error!("Slack: cannot claim the message of {id}: {e}");
            return;
        }
    }
    let msg = render::request_message(&req, &slack.base_url());
    let body = json!({
        "channel": channel,
        "text": msg.text,
        "blocks": msg.blocks,
        "unfurl_links": false,
        "unfurl_media": false,
    });
    let answer = call(&slack, "chat.postMessage", &body).await;
    let posted = answer.as_ref().ok().and_then(|v| {
        let ts = v.get("ts").and_then(Value::as_str)?;
        let ch = v.get("channel").and_then(Value::as_str).unwrap_or(&channel);
        Some((ch.to_string(), ts.to_string()))
    });
    let Some((ch, ts)) = posted else {
        slack.bot.metrics.slack_failure("post");
        let wait = slack.failed(&id);
        match answer {
            Err(e) => tracing::error!(
                "Slack: cannot post request {id}; it stays pending on the web queue: {e}"
            ),
            Ok(_) => tracing::error!(
                "Slack: chat.postMessage for {id} returned no timestamp; it stays pending on the web queue"
            ),
        }
        release(
            &slack,
            &id,
            slack_message::POSTING,
            slack_message::POSTING,
            wait,
        )
        .await;
        return;
    };
    slack.succeeded(&id);
    let stored = slack_message::Entity::update_many()
        .col_expr(slack_message::Column::Channel, Expr::value(ch.as_str()))
        .col_expr(slack_message::Column::Ts, Expr::value(ts.as_str()))
        .col_expr(slack_message::Column::PostedAt, Expr::value(now_ms()))
        .col_expr(
            slack_message::Column::State,
            Expr::value(slack_message::OPEN),
        )
        .col_expr(
            slack_message::Column::ClaimedBy,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            slack_message::Column::LeaseUntil,
            Expr::value(Option::<i64>::None),
        )
        .filter(slack_message::Column::RequestId.eq(id.as_str()))
        .filter(slack_message::Column::State.eq(slack_message::POSTING))
        .filter(slack_message::Column::ClaimedBy.eq(slack.replica.as_str()))
        .exec(&slack.bot.db)
        .await;
    match stored {
        Ok(r) if r.rows_affected == 1 => {
            tracing::debug!("Slack: request {id} posted to {ch} as {ts}");
        }
        Ok(_) => {
            tracing::warn!(
                "Slack: posting request {id} took so long that another replica took it over; it may show twice"
            );
            return;
        }
        Err(e) => {
            tracing::error!("Slack: cannot store where the message of {id} is: {e}");
            return;
        }
    }
    drop(held);
    // Decided while it was being posted: update it now.
    if let Ok(Some(r)) = slack.bot.get(&id).await
        && r.status.is_final()
    {
        finish_request(slack, id).await;
    }
}

/// Updates the message of a decided request in place and answers in its
/// thread, once across every replica: the guarded move from `open` to
/// `finishing` decides who calls `chat.update`.
pub async fn finish_request(slack: Arc<Slack>, id: String) {
    let lock = slack.lock_for(&id);
    let _held = lock.lock().await;
    let now = now_ms();
    let row = match message_row(&slack, &id).await {
        Ok(Some(r))
            if r.state == slack_message::OPEN
                || (r.state == slack_message::FINISHING
                    && r.lease_until.is_none_or(|l| l < now)) =>
        {
            r
        }
        Ok(_) => return,
        Err(e) => {
            tracing::error!("Slack: cannot read the message of {id}: {e}");
            return;
        }
    };
    let req: StoredRequest = match slack.bot.get(&id).await {
        Ok(Some(r)) if r.status.is_final() => r,
        Ok(_) => return,
        Err(e) => {
            tracing::error!("Slack: cannot read request {id}: {e}");
            return;
        }
    };
    let claimed = slack_message::Entity::update_many()
        .col_expr(
            slack_message::Column::State,
            Expr::value(slack_message::FINISHING),
        )
        .col_expr(
            slack_message::Column::FinalStatus,
            Expr::value(req.status.as_str()),
        )
        .col_expr(
            slack_message::Column::ClaimedBy,
            Expr::value(slack.replica.as_str()),
        )
        .col_expr(
            slack_message::Column::LeaseUntil,
            Expr::value(now.saturating_add(lease_ms())),
        )
        .filter(slack_message::Column::RequestId.eq(id.as_str()))
        .filter(slack_message::Column::State.is_in([slack_message::OPEN, slack_message::FINISHING]))
        .filter(lapsed(now))
        .exec(&slack.bot.db)
        .await;
    match claimed {
        Ok(r) if r.rows_affected == 1 => {}
        Ok(_) => return,
        Err(e) => {
            tracing::error!("Slack: cannot claim the update of {id}: {e}");
            return;
        }
    }
    let msg = render::request_message(&req, &slack.base_url());
    let body = json!({
        "channel": row.channel,
        "ts": row.ts,
        "text": msg.text,
        "blocks": msg.blocks,
    });
    if let Err(e) = call(&slack, "chat.update", &body).await {
        slack.bot.metrics.slack_failure("update");
        let wait = slack.failed(&id);
        tracing::error!("Slack: cannot update the message of {id}: {e}");
        release(
            &slack,
            &id,
            slack_message::FINISHING,
            slack_message::OPEN,
            wait,
        )
        .await;
        return;
    }
    slack.succeeded(&id);
    // Recorded before the thread reply: a crash in between loses the reply
    // rather than repeating the update and the reply.
    let done = slack_message::Entity::update_many()
        .col_expr(
            slack_message::Column::State,
            Expr::value(slack_message::DONE),
        )
        .col_expr(slack_message::Column::UpdatedAt, Expr::value(now_ms()))
        .col_expr(
            slack_message::Column::ClaimedBy,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            slack_message::Column::LeaseUntil,
            Expr::value(Option::<i64>::None),
        )
        .filter(slack_message::Column::RequestId.eq(id.as_str()))
        .filter(slack_message::Column::State.eq(slack_message::FINISHING))
        .filter(slack_message::Column::ClaimedBy.eq(slack.replica.as_str()))
        .exec(&slack.bot.db)
        .await;
    match done {
        Ok(r) if r.rows_affected == 1 => {}
        Ok(_) => {
            tracing::warn!(
                "Slack: updating the message of {id} took so long that another replica took it over"
            );
            return;
        }
        Err(e) => tracing::error!("Slack: cannot record the update of {id}: {e}"),
    }
    let reply = json!({
        "channel": row.channel,
        "thread_ts": row.ts,
        "text": render::thread_reply(&req),
        "unfurl_links": false,
        "unfurl_media": false,
    });
    if let Err(e) = call(&slack, "chat.postMessage", &reply).await {
        slack.bot.metrics.slack_failure("thread");
        tracing::error!("Slack: cannot answer in the thread of {id}: {e}");
    }
}

/// Posts what is missing and updates what is stale: after a restart, a
/// failure, a decision made by another process, or a replica that died
/// holding a claim.
pub async fn reconcile(slack: Arc<Slack>) {
    let now = now_ms();
    match slack.bot.pending().await {
        Ok(pending) => {
            let ids: Vec<String> = pending.into_iter().map(|r| r.request.id).collect();
            let rows: HashMap<String, slack_message::Model> = match slack_message::Entity::find()
                .filter(slack_message::Column::RequestId.is_in(ids.iter().cloned()))
                .all(&slack.bot.db)
                .await
            {
                Ok(rows) => rows
                    .into_iter()
                    .map(|r| (r.request_id.clone(), r))
                    .collect(),
                Err(e) => {
                    tracing::error!("Slack: cannot list posted messages: {e}");
                    return;
                }
            };
            let missing = |id: &String| match rows.get(id) {
                None => true,
                // A claim whose holder died, or a failed post due again.
                Some(r) => {
                    r.state == slack_message::POSTING && r.lease_until.is_none_or(|l| l < now)
                }
            };
            for id in ids
                .iter()
                .filter(|id| missing(id) && !slack.backing_off(id))
                .take(20)
            {
                post_request(slack.clone(), id.clone()).await;
            }
        }
        Err(e) => tracing::error!("Slack: cannot list pending requests: {e}"),
    }
    let open = slack_message::Entity::find()
        .filter(slack_message::Column::State.is_in([slack_message::OPEN, slack_message::FINISHING]))
        .filter(lapsed(now))
        .limit(500)
        .all(&slack.bot.db)
        .await;
    match open {
        Ok(rows) => {
            for row in rows {
                if slack.backing_off(&row.request_id) {
                    continue;
                }
                if let Ok(Some(r)) = slack.bot.get(&row.request_id).await
                    && r.status.is_final()
                {
                    finish_request(slack.clone(), row.request_id).await;
                }
            }
        }
        Err(e) => tracing::error!("Slack: cannot list open messages: {e}"),
    }
}

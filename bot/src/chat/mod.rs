//! Chat adapters behind one interface, and the delivery engine they share.
//!
//! An adapter knows one chat: where a request goes, how to post the review
//! view, how to update it to the outcome and how to answer in its thread.
//! The [`Engine`] does the rest, once for every adapter: it follows the
//! core's change feed, claims each delivery so that one replica posts and
//! updates each message, retries failed calls with backoff, and reconciles
//! after a restart, a failure or a replica that died holding a claim.
//!
//! A chat is a window onto the core, never a source of truth: a message
//! that cannot be posted leaves the request pending on the web queue
//! (logged and counted), and no failure of a chat's ever approves anything.

use crate::core::{Bot, Change, Claim, Delivery, DeliveryState, FeedError, StoredRequest};
use crate::view::ReviewView;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the reconcile pass runs.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(3);
/// How long a replica's claim on posting or updating a message holds. A
/// replica that dies holding one delays that message by at most this long;
/// then another takes it over.
pub const CLAIM_LEASE: Duration = Duration::from_secs(90);
/// The longest a claimed call to a chat (retries included) may take: well
/// inside [`CLAIM_LEASE`], so a live holder never loses its claim.
pub const CALL_DEADLINE: Duration = Duration::from_secs(60);

fn lease_ms() -> i64 {
    i64::try_from(CLAIM_LEASE.as_millis()).unwrap_or(i64::MAX)
}

/// Where a posted message lives, as the chat reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The channel or room (a chat may answer with its canonical id).
    pub destination: String,
    /// The message's id there.
    pub handle: String,
}

/// One chat.
pub trait Adapter: Send + Sync + 'static {
    /// The adapter's name in the deliveries table, metrics and logs.
    const NAME: &'static str;

    /// The chat's display name in log lines (`Slack`).
    const LABEL: &'static str;

    fn bot(&self) -> &Arc<Bot>;

    /// Where a request is posted (a channel, a room), by its route.
    fn destination(&self, req: &StoredRequest) -> String;

    /// Posts the view of a pending request.
    fn post(
        &self,
        destination: &str,
        view: &ReviewView,
    ) -> impl Future<Output = Result<Posted, String>> + Send;

    /// Updates a posted message to the request's outcome.
    fn update(
        &self,
        at: &Delivery,
        view: &ReviewView,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Answers in the message's thread once it shows the outcome.
    fn reply(
        &self,
        at: &Delivery,
        view: &ReviewView,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// The delivery engine of one adapter.
pub struct Engine<A: Adapter> {
    adapter: Arc<A>,
    /// This process, in the claims it takes (replicas share a database).
    replica: String,
    /// One message operation per request at a time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Requests whose message could not be posted or updated: when to try
    /// again, and how many tries so far.
    retry_at: Mutex<HashMap<String, (Instant, u32)>>,
}

impl<A: Adapter> Engine<A> {
    /// Starts the engine's task: it follows the feed and reconciles on a
    /// timer until the process ends.
    pub fn start(adapter: Arc<A>) -> Arc<Engine<A>> {
        let engine = Arc::new(Engine {
            adapter,
            replica: crate::core::random_hex(8),
            locks: Mutex::new(HashMap::new()),
            retry_at: Mutex::new(HashMap::new()),
        });
        tokio::spawn(engine.clone().run());
        engine
    }

    fn bot(&self) -> &Arc<Bot> {
        self.adapter.bot()
    }

    async fn run(self: Arc<Self>) {
        let mut feed = self.bot().subscribe();
        let mut tick = tokio::time::interval(RECONCILE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // What changed while no process of ours followed the feed.
        let mut full = true;
        loop {
            tokio::select! {
                c = feed.next(self.bot()) => match c {
                    Ok(Change { request_id, status, .. }) => {
                        let engine = self.clone();
                        if status.is_final() {
                            tokio::spawn(async move { engine.finish(request_id).await });
                        } else {
                            tokio::spawn(async move { engine.post(request_id).await });
                        }
                    }
                    Err(FeedError::Closed) => return,
                    Err(FeedError::Db(e)) => {
                        tracing::error!("{}: {e}", A::LABEL);
                        full = true;
                        tick.tick().await;
                    }
                },
                _ = tick.tick() => {
                    self.reconcile(full).await;
                    full = false;
                }
            }
        }
    }

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

    /// Whether a failed message should wait before the next try.
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

    async fn release(&self, claim: Claim, wait: Duration) {
        let id = claim.request_id().to_string();
        let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        if let Err(e) = self.bot().release(claim, wait_ms).await {
            tracing::error!(
                "{}: cannot release the claim on the message of {id}: {e}",
                A::LABEL
            );
        }
    }

    fn view(&self, req: &StoredRequest) -> ReviewView {
        ReviewView::of(req, &self.bot().config().base_url())
    }

    /// Posts the message for a pending request, once across every replica
    /// on this database.
    pub async fn post(&self, id: String) {
        let label = A::LABEL;
        let lock = self.lock_for(&id);
        let held = lock.lock().await;
        match self.bot().delivery(A::NAME, &id).await {
            Ok(Some(d)) if d.state != DeliveryState::Posting => return,
            Ok(_) => {}
            Err(e) => {
                tracing::error!("{label}: cannot read the message of {id}: {e}");
                return;
            }
        }
        let req = match self.bot().get(&id).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("{label}: cannot read request {id}: {e}");
                return;
            }
        };
        if req.status.is_final() {
            // Decided before it could be shown: nothing to ask anyone.
            return;
        }
        let destination = self.adapter.destination(&req);
        let claim = match self
            .bot()
            .claim_post(A::NAME, &self.replica, &id, &destination, lease_ms())
            .await
        {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("{label}: cannot claim the message of {id}: {e}");
                return;
            }
        };
        let view = self.view(&req);
        let posted =
            match tokio::time::timeout(CALL_DEADLINE, self.adapter.post(&destination, &view)).await
            {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "posting took longer than {} s",
                    CALL_DEADLINE.as_secs()
                )),
            };
        let posted = match posted {
            Ok(p) => p,
            Err(e) => {
                self.bot().metrics().chat_failure(A::NAME, "post");
                let wait = self.failed(&id);
                tracing::error!(
                    "{label}: cannot post request {id}; it stays pending on the web queue: {e}"
                );
                self.release(claim, wait).await;
                return;
            }
        };
        self.succeeded(&id);
        match self
            .bot()
            .posted(claim, &posted.destination, &posted.handle)
            .await
        {
            Ok(true) => tracing::debug!(
                "{label}: request {id} posted to {} as {}",
                posted.destination,
                posted.handle
            ),
            Ok(false) => {
                tracing::warn!(
                    "{label}: posting request {id} took so long that another replica took it over; it may show twice"
                );
                return;
            }
            Err(e) => {
                tracing::error!("{label}: cannot store where the message of {id} is: {e}");
                return;
            }
        }
        drop(held);
        // Decided while it was being posted: update it now.
        if let Ok(Some(r)) = self.bot().get(&id).await
            && r.status.is_final()
        {
            self.finish(id).await;
        }
    }

    /// Updates the message of a decided request in place and answers in
    /// its thread, once across every replica.
    pub async fn finish(&self, id: String) {
        let label = A::LABEL;
        let lock = self.lock_for(&id);
        let _held = lock.lock().await;
        let now = self.bot().now_ms();
        match self.bot().delivery(A::NAME, &id).await {
            Ok(Some(d))
                if d.state == DeliveryState::Open
                    || (d.state == DeliveryState::Finishing && d.lapsed(now)) => {}
            Ok(_) => return,
            Err(e) => {
                tracing::error!("{label}: cannot read the message of {id}: {e}");
                return;
            }
        }
        let req = match self.bot().get(&id).await {
            Ok(Some(r)) if r.status.is_final() => r,
            Ok(_) => return,
            Err(e) => {
                tracing::error!("{label}: cannot read request {id}: {e}");
                return;
            }
        };
        let claim = match self
            .bot()
            .claim_finish(A::NAME, &self.replica, &id, req.status, lease_ms())
            .await
        {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("{label}: cannot claim the update of {id}: {e}");
                return;
            }
        };
        // Read again under the claim: where the message is.
        let at = match self.bot().delivery(A::NAME, &id).await {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("{label}: cannot read the message of {id}: {e}");
                self.release(claim, Duration::ZERO).await;
                return;
            }
        };
        let view = self.view(&req);
        let updated =
            match tokio::time::timeout(CALL_DEADLINE, self.adapter.update(&at, &view)).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "updating took longer than {} s",
                    CALL_DEADLINE.as_secs()
                )),
            };
        if let Err(e) = updated {
            self.bot().metrics().chat_failure(A::NAME, "update");
            let wait = self.failed(&id);
            tracing::error!("{label}: cannot update the message of {id}: {e}");
            self.release(claim, wait).await;
            return;
        }
        self.succeeded(&id);
        // Recorded before the thread reply: a crash in between loses the
        // reply rather than repeating the update and the reply.
        match self.bot().finished(claim).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    "{label}: updating the message of {id} took so long that another replica took it over"
                );
                return;
            }
            Err(e) => tracing::error!("{label}: cannot record the update of {id}: {e}"),
        }
        let replied = tokio::time::timeout(CALL_DEADLINE, self.adapter.reply(&at, &view)).await;
        if !matches!(replied, Ok(Ok(()))) {
            self.bot().metrics().chat_failure(A::NAME, "thread");
            let why = match replied {
                Ok(Err(e)) => e,
                _ => "it took too long".into(),
            };
            tracing::error!("{label}: cannot answer in the thread of {id}: {why}");
        }
    }

    /// Retries what failed and takes over claims whose holder died; with
    /// `full`, also posts what is missing and updates what is stale (at
    /// start, and after the feed could not be read). The feed announces
    /// every other change, so this is not a poll for decisions.
    pub async fn reconcile(&self, full: bool) {
        let label = A::LABEL;
        let now = self.bot().now_ms();
        let pending = if full {
            self.bot().pending_ids().await.map_err(|e| e.to_string())
        } else {
            self.bot()
                .retries_due(A::NAME, DeliveryState::Posting, 20)
                .await
                .map_err(|e| e.to_string())
        };
        match pending {
            Ok(ids) => {
                let ids: Vec<String> = ids;
                let rows = match self.bot().deliveries_of(A::NAME, &ids).await {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::error!("{label}: cannot list posted messages: {e}");
                        return;
                    }
                };
                let missing = |id: &String| match rows.get(id) {
                    None => true,
                    // A claim whose holder died, or a failed post due again.
                    Some(d) => d.state == DeliveryState::Posting && d.lapsed(now),
                };
                for id in ids
                    .iter()
                    .filter(|id| missing(id) && !self.backing_off(id))
                    .take(20)
                {
                    self.post(id.clone()).await;
                }
            }
            Err(e) => tracing::error!("{label}: cannot list pending requests: {e}"),
        }
        let unfinished = if full {
            self.bot().unfinished_deliveries(A::NAME, 500).await
        } else {
            self.bot()
                .retries_due(A::NAME, DeliveryState::Open, 500)
                .await
        };
        match unfinished {
            Ok(ids) => {
                for id in ids {
                    if self.backing_off(&id) {
                        continue;
                    }
                    if let Ok(Some(r)) = self.bot().get(&id).await
                        && r.status.is_final()
                    {
                        self.finish(id).await;
                    }
                }
            }
            Err(e) => tracing::error!("{label}: cannot list open messages: {e}"),
        }
    }
}

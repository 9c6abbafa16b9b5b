//! Chat adapters behind one interface, and the delivery engine they share.
//!
//! An adapter knows one chat: where a request goes, how to post the review
//! view, how to update it to the outcome and how to answer in its thread.
//! The [`Engine`] does the rest, once for every adapter: it follows the
//! core's change feed, claims each delivery so that one replica posts and
//! updates each message, retries failed calls with backoff, and reconciles
//! after a restart, a failure or a replica that died holding a claim.
//!
//! Escalation steps reach the chats the same way: the core's sweep fires a
//! step and announces it on the feed; the engine claims its delivery
//! (once per chat across replicas), reminds in the request's thread or
//! posts it in the pager channel, and, when the request ends, updates the
//! pager channel's message to the outcome with the request's own.
//!
//! A chat is a window onto the core, never a source of truth: a message
//! that cannot be posted leaves the request pending on the web queue
//! (logged and counted), and no failure of a chat's ever approves anything.

use crate::config::StepAction;
use crate::core::{
    Bot, Change, Claim, Delivery, DeliveryState, FeedError, StepPost, StoredRequest,
};
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

/// What the requester of a request is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum News {
    /// It ended: the outcome, who decided and why.
    Ended,
    /// Nobody answered it yet: it was posted to the on-call people.
    Escalated,
}

/// The request's requester, when they are a person of `realm` whose id
/// `valid` accepts (for [`Adapter::tell_requester`]).
pub fn requester_in(
    req: &StoredRequest,
    realm: crate::core::Realm,
    valid: impl Fn(&str) -> bool,
) -> Option<crate::core::Reviewer> {
    req.request
        .requested_by
        .as_deref()
        .and_then(crate::core::Reviewer::parse)
        .filter(|r| r.realm == realm && valid(&r.id))
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

    /// Whether this chat carries escalation steps ([`Adapter::remind`],
    /// [`Adapter::notify`]); one that does not leaves them to the others
    /// and to the web queue.
    const ESCALATES: bool = false;

    /// An escalation step: reminds the reviewers in the thread of the
    /// request's message, mentioning them.
    fn remind(
        &self,
        _at: &Delivery,
        _view: &ReviewView,
    ) -> impl Future<Output = Result<(), String>> + Send {
        let e = format!("{} does not remind", Self::LABEL);
        async move { Err(e) }
    }

    /// An escalation step: posts the request, with its actions, in the
    /// pager channel or room, mentioning the on-call people. `None`: this
    /// chat has no pager channel for it.
    fn notify(
        &self,
        _req: &StoredRequest,
        _view: &ReviewView,
    ) -> impl Future<Output = Result<Option<Posted>, String>> + Send {
        async { Ok(None) }
    }

    /// Tells the request's requester `news` in a direct message, when the
    /// requester is a person of this chat. `Ok(false)`: not one of this
    /// chat's people (or no requester).
    fn tell_requester(
        &self,
        _req: &StoredRequest,
        _view: &ReviewView,
        _news: News,
    ) -> impl Future<Output = Result<bool, String>> + Send {
        async { Ok(false) }
    }
}

/// The delivery engine of one adapter.
pub struct Engine<A: Adapter> {
    adapter: Arc<A>,
    /// This process, in the claims it takes (replicas share a database).
    replica: String,
    /// One message operation per request at a time.
    locks: Locks,
    /// Requests whose message could not be posted or updated.
    retry: Backoff,
}

/// One operation per request at a time, across the tasks of one engine.
#[derive(Default)]
pub struct Locks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Locks {
    /// The lock of request `id`.
    pub fn of(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.0.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        if locks.len() > 10_000 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(id.to_string()).or_default().clone()
    }
}

/// Failed calls by key: when to try again (twice the base after the
/// first failure, doubling up to 64 times the base), and how many tries
/// so far. In memory: the claims in the database make a retry safe from
/// any replica; this only spaces them out.
pub struct Backoff {
    base: Duration,
    tries: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Default for Backoff {
    /// A chat's: 10 s, then 20 s, up to 320 s.
    fn default() -> Backoff {
        Backoff::new(Duration::from_secs(5))
    }
}

impl Backoff {
    pub fn new(base: Duration) -> Backoff {
        Backoff {
            base,
            tries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` failed and should wait before the next try.
    pub fn waiting(&self, key: &str) -> bool {
        self.tries
            .lock()
            .ok()
            .and_then(|m| m.get(key).map(|(at, _)| Instant::now() < *at))
            .unwrap_or(false)
    }

    /// Counts a failed call for `key`; returns how long to wait before the
    /// next try (at least `at_least`, a pager's `Retry-After`).
    pub fn failed(&self, key: &str, at_least: Duration) -> Duration {
        let mut m = match self.tries.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if m.len() > 10_000 {
            let now = Instant::now();
            m.retain(|_, (at, _)| *at > now);
        }
        let tries = m.get(key).map_or(0, |(_, n)| *n) + 1;
        let wait = self.base.saturating_mul(1 << tries.min(6)).max(at_least);
        m.insert(key.to_string(), (Instant::now() + wait, tries));
        wait
    }

    pub fn succeeded(&self, key: &str) {
        if let Ok(mut m) = self.tries.lock() {
            m.remove(key);
        }
    }
}

impl<A: Adapter> Engine<A> {
    /// Starts the engine's task: it follows the feed and reconciles on a
    /// timer until the process ends.
    pub fn start(adapter: Arc<A>) -> Arc<Engine<A>> {
        let engine = Arc::new(Engine {
            adapter,
            replica: crate::core::random_hex(8),
            locks: Locks::default(),
            retry: Backoff::default(),
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
                    Ok(Change { request_id, status, step, .. }) => {
                        let engine = self.clone();
                        if let Some(n) = step {
                            if A::ESCALATES {
                                tokio::spawn(async move { engine.escalate(request_id, n).await });
                            }
                        } else if status.is_final() {
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
        self.locks.of(id)
    }

    /// Whether a failed message should wait before the next try.
    fn backing_off(&self, id: &str) -> bool {
        self.retry.waiting(id)
    }

    /// Counts a failed call for `id`; returns how long to wait before the
    /// next try.
    fn failed(&self, id: &str) -> Duration {
        self.retry.failed(id, Duration::ZERO)
    }

    fn succeeded(&self, id: &str) {
        self.retry.succeeded(id)
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
            Ok(Some(d)) if d.state == DeliveryState::Open => {
                // Posted already: a vote changed what it shows.
                self.refresh(&d).await;
                return;
            }
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

    /// Updates the posted messages of a pending request that counts votes
    /// (its own and those escalation posted in the pager channel), so
    /// they show the approvals so far. Any replica may: the text is the
    /// same, and the outcome's update is claimed.
    async fn refresh(&self, at: &Delivery) {
        let id = &at.request_id;
        let req = match self.bot().get(id).await {
            Ok(Some(r)) if !r.status.is_final() && r.quorum.counts_votes() => r,
            Ok(_) => return,
            Err(e) => {
                tracing::error!("{}: cannot read request {id}: {e}", A::LABEL);
                return;
            }
        };
        let view = self.view(&req);
        let mut places = vec![at.clone()];
        match self.bot().step_posts(A::NAME, id).await {
            Ok(posts) => places.extend(posts.into_iter().map(|p| Delivery {
                request_id: id.clone(),
                destination: p.destination,
                handle: p.handle,
                state: DeliveryState::Open,
                final_status: None,
                lease_until: None,
            })),
            Err(e) => {
                tracing::error!("{}: cannot list the pager messages of {id}: {e}", A::LABEL)
            }
        }
        for place in &places {
            let updated =
                tokio::time::timeout(CALL_DEADLINE, self.adapter.update(place, &view)).await;
            if !matches!(updated, Ok(Ok(()))) {
                self.bot().metrics().chat_failure(A::NAME, "update");
                tracing::error!(
                    "{}: cannot show the votes on the message of {id} in {}",
                    A::LABEL,
                    place.destination
                );
            }
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
        self.finish_pager_posts(&req, &view).await;
        self.tell(&req, &view, News::Ended).await;
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

    /// Updates the messages escalation posted in the pager channel to the
    /// outcome. Only the holder of the finish claim gets here, so each is
    /// updated once; one that fails keeps its buttons, and a click on them
    /// is told who decided.
    async fn finish_pager_posts(&self, req: &StoredRequest, view: &ReviewView) {
        let label = A::LABEL;
        let id = &req.request.id;
        let posts = match self.bot().step_posts(A::NAME, id).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("{label}: cannot list the pager messages of {id}: {e}");
                return;
            }
        };
        for StepPost {
            destination,
            handle,
        } in posts
        {
            let at = Delivery {
                request_id: id.clone(),
                destination,
                handle,
                state: DeliveryState::Finishing,
                final_status: Some(req.status),
                lease_until: None,
            };
            let updated = tokio::time::timeout(CALL_DEADLINE, self.adapter.update(&at, view)).await;
            if !matches!(updated, Ok(Ok(()))) {
                self.bot().metrics().chat_failure(A::NAME, "update");
                tracing::error!(
                    "{label}: cannot update the pager message of {id} in {}",
                    at.destination
                );
            }
        }
    }

    /// Tells the requester, if they are a person of this chat. Only the
    /// holder of a claim (the finish, a notify step) gets here, so it is
    /// said once.
    async fn tell(&self, req: &StoredRequest, view: &ReviewView, news: News) {
        let told =
            tokio::time::timeout(CALL_DEADLINE, self.adapter.tell_requester(req, view, news)).await;
        match told {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                self.bot().metrics().chat_failure(A::NAME, "dm");
                tracing::error!(
                    "{}: cannot tell the requester of {}: {e}",
                    A::LABEL,
                    req.request.id
                );
            }
            Err(_) => {
                self.bot().metrics().chat_failure(A::NAME, "dm");
                tracing::error!(
                    "{}: telling the requester of {} took too long",
                    A::LABEL,
                    req.request.id
                );
            }
        }
    }

    /// Delivers escalation step `n` of request `id` to this chat, once
    /// across every replica; never for a request that is no longer
    /// pending. A reminder waits until the request's message is posted.
    pub async fn escalate(&self, id: String, n: u32) {
        let label = A::LABEL;
        let key = format!("{id}#{n}");
        let lock = self.lock_for(&id);
        let _held = lock.lock().await;
        let step = match self.bot().escalation_of(&id).await {
            Ok(steps) => steps.into_iter().find(|s| s.step == n),
            Err(e) => {
                tracing::error!("{label}: cannot read the escalation of {id}: {e}");
                return;
            }
        };
        let Some(step) = step.filter(|s| s.fired_at.is_some()) else {
            return;
        };
        let req = match self.bot().get(&id).await {
            Ok(Some(r)) if !r.status.is_final() => r,
            Ok(_) => return,
            Err(e) => {
                tracing::error!("{label}: cannot read request {id}: {e}");
                return;
            }
        };
        let at = match self.bot().delivery(A::NAME, &id).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("{label}: cannot read the message of {id}: {e}");
                return;
            }
        };
        let at = match (step.action, at) {
            (StepAction::Remind, Some(d)) if d.state == DeliveryState::Open => Some(d),
            // No thread to remind in yet: the reconcile pass comes back.
            (StepAction::Remind, _) => return,
            (StepAction::Notify, d) => d,
            // Pages are the pager engine's (`crate::pager`).
            (StepAction::Page, _) => return,
        };
        let claim = match self
            .bot()
            .claim_step(A::NAME, &self.replica, &id, n, lease_ms())
            .await
        {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("{label}: cannot claim escalation step {n} of {id}: {e}");
                return;
            }
        };
        let view = self.view(&req);
        let sent = match (step.action, &at) {
            (StepAction::Remind, Some(at)) => {
                tokio::time::timeout(CALL_DEADLINE, self.adapter.remind(at, &view))
                    .await
                    .map(|r| r.map(|()| None))
            }
            _ => tokio::time::timeout(CALL_DEADLINE, self.adapter.notify(&req, &view)).await,
        };
        let sent = sent.unwrap_or_else(|_| Err("it took too long".into()));
        match sent {
            Ok(posted) => {
                self.succeeded(&key);
                let post = posted.map(|p| StepPost {
                    destination: p.destination,
                    handle: p.handle,
                });
                match self.bot().step_sent(claim, post.as_ref()).await {
                    Ok(true) => {
                        self.bot().metrics().escalation_sent(step.action);
                        if step.action == StepAction::Notify {
                            self.tell(&req, &view, News::Escalated).await;
                        }
                        tracing::info!(
                            "{label}: request {id}: escalation step {n} ({}) delivered {} ms after it was due",
                            step.action.as_str(),
                            self.bot().now_ms().saturating_sub(step.due_at)
                        );
                    }
                    Ok(false) => tracing::warn!(
                        "{label}: escalation step {n} of {id} took so long that another replica took it over; it may show twice"
                    ),
                    Err(e) => {
                        tracing::error!("{label}: cannot record escalation step {n} of {id}: {e}")
                    }
                }
            }
            Err(e) => {
                self.bot()
                    .metrics()
                    .chat_failure(A::NAME, step.action.as_str());
                let wait = self.failed(&key);
                tracing::error!(
                    "{label}: cannot deliver escalation step {n} ({}) of {id}: {e}",
                    step.action.as_str()
                );
                let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                if let Err(e) = self.bot().release_step(claim, wait_ms).await {
                    tracing::error!("{label}: cannot release escalation step {n} of {id}: {e}");
                }
            }
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
        if A::ESCALATES {
            match self
                .bot()
                .steps_to_send(A::NAME, &[StepAction::Remind, StepAction::Notify], 100)
                .await
            {
                Ok(steps) => {
                    for (id, n) in steps {
                        if !self.backing_off(&format!("{id}#{n}")) {
                            self.escalate(id, n).await;
                        }
                    }
                }
                Err(e) => tracing::error!("{label}: cannot list escalation steps to send: {e}"),
            }
        }
    }
}

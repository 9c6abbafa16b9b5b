//! Pagers: a `page` escalation step opens an incident on PagerDuty (Events
//! API v2) or an alert on Opsgenie, and the request's end, however it
//! ends, resolves it.
//!
//! A pager is not a chat: nobody decides on it. The on-call person it
//! wakes follows its link to the web queue, Slack or Matrix. So the
//! [`Engine`] here is small, but it keeps the chat engine's rules: it
//! follows the change feed, claims each delivery in `escalation_sends`
//! (one replica sends each page; a restart or a dead replica's lapsed
//! claim is taken over), retries 429, 5xx and silence with backoff, and
//! records a refusal (a 400 and its reason) so that it is counted and
//! never retried. The incident's key is derived from the request id
//! ([`dedup_key`]), so even a page sent twice (a crash between the call
//! and its record) opens one incident.
//!
//! It must never decide anything, and never log a key: the integration
//! keys are in headers and bodies, which are not logged.

pub mod http;
pub mod opsgenie;
pub mod pagerduty;

use crate::chat::{Backoff, CALL_DEADLINE, CLAIM_LEASE, Locks, RECONCILE_EVERY};
use crate::config::StepAction;
use crate::core::{Bot, Change, FeedError, PageState, StepPost, StoredRequest};
use crate::view::ReviewView;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Why a call to a pager failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// 429, 5xx, 408, a timeout or a broken connection: try again (not
    /// before `after`, when the pager said).
    #[error("{why} (will try again)")]
    Retry {
        after: Option<Duration>,
        why: String,
    },
    /// The pager refused it (a 400 with its reason): never retried.
    #[error("refused: {0}")]
    Refused(String),
}

/// What a pager is told about one request.
pub struct Page<'a> {
    pub view: &'a ReviewView,
    /// The incident's dedup key, the alert's alias: [`dedup_key`].
    pub key: String,
    /// The command as a reviewer sees it (redacted by the runner, hidden
    /// characters made visible, cut in the middle when long).
    pub command: String,
}

impl<'a> Page<'a> {
    pub fn of(view: &'a ReviewView) -> Page<'a> {
        Page {
            key: dedup_key(&view.id),
            command: view.command.clone(),
            view,
        }
    }

    /// One line: what waits, where.
    pub fn summary(&self) -> String {
        let runner = self
            .view
            .fields
            .iter()
            .find(|(k, _)| *k == "Runner")
            .map_or("", |(_, v)| v.as_str());
        format!(
            "holdpoint: {} on {runner} waits for a reviewer ({} risk)",
            self.view.summary,
            self.view.risk.as_str()
        )
    }
}

/// The key that ties a pager's incident to a request: the same for every
/// try, every replica and every step.
pub fn dedup_key(request_id: &str) -> String {
    format!("holdpoint-{request_id}")
}

/// One pager.
pub trait Pager: Send + Sync + 'static {
    /// Its name in `escalation_sends`, metrics and the web queue.
    const NAME: &'static str;
    /// Its name in log lines.
    const LABEL: &'static str;

    /// Opens (or, with the same key, adds to) the incident.
    fn trigger(&self, page: &Page<'_>) -> impl Future<Output = Result<(), PageError>> + Send;

    /// Resolves the incident; `page.view` shows the outcome.
    fn resolve(&self, page: &Page<'_>) -> impl Future<Output = Result<(), PageError>> + Send;
}

fn lease_ms() -> i64 {
    i64::try_from(CLAIM_LEASE.as_millis()).unwrap_or(i64::MAX)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The running pager engines: one per configured pager.
pub struct Started {
    pub pagerduty: Option<Arc<Engine<pagerduty::PagerDuty>>>,
    pub opsgenie: Option<Arc<Engine<opsgenie::Opsgenie>>>,
}

/// The pager engines of the configured pagers, started.
pub fn start(bot: &Arc<Bot>) -> Started {
    let pagers = bot.config().pagers.clone();
    if pagers.any() {
        // One TLS provider for the process (the first install wins).
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let pd = pagers.pagerduty.map(|c| {
        tracing::info!("PagerDuty: page steps trigger incidents at {}", c.url);
        Engine::start(bot.clone(), pagerduty::PagerDuty::new(c))
    });
    let og = pagers.opsgenie.map(|c| {
        tracing::info!("Opsgenie: page steps create alerts at {}", c.url);
        Engine::start(bot.clone(), opsgenie::Opsgenie::new(c))
    });
    Started {
        pagerduty: pd,
        opsgenie: og,
    }
}

/// The delivery engine of one pager.
pub struct Engine<P: Pager> {
    pager: P,
    bot: Arc<Bot>,
    replica: String,
    locks: Locks,
    retry: Backoff,
}

impl<P: Pager> Engine<P> {
    pub fn start(bot: Arc<Bot>, pager: P) -> Arc<Engine<P>> {
        let engine = Arc::new(Engine {
            pager,
            bot,
            replica: crate::core::random_hex(8),
            locks: Locks::default(),
            // 2 s after the first failure, doubling to about 2 min: a
            // page is urgent, and a pager's 429 says when to come back.
            retry: Backoff::new(Duration::from_secs(1)),
        });
        tokio::spawn(engine.clone().run());
        engine
    }

    async fn run(self: Arc<Self>) {
        let mut feed = self.bot.subscribe();
        let mut tick = tokio::time::interval(RECONCILE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                c = feed.next(&self.bot) => match c {
                    Ok(Change { request_id, status, step, .. }) => {
                        let engine = self.clone();
                        if let Some(n) = step {
                            tokio::spawn(async move { engine.page(request_id, n).await });
                        } else if status.is_final() {
                            tokio::spawn(async move { engine.resolve_all(request_id).await });
                        }
                    }
                    Err(FeedError::Closed) => return,
                    Err(FeedError::Db(e)) => {
                        tracing::error!("{}: {e}", P::LABEL);
                        tick.tick().await;
                    }
                },
                _ = tick.tick() => self.reconcile().await,
            }
        }
    }

    fn view(&self, req: &StoredRequest) -> ReviewView {
        ReviewView::of(req, &self.bot.config().base_url())
    }

    /// Sends page step `n` of request `id`, once across every replica,
    /// only while the request waits.
    pub async fn page(&self, id: String, n: u32) {
        let label = P::LABEL;
        let key = format!("{id}#{n}");
        let lock = self.locks.of(&id);
        let held = lock.lock().await;
        let step = match self.bot.escalation_of(&id).await {
            Ok(steps) => steps.into_iter().find(|s| s.step == n),
            Err(e) => {
                tracing::error!("{label}: cannot read the escalation of {id}: {e}");
                return;
            }
        };
        let Some(step) = step.filter(|s| s.action == StepAction::Page && s.fired_at.is_some())
        else {
            return;
        };
        let req = match self.bot.get(&id).await {
            Ok(Some(r)) if !r.status.is_final() => r,
            Ok(_) => return,
            Err(e) => {
                tracing::error!("{label}: cannot read request {id}: {e}");
                return;
            }
        };
        let claim = match self
            .bot
            .claim_step(P::NAME, &self.replica, &id, n, lease_ms())
            .await
        {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("{label}: cannot claim page step {n} of {id}: {e}");
                return;
            }
        };
        let view = self.view(&req);
        let page = Page::of(&view);
        let sent = tokio::time::timeout(CALL_DEADLINE, self.pager.trigger(&page))
            .await
            .unwrap_or_else(|_| {
                Err(PageError::Retry {
                    after: None,
                    why: "it took too long".into(),
                })
            });
        let metrics = self.bot.metrics();
        match sent {
            Ok(()) => {
                self.retry.succeeded(&key);
                let post = StepPost {
                    destination: P::NAME.to_string(),
                    handle: page.key.clone(),
                };
                match self.bot.step_sent(claim, Some(&post)).await {
                    Ok(true) => {
                        metrics.page(P::NAME, "sent");
                        metrics.escalation_sent(StepAction::Page);
                        tracing::info!(
                            "{label}: request {id}: paged ({}) {} ms after the step was due",
                            page.key,
                            self.bot.now_ms().saturating_sub(step.due_at)
                        );
                    }
                    Ok(false) => tracing::warn!(
                        "{label}: paging for {id} took so long that another replica took it over; the same key opens one incident"
                    ),
                    Err(e) => tracing::error!("{label}: cannot record the page of {id}: {e}"),
                }
            }
            Err(PageError::Retry { after, why }) => {
                metrics.page(P::NAME, "retried");
                let wait = self.retry.failed(&key, after.unwrap_or(Duration::ZERO));
                tracing::warn!(
                    "{label}: cannot page for {id} yet ({why}); trying again in {} s",
                    wait.as_secs()
                );
                if let Err(e) = self.bot.release_step(claim, ms(wait)).await {
                    tracing::error!("{label}: cannot release page step {n} of {id}: {e}");
                }
            }
            Err(PageError::Refused(why)) => {
                metrics.page(P::NAME, "failed");
                tracing::error!(
                    "{label}: refused the page for {id}, which is not sent again: {why}"
                );
                if let Err(e) = self.bot.step_refused(claim, &why).await {
                    tracing::error!("{label}: cannot record the refused page of {id}: {e}");
                }
            }
        }
        drop(held);
        // Ended while it was being paged: resolve it now.
        if let Ok(Some(r)) = self.bot.get(&id).await
            && r.status.is_final()
        {
            self.resolve_all(id).await;
        }
    }

    /// Resolves every open page of request `id`, which has ended.
    pub async fn resolve_all(&self, id: String) {
        let pages = match self.bot.pages_of(std::slice::from_ref(&id)).await {
            Ok(mut p) => p.remove(&id).unwrap_or_default(),
            Err(e) => {
                tracing::error!("{}: cannot list the pages of {id}: {e}", P::LABEL);
                return;
            }
        };
        for p in pages
            .into_iter()
            .filter(|p| p.pager == P::NAME && p.state == PageState::Open)
        {
            self.resolve(&id, p.step).await;
        }
    }

    async fn resolve(&self, id: &str, n: u32) {
        let label = P::LABEL;
        let key = format!("{id}#{n}/resolve");
        let lock = self.locks.of(id);
        let _held = lock.lock().await;
        let req = match self.bot.get(id).await {
            Ok(Some(r)) if r.status.is_final() => r,
            Ok(_) => return,
            Err(e) => {
                tracing::error!("{label}: cannot read request {id}: {e}");
                return;
            }
        };
        let claim = match self
            .bot
            .claim_resolve(P::NAME, &self.replica, id, n, lease_ms())
            .await
        {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("{label}: cannot claim resolving the page of {id}: {e}");
                return;
            }
        };
        let view = self.view(&req);
        let page = Page::of(&view);
        let done = tokio::time::timeout(CALL_DEADLINE, self.pager.resolve(&page))
            .await
            .unwrap_or_else(|_| {
                Err(PageError::Retry {
                    after: None,
                    why: "it took too long".into(),
                })
            });
        let metrics = self.bot.metrics();
        match done {
            Ok(()) => {
                self.retry.succeeded(&key);
                match self.bot.page_resolved(claim).await {
                    Ok(true) => {
                        metrics.page(P::NAME, "resolved");
                        tracing::info!(
                            "{label}: request {id} ended ({}); its page {} is resolved",
                            req.status.as_str(),
                            page.key
                        );
                    }
                    Ok(false) => tracing::warn!(
                        "{label}: resolving the page of {id} took so long that another replica took it over"
                    ),
                    Err(e) => {
                        tracing::error!("{label}: cannot record resolving the page of {id}: {e}")
                    }
                }
            }
            Err(PageError::Retry { after, why }) => {
                metrics.page(P::NAME, "retried");
                let wait = self.retry.failed(&key, after.unwrap_or(Duration::ZERO));
                tracing::warn!(
                    "{label}: cannot resolve the page of {id} yet ({why}); trying again in {} s",
                    wait.as_secs()
                );
                if let Err(e) = self.bot.release_resolve(claim, ms(wait), None).await {
                    tracing::error!("{label}: cannot release resolving the page of {id}: {e}");
                }
            }
            Err(PageError::Refused(why)) => {
                metrics.page(P::NAME, "failed");
                tracing::error!(
                    "{label}: refused resolving the page of {id}, which is not tried again: {why}"
                );
                if let Err(e) = self.bot.release_resolve(claim, 0, Some(&why)).await {
                    tracing::error!("{label}: cannot record the refusal for {id}: {e}");
                }
            }
        }
    }

    /// Sends the pages a restart, a failed call or a dead replica left
    /// behind, and resolves those whose request ended meanwhile.
    pub async fn reconcile(&self) {
        match self
            .bot
            .steps_to_send(P::NAME, &[StepAction::Page], 100)
            .await
        {
            Ok(steps) => {
                for (id, n) in steps {
                    if !self.retry.waiting(&format!("{id}#{n}")) {
                        self.page(id, n).await;
                    }
                }
            }
            Err(e) => tracing::error!("{}: cannot list pages to send: {e}", P::LABEL),
        }
        match self.bot.pages_to_resolve(P::NAME, 100).await {
            Ok(pages) => {
                for (id, n) in pages {
                    if !self.retry.waiting(&format!("{id}#{n}/resolve")) {
                        self.resolve(&id, n).await;
                    }
                }
            }
            Err(e) => tracing::error!("{}: cannot list pages to resolve: {e}", P::LABEL),
        }
    }
}

//! The durable change feed.
//!
//! Every transition writes a row to `changes` in its own transaction
//! ([`record`]). One reader per process ([`Bot::run_feed`]) tails the table
//! in sequence order and broadcasts each row, so a decision made by the
//! CLI or by another replica reaches this process's runners, pages and
//! chats exactly as one made here does. A [`Subscription`] that falls
//! behind the broadcast resumes from its last sequence number by reading
//! the table, so nothing between is skipped.

use super::Bot;
use super::entity::change;
use holdpoint_shared::protocol::Status;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, broadcast};

/// How often the reader looks for changes committed by other processes
/// when nothing in this process woke it.
pub const POLL: Duration = Duration::from_millis(250);

/// The most rows one read of the feed returns.
const PAGE: u64 = 500;

/// How long change rows are kept. They are notifications, not the record:
/// the audit log keeps every transition for good.
pub const KEEP_MS: i64 = 24 * 3600 * 1000;

/// A request moved to `status`, or (with `step`) one of its escalation
/// steps fired while it stays `pending`; `seq` orders every change in the
/// database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub request_id: String,
    pub status: Status,
    /// The escalation step that fired (its place in the policy); `None`
    /// for a transition.
    pub step: Option<u32>,
}

impl Change {
    fn from_row(r: change::Model) -> Option<Change> {
        Some(Change {
            seq: r.seq,
            status: Status::parse(&r.status)?,
            request_id: r.request_id,
            step: r.step.and_then(|s| u32::try_from(s).ok()),
        })
    }
}

/// The process's end of the feed.
pub(super) struct Feed {
    tx: broadcast::Sender<Change>,
    wake: Notify,
    /// The highest sequence number broadcast so far; -1 before the reader
    /// started.
    head: AtomicI64,
}

impl Feed {
    pub(super) fn new() -> Feed {
        let (tx, _) = broadcast::channel(1024);
        Feed {
            tx,
            wake: Notify::new(),
            head: AtomicI64::new(-1),
        }
    }

    /// A transition committed here: read the feed now rather than at the
    /// next poll.
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Writes the change row of a transition, inside its transaction.
pub(super) async fn record<C: ConnectionTrait>(
    txn: &C,
    request_id: &str,
    status: Status,
    at: i64,
) -> Result<(), DbErr> {
    change::ActiveModel {
        request_id: Set(request_id.to_string()),
        status: Set(status.as_str().to_string()),
        at: Set(at),
        ..Default::default()
    }
    .insert(txn)
    .await?;
    Ok(())
}

/// Writes the change row that announces a fired escalation step, inside
/// the transaction that fired it.
pub(super) async fn record_step<C: ConnectionTrait>(
    txn: &C,
    request_id: &str,
    step: u32,
    at: i64,
) -> Result<(), DbErr> {
    change::ActiveModel {
        request_id: Set(request_id.to_string()),
        status: Set(Status::Pending.as_str().to_string()),
        at: Set(at),
        step: Set(Some(i32::try_from(step).unwrap_or(i32::MAX))),
        ..Default::default()
    }
    .insert(txn)
    .await?;
    Ok(())
}

/// Why a subscription yields nothing.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("the bot is shutting down")]
    Closed,
    #[error("cannot read the change feed: {0}")]
    Db(#[from] DbErr),
}

/// One subscriber's place in the feed.
pub struct Subscription {
    rx: broadcast::Receiver<Change>,
    /// The last sequence number this subscriber saw.
    seen: i64,
    /// Rows read from the table after falling behind, oldest first.
    backlog: std::collections::VecDeque<Change>,
    /// Behind the broadcast: read the table before listening again.
    behind: bool,
}

impl Subscription {
    /// The last sequence number this subscriber saw.
    pub fn position(&self) -> i64 {
        self.seen
    }

    /// The next change after the last one seen. After a lag it reads the
    /// missed rows from the database; an error leaves the position where it
    /// was, so the next call tries again.
    ///
    /// It is cancel-safe (a `select!` may drop it at any await): its place
    /// moves only when it returns a change.
    pub async fn next(&mut self, bot: &Bot) -> Result<Change, FeedError> {
        loop {
            if let Some(c) = self.backlog.pop_front() {
                if c.seq > self.seen {
                    self.seen = c.seq;
                    return Ok(c);
                }
                continue;
            }
            if self.behind {
                let rows = bot.changes_since(self.seen).await?;
                // A full page: more may follow; read on before listening.
                self.behind = rows.len() as u64 == PAGE;
                self.backlog = rows.into();
                continue;
            }
            match self.rx.recv().await {
                Ok(c) if c.seq <= self.seen => continue,
                Ok(c) => {
                    self.seen = c.seq;
                    return Ok(c);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => self.behind = true,
                Err(broadcast::error::RecvError::Closed) => return Err(FeedError::Closed),
            }
        }
    }
}

impl Bot {
    /// Subscribes to changes from now on.
    pub fn subscribe(&self) -> Subscription {
        let rx = self.feed.tx.subscribe();
        Subscription {
            rx,
            seen: self.feed.head.load(Ordering::SeqCst),
            backlog: Default::default(),
            behind: false,
        }
    }

    /// Changes after `seq`, oldest first, at most one page.
    pub async fn changes_since(&self, seq: i64) -> Result<Vec<Change>, DbErr> {
        Ok(change::Entity::find()
            .filter(change::Column::Seq.gt(seq))
            .order_by_asc(change::Column::Seq)
            .limit(PAGE)
            .all(&self.db)
            .await?
            .into_iter()
            .filter_map(Change::from_row)
            .collect())
    }

    /// The highest sequence number in the feed (0 when empty).
    async fn feed_head(&self) -> Result<i64, DbErr> {
        Ok(change::Entity::find()
            .order_by_desc(change::Column::Seq)
            .limit(1)
            .one(&self.db)
            .await?
            .map_or(0, |r| r.seq))
    }

    /// The process's feed reader: broadcasts every change in order and
    /// relays decisions to the runners connected here. Runs until the
    /// process stops; a database error is logged (at most once a minute)
    /// and the read is tried again.
    pub async fn run_feed(self: Arc<Bot>) {
        let mut last_error: Option<std::time::Instant> = None;
        let mut head = loop {
            match self.feed_head().await {
                Ok(h) => break h,
                Err(e) => {
                    if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        tracing::error!("cannot read the change feed: {e}");
                        last_error = Some(std::time::Instant::now());
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
        };
        self.feed.head.store(head, Ordering::SeqCst);
        loop {
            match self.changes_since(head).await {
                Ok(rows) => {
                    let full = rows.len() as u64 == PAGE;
                    for c in rows {
                        head = c.seq;
                        if c.status.is_final() {
                            self.relay(&c.request_id).await;
                        }
                        self.feed.head.store(head, Ordering::SeqCst);
                        // No subscriber is fine.
                        let _ = self.feed.tx.send(c);
                    }
                    if full {
                        continue;
                    }
                }
                Err(e) => {
                    if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        tracing::error!("cannot read the change feed: {e}");
                        last_error = Some(std::time::Instant::now());
                    }
                }
            }
            let _ = tokio::time::timeout(POLL, self.feed.wake.notified()).await;
        }
    }

    /// Sends the stored decision on `id` to the connection here that waits
    /// for it, if any (a decision made by another process, or one whose
    /// first relay found no connection).
    async fn relay(&self, id: &str) {
        if !self.hub.waits_for(id) {
            return;
        }
        match self.get(id).await {
            Ok(Some(r)) => {
                if let Some(d) = r.decision() {
                    self.hub.deliver(&d);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!("cannot read request {id} to relay its decision: {e}"),
        }
    }

    /// Forgets change rows older than [`KEEP_MS`].
    pub(super) async fn prune_feed(&self) -> Result<u64, DbErr> {
        let before = self.now_ms().saturating_sub(KEEP_MS);
        Ok(change::Entity::delete_many()
            .filter(change::Column::At.lt(before))
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}

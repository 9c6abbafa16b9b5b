//! Group commit: the writes of the request lifecycle and the audit log, many
//! per transaction.
//!
//! Submissions, guarded moves (decisions, cancellations, expiries), runner
//! acks and audit appends are queued to one writer task per process. It
//! takes whatever is queued (up to [`BATCH`] writes), applies it in order in
//! one transaction under the writer lock (the advisory lock on PostgreSQL,
//! the single writer of SQLite), links every audit row of the batch to the
//! chain in memory, inserts the audit and change rows with one statement
//! each, commits once, and only then answers each caller. Each write sees
//! the ones before it in its batch, so a batch means exactly what the same
//! writes one transaction each would mean; under load the cost of a commit
//! (and PostgreSQL's flush to disk) is shared by every write in it.
//!
//! A batch that fails is retried; one that still fails is split and each
//! write is tried alone, so one bad write cannot fail the others. A caller
//! hears of its write only after the commit, or an error: nothing is
//! relayed, and no command runs, on a write that did not commit.

use super::audit::{self, Chain, NewEvent};
use super::entity::{change, request, runner};
use crate::config::Step;
use holdpoint_shared::protocol::Status;
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait,
    QueryFilter, Set,
};
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};

/// The most writes one transaction takes.
const BATCH: usize = 256;

/// Tries of a whole batch before it is split.
const BATCH_TRIES: u32 = 3;

/// A new request, with what its insert is guarded by.
pub(super) struct NewRequest {
    pub id: String,
    pub model: request::ActiveModel,
    pub runner_id: i64,
    /// The runner's pending limit.
    pub pending_cap: u64,
    pub steps: Vec<Step>,
    pub event: NewEvent,
    pub now: i64,
}

/// A guarded move pending → `to`.
pub(super) struct Move {
    pub id: String,
    pub to: Status,
    pub at: i64,
    pub decided_by: String,
    pub reason: Option<String>,
    /// Only before the deadline (a reviewer's decision).
    pub before_deadline: bool,
    pub event: NewEvent,
}

/// One write.
pub(super) enum Write {
    Submit(Box<NewRequest>),
    Move(Box<Move>),
    /// Events whose ids may be stored already (a runner's, sent again).
    Append {
        events: Vec<NewEvent>,
        at: i64,
    },
    /// The runner has the decision on `id`.
    Ack {
        id: String,
        runner_id: i64,
        at: i64,
    },
}

/// What became of a new submission's insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stored {
    New,
    /// The id was there already: a re-submission.
    Again,
    /// The runner is at its pending limit.
    Full,
    /// The runner's identity was revoked.
    Revoked,
}

/// What a write did, once committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Written {
    Submit(Stored),
    /// Whether the guarded move happened.
    Move(bool),
    /// For each event, whether it was new.
    Append(Vec<bool>),
    Ack,
}

struct Job {
    write: Write,
    reply: oneshot::Sender<Result<Written, DbErr>>,
}

/// The process's queue to its writer task.
pub(super) struct Writer {
    tx: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// Starts the writer task on `db`; it stops when the `Writer` is dropped.
    pub(super) fn start(db: DatabaseConnection, lock: Arc<Mutex<()>>) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(db, lock, rx));
        Writer { tx }
    }

    /// Queues `write` and waits until it committed (or failed). The write
    /// commits even when the caller stops waiting.
    pub(super) async fn write(&self, write: Write) -> Result<Written, DbErr> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { write, reply })
            .map_err(|_| DbErr::Custom("the bot's writer has stopped".into()))?;
        rx.await
            .map_err(|_| DbErr::Custom("the bot's writer stopped before this write".into()))?
    }
}

impl Writer {
    /// Queues every write at once (so they share transactions) and waits
    /// for each; the results are in the order of `writes`.
    pub(super) async fn write_all(&self, writes: Vec<Write>) -> Vec<Result<Written, DbErr>> {
        let mut waits = Vec::with_capacity(writes.len());
        for write in writes {
            let (reply, rx) = oneshot::channel();
            let sent = self.tx.send(Job { write, reply }).is_ok();
            waits.push(sent.then_some(rx));
        }
        let mut out = Vec::with_capacity(waits.len());
        for w in waits {
            out.push(match w {
                Some(rx) => rx.await.unwrap_or_else(|_| {
                    Err(DbErr::Custom(
                        "the bot's writer stopped before this write".into(),
                    ))
                }),
                None => Err(DbErr::Custom("the bot's writer has stopped".into())),
            });
        }
        out
    }
}

async fn run(db: DatabaseConnection, lock: Arc<Mutex<()>>, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let _w = lock.lock().await;
        let writes: Vec<&Write> = jobs.iter().map(|j| &j.write).collect();
        let tries = if jobs.len() > 1 { BATCH_TRIES } else { 20 };
        match audit::retrying_up_to(tries, || apply(&db, &writes)).await {
            Ok(done) => {
                for (job, d) in jobs.into_iter().zip(done) {
                    // A caller that stopped waiting is fine.
                    let _ = job.reply.send(Ok(d));
                }
            }
            Err(e) if jobs.len() == 1 => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                tracing::debug!(
                    "a batch of {} writes failed ({e}); each is tried alone",
                    jobs.len()
                );
                for job in jobs {
                    let one = [&job.write];
                    let alone = audit::retrying(|| apply(&db, &one))
                        .await
                        .and_then(|mut d| {
                            d.pop()
                                .ok_or_else(|| DbErr::Custom("a write had no result".into()))
                        });
                    let _ = job.reply.send(alone);
                }
            }
        }
    }
}

/// Applies `writes` in order in one transaction and commits it.
async fn apply(db: &DatabaseConnection, writes: &[&Write]) -> Result<Vec<Written>, DbErr> {
    let txn = audit::begin_write(db).await?;
    let mut chain = Chain::head(&txn).await?;
    let mut changes: Vec<change::ActiveModel> = Vec::new();
    let mut done = Vec::with_capacity(writes.len());
    for w in writes {
        done.push(match w {
            Write::Submit(r) => Written::Submit(submit(&txn, r, &mut chain, &mut changes).await?),
            Write::Move(m) => Written::Move(move_to(&txn, m, &mut chain, &mut changes).await?),
            Write::Append { events, at } => {
                let fresh = chain.fresh(&txn, events).await?;
                for (e, new) in events.iter().zip(&fresh) {
                    if *new {
                        chain.push(e, *at)?;
                    }
                }
                Written::Append(fresh)
            }
            Write::Ack { id, runner_id, at } => {
                request::Entity::update_many()
                    .col_expr(request::Column::RelayedAt, Expr::value(*at))
                    .filter(request::Column::Id.eq(id.as_str()))
                    .filter(request::Column::RunnerId.eq(*runner_id))
                    .filter(request::Column::RelayedAt.is_null())
                    .exec(&txn)
                    .await?;
                Written::Ack
            }
        });
    }
    chain.flush(&txn).await?;
    if !changes.is_empty() {
        change::Entity::insert_many(changes)
            .exec_without_returning(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(done)
}

fn change_row(request_id: &str, status: Status, at: i64) -> change::ActiveModel {
    change::ActiveModel {
        request_id: Set(request_id.to_string()),
        status: Set(status.as_str().to_string()),
        at: Set(at),
        ..Default::default()
    }
}

/// The insert of a new request: one read (was the runner revoked, how many
/// does it have pending; counted under the writer lock, so both hold
/// exactly) and one insert that does nothing when the id is taken.
async fn submit(
    txn: &DatabaseTransaction,
    r: &NewRequest,
    chain: &mut Chain,
    changes: &mut Vec<change::ActiveModel>,
) -> Result<Stored, DbErr> {
    let revoked = Query::select()
        .expr(Expr::cust("COUNT(*)"))
        .from(runner::Entity)
        .and_where(runner::Column::Id.eq(r.runner_id))
        .and_where(runner::Column::RevokedAt.is_not_null())
        .to_owned();
    let pending = Query::select()
        .expr(Expr::cust("COUNT(*)"))
        .from(request::Entity)
        .and_where(request::Column::RunnerId.eq(r.runner_id))
        .and_where(request::Column::Status.eq(Status::Pending.as_str()))
        .to_owned();
    let check = Query::select()
        .expr_as(Expr::SubQuery(None, Box::new(revoked.into())), "revoked")
        .expr_as(Expr::SubQuery(None, Box::new(pending.into())), "pending")
        .to_owned();
    let row = txn
        .query_one(&check)
        .await?
        .ok_or_else(|| DbErr::Custom("the submission check returned nothing".into()))?;
    let revoked: i64 = row.try_get("", "revoked")?;
    let pending: i64 = row.try_get("", "pending")?;
    // Checked in the transaction of the insert: a revocation that
    // committed first is seen here, and one that commits after (it takes
    // the writer lock) cancels this request with the runner's others.
    if revoked > 0 {
        return Ok(Stored::Revoked);
    }
    if u64::try_from(pending).unwrap_or(0) >= r.pending_cap {
        return Ok(Stored::Full);
    }
    let inserted = request::Entity::insert(r.model.clone())
        .on_conflict(
            OnConflict::column(request::Column::Id)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    if inserted == 0 {
        // Another connection (or replica) of this runner stored the same
        // id first: answered as a re-submission.
        return Ok(Stored::Again);
    }
    super::escalation::plan(txn, &r.id, r.now, &r.steps).await?;
    chain.push(&r.event, r.now)?;
    changes.push(change_row(&r.id, Status::Pending, r.now));
    Ok(Stored::New)
}

/// The guarded move: one update, its audit row and its change row.
async fn move_to(
    txn: &DatabaseTransaction,
    m: &Move,
    chain: &mut Chain,
    changes: &mut Vec<change::ActiveModel>,
) -> Result<bool, DbErr> {
    let mut q = request::Entity::update_many()
        .col_expr(request::Column::Status, Expr::value(m.to.as_str()))
        .col_expr(request::Column::DecidedAt, Expr::value(m.at))
        .col_expr(
            request::Column::DecidedBy,
            Expr::value(m.decided_by.as_str()),
        )
        .col_expr(request::Column::Reason, Expr::value(m.reason.clone()))
        .filter(request::Column::Id.eq(m.id.as_str()))
        .filter(request::Column::Status.eq(Status::Pending.as_str()));
    if m.before_deadline {
        q = q.filter(request::Column::ExpiresAt.gt(m.at));
    }
    if q.exec(txn).await?.rows_affected != 1 {
        return Ok(false);
    }
    chain.push(&m.event, m.at)?;
    changes.push(change_row(&m.id, m.to, m.at));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::db::random_hex;

    async fn database() -> (std::path::PathBuf, DatabaseConnection) {
        let dir = std::env::temp_dir().join(format!("holdpoint-writer-{}", random_hex(6)));
        let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
        let db = super::super::db::open_and_migrate(&url)
            .await
            .expect("database");
        (dir, db)
    }

    fn events(n: usize, kind: &str) -> Vec<NewEvent> {
        (0..n)
            .map(|i| {
                NewEvent::at(
                    1_000 + i as i64,
                    kind,
                    Some("r"),
                    None,
                    serde_json::json!({"i": i}),
                )
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_fails_in_a_batch_fails_alone_and_the_chain_holds() {
        let (dir, db) = database().await;
        let writer = Writer::start(db.clone(), Arc::new(Mutex::new(())));
        let first = events(3, "first");
        let last = events(2, "last");
        // A request row without its required columns: the database refuses it.
        let broken = NewRequest {
            id: random_hex(16),
            model: request::ActiveModel {
                id: Set(random_hex(16)),
                ..Default::default()
            },
            runner_id: 1,
            pending_cap: 10,
            steps: vec![],
            event: NewEvent::at(5, "request.pending", Some("r"), None, serde_json::json!({})),
            now: 5,
        };
        let done = writer
            .write_all(vec![
                Write::Append {
                    events: first.clone(),
                    at: 10,
                },
                Write::Submit(Box::new(broken)),
                Write::Append {
                    events: [first[0].clone()].into_iter().chain(last.clone()).collect(),
                    at: 11,
                },
            ])
            .await;
        assert_eq!(done[0].as_ref().ok(), Some(&Written::Append(vec![true; 3])));
        assert!(done[1].is_err(), "the broken row is refused: {:?}", done[1]);
        assert_eq!(
            done[2].as_ref().ok(),
            Some(&Written::Append(vec![false, true, true])),
            "an event stored by an earlier write of the batch is not stored twice"
        );
        let v = audit::verify(&db).await.expect("verify");
        assert_eq!(
            v.rows, 5,
            "every good event once, nothing of the broken write"
        );
        assert_eq!(v.broken, None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_queued_together_commit_in_order_and_each_sees_the_ones_before() {
        let (dir, db) = database().await;
        let writer = Writer::start(db.clone(), Arc::new(Mutex::new(())));
        let batch: Vec<Write> = (0..300)
            .map(|i| Write::Append {
                events: events(1 + i % 3, &format!("e{i}")),
                at: i as i64,
            })
            .collect();
        let done = writer.write_all(batch).await;
        assert!(
            done.iter()
                .all(|d| matches!(d, Ok(Written::Append(f)) if f.iter().all(|n| *n)))
        );
        let v = audit::verify(&db).await.expect("verify");
        assert_eq!(v.rows, (0..300).map(|i| 1 + i % 3).sum::<usize>() as u64);
        assert_eq!(v.broken, None);
        // In the order queued: the kinds by sequence number.
        use sea_orm::QueryOrder;
        let kinds: Vec<String> = crate::core::entity::audit_log::Entity::find()
            .order_by_asc(crate::core::entity::audit_log::Column::Seq)
            .all(&db)
            .await
            .expect("rows")
            .into_iter()
            .map(|r| r.kind)
            .collect();
        let mut expected = Vec::new();
        for i in 0..300 {
            for _ in 0..(1 + i % 3) {
                expected.push(format!("e{i}"));
            }
        }
        assert_eq!(kinds, expected);
        let _ = std::fs::remove_dir_all(dir);
    }
}

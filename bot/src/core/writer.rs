//! Group commit: the writes of the request lifecycle and the audit log, many
//! per transaction.
//!
//! Submissions, guarded moves (decisions, cancellations, expiries), runner
//! acks and audit appends are queued to one writer task per process. It
//! takes whatever is queued (up to [`BATCH`] writes), applies it in order in
//! one transaction under the writer lock (the advisory lock on PostgreSQL,
//! the single writer of SQLite), links every audit row of the batch to the
//! chain in memory, inserts the batch's audit, change and escalation rows
//! and records its acks a few statements at a time, commits once, and only
//! then answers each caller. A submission costs one insert of its own; a
//! decision one guarded update. Each write sees
//! the ones before it in its batch, so a batch means exactly what the same
//! writes one transaction each would mean; under load the cost of a commit
//! (and PostgreSQL's flush to disk) is shared by every write in it.
//!
//! A batch that fails is retried; one that still fails is split and each
//! write is tried alone, so one bad write cannot fail the others. A caller
//! hears of its write only after the commit, or an error: nothing is
//! relayed, and no command runs, on a write that did not commit.

use super::audit::{self, Chain, NewEvent};
use super::entity::{change, escalation_step, request, runner};
use crate::config::Step;
use holdpoint_shared::protocol::Status;
use sea_orm::sea_query::{Expr, OnConflict, Query, UnionType};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbErr, EntityTrait, QueryFilter, Set,
};
use std::collections::{HashMap, HashSet};
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
    /// The identity that submitted it (`None` for rows from before m0005).
    pub runner_id: Option<i64>,
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
        let started = std::time::Instant::now();
        let result = audit::retrying_up_to(tries, || apply(&db, &writes)).await;
        tracing::trace!(
            writes = jobs.len(),
            micros = started.elapsed().as_micros() as u64,
            committed = result.is_ok(),
            "a batch of writes"
        );
        match result {
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
                // A write that still fails alone says the database is
                // the trouble (down, read-only, full): the rest get few
                // tries, so a long queue is refused in moments, not in a
                // second per write.
                let mut tries = 20;
                for job in jobs {
                    let one = [&job.write];
                    let alone = audit::retrying_up_to(tries, || apply(&db, &one))
                        .await
                        .and_then(|mut d| {
                            d.pop()
                                .ok_or_else(|| DbErr::Custom("a write had no result".into()))
                        });
                    if alone.is_err() {
                        tries = BATCH_TRIES;
                    }
                    let _ = job.reply.send(alone);
                }
            }
        }
    }
}

/// What one transaction gathers before it commits: rows that are inserted
/// together at its end, and what its submissions are checked against.
struct Batch {
    chain: Chain,
    changes: Vec<change::ActiveModel>,
    steps: Vec<escalation_step::ActiveModel>,
    /// Acks: (request id, runner identity, when).
    acks: Vec<(String, i64, i64)>,
    /// Of each runner that submits in this batch: whether it was revoked,
    /// and how many requests it has pending (kept current through the
    /// batch's own submissions and moves).
    runners: HashMap<i64, (bool, u64)>,
}

/// Applies `writes` in order in one transaction and commits it. Each write
/// sees the ones before it: a submission is checked against the pending
/// count its runner has after the earlier writes of the batch.
async fn apply(db: &DatabaseConnection, writes: &[&Write]) -> Result<Vec<Written>, DbErr> {
    let txn = audit::begin_write(db).await?;
    let mut b = Batch {
        chain: Chain::head(&txn).await?,
        changes: Vec::new(),
        steps: Vec::new(),
        acks: Vec::new(),
        runners: runner_states(&txn, writes).await?,
    };
    let mut done = Vec::with_capacity(writes.len());
    for w in writes {
        done.push(match w {
            Write::Submit(r) => Written::Submit(submit(&txn, r, &mut b).await?),
            Write::Move(m) => Written::Move(move_to(&txn, m, &mut b).await?),
            Write::Append { events, at } => {
                let fresh = b.chain.fresh(&txn, events).await?;
                for (e, new) in events.iter().zip(&fresh) {
                    if *new {
                        b.chain.push(e, *at)?;
                    }
                }
                Written::Append(fresh)
            }
            Write::Ack { id, runner_id, at } => {
                b.acks.push((id.clone(), *runner_id, *at));
                Written::Ack
            }
        });
    }
    b.chain.flush(&txn).await?;
    insert_all::<change::Entity, _>(&txn, b.changes).await?;
    insert_all::<escalation_step::Entity, _>(&txn, b.steps).await?;
    let mut acks = b.acks.into_iter().peekable();
    for n in pieces(acks.len()) {
        let chunk: Vec<_> = acks.by_ref().take(n).collect();
        let at = chunk.iter().map(|(_, _, at)| *at).max().unwrap_or_default();
        let mut which = Condition::any();
        for (id, runner_id, _) in &chunk {
            which = which.add(
                Condition::all()
                    .add(request::Column::Id.eq(id.as_str()))
                    .add(request::Column::RunnerId.eq(*runner_id)),
            );
        }
        request::Entity::update_many()
            .col_expr(request::Column::RelayedAt, Expr::value(at))
            .filter(request::Column::RelayedAt.is_null())
            .filter(which)
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(done)
}

/// The most rows (or ids) one statement carries.
pub(super) const MOST_PER_STATEMENT: usize = 256;

/// How to cut `n` rows into statements: full ones of [`MOST_PER_STATEMENT`]
/// (the same statement every time, so the database's prepared statement is
/// reused), then one of the rest. A small batch is one statement: a round
/// trip costs more than parsing a new shape.
pub(super) fn pieces(n: usize) -> Vec<usize> {
    let mut out = vec![MOST_PER_STATEMENT; n / MOST_PER_STATEMENT];
    if !n.is_multiple_of(MOST_PER_STATEMENT) {
        out.push(n % MOST_PER_STATEMENT);
    }
    out
}

/// Inserts `rows` in order, in as few statements as [`pieces`] allows.
pub(super) async fn insert_all<E, A>(txn: &DatabaseTransaction, rows: Vec<A>) -> Result<(), DbErr>
where
    E: EntityTrait,
    A: ActiveModelTrait<Entity = E>,
{
    let sizes = pieces(rows.len());
    let mut rows = rows.into_iter();
    for n in sizes {
        E::insert_many(rows.by_ref().take(n).collect::<Vec<_>>())
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

/// Whether each runner that submits in `writes` was revoked, and how many
/// requests it has pending: one read for the whole batch, under the writer
/// lock, so both hold exactly.
async fn runner_states(
    txn: &DatabaseTransaction,
    writes: &[&Write],
) -> Result<HashMap<i64, (bool, u64)>, DbErr> {
    let ids: Vec<i64> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Submit(r) => Some(r.runner_id),
            _ => None,
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut out: HashMap<i64, (bool, u64)> = ids.iter().map(|id| (*id, (false, 0))).collect();
    if ids.is_empty() {
        return Ok(out);
    }
    // Checked in the transaction of the insert: a revocation that
    // committed first is seen here, and one that commits after (it takes
    // the writer lock) cancels these requests with the runner's others.
    // One read: each runner's pending count, and (as -1) each revoked one.
    let mut both = Query::select()
        .column(request::Column::RunnerId)
        .expr_as(Expr::cust("COUNT(*)"), "n")
        .from(request::Entity)
        .and_where(request::Column::RunnerId.is_in(ids.iter().copied()))
        .and_where(request::Column::Status.eq(Status::Pending.as_str()))
        .group_by_col(request::Column::RunnerId)
        .to_owned();
    let revoked = Query::select()
        .expr_as(Expr::col(runner::Column::Id), "runner_id")
        .expr_as(Expr::cust("-1"), "n")
        .from(runner::Entity)
        .and_where(runner::Column::Id.is_in(ids.iter().copied()))
        .and_where(runner::Column::RevokedAt.is_not_null())
        .to_owned();
    both.union(UnionType::All, revoked);
    for row in txn.query_all(&both).await? {
        let id: Option<i64> = row.try_get("", "runner_id")?;
        let n: i64 = row.try_get("", "n")?;
        if let Some(s) = id.and_then(|id| out.get_mut(&id)) {
            if n < 0 {
                s.0 = true;
            } else {
                s.1 = u64::try_from(n).unwrap_or(0);
            }
        }
    }
    Ok(out)
}

fn change_row(request_id: &str, status: Status, at: i64) -> change::ActiveModel {
    change::ActiveModel {
        request_id: Set(request_id.to_string()),
        status: Set(status.as_str().to_string()),
        at: Set(at),
        ..Default::default()
    }
}

/// The insert of a new request, checked against its runner's state in the
/// batch: one statement, which does nothing when the id is taken.
async fn submit(txn: &DatabaseTransaction, r: &NewRequest, b: &mut Batch) -> Result<Stored, DbErr> {
    let (revoked, pending) = b.runners.get(&r.runner_id).copied().unwrap_or((false, 0));
    if revoked {
        return Ok(Stored::Revoked);
    }
    if pending >= r.pending_cap {
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
    if let Some(s) = b.runners.get_mut(&r.runner_id) {
        s.1 += 1;
    }
    b.steps
        .extend(super::escalation::planned(&r.id, r.now, &r.steps));
    b.chain.push(&r.event, r.now)?;
    b.changes.push(change_row(&r.id, Status::Pending, r.now));
    Ok(Stored::New)
}

/// The guarded move: one update; its audit row and change row go with the
/// batch's.
async fn move_to(txn: &DatabaseTransaction, m: &Move, b: &mut Batch) -> Result<bool, DbErr> {
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
    // One fewer pending for a runner that submits later in this batch.
    if let Some(s) = m.runner_id.and_then(|id| b.runners.get_mut(&id)) {
        s.1 = s.1.saturating_sub(1);
    }
    b.chain.push(&m.event, m.at)?;
    b.changes.push(change_row(&m.id, m.to, m.at));
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

    #[test]
    fn rows_go_in_full_statements_then_one_of_the_rest() {
        assert_eq!(pieces(0), Vec::<usize>::new());
        assert_eq!(pieces(13), vec![13]);
        assert_eq!(pieces(256), vec![256]);
        assert_eq!(pieces(600), vec![256, 256, 88]);
        for n in 0..2000 {
            let p = pieces(n);
            assert_eq!(p.iter().sum::<usize>(), n);
            assert!(p.iter().all(|k| *k > 0 && *k <= MOST_PER_STATEMENT));
            assert!(p.iter().rev().skip(1).all(|k| *k == MOST_PER_STATEMENT));
        }
    }

    fn new_request(runner_id: i64, cap: u64, now: i64) -> NewRequest {
        let id = random_hex(16);
        NewRequest {
            id: id.clone(),
            model: request::ActiveModel {
                id: Set(id.clone()),
                runner: Set("r".into()),
                runner_id: Set(Some(runner_id)),
                command: Set("git push --force origin main".into()),
                command_hash: Set(random_hex(32)),
                risk: Set("high".into()),
                verdict: Set("{}".into()),
                annotations: Set("[]".into()),
                host: Set("h".into()),
                cwd: Set("/".into()),
                agent: Set(None),
                session: Set(None),
                front_end: Set("sh".into()),
                requested_by: Set(None),
                status: Set(Status::Pending.as_str().into()),
                created_at: Set(now),
                expires_at: Set(now + 60_000),
                decided_at: Set(None),
                decided_by: Set(None),
                reason: Set(None),
                relayed_at: Set(None),
                quorum: Set(None),
            },
            runner_id,
            pending_cap: cap,
            steps: vec![],
            event: NewEvent::at(
                now,
                "request.pending",
                Some("r"),
                Some(&id),
                serde_json::json!({}),
            ),
            now,
        }
    }

    fn deny(id: &str, runner_id: i64, at: i64) -> Move {
        Move {
            id: id.to_string(),
            runner_id: Some(runner_id),
            to: Status::Denied,
            at,
            decided_by: "web:alice".into(),
            reason: None,
            before_deadline: true,
            event: NewEvent::at(
                at,
                "request.denied",
                Some("r"),
                Some(id),
                serde_json::json!({}),
            ),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_one_batch_a_decision_frees_its_runners_place_for_a_later_submission() {
        let (dir, db) = database().await;
        let writer = Writer::start(db.clone(), Arc::new(Mutex::new(())));
        // The runner is at its limit of two.
        let (a, b) = (new_request(7, 2, 10), new_request(7, 2, 11));
        let (a_id, b_id) = (a.id.clone(), b.id.clone());
        let done = writer
            .write_all(vec![Write::Submit(Box::new(a)), Write::Submit(Box::new(b))])
            .await;
        assert!(
            done.iter()
                .all(|d| matches!(d, Ok(Written::Submit(Stored::New))))
        );
        // Applied as one transaction, in this order: a third is refused,
        // a decision frees a place, the fourth takes it, the fifth is refused.
        let batch = [
            Write::Submit(Box::new(new_request(7, 2, 20))),
            Write::Move(Box::new(deny(&a_id, 7, 21))),
            Write::Submit(Box::new(new_request(7, 2, 22))),
            Write::Submit(Box::new(new_request(7, 2, 23))),
            Write::Move(Box::new(deny(&a_id, 7, 24))),
        ];
        let batch: Vec<&Write> = batch.iter().collect();
        let done = apply(&db, &batch).await.expect("one transaction");
        assert_eq!(
            done,
            vec![
                Written::Submit(Stored::Full),
                Written::Move(true),
                Written::Submit(Stored::New),
                Written::Submit(Stored::Full),
                Written::Move(false),
            ]
        );
        let pending = request::Entity::find()
            .filter(request::Column::Status.eq(Status::Pending.as_str()))
            .all(&db)
            .await
            .expect("rows");
        assert_eq!(pending.len(), 2);
        assert!(pending.iter().any(|r| r.id == b_id));
        let v = audit::verify(&db).await.expect("verify");
        assert_eq!((v.rows, v.broken), (4, None), "two, one decision, one more");
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

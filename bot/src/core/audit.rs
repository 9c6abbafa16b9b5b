//! The audit log: append-only and hash-chained.
//!
//! Each row's hash covers the previous row's hash and the row's own content,
//! so changing, removing or reordering any row breaks every hash after it;
//! [`verify`] walks the chain. An event id is stored once, however often a
//! runner sends it. Appends are serialised: within a process by the core's
//! write lock, across processes by the database (an advisory lock on
//! PostgreSQL, the single writer of SQLite), and retried when another
//! writer got there first. A transition appends its row inside its own
//! transaction ([`append_in`]), so the row and the state change commit
//! together or not at all.

use super::db::random_hex;
use super::entity::audit_log;
use crate::time::rfc3339;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::Write;

/// The hash before the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event on its way into the log.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub at: i64,
    pub kind: String,
    pub runner: Option<String>,
    pub request_id: Option<String>,
    /// Any JSON; stored in canonical form (sorted keys, no spaces).
    pub body: serde_json::Value,
}

impl NewEvent {
    /// An event the bot itself witnessed at `at`, with a fresh id.
    pub fn at(
        at: i64,
        kind: &str,
        runner: Option<&str>,
        request_id: Option<&str>,
        body: serde_json::Value,
    ) -> NewEvent {
        NewEvent {
            event_id: random_hex(16),
            at,
            kind: kind.to_string(),
            runner: runner.map(str::to_string),
            request_id: request_id.map(str::to_string),
            body,
        }
    }
}

/// The hash of one row, given the previous row's.
pub fn link_hash(
    prev_hash: &str,
    event_id: &str,
    at: i64,
    kind: &str,
    runner: Option<&str>,
    request_id: Option<&str>,
    body: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        prev_hash,
        event_id,
        &at.to_string(),
        kind,
        runner.unwrap_or(""),
        request_id.unwrap_or(""),
        body,
    ] {
        // Length-prefixed, so no two different rows hash the same bytes.
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The key of the PostgreSQL advisory lock that serialises writers.
const WRITE_LOCK_KEY: i64 = 7237949403311089012;

/// Starts a transaction that holds the database's writer lock: the advisory
/// lock on PostgreSQL; on SQLite the first write takes the database's own.
pub(super) async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let txn = db.begin().await?;
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})"))
            .await?;
    }
    Ok(txn)
}

/// Runs `attempt` until it succeeds, retrying (with a short backoff) when
/// another process's writer got in the way; gives up after 20 tries.
pub(super) async fn retrying<T, F, Fut>(attempt: F) -> Result<T, DbErr>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbErr>>,
{
    retrying_up_to(20, attempt).await
}

/// [`retrying`], giving up after `tries` tries.
pub(super) async fn retrying_up_to<T, F, Fut>(tries: u32, mut attempt: F) -> Result<T, DbErr>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbErr>>,
{
    let mut tried = 1u32;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if tried < tries => {
                super::db::note_write_error(&e);
                tried += 1;
                tracing::debug!("a write was retried after a conflict: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(5 * u64::from(tried - 1)))
                    .await;
            }
            Err(e) => {
                super::db::note_write_error(&e);
                return Err(e);
            }
        }
    }
}

/// Appends events inside `txn`, which [`begin_write`] started.
pub(super) async fn append_in(
    txn: &DatabaseTransaction,
    events: &[NewEvent],
    recorded_at: i64,
) -> Result<Vec<bool>, DbErr> {
    let mut chain = Chain::head(txn).await?;
    let fresh = chain.fresh(txn, events).await?;
    for (e, new) in events.iter().zip(&fresh) {
        if *new {
            chain.push(e, recorded_at)?;
        }
    }
    chain.flush(txn).await?;
    Ok(fresh)
}

/// Rows on their way to the end of the chain inside one transaction: the
/// head is read once, every row is linked to the one before it in memory,
/// and all of them are inserted together, in order, by [`Chain::flush`]
/// (256 rows a statement at most: ten parameters each, well below every
/// backend's limit).
/// Many events cost one read, one lock and one commit.
pub(super) struct Chain {
    prev: String,
    rows: Vec<audit_log::ActiveModel>,
    /// Event ids linked in this transaction.
    ids: HashSet<String>,
}

impl Chain {
    /// The chain as the transaction sees it; the caller holds the writer
    /// lock, so nobody else appends until it commits.
    pub(super) async fn head(txn: &DatabaseTransaction) -> Result<Chain, DbErr> {
        let last = audit_log::Entity::find()
            .order_by_desc(audit_log::Column::Seq)
            .limit(1)
            .one(txn)
            .await?;
        Ok(Chain {
            prev: last.map(|r| r.hash).unwrap_or_else(|| GENESIS.to_string()),
            rows: Vec::new(),
            ids: HashSet::new(),
        })
    }

    /// For each event, whether it is new: not stored yet, not linked in
    /// this transaction and not repeated earlier in `events`.
    pub(super) async fn fresh(
        &self,
        txn: &DatabaseTransaction,
        events: &[NewEvent],
    ) -> Result<Vec<bool>, DbErr> {
        let mut stored: HashSet<String> = HashSet::new();
        let mut ids = events.iter().map(|e| e.event_id.as_str());
        for n in super::writer::pieces(events.len()) {
            let chunk: Vec<&str> = ids.by_ref().take(n).collect();
            stored.extend(
                audit_log::Entity::find()
                    .filter(audit_log::Column::EventId.is_in(chunk))
                    .select_only()
                    .column(audit_log::Column::EventId)
                    .into_tuple::<String>()
                    .all(txn)
                    .await?,
            );
        }
        let mut seen = HashSet::new();
        Ok(events
            .iter()
            .map(|e| {
                !stored.contains(&e.event_id)
                    && !self.ids.contains(&e.event_id)
                    && seen.insert(e.event_id.as_str())
            })
            .collect())
    }

    /// Links `e` after the last row. The caller knows it is new: checked
    /// by [`Chain::fresh`], or an id the bot has just made.
    pub(super) fn push(&mut self, e: &NewEvent, recorded_at: i64) -> Result<(), DbErr> {
        let body = serde_json::to_string(&e.body).map_err(|x| DbErr::Custom(x.to_string()))?;
        let hash = link_hash(
            &self.prev,
            &e.event_id,
            e.at,
            &e.kind,
            e.runner.as_deref(),
            e.request_id.as_deref(),
            &body,
        );
        self.rows.push(audit_log::ActiveModel {
            event_id: Set(e.event_id.clone()),
            at: Set(e.at),
            recorded_at: Set(recorded_at),
            kind: Set(e.kind.clone()),
            runner: Set(e.runner.clone()),
            request_id: Set(e.request_id.clone()),
            body: Set(body),
            prev_hash: Set(std::mem::replace(&mut self.prev, hash.clone())),
            hash: Set(hash),
            ..Default::default()
        });
        self.ids.insert(e.event_id.clone());
        Ok(())
    }

    /// Inserts the linked rows, in order.
    pub(super) async fn flush(&mut self, txn: &DatabaseTransaction) -> Result<(), DbErr> {
        super::writer::insert_all::<audit_log::Entity, _>(txn, std::mem::take(&mut self.rows)).await
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub rows: u64,
    /// The last hash of the chain (the genesis hash for an empty log).
    pub head: String,
    /// The first broken row and why, if any.
    pub broken: Option<(i64, String)>,
}

/// Walks the whole chain in order.
pub(super) async fn verify(db: &DatabaseConnection) -> Result<Verification, DbErr> {
    let mut prev = GENESIS.to_string();
    let mut rows = 0u64;
    let mut pages = audit_log::Entity::find()
        .order_by_asc(audit_log::Column::Seq)
        .paginate(db, 1000);
    while let Some(page) = pages.fetch_and_next().await? {
        for r in page {
            rows += 1;
            if r.prev_hash != prev {
                return Ok(Verification {
                    rows,
                    head: prev,
                    broken: Some((
                        r.seq,
                        "its link to the previous row is broken (a row was removed or reordered)"
                            .into(),
                    )),
                });
            }
            let expect = link_hash(
                &prev,
                &r.event_id,
                r.at,
                &r.kind,
                r.runner.as_deref(),
                r.request_id.as_deref(),
                &r.body,
            );
            if expect != r.hash {
                return Ok(Verification {
                    rows,
                    head: prev,
                    broken: Some((r.seq, "its content does not match its hash".into())),
                });
            }
            prev = r.hash;
        }
    }
    Ok(Verification {
        rows,
        head: prev,
        broken: None,
    })
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Json,
}

pub fn csv_field(s: &str) -> String {
    // Quote everything that could be read as a formula by a spreadsheet too.
    let risky = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let s = if risky {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) || risky {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[derive(Serialize)]
struct ExportRow<'a> {
    seq: i64,
    event_id: &'a str,
    at: String,
    recorded_at: String,
    kind: &'a str,
    runner: Option<&'a str>,
    request_id: Option<&'a str>,
    event: serde_json::Value,
    prev_hash: &'a str,
    hash: &'a str,
}

/// Writes every row recorded at or after `since` (unix ms), oldest first.
pub(super) async fn export(
    db: &DatabaseConnection,
    since: i64,
    format: Format,
    out: &mut dyn Write,
) -> anyhow::Result<u64> {
    let mut n = 0u64;
    if format == Format::Csv {
        writeln!(
            out,
            "seq,event_id,at,recorded_at,kind,runner,request_id,event,prev_hash,hash"
        )?;
    } else {
        write!(out, "[")?;
    }
    // By when the bot recorded a row, not when its sender says it
    // happened: a runner's clock cannot move its events out of a window.
    let mut pages = audit_log::Entity::find()
        .filter(audit_log::Column::RecordedAt.gte(since))
        .order_by_asc(audit_log::Column::Seq)
        .paginate(db, 1000);
    while let Some(page) = pages.fetch_and_next().await? {
        for r in page {
            match format {
                Format::Csv => writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{}",
                    r.seq,
                    csv_field(&r.event_id),
                    rfc3339(r.at),
                    rfc3339(r.recorded_at),
                    csv_field(&r.kind),
                    csv_field(r.runner.as_deref().unwrap_or("")),
                    csv_field(r.request_id.as_deref().unwrap_or("")),
                    csv_field(&r.body),
                    r.prev_hash,
                    r.hash
                )?,
                Format::Json => {
                    let row = ExportRow {
                        seq: r.seq,
                        event_id: &r.event_id,
                        at: rfc3339(r.at),
                        recorded_at: rfc3339(r.recorded_at),
                        kind: &r.kind,
                        runner: r.runner.as_deref(),
                        request_id: r.request_id.as_deref(),
                        event: serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null),
                        prev_hash: &r.prev_hash,
                        hash: &r.hash,
                    };
                    if n > 0 {
                        write!(out, ",")?;
                    }
                    write!(out, "\n{}", serde_json::to_string(&row)?)?;
                }
            }
            n += 1;
        }
    }
    if format == Format::Json {
        writeln!(out, "\n]")?;
    }
    Ok(n)
}

/// How many rows the log holds.
pub(super) async fn count(db: &DatabaseConnection) -> Result<u64, DbErr> {
    audit_log::Entity::find().count(db).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_depends_on_every_field_and_the_previous_row() {
        let base = link_hash(GENESIS, "e1", 1, "verdict", Some("r"), None, "{}");
        assert_ne!(
            base,
            link_hash(GENESIS, "e1", 2, "verdict", Some("r"), None, "{}")
        );
        assert_ne!(
            base,
            link_hash(GENESIS, "e1", 1, "verdict", None, Some("r"), "{}")
        );
        assert_ne!(
            base,
            link_hash(&base, "e1", 1, "verdict", Some("r"), None, "{}")
        );
        assert_eq!(
            base,
            link_hash(GENESIS, "e1", 1, "verdict", Some("r"), None, "{}")
        );
    }

    #[test]
    fn csv_fields_cannot_break_rows_or_become_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"\nnext"), "\"say \"\"hi\"\"\nnext\"");
        assert_eq!(csv_field("=cmd()"), "\"'=cmd()\"");
    }
}

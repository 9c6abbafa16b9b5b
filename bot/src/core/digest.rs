//! The digest's numbers: what the agents did over a period and what
//! reviewers did about it, computed by the database from the audit log and
//! the requests (aggregates over indexed ranges: `audit_log (kind, at)`,
//! `audit_log (recorded_at)`, `requests (decided_at)`, m0009), never by
//! loading the log into memory. Only the bounded lists (the slowest, the
//! denied, the top tens) come back as rows.
//!
//! Periods are half-open, `[from, until)`, in unix ms: verdicts by when the
//! runner reached them (`audit_log.at`), outcomes by when they happened
//! (`requests.decided_at`), the chain by when the bot stored each row
//! (`audit_log.recorded_at`).

use super::Bot;
use super::audit::{GENESIS, link_hash};
use super::entity::audit_log;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QueryResult, QuerySelect, Statement, Value,
};
use serde::Serialize;
use std::collections::BTreeMap;

/// How many rows each list holds at most.
pub const TOP: u64 = 10;
/// Denied commands listed at most (the rest are counted).
pub const DENIED_LISTED: u64 = 50;
/// How often the same approved command makes it an allow-rule candidate.
pub const REPEATED_AT_LEAST: i64 = 3;

/// A half-open period `[from, until)`, unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Period {
    pub from: i64,
    pub until: i64,
}

impl Period {
    /// The period of the same length just before this one.
    pub fn before(&self) -> Period {
        let len = self.until.saturating_sub(self.from);
        Period {
            from: self.from.saturating_sub(len),
            until: self.from,
        }
    }
}

/// The counts a digest compares with the period before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Every verdict a runner reached (each command the gate saw).
    pub seen: u64,
    /// Allowed at once.
    pub allowed: u64,
    /// Held for a human.
    pub held: u64,
    /// Refused by the policy itself.
    pub refused: u64,
    pub approved: u64,
    pub denied: u64,
    pub expired: u64,
    pub cancelled: u64,
    /// Time from submission to a reviewer's decision (approved or denied),
    /// nearest rank.
    pub decision_p50_ms: Option<i64>,
    pub decision_p90_ms: Option<i64>,
    /// Escalation steps fired, by action (`remind`, `notify`, `page`).
    pub escalations: BTreeMap<String, u64>,
    /// Pages (incidents, alerts) opened, and refused by the pager.
    pub pages_sent: u64,
    pub pages_failed: u64,
}

/// One request that waited long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slow {
    pub id: String,
    pub runner: String,
    /// Redacted.
    pub command: String,
    pub status: String,
    pub decided_by: Option<String>,
    pub waited_ms: i64,
}

/// One denied request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denied {
    pub id: String,
    pub runner: String,
    /// Redacted.
    pub command: String,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub decided_at: i64,
}

/// A reviewer's decisions in the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Load {
    pub reviewer: String,
    pub approved: u64,
    pub denied: u64,
}

/// A command approved again and again: a candidate for an allow rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repeated {
    /// Redacted.
    pub command: String,
    pub approvals: u64,
}

/// One day of the period (from its start, in 24-hour steps): how the
/// requests that ended then ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Day {
    pub start: i64,
    pub approved: u64,
    pub denied: u64,
    pub expired: u64,
    pub cancelled: u64,
}

/// The audit chain over the period, checked link by link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chain {
    /// Rows the bot stored in the period.
    pub rows: u64,
    /// The hash of the last row stored before the period ends (the head an
    /// auditor compares with `holdpoint-bot audit verify`).
    pub head: String,
    pub head_seq: Option<i64>,
    /// The first broken row and why, if any.
    pub broken: Option<(i64, String)>,
}

/// Everything a digest says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub period: Period,
    pub previous_period: Period,
    pub current: Counts,
    pub previous: Counts,
    pub slowest: Vec<Slow>,
    pub top_rules: Vec<(String, u64)>,
    pub top_denied_rules: Vec<(String, u64)>,
    pub top_agents: Vec<(String, u64)>,
    pub top_runners: Vec<(String, u64)>,
    pub reviewers: Vec<Load>,
    pub denied: Vec<Denied>,
    /// Denied requests beyond those listed.
    pub denied_more: u64,
    pub repeated: Vec<Repeated>,
    pub chain: Chain,
    /// Each day of the period, in order (at most [`MAX_DAYS`]).
    pub per_day: Vec<Day>,
    /// Requests a reviewer decided, by time to decision, in the buckets of
    /// [`crate::chart::WAIT_BUCKETS`].
    pub waits: Vec<u64>,
}

/// The most days a report splits its period into.
pub const MAX_DAYS: i64 = 92;
const DAY_MS: i64 = 86_400_000;

/// SQL written with `$1`-style placeholders, for either backend (SQLite
/// reads `?1`).
fn stmt(backend: DatabaseBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = if backend == DatabaseBackend::Sqlite {
        // `$1` → `?1`; a `$` in a JSON path (`'$.rules'`) stays.
        let mut out = String::with_capacity(sql.len());
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                out.push('?');
            } else {
                out.push(c);
            }
        }
        out
    } else {
        sql.to_string()
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// A JSON text field of `audit_log.body` (alias `a`), per backend.
fn json_text(backend: DatabaseBackend, field: &str) -> String {
    match backend {
        DatabaseBackend::Postgres => format!("(a.body::jsonb ->> '{field}')"),
        _ => format!("json_extract(a.body, '$.{field}')"),
    }
}

/// `FROM` items that add `j.value`, each element of the body's `rules`.
fn rules_of(backend: DatabaseBackend) -> &'static str {
    match backend {
        DatabaseBackend::Postgres => {
            "audit_log a CROSS JOIN LATERAL jsonb_array_elements_text(a.body::jsonb -> 'rules') AS j(value)"
        }
        _ => "audit_log a, json_each(a.body, '$.rules') j",
    }
}

fn int(r: &QueryResult, col: &str) -> Result<i64, DbErr> {
    // SUM over no rows is NULL.
    Ok(r.try_get::<Option<i64>>("", col)?.unwrap_or(0))
}

fn count(r: &QueryResult, col: &str) -> Result<u64, DbErr> {
    Ok(u64::try_from(int(r, col)?).unwrap_or(0))
}

fn text(r: &QueryResult, col: &str) -> Result<String, DbErr> {
    Ok(r.try_get::<Option<String>>("", col)?.unwrap_or_default())
}

impl Bot {
    /// The digest of `period`, against the period of the same length
    /// before it.
    pub async fn digest(&self, period: Period) -> Result<Report, DbErr> {
        let previous_period = period.before();
        let current = self.counts(period).await?;
        let previous = self.counts(previous_period).await?;
        let (denied, denied_more) = self.denied_in(period).await?;
        Ok(Report {
            period,
            previous_period,
            current,
            previous,
            slowest: self.slowest(period).await?,
            top_rules: self.top_rules(period, false).await?,
            top_denied_rules: self.top_rules(period, true).await?,
            top_agents: self.top_verdicts_by(period, "agent").await?,
            top_runners: self.top_verdicts_by(period, "runner").await?,
            reviewers: self.reviewer_load(period).await?,
            denied,
            denied_more,
            repeated: self.repeated(period).await?,
            chain: self.chain_over(period).await?,
            per_day: self.per_day(period).await?,
            waits: self.waits(period).await?,
        })
    }

    async fn per_day(&self, p: Period) -> Result<Vec<Day>, DbErr> {
        let b = self.db.get_database_backend();
        let days = ((p.until - p.from + DAY_MS - 1) / DAY_MS).clamp(1, MAX_DAYS);
        let mut out: Vec<Day> = (0..days)
            .map(|d| Day {
                start: p.from + d * DAY_MS,
                ..Day::default()
            })
            .collect();
        let sql = format!(
            "SELECT (decided_at - $1) / {DAY_MS} AS d, status, COUNT(*) AS n FROM requests \
             WHERE decided_at >= $1 AND decided_at < $2 GROUP BY 1, 2"
        );
        for r in self
            .db
            .query_all_raw(stmt(b, &sql, vec![p.from.into(), p.until.into()]))
            .await?
        {
            let Some(day) = usize::try_from(int(&r, "d")?)
                .ok()
                .and_then(|d| out.get_mut(d))
            else {
                continue;
            };
            let n = count(&r, "n")?;
            match text(&r, "status")?.as_str() {
                "approved" => day.approved = n,
                "denied" => day.denied = n,
                "expired" => day.expired = n,
                "cancelled" => day.cancelled = n,
                _ => {}
            }
        }
        Ok(out)
    }

    async fn waits(&self, p: Period) -> Result<Vec<u64>, DbErr> {
        let b = self.db.get_database_backend();
        let mut cases = Vec::new();
        let mut lower = 0i64;
        for (i, (_, upper)) in crate::chart::WAIT_BUCKETS.iter().enumerate() {
            cases.push(format!(
                "SUM(CASE WHEN decided_at - created_at >= {lower} AND decided_at - created_at < {upper} THEN 1 ELSE 0 END) AS b{i}"
            ));
            lower = *upper;
        }
        let sql = format!(
            "SELECT {} FROM requests WHERE decided_at >= $1 AND decided_at < $2 \
             AND status IN ('approved', 'denied')",
            cases.join(", ")
        );
        let row = self
            .db
            .query_one_raw(stmt(b, &sql, vec![p.from.into(), p.until.into()]))
            .await?;
        (0..crate::chart::WAIT_BUCKETS.len())
            .map(|i| match &row {
                Some(r) => count(r, &format!("b{i}")),
                None => Ok(0),
            })
            .collect()
    }

    async fn counts(&self, p: Period) -> Result<Counts, DbErr> {
        let b = self.db.get_database_backend();
        let range = || vec![Value::from(p.from), Value::from(p.until)];
        let decision = json_text(b, "decision");
        let sql = format!(
            "SELECT COUNT(*) AS seen, \
             SUM(CASE WHEN {decision} = 'allow' THEN 1 ELSE 0 END) AS allowed, \
             SUM(CASE WHEN {decision} = 'review' THEN 1 ELSE 0 END) AS held, \
             SUM(CASE WHEN {decision} = 'deny' THEN 1 ELSE 0 END) AS refused \
             FROM audit_log a WHERE a.kind = 'verdict' AND a.at >= $1 AND a.at < $2"
        );
        let mut c = Counts::default();
        if let Some(r) = self.db.query_one_raw(stmt(b, &sql, range())).await? {
            c.seen = count(&r, "seen")?;
            c.allowed = count(&r, "allowed")?;
            c.held = count(&r, "held")?;
            c.refused = count(&r, "refused")?;
        }
        let sql = "SELECT status, COUNT(*) AS n FROM requests \
                   WHERE decided_at >= $1 AND decided_at < $2 GROUP BY status";
        for r in self.db.query_all_raw(stmt(b, sql, range())).await? {
            let n = count(&r, "n")?;
            match text(&r, "status")?.as_str() {
                "approved" => c.approved = n,
                "denied" => c.denied = n,
                "expired" => c.expired = n,
                "cancelled" => c.cancelled = n,
                _ => {}
            }
        }
        let decided = c.approved + c.denied;
        let rank = |p: f64| -> u64 {
            // Nearest rank: the smallest value with at least p of them at
            // or below it.
            ((p * decided as f64).ceil() as u64).clamp(1, decided.max(1)) - 1
        };
        if decided > 0 {
            c.decision_p50_ms = self.wait_at_rank(p, rank(0.5)).await?;
            c.decision_p90_ms = self.wait_at_rank(p, rank(0.9)).await?;
        }
        let action = json_text(b, "action");
        let sql = format!(
            "SELECT {action} AS action, COUNT(*) AS n FROM audit_log a \
             WHERE a.kind = 'request.escalated' AND a.at >= $1 AND a.at < $2 GROUP BY {action}"
        );
        for r in self.db.query_all_raw(stmt(b, &sql, range())).await? {
            let action = text(&r, "action")?;
            if !action.is_empty() {
                c.escalations.insert(action, count(&r, "n")?);
            }
        }
        let sql = "SELECT \
                   SUM(CASE WHEN error IS NULL THEN 1 ELSE 0 END) AS sent, \
                   SUM(CASE WHEN error IS NULL THEN 0 ELSE 1 END) AS failed \
                   FROM escalation_sends WHERE adapter IN ('pagerduty', 'opsgenie') \
                   AND sent_at >= $1 AND sent_at < $2";
        if let Some(r) = self.db.query_one_raw(stmt(b, sql, range())).await? {
            c.pages_sent = count(&r, "sent")?;
            c.pages_failed = count(&r, "failed")?;
        }
        Ok(c)
    }

    /// The `rank`th (from 0) shortest wait of the requests a reviewer
    /// decided in `p`.
    async fn wait_at_rank(&self, p: Period, rank: u64) -> Result<Option<i64>, DbErr> {
        let b = self.db.get_database_backend();
        let sql = "SELECT decided_at - created_at AS waited FROM requests \
                   WHERE decided_at >= $1 AND decided_at < $2 AND status IN ('approved', 'denied') \
                   ORDER BY waited, id LIMIT 1 OFFSET $3";
        let rank = i64::try_from(rank).unwrap_or(i64::MAX);
        let row = self
            .db
            .query_one_raw(stmt(
                b,
                sql,
                vec![p.from.into(), p.until.into(), rank.into()],
            ))
            .await?;
        row.map(|r| int(&r, "waited")).transpose()
    }

    async fn slowest(&self, p: Period) -> Result<Vec<Slow>, DbErr> {
        let b = self.db.get_database_backend();
        let sql = "SELECT id, runner, command, status, decided_by, decided_at - created_at AS waited \
                   FROM requests WHERE decided_at >= $1 AND decided_at < $2 \
                   AND status IN ('approved', 'denied') ORDER BY waited DESC, id LIMIT 5";
        self.db
            .query_all_raw(stmt(b, sql, vec![p.from.into(), p.until.into()]))
            .await?
            .iter()
            .map(|r| {
                Ok(Slow {
                    id: text(r, "id")?,
                    runner: text(r, "runner")?,
                    command: holdpoint_shared::redact::redact(&text(r, "command")?),
                    status: text(r, "status")?,
                    decided_by: r.try_get("", "decided_by")?,
                    waited_ms: int(r, "waited")?,
                })
            })
            .collect()
    }

    /// The rules that decided the most verdicts in `p`; with `denied`,
    /// of the held requests a reviewer denied.
    async fn top_rules(&self, p: Period, denied: bool) -> Result<Vec<(String, u64)>, DbErr> {
        let b = self.db.get_database_backend();
        let from = rules_of(b);
        let sql = if denied {
            format!(
                "SELECT j.value AS rule, COUNT(*) AS n FROM {from} \
                 JOIN requests r ON r.id = a.request_id \
                 WHERE a.kind = 'verdict' AND r.status = 'denied' \
                 AND r.decided_at >= $1 AND r.decided_at < $2 \
                 GROUP BY j.value ORDER BY n DESC, rule LIMIT {TOP}"
            )
        } else {
            format!(
                "SELECT j.value AS rule, COUNT(*) AS n FROM {from} \
                 WHERE a.kind = 'verdict' AND a.at >= $1 AND a.at < $2 \
                 GROUP BY j.value ORDER BY n DESC, rule LIMIT {TOP}"
            )
        };
        self.db
            .query_all_raw(stmt(b, &sql, vec![p.from.into(), p.until.into()]))
            .await?
            .iter()
            .map(|r| Ok((text(r, "rule")?, count(r, "n")?)))
            .collect()
    }

    /// Verdicts in `p` by agent or by runner, most first.
    async fn top_verdicts_by(&self, p: Period, by: &str) -> Result<Vec<(String, u64)>, DbErr> {
        let b = self.db.get_database_backend();
        let key = if by == "agent" {
            json_text(b, "agent")
        } else {
            "a.runner".to_string()
        };
        let sql = format!(
            "SELECT {key} AS k, COUNT(*) AS n FROM audit_log a \
             WHERE a.kind = 'verdict' AND a.at >= $1 AND a.at < $2 AND {key} IS NOT NULL \
             GROUP BY {key} ORDER BY n DESC, k LIMIT {TOP}"
        );
        self.db
            .query_all_raw(stmt(b, &sql, vec![p.from.into(), p.until.into()]))
            .await?
            .iter()
            .map(|r| Ok((text(r, "k")?, count(r, "n")?)))
            .collect()
    }

    /// Who decided what in `p`: the reviewer who made each decision (for a
    /// quorum, the one whose approval completed it).
    async fn reviewer_load(&self, p: Period) -> Result<Vec<Load>, DbErr> {
        let b = self.db.get_database_backend();
        let sql = "SELECT decided_by, \
                   SUM(CASE WHEN status = 'approved' THEN 1 ELSE 0 END) AS approved, \
                   SUM(CASE WHEN status = 'denied' THEN 1 ELSE 0 END) AS denied \
                   FROM requests WHERE decided_at >= $1 AND decided_at < $2 \
                   AND status IN ('approved', 'denied') AND decided_by IS NOT NULL \
                   GROUP BY decided_by ORDER BY COUNT(*) DESC, decided_by";
        self.db
            .query_all_raw(stmt(b, sql, vec![p.from.into(), p.until.into()]))
            .await?
            .iter()
            .map(|r| {
                Ok(Load {
                    reviewer: text(r, "decided_by")?,
                    approved: count(r, "approved")?,
                    denied: count(r, "denied")?,
                })
            })
            .collect()
    }

    async fn denied_in(&self, p: Period) -> Result<(Vec<Denied>, u64), DbErr> {
        let b = self.db.get_database_backend();
        let sql = format!(
            "SELECT id, runner, command, decided_by, reason, decided_at FROM requests \
             WHERE status = 'denied' AND decided_at >= $1 AND decided_at < $2 \
             ORDER BY decided_at, id LIMIT {}",
            DENIED_LISTED + 1
        );
        let mut rows: Vec<Denied> = self
            .db
            .query_all_raw(stmt(b, &sql, vec![p.from.into(), p.until.into()]))
            .await?
            .iter()
            .map(|r| {
                Ok(Denied {
                    id: text(r, "id")?,
                    runner: text(r, "runner")?,
                    command: holdpoint_shared::redact::redact(&text(r, "command")?),
                    decided_by: r.try_get("", "decided_by")?,
                    reason: r.try_get("", "reason")?,
                    decided_at: int(r, "decided_at")?,
                })
            })
            .collect::<Result<_, DbErr>>()?;
        let mut more = 0;
        if rows.len() as u64 > DENIED_LISTED {
            rows.truncate(DENIED_LISTED as usize);
            let sql = "SELECT COUNT(*) AS n FROM requests \
                       WHERE status = 'denied' AND decided_at >= $1 AND decided_at < $2";
            if let Some(r) = self
                .db
                .query_one_raw(stmt(b, sql, vec![p.from.into(), p.until.into()]))
                .await?
            {
                more = count(&r, "n")?.saturating_sub(DENIED_LISTED);
            }
        }
        Ok((rows, more))
    }

    async fn repeated(&self, p: Period) -> Result<Vec<Repeated>, DbErr> {
        let b = self.db.get_database_backend();
        let sql = format!(
            "SELECT command, COUNT(*) AS n FROM requests \
             WHERE status = 'approved' AND decided_at >= $1 AND decided_at < $2 \
             GROUP BY command HAVING COUNT(*) >= {REPEATED_AT_LEAST} \
             ORDER BY n DESC, command LIMIT {TOP}"
        );
        self.db
            .query_all_raw(stmt(b, &sql, vec![p.from.into(), p.until.into()]))
            .await?
            .iter()
            .map(|r| {
                Ok(Repeated {
                    command: holdpoint_shared::redact::redact(&text(r, "command")?),
                    approvals: count(r, "n")?,
                })
            })
            .collect()
    }

    /// Checks each link of the rows stored in `p` (from the hash of the
    /// row before the first), a page at a time.
    async fn chain_over(&self, p: Period) -> Result<Chain, DbErr> {
        let first = audit_log::Entity::find()
            .filter(audit_log::Column::RecordedAt.gte(p.from))
            .order_by_asc(audit_log::Column::Seq)
            .one(&self.db)
            .await?;
        let before_until = audit_log::Entity::find()
            .filter(audit_log::Column::RecordedAt.lt(p.until))
            .order_by_desc(audit_log::Column::Seq)
            .one(&self.db)
            .await?;
        let Some(last) = before_until else {
            return Ok(Chain {
                rows: 0,
                head: GENESIS.to_string(),
                head_seq: None,
                broken: None,
            });
        };
        let Some(first) = first.filter(|f| f.seq <= last.seq) else {
            return Ok(Chain {
                rows: 0,
                head: last.hash,
                head_seq: Some(last.seq),
                broken: None,
            });
        };
        let mut prev = match audit_log::Entity::find()
            .filter(audit_log::Column::Seq.lt(first.seq))
            .order_by_desc(audit_log::Column::Seq)
            .one(&self.db)
            .await?
        {
            Some(r) => r.hash,
            None => GENESIS.to_string(),
        };
        let mut rows = 0u64;
        let mut next = first.seq;
        loop {
            let page = audit_log::Entity::find()
                .filter(audit_log::Column::Seq.gte(next))
                .filter(audit_log::Column::Seq.lte(last.seq))
                .order_by_asc(audit_log::Column::Seq)
                .limit(1000)
                .all(&self.db)
                .await?;
            let Some(end) = page.last().map(|r| r.seq) else {
                break;
            };
            for r in page {
                rows += 1;
                let why = if r.prev_hash != prev {
                    Some("its link to the previous row is broken (a row was removed or reordered)")
                } else if link_hash(
                    &prev,
                    &r.event_id,
                    r.at,
                    &r.kind,
                    r.runner.as_deref(),
                    r.request_id.as_deref(),
                    &r.body,
                ) != r.hash
                {
                    Some("its content does not match its hash")
                } else {
                    None
                };
                if let Some(why) = why {
                    return Ok(Chain {
                        rows,
                        head: last.hash,
                        head_seq: Some(last.seq),
                        broken: Some((r.seq, why.to_string())),
                    });
                }
                prev = r.hash;
            }
            next = end + 1;
        }
        Ok(Chain {
            rows,
            head: last.hash,
            head_seq: Some(last.seq),
            broken: None,
        })
    }
}

/// The scheduled runs, one row per due time.
impl Bot {
    /// Claims the run due at `due_at` for `holder`: `true` for the one
    /// replica that inserts it first, `false` for every other (and for a
    /// run already sent).
    pub async fn claim_digest(&self, due_at: i64, holder: &str) -> Result<bool, DbErr> {
        use super::entity::digest;
        use sea_orm::Set;
        use sea_orm::sea_query::OnConflict;
        let inserted = digest::Entity::insert(digest::ActiveModel {
            due_at: Set(due_at),
            from_ms: Set(None),
            claimed_by: Set(holder.to_string()),
            claimed_at: Set(self.now_ms()),
            sent_at: Set(None),
            late: Set(false),
            error: Set(None),
        })
        .on_conflict(
            OnConflict::column(digest::Column::DueAt)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        Ok(inserted > 0)
    }

    /// Records that the run due at `due_at` was sent (late or not), with
    /// why any destination failed.
    pub async fn digest_sent(
        &self,
        due_at: i64,
        late: bool,
        error: Option<String>,
    ) -> Result<(), DbErr> {
        use super::entity::digest;
        use sea_orm::sea_query::Expr;
        digest::Entity::update_many()
            .col_expr(digest::Column::SentAt, Expr::value(self.now_ms()))
            .col_expr(digest::Column::Late, Expr::value(late))
            .col_expr(digest::Column::Error, Expr::value(error))
            .filter(digest::Column::DueAt.eq(due_at))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Asks the running bot to send the digest of `period` now: a row no
    /// replica has claimed yet.
    pub async fn ask_for_digest(&self, period: Period) -> Result<(), DbErr> {
        use super::entity::digest;
        use sea_orm::Set;
        digest::Entity::insert(digest::ActiveModel {
            due_at: Set(period.until),
            from_ms: Set(Some(period.from)),
            claimed_by: Set(String::new()),
            claimed_at: Set(self.now_ms()),
            sent_at: Set(None),
            late: Set(false),
            error: Set(None),
        })
        .exec_without_returning(&self.db)
        .await?;
        Ok(())
    }

    /// Claims a digest asked for with [`Bot::ask_for_digest`] for
    /// `holder`, if there is one no replica took: its period.
    pub async fn claim_asked_digest(&self, holder: &str) -> Result<Option<Period>, DbErr> {
        use super::entity::digest;
        use sea_orm::sea_query::Expr;
        let asked = digest::Entity::find()
            .filter(digest::Column::ClaimedBy.eq(""))
            .order_by_asc(digest::Column::DueAt)
            .all(&self.db)
            .await?;
        for d in asked {
            let taken = digest::Entity::update_many()
                .col_expr(digest::Column::ClaimedBy, Expr::value(holder))
                .col_expr(digest::Column::ClaimedAt, Expr::value(self.now_ms()))
                .filter(digest::Column::DueAt.eq(d.due_at))
                .filter(digest::Column::ClaimedBy.eq(""))
                .exec(&self.db)
                .await?
                .rows_affected;
            if taken == 1 {
                return Ok(Some(Period {
                    from: d.from_ms.unwrap_or(d.due_at),
                    until: d.due_at,
                }));
            }
        }
        Ok(None)
    }

    /// Whether any run was ever recorded (the first start of a schedule
    /// sends nothing for due times before it).
    pub async fn any_digest(&self) -> Result<bool, DbErr> {
        use super::entity::digest;
        Ok(digest::Entity::find().one(&self.db).await?.is_some())
    }

    /// The last run sent: when it was due and whether it was late.
    pub async fn last_digest(&self) -> Result<Option<(i64, i64, bool)>, DbErr> {
        use super::entity::digest;
        Ok(digest::Entity::find()
            .filter(digest::Column::SentAt.is_not_null())
            .order_by_desc(digest::Column::DueAt)
            .one(&self.db)
            .await?
            .and_then(|d| Some((d.due_at, d.sent_at?, d.late))))
    }
}

/// What the web audit view searches for; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// When it happened, unix ms, half-open.
    pub from: Option<i64>,
    pub until: Option<i64>,
    pub runner: Option<String>,
    pub agent: Option<String>,
    /// A rule that decided the verdict.
    pub rule: Option<String>,
    /// `allowed`, `held`, `refused` (verdicts), or `submitted`, `approved`,
    /// `denied`, `expired`, `cancelled`, `escalated`, `voted` (requests).
    pub outcome: Option<String>,
    /// Who decided (`web:alice`).
    pub reviewer: Option<String>,
    /// Text in the command (the event's, or its request's).
    pub q: Option<String>,
}

/// One row of the audit view: the audit row and what people look for in
/// it, the command redacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found {
    pub seq: i64,
    pub at: i64,
    pub kind: String,
    pub runner: Option<String>,
    pub request_id: Option<String>,
    pub command: Option<String>,
    pub decision: Option<String>,
    pub rules: Vec<String>,
    pub agent: Option<String>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
}

/// Most rows one search answers.
pub const MAX_FOUND: u64 = 10_000;

impl Bot {
    /// The audit rows that match `s`, newest first, older than `before`
    /// (a `seq`) when given, at most `limit`.
    pub async fn search_audit(
        &self,
        s: &Search,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<Found>, DbErr> {
        let b = self.db.get_database_backend();
        let mut wh: Vec<String> = Vec::new();
        let mut vals: Vec<Value> = Vec::new();
        let param = |v: Value, vals: &mut Vec<Value>| -> String {
            vals.push(v);
            format!("${}", vals.len())
        };
        if let Some(f) = s.from {
            wh.push(format!("a.at >= {}", param(f.into(), &mut vals)));
        }
        if let Some(u) = s.until {
            wh.push(format!("a.at < {}", param(u.into(), &mut vals)));
        }
        if let Some(before) = before {
            wh.push(format!("a.seq < {}", param(before.into(), &mut vals)));
        }
        if let Some(r) = s.runner.as_deref().filter(|r| !r.is_empty()) {
            wh.push(format!("a.runner = {}", param(r.into(), &mut vals)));
        }
        if let Some(a) = s.agent.as_deref().filter(|a| !a.is_empty()) {
            let p = param(a.into(), &mut vals);
            wh.push(format!("{} = {p}", json_text(b, "agent")));
        }
        if let Some(rule) = s.rule.as_deref().filter(|r| !r.is_empty()) {
            let p = param(rule.into(), &mut vals);
            wh.push(match b {
                DatabaseBackend::Postgres => format!(
                    "EXISTS (SELECT 1 FROM jsonb_array_elements_text(a.body::jsonb -> 'rules') AS r(value) WHERE r.value = {p})"
                ),
                _ => format!(
                    "EXISTS (SELECT 1 FROM json_each(a.body, '$.rules') r WHERE r.value = {p})"
                ),
            });
        }
        match s.outcome.as_deref().filter(|o| !o.is_empty()) {
            None => {}
            Some(o @ ("allowed" | "held" | "refused")) => {
                let d = match o {
                    "allowed" => "allow",
                    "held" => "review",
                    _ => "deny",
                };
                wh.push(format!(
                    "a.kind = 'verdict' AND {} = '{d}'",
                    json_text(b, "decision")
                ));
            }
            Some(
                o @ ("submitted" | "approved" | "denied" | "expired" | "cancelled" | "escalated"
                | "voted"),
            ) => wh.push(format!("a.kind = 'request.{o}'")),
            Some(_) => wh.push("1 = 0".into()),
        }
        if let Some(r) = s.reviewer.as_deref().filter(|r| !r.is_empty()) {
            let p = param(r.into(), &mut vals);
            wh.push(format!("{} = {p}", json_text(b, "decided_by")));
        }
        if let Some(q) = s.q.as_deref().filter(|q| !q.is_empty()) {
            let escaped: String = q
                .chars()
                .flat_map(|c| match c {
                    '%' | '_' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            let p = param(format!("%{escaped}%").into(), &mut vals);
            wh.push(format!(
                "COALESCE({}, r.command) LIKE {p} ESCAPE '\\'",
                json_text(b, "command")
            ));
        }
        let limit = limit.clamp(1, MAX_FOUND);
        let sql = format!(
            "SELECT a.seq, a.at, a.kind, a.runner, a.request_id, a.body, r.command AS request_command \
             FROM audit_log a LEFT JOIN requests r ON r.id = a.request_id {} \
             ORDER BY a.seq DESC LIMIT {limit}",
            if wh.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", wh.join(" AND "))
            }
        );
        self.db
            .query_all_raw(stmt(b, &sql, vals))
            .await?
            .iter()
            .map(|r| {
                let body: serde_json::Value =
                    serde_json::from_str(&text(r, "body")?).unwrap_or_default();
                let field = |k: &str| body.get(k).and_then(|v| v.as_str()).map(str::to_string);
                Ok(Found {
                    seq: int(r, "seq")?,
                    at: int(r, "at")?,
                    kind: text(r, "kind")?,
                    runner: r.try_get("", "runner")?,
                    request_id: r.try_get("", "request_id")?,
                    // The request's own command for the rows about it.
                    command: field("command")
                        .or(r.try_get::<Option<String>>("", "request_command")?)
                        .map(|c| holdpoint_shared::redact::redact(&c)),
                    decision: field("decision"),
                    rules: body
                        .get("rules")
                        .and_then(|v| v.as_array())
                        .map(|a| {
                            a.iter()
                                .filter_map(|r| r.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                    agent: field("agent"),
                    decided_by: field("decided_by").or_else(|| field("by")),
                    reason: field("reason"),
                })
            })
            .collect()
    }
}

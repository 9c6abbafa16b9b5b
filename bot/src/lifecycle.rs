//! The request lifecycle, in one place: `pending` → `approved` | `denied` |
//! `expired` | `cancelled`.
//!
//! Every front door (the runner websocket, the web page, the CLI, chat
//! adapters) goes through these functions, so the rules hold everywhere:
//!
//! - The first valid decision wins, atomically in the database (a guarded
//!   `UPDATE … WHERE status = 'pending'`); a later one is told who decided.
//! - A decision is bound to the request id and, where the caller knows it,
//!   the command hash.
//! - A request that is not decided before its deadline expires, which is a
//!   denial; a decision that arrives after the deadline does not count.
//! - The requester never approves their own request.
//! - Every transition is written to the audit log by whoever made it.

use crate::audit::NewEvent;
use crate::entity::request;
use crate::state::{Bot, Change};
use crate::time::now_ms;
use holdpoint_shared::Verdict;
use holdpoint_shared::annotation::Annotation;
use holdpoint_shared::protocol::{DecisionMessage, ReviewRequest, Status};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde::Serialize;
use serde_json::json;

/// Why a lifecycle call failed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("invalid request: {0}")]
    Invalid(#[from] holdpoint_shared::protocol::InvalidRequest),
    #[error("request {0} was submitted earlier with a different command or by another runner")]
    Conflict(String),
    #[error("the stored request {0} cannot be read: {1}")]
    Corrupt(String, String),
}

/// A request as the bot stores and shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredRequest {
    #[serde(flatten)]
    pub request: ReviewRequest,
    pub runner: String,
    pub status: Status,
    pub created_at: i64,
    pub expires_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
}

impl StoredRequest {
    fn from_row(r: request::Model) -> Result<StoredRequest, LifecycleError> {
        let corrupt = |what: &str| LifecycleError::Corrupt(r.id.clone(), what.to_string());
        let verdict: Verdict =
            serde_json::from_str(&r.verdict).map_err(|e| corrupt(&format!("verdict: {e}")))?;
        let annotations: Vec<Annotation> = serde_json::from_str(&r.annotations)
            .map_err(|e| corrupt(&format!("annotations: {e}")))?;
        let status = Status::parse(&r.status).ok_or_else(|| corrupt("status"))?;
        Ok(StoredRequest {
            request: ReviewRequest {
                id: r.id,
                command: r.command,
                command_hash: r.command_hash,
                verdict,
                annotations,
                host: r.host,
                cwd: r.cwd,
                agent: r.agent,
                session: r.session,
                front_end: r.front_end,
                requested_by: r.requested_by,
            },
            runner: r.runner,
            status,
            created_at: r.created_at,
            expires_at: r.expires_at,
            decided_at: r.decided_at,
            decided_by: r.decided_by,
            reason: r.reason,
        })
    }

    /// The decision to relay, if the request is decided.
    pub fn decision(&self) -> Option<DecisionMessage> {
        self.status.is_final().then(|| DecisionMessage {
            request_id: self.request.id.clone(),
            command_hash: self.request.command_hash.clone(),
            status: self.status,
            decided_by: self
                .decided_by
                .clone()
                .unwrap_or_else(|| "holdpoint".into()),
            reason: self.reason.clone(),
            decided_at: self.decided_at.unwrap_or(self.created_at),
        })
    }
}

/// The answer to a submission.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// Stored; waits until `expires_at`.
    Pending { expires_at: i64 },
    /// Already decided (a re-submission after a reconnect).
    Decided(DecisionMessage),
}

/// Someone who decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewer {
    /// Stable identity with its namespace: `web:local`, `cli:alice`,
    /// `slack:U0123`. Compared with the request's `requested_by`.
    pub id: String,
}

/// The answer to a decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    /// This decision won.
    Won(DecisionMessage),
    /// Someone (or the deadline) decided first.
    Already(DecisionMessage),
    /// The reviewer may not decide this request; says why.
    Refused(String),
    /// No such request.
    NotFound,
}

fn kind(s: Status) -> &'static str {
    match s {
        Status::Pending => "request.submitted",
        Status::Approved => "request.approved",
        Status::Denied => "request.denied",
        Status::Expired => "request.expired",
        Status::Cancelled => "request.cancelled",
    }
}

impl Bot {
    /// Reads one request.
    pub async fn get(&self, id: &str) -> Result<Option<StoredRequest>, LifecycleError> {
        request::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(StoredRequest::from_row)
            .transpose()
    }

    /// Stores a request from `runner`, or answers a re-submission with what
    /// is known about it.
    pub async fn submit(
        &self,
        runner: &str,
        req: &ReviewRequest,
    ) -> Result<Submitted, LifecycleError> {
        req.validate()?;
        if let Some(answer) = self.resubmitted(runner, req).await? {
            return Ok(answer);
        }
        let now = now_ms();
        let expires_at = now + self.config.expiry.for_risk(req.risk()).as_millis() as i64;
        let model = request::ActiveModel {
            id: Set(req.id.clone()),
            runner: Set(runner.to_string()),
            command: Set(req.command.clone()),
            command_hash: Set(req.command_hash.clone()),
            risk: Set(req.risk().as_str().to_string()),
            verdict: Set(serde_json::to_string(&req.verdict).unwrap_or_default()),
            annotations: Set(serde_json::to_string(&req.annotations).unwrap_or_default()),
            host: Set(req.host.clone()),
            cwd: Set(req.cwd.clone()),
            agent: Set(req.agent.clone()),
            session: Set(req.session.clone()),
            front_end: Set(req.front_end.clone()),
            requested_by: Set(req.requested_by.clone()),
            status: Set(Status::Pending.as_str().to_string()),
            created_at: Set(now),
            expires_at: Set(expires_at),
            decided_at: Set(None),
            decided_by: Set(None),
            reason: Set(None),
            relayed_at: Set(None),
        };
        if let Err(e) = model.insert(&self.db).await {
            // Two connections of the same runner raced with the same id.
            if let Some(answer) = self.resubmitted(runner, req).await? {
                return Ok(answer);
            }
            return Err(e.into());
        }
        self.metrics.submitted();
        self.audit(&[NewEvent::now(
            kind(Status::Pending),
            Some(runner),
            Some(&req.id),
            json!({
                "command": req.command,
                "risk": req.risk(),
                "rules": req.verdict.deciding_rules(),
                "reasons": req.verdict.deciding_reasons(),
                "host": req.host,
                "cwd": req.cwd,
                "agent": req.agent,
                "requested_by": req.requested_by,
                "expires_at": expires_at,
            }),
        )])
        .await?;
        self.notify(Change::Submitted(req.id.clone()));
        Ok(Submitted::Pending { expires_at })
    }

    async fn resubmitted(
        &self,
        runner: &str,
        req: &ReviewRequest,
    ) -> Result<Option<Submitted>, LifecycleError> {
        let Some(existing) = self.get(&req.id).await? else {
            return Ok(None);
        };
        if existing.runner != runner || existing.request.command_hash != req.command_hash {
            return Err(LifecycleError::Conflict(req.id.clone()));
        }
        Ok(Some(match existing.decision() {
            Some(d) => Submitted::Decided(d),
            None => Submitted::Pending {
                expires_at: existing.expires_at,
            },
        }))
    }

    /// Whether `reviewer` may decide `req` this way; `Err` says why not.
    pub fn may_decide(
        &self,
        reviewer: &Reviewer,
        req: &StoredRequest,
        approve: bool,
    ) -> Result<(), String> {
        if approve && req.request.requested_by.as_deref() == Some(reviewer.id.as_str()) {
            return Err(
                "you asked for this command to run, so someone else must approve it".into(),
            );
        }
        Ok(())
    }

    /// Approves or denies. `expected_hash`, when given, must match the
    /// stored command hash (a reviewer approving what they saw).
    pub async fn decide(
        &self,
        id: &str,
        approve: bool,
        reviewer: &Reviewer,
        reason: Option<String>,
        expected_hash: Option<&str>,
    ) -> Result<Decided, LifecycleError> {
        let Some(current) = self.get(id).await? else {
            return Ok(Decided::NotFound);
        };
        if let Some(d) = current.decision() {
            return Ok(Decided::Already(d));
        }
        if let Some(h) = expected_hash
            && h != current.request.command_hash
        {
            return Ok(Decided::Refused(
                "the command changed since you saw it; look at it again".into(),
            ));
        }
        if let Err(why) = self.may_decide(reviewer, &current, approve) {
            return Ok(Decided::Refused(why));
        }
        let status = if approve {
            Status::Approved
        } else {
            Status::Denied
        };
        let reason = reason
            .map(|r| r.trim().chars().take(2000).collect::<String>())
            .filter(|r| !r.is_empty());
        let now = now_ms();
        let won = self
            .transition(id, status, &reviewer.id, reason.as_deref(), now, true)
            .await?;
        let after = self
            .get(id)
            .await?
            .ok_or_else(|| LifecycleError::Corrupt(id.into(), "vanished".into()))?;
        let Some(decision) = after.decision() else {
            // Still pending although the guarded update did nothing: the
            // deadline passed. Expire it now rather than wait for the sweep.
            self.expire_due().await?;
            return match self.get(id).await?.and_then(|r| r.decision()) {
                Some(d) => Ok(Decided::Already(d)),
                None => Err(LifecycleError::Corrupt(id.into(), "undecidable".into())),
            };
        };
        if won {
            self.finished(&after).await?;
            Ok(Decided::Won(decision))
        } else {
            Ok(Decided::Already(decision))
        }
    }

    /// The guarded update: pending → `status`, only if still pending (and,
    /// for a reviewer's decision, still before the deadline). Returns whether
    /// this call made the change.
    async fn transition(
        &self,
        id: &str,
        status: Status,
        by: &str,
        reason: Option<&str>,
        now: i64,
        before_deadline: bool,
    ) -> Result<bool, DbErr> {
        let mut q = request::Entity::update_many()
            .col_expr(request::Column::Status, Expr::value(status.as_str()))
            .col_expr(request::Column::DecidedAt, Expr::value(now))
            .col_expr(request::Column::DecidedBy, Expr::value(by))
            .col_expr(
                request::Column::Reason,
                Expr::value(reason.map(str::to_string)),
            )
            .filter(request::Column::Id.eq(id))
            .filter(request::Column::Status.eq(Status::Pending.as_str()));
        if before_deadline {
            q = q.filter(request::Column::ExpiresAt.gt(now));
        }
        Ok(q.exec(&self.db).await?.rows_affected == 1)
    }

    /// After a transition this process won: audit, metrics, relay, notify.
    async fn finished(&self, r: &StoredRequest) -> Result<(), LifecycleError> {
        let Some(d) = r.decision() else {
            return Ok(());
        };
        // The decision is already durable in `requests`: tell the waiting
        // runner first, then write the audit row (a failed audit append is
        // an error for the caller either way; relaying later would only
        // make the agent wait longer).
        self.hub.deliver(&d);
        self.notify(Change::Decided(r.request.id.clone()));
        self.metrics
            .ended(d.status, d.decided_at.saturating_sub(r.created_at));
        self.audit(&[NewEvent::now(
            kind(d.status),
            Some(&r.runner),
            Some(&r.request.id),
            json!({
                "decided_by": d.decided_by,
                "reason": d.reason,
                "command_hash": d.command_hash,
                "waited_ms": d.decided_at.saturating_sub(r.created_at),
            }),
        )])
        .await?;
        Ok(())
    }

    /// The runner that submitted a request gives up on it.
    pub async fn cancel(&self, runner: &str, id: &str) -> Result<Decided, LifecycleError> {
        let Some(current) = self.get(id).await? else {
            return Ok(Decided::NotFound);
        };
        if current.runner != runner {
            return Ok(Decided::Refused(
                "another runner submitted this request".into(),
            ));
        }
        if let Some(d) = current.decision() {
            return Ok(Decided::Already(d));
        }
        let by = format!("runner:{runner}");
        let won = self
            .transition(
                id,
                Status::Cancelled,
                &by,
                Some("the agent stopped waiting"),
                now_ms(),
                false,
            )
            .await?;
        let after = self
            .get(id)
            .await?
            .ok_or_else(|| LifecycleError::Corrupt(id.into(), "vanished".into()))?;
        let d = after
            .decision()
            .ok_or_else(|| LifecycleError::Corrupt(id.into(), "still pending".into()))?;
        if won {
            self.finished(&after).await?;
            Ok(Decided::Won(d))
        } else {
            Ok(Decided::Already(d))
        }
    }

    /// Expires every pending request whose deadline passed. Returns how
    /// many this call expired.
    pub async fn expire_due(&self) -> Result<usize, LifecycleError> {
        let now = now_ms();
        let due = request::Entity::find()
            .filter(request::Column::Status.eq(Status::Pending.as_str()))
            .filter(request::Column::ExpiresAt.lte(now))
            .limit(500)
            .all(&self.db)
            .await?;
        let mut n = 0;
        for row in due {
            let waited = crate::time::human_duration(row.expires_at - row.created_at);
            let reason = format!("no reviewer decided within {waited}");
            if self
                .transition(
                    &row.id,
                    Status::Expired,
                    "holdpoint",
                    Some(&reason),
                    now,
                    false,
                )
                .await?
                && let Some(after) = self.get(&row.id).await?
            {
                self.finished(&after).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Sends decisions made elsewhere (the CLI, another replica) to the
    /// runners connected here that wait for them.
    pub async fn relay_foreign(&self) -> Result<usize, LifecycleError> {
        let waiting = self.hub.undelivered();
        let mut n = 0;
        for chunk in waiting.chunks(500) {
            let rows = request::Entity::find()
                .filter(request::Column::Id.is_in(chunk.iter().cloned()))
                .filter(request::Column::Status.ne(Status::Pending.as_str()))
                .all(&self.db)
                .await?;
            for row in rows {
                if let Some(d) = StoredRequest::from_row(row)?.decision()
                    && self.hub.deliver(&d)
                {
                    n += 1;
                    self.notify(Change::Decided(d.request_id.clone()));
                }
            }
        }
        Ok(n)
    }

    /// The runner has the decision.
    pub async fn acknowledged(&self, runner: &str, id: &str) -> Result<(), LifecycleError> {
        self.hub.acked(id);
        request::Entity::update_many()
            .col_expr(request::Column::RelayedAt, Expr::value(now_ms()))
            .filter(request::Column::Id.eq(id))
            .filter(request::Column::Runner.eq(runner))
            .filter(request::Column::RelayedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Pending requests, oldest first. A row that cannot be read is logged
    /// and left out rather than hiding every other request.
    pub async fn pending(&self) -> Result<Vec<StoredRequest>, LifecycleError> {
        let rows = request::Entity::find()
            .filter(request::Column::Status.eq(Status::Pending.as_str()))
            .order_by_asc(request::Column::CreatedAt)
            .limit(1000)
            .all(&self.db)
            .await?;
        Ok(readable(rows))
    }

    /// How many requests are pending.
    pub async fn pending_count(&self) -> Result<u64, LifecycleError> {
        Ok(request::Entity::find()
            .filter(request::Column::Status.eq(Status::Pending.as_str()))
            .count(&self.db)
            .await?)
    }

    /// The most recently decided requests, newest first.
    pub async fn recent(&self, limit: u64) -> Result<Vec<StoredRequest>, LifecycleError> {
        let rows = request::Entity::find()
            .filter(request::Column::Status.ne(Status::Pending.as_str()))
            .order_by_desc(request::Column::DecidedAt)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(readable(rows))
    }
}

fn readable(rows: Vec<request::Model>) -> Vec<StoredRequest> {
    rows.into_iter()
        .filter_map(|r| match StoredRequest::from_row(r) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("{e}");
                None
            }
        })
        .collect()
}

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
//! - Every transition commits together with its audit row and its change
//!   row; only then is the decision relayed.

use super::audit::{self, NewEvent};
use super::entity::{request, vote};
use super::reviewer::{Intent, Refusal, Reviewer};
use super::writer::{Move, NewRequest, Stored, Write, Written};
use super::{Bot, RunnerId, feed};
use crate::config::{Quorum, Requirement};
use holdpoint_shared::Verdict;
use holdpoint_shared::annotation::Annotation;
use holdpoint_shared::protocol::{DecisionMessage, ReviewRequest, Status};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
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
    #[error("{0}")]
    Limit(String),
    #[error("this runner works for {bound}; a request on behalf of {claimed} is refused")]
    Requester { bound: String, claimed: String },
    #[error("this runner's token was revoked")]
    Revoked,
}

/// The pending queue as [`Bot::pending_fair`] cuts it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PendingQueue {
    /// What is shown, oldest first.
    pub requests: Vec<StoredRequest>,
    /// Every runner with pending requests, the busiest first.
    pub runners: Vec<RunnerQueue>,
    /// Pending requests in all, shown or not.
    pub total: u64,
}

/// How much of one runner's queue a listing shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunnerQueue {
    pub runner: String,
    pub pending: u64,
    pub shown: u64,
}

/// A request as the bot stores and shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredRequest {
    #[serde(flatten)]
    pub request: ReviewRequest,
    /// The name of the runner that submitted it.
    pub runner: String,
    /// The runner identity that submitted it (`None` for requests older
    /// than identities whose runner was gone).
    #[serde(skip)]
    pub runner_id: Option<i64>,
    pub status: Status,
    pub created_at: i64,
    pub expires_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    /// The approvals counted so far towards its quorum, oldest first
    /// (stored reviewer text); filled by [`Bot::get`] and the web listing.
    pub votes: Vec<String>,
    /// What it needs before it is approved, as chosen when it was
    /// submitted ([`crate::config::Quorum`]).
    pub quorum: Requirement,
    /// By group, the approvals it still needs from that group's members;
    /// filled with `votes`.
    #[serde(skip)]
    pub missing: Vec<(String, u32)>,
}

impl StoredRequest {
    /// Who decided, if it was decided.
    pub fn decider(&self) -> Option<Reviewer> {
        self.decided_by.as_deref().and_then(Reviewer::parse)
    }

    /// The stored row; a request stored before quorums were stored with
    /// their request needs what `fallback` asks for its risk now.
    fn from_row(r: request::Model, fallback: &Quorum) -> Result<StoredRequest, LifecycleError> {
        let corrupt = |what: &str| LifecycleError::Corrupt(r.id.clone(), what.to_string());
        let verdict: Verdict =
            serde_json::from_str(&r.verdict).map_err(|e| corrupt(&format!("verdict: {e}")))?;
        let quorum = match r.quorum.as_deref() {
            Some(q) => serde_json::from_str::<Requirement>(q)
                .map_err(|e| corrupt(&format!("quorum: {e}")))?,
            None => Requirement::of(fallback.for_risk(verdict.risk)),
        };
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
            runner_id: r.runner_id,
            status,
            created_at: r.created_at,
            expires_at: r.expires_at,
            decided_at: r.decided_at,
            decided_by: r.decided_by,
            reason: r.reason,
            votes: Vec::new(),
            quorum,
            missing: Vec::new(),
        })
    }

    /// The decision to relay, if the request is decided.
    pub fn decision(&self) -> Option<DecisionMessage> {
        // The stored `decided_by` is a `Reviewer`'s text (`holdpoint` for
        // expiry), relayed as it is.
        self.status.is_final().then(|| DecisionMessage {
            request_id: self.request.id.clone(),
            command_hash: self.request.command_hash.clone(),
            status: self.status,
            decided_by: self
                .decided_by
                .clone()
                .unwrap_or_else(|| Reviewer::system().to_string()),
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

/// The answer to a decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    /// This decision won.
    Won(DecisionMessage),
    /// Someone (or the deadline) decided first.
    Already(DecisionMessage),
    /// The approval was counted; the request waits for more: `required`
    /// in all, `missing` still from these groups' members.
    Voted {
        approvals: u32,
        required: u32,
        missing: Vec<(String, u32)>,
    },
    /// The reviewer may not decide this request; says why.
    Refused(Refusal),
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

/// Submissions per runner, as token buckets on the core's clock.
#[derive(Default)]
pub(super) struct Rate {
    buckets: std::sync::Mutex<std::collections::HashMap<i64, (f64, i64)>>,
}

impl Rate {
    /// Whether `runner` may submit now, at `per_second` on average with
    /// bursts of twice that.
    fn admit(&self, runner: i64, now: i64, per_second: u32) -> bool {
        let mut b = match self.buckets.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        let burst = f64::from(per_second) * 2.0;
        if b.len() > 100_000 {
            b.clear();
        }
        let (tokens, at) = b.entry(runner).or_insert((burst, now));
        let refill = (now.saturating_sub(*at)).max(0) as f64 / 1000.0 * f64::from(per_second);
        *tokens = (*tokens + refill).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a transition needs to know about the request it moves.
struct Subject<'a> {
    id: &'a str,
    runner_id: Option<i64>,
    runner: &'a str,
    command_hash: &'a str,
    created_at: i64,
}

impl<'a> Subject<'a> {
    fn of(r: &'a StoredRequest) -> Subject<'a> {
        Subject {
            id: &r.request.id,
            runner_id: r.runner_id,
            runner: &r.runner,
            command_hash: &r.request.command_hash,
            created_at: r.created_at,
        }
    }
}

/// The decision a guarded move pending → `to` makes, and the write that
/// makes it, with its audit row.
fn planned_move(
    s: &Subject<'_>,
    to: Status,
    by: &Reviewer,
    reason: Option<&str>,
    at: i64,
    before_deadline: bool,
) -> (DecisionMessage, Move) {
    let d = DecisionMessage {
        request_id: s.id.to_string(),
        command_hash: s.command_hash.to_string(),
        status: to,
        decided_by: by.to_string(),
        reason: reason.map(str::to_string),
        decided_at: at,
    };
    let event = NewEvent::at(
        at,
        kind(to),
        Some(s.runner),
        Some(s.id),
        json!({
            "decided_by": d.decided_by,
            "reason": d.reason,
            "command_hash": d.command_hash,
            "waited_ms": at.saturating_sub(s.created_at),
        }),
    );
    let m = Move {
        id: s.id.to_string(),
        runner_id: s.runner_id,
        to,
        at,
        decided_by: d.decided_by.clone(),
        reason: d.reason.clone(),
        before_deadline,
        event,
    };
    (d, m)
}

/// A reason as stored: trimmed, at most 2,000 characters, none if empty.
fn clean_reason(r: Option<&str>) -> Option<String> {
    r.map(|r| r.trim().chars().take(2000).collect::<String>())
        .filter(|r| !r.is_empty())
}

impl Bot {
    /// Reads one request, with its votes.
    pub async fn get(&self, id: &str) -> Result<Option<StoredRequest>, LifecycleError> {
        let Some(mut r) = request::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(|row| StoredRequest::from_row(row, &self.config.quorum))
            .transpose()?
        else {
            return Ok(None);
        };
        // Votes are stored only for a request that counts them.
        if r.quorum.counts_votes() {
            let mut votes = self.votes_of(std::slice::from_ref(&r.request.id)).await?;
            r.votes = votes.remove(&r.request.id).unwrap_or_default();
        }
        r.missing = r.quorum.missing(&self.voter_groups(&r.votes));
        Ok(Some(r))
    }

    /// The groups of each reviewer (stored text) who voted.
    pub fn voter_groups(&self, votes: &[String]) -> Vec<Vec<String>> {
        votes
            .iter()
            .map(|v| self.config.groups_of(&self.config.person_of(v)))
            .collect()
    }

    /// The approvals counted for these requests, oldest first, by request.
    pub async fn votes_of(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<String>>, DbErr> {
        let mut out: std::collections::HashMap<String, Vec<String>> = Default::default();
        for chunk in ids.chunks(500) {
            for v in vote::Entity::find()
                .filter(vote::Column::RequestId.is_in(chunk.iter().cloned()))
                .order_by_asc(vote::Column::At)
                .all(&self.db)
                .await?
            {
                out.entry(v.request_id).or_default().push(v.reviewer);
            }
        }
        Ok(out)
    }

    /// Counts `reviewer`'s approval towards the quorum of `current`, and
    /// approves it when that makes the quorum. The vote, its audit row and
    /// a change row (so every page and chat shows the count), and the
    /// approval it completes, commit together, only while the request is
    /// pending and before its deadline; one person counts once, whichever
    /// identity they use.
    async fn vote(
        &self,
        reviewer: &Reviewer,
        current: &StoredRequest,
        required: &Requirement,
        reason: Option<&str>,
    ) -> Result<Decided, LifecycleError> {
        let id = current.request.id.as_str();
        let person = self.config.person_of(&reviewer.to_string());
        let groups = self.config.groups_of(&person);
        let now = self.now_ms();
        enum Counted {
            Closed,
            Twice,
            Reserved(Vec<(String, u32)>),
            Now(u32, Vec<(String, u32)>),
            Approved(DecisionMessage),
        }
        let counted = {
            let _w = self.write_lock.lock().await;
            audit::retrying(|| async {
                let txn = audit::begin_write(&self.db).await?;
                let open = request::Entity::find_by_id(id.to_string())
                    .filter(request::Column::Status.eq(Status::Pending.as_str()))
                    .filter(request::Column::ExpiresAt.gt(now))
                    .one(&txn)
                    .await?
                    .is_some();
                if !open {
                    txn.rollback().await?;
                    return Ok(Counted::Closed);
                }
                let before = vote::Entity::find()
                    .filter(vote::Column::RequestId.eq(id))
                    .order_by_asc(vote::Column::At)
                    .all(&txn)
                    .await?;
                if before.iter().any(|v| v.person == person) {
                    txn.rollback().await?;
                    return Ok(Counted::Twice);
                }
                let mut voters: Vec<Vec<String>> = before
                    .iter()
                    .map(|v| self.config.groups_of(&v.person))
                    .collect();
                if !required.admits(&voters, &groups) {
                    txn.rollback().await?;
                    return Ok(Counted::Reserved(required.missing(&voters)));
                }
                let inserted = vote::Entity::insert(vote::ActiveModel {
                    request_id: Set(id.to_string()),
                    person: Set(person.clone()),
                    reviewer: Set(reviewer.to_string()),
                    at: Set(now),
                })
                .on_conflict_do_nothing()
                .exec_without_returning(&txn)
                .await?;
                if !matches!(inserted, sea_orm::TryInsertResult::Inserted(n) if n > 0) {
                    txn.rollback().await?;
                    return Ok(Counted::Twice);
                }
                voters.push(groups.clone());
                let mut votes: Vec<String> = before.into_iter().map(|v| v.reviewer).collect();
                votes.push(reviewer.to_string());
                let missing = required.missing(&voters);
                let event = NewEvent::at(
                    now,
                    "request.voted",
                    Some(&current.runner),
                    Some(id),
                    json!({
                        "by": reviewer.to_string(),
                        "person": person,
                        "reason": reason,
                        "approvals": votes.len(),
                        "required": required.approvals,
                        "groups": groups,
                        "missing": missing,
                    }),
                );
                let approvals = u32::try_from(votes.len()).unwrap_or(u32::MAX);
                if !required.met(&voters) {
                    audit::append_in(&txn, std::slice::from_ref(&event), now).await?;
                    feed::record(&txn, id, Status::Pending, now).await?;
                    txn.commit().await?;
                    return Ok(Counted::Now(approvals, missing));
                }
                // The quorum is met: the approval commits with this vote.
                let d = DecisionMessage {
                    request_id: id.to_string(),
                    command_hash: current.request.command_hash.clone(),
                    status: Status::Approved,
                    decided_by: reviewer.to_string(),
                    reason: Some(format!(
                        "{approvals} of {} approvals: {}",
                        required.approvals,
                        votes.join(", ")
                    )),
                    decided_at: now,
                };
                let moved = request::Entity::update_many()
                    .col_expr(request::Column::Status, Expr::value(d.status.as_str()))
                    .col_expr(request::Column::DecidedAt, Expr::value(now))
                    .col_expr(
                        request::Column::DecidedBy,
                        Expr::value(d.decided_by.as_str()),
                    )
                    .col_expr(request::Column::Reason, Expr::value(d.reason.clone()))
                    .filter(request::Column::Id.eq(id))
                    .filter(request::Column::Status.eq(Status::Pending.as_str()))
                    .filter(request::Column::ExpiresAt.gt(now))
                    .exec(&txn)
                    .await?
                    .rows_affected;
                if moved != 1 {
                    txn.rollback().await?;
                    return Ok(Counted::Closed);
                }
                let approved = NewEvent::at(
                    now,
                    kind(Status::Approved),
                    Some(&current.runner),
                    Some(id),
                    json!({
                        "decided_by": d.decided_by,
                        "reason": d.reason,
                        "command_hash": d.command_hash,
                        "waited_ms": now.saturating_sub(current.created_at),
                    }),
                );
                audit::append_in(&txn, &[event.clone(), approved], now).await?;
                feed::record(&txn, id, Status::Approved, now).await?;
                txn.commit().await?;
                Ok(Counted::Approved(d))
            })
            .await?
        };
        match counted {
            Counted::Closed => self.already_or_expired(id).await,
            Counted::Twice => Ok(Decided::Refused(Refusal::AlreadyVoted)),
            Counted::Reserved(missing) => Ok(Decided::Refused(Refusal::GroupsNeeded(missing))),
            Counted::Now(approvals, missing) => {
                self.feed.wake();
                Ok(Decided::Voted {
                    approvals,
                    required: required.approvals,
                    missing,
                })
            }
            Counted::Approved(d) => {
                // Relayed only after the commit, as every transition.
                self.hub.deliver(&d);
                self.feed.wake();
                self.metrics
                    .ended(Status::Approved, now.saturating_sub(current.created_at));
                Ok(Decided::Won(d))
            }
        }
    }

    /// The answer when a decision found the request no longer open.
    async fn already_or_expired(&self, id: &str) -> Result<Decided, LifecycleError> {
        if let Some(d) = self.get(id).await?.and_then(|r| r.decision()) {
            return Ok(Decided::Already(d));
        }
        // Still pending although it could not be decided: the deadline
        // passed. Expire it now rather than wait for the sweep.
        self.expire_due().await?;
        match self.get(id).await?.and_then(|r| r.decision()) {
            Some(d) => Ok(Decided::Already(d)),
            None => Err(LifecycleError::Corrupt(id.into(), "undecidable".into())),
        }
    }

    /// Stores a request from `runner`, or answers a re-submission with what
    /// is known about it. The request, its audit row and its change row
    /// commit together.
    pub async fn submit(
        &self,
        runner: &RunnerId,
        req: &ReviewRequest,
    ) -> Result<Submitted, LifecycleError> {
        req.validate()?;
        if let Some(answer) = self.resubmitted(runner, req).await? {
            return Ok(answer);
        }
        self.store(runner, req).await
    }

    /// Stores a request this runner has not submitted before (as far as
    /// the caller has seen).
    async fn store(
        &self,
        runner: &RunnerId,
        req: &ReviewRequest,
    ) -> Result<Submitted, LifecycleError> {
        let requested_by = self.requester(runner, req)?;
        let now = self.now_ms();
        if !self
            .rate
            .admit(runner.id, now, self.config.limits.submissions_per_second)
        {
            self.metrics.limit_refused("submissions");
            return Err(LifecycleError::Limit(format!(
                "this runner submits more than {} requests a second; try again in a moment",
                self.config.limits.submissions_per_second
            )));
        }
        let pending_cap = u64::from(self.config.limits.pending_per_runner);
        let expiry = self.config.expiry.for_risk(req.risk());
        let expires_at = now + expiry.as_millis() as i64;
        let (policy, steps) = self.config.escalation.steps_for(
            &runner.name,
            req.agent.as_deref(),
            req.risk(),
            expiry,
        );
        let planned: Vec<serde_json::Value> = steps
            .iter()
            .map(|s| {
                json!({
                    "action": s.action,
                    "due_at": now.saturating_add(s.after.as_millis() as i64),
                })
            })
            .collect();
        let quorum = self
            .config
            .quorum
            .for_request(&runner.name, req.agent.as_deref(), req.risk());
        let quorum_json = serde_json::to_string(&quorum)
            .map_err(|e| LifecycleError::Corrupt(req.id.clone(), format!("quorum: {e}")))?;
        let verdict = serde_json::to_string(&req.verdict)
            .map_err(|e| LifecycleError::Corrupt(req.id.clone(), format!("verdict: {e}")))?;
        let annotations = serde_json::to_string(&req.annotations)
            .map_err(|e| LifecycleError::Corrupt(req.id.clone(), format!("annotations: {e}")))?;
        let model = request::ActiveModel {
            id: Set(req.id.clone()),
            runner: Set(runner.name.clone()),
            runner_id: Set(Some(runner.id)),
            command: Set(req.command.clone()),
            command_hash: Set(req.command_hash.clone()),
            risk: Set(req.risk().as_str().to_string()),
            verdict: Set(verdict),
            annotations: Set(annotations),
            host: Set(req.host.clone()),
            cwd: Set(req.cwd.clone()),
            agent: Set(req.agent.clone()),
            session: Set(req.session.clone()),
            front_end: Set(req.front_end.clone()),
            requested_by: Set(requested_by.clone()),
            status: Set(Status::Pending.as_str().to_string()),
            created_at: Set(now),
            expires_at: Set(expires_at),
            decided_at: Set(None),
            decided_by: Set(None),
            reason: Set(None),
            relayed_at: Set(None),
            quorum: Set(Some(quorum_json)),
        };
        let event = NewEvent::at(
            now,
            kind(Status::Pending),
            Some(&runner.name),
            Some(&req.id),
            json!({
                "runner_id": runner.id,
                "command": req.command,
                "risk": req.risk(),
                "rules": req.verdict.deciding_rules(),
                "reasons": req.verdict.deciding_reasons(),
                "host": req.host,
                "cwd": req.cwd,
                "agent": req.agent,
                "requested_by": requested_by,
                "expires_at": expires_at,
                "escalation": {"policy": policy, "steps": planned},
                "quorum": quorum,
            }),
        );
        let written = self
            .writer
            .write(Write::Submit(Box::new(NewRequest {
                id: req.id.clone(),
                model,
                runner_id: runner.id,
                pending_cap,
                steps,
                event,
                now,
            })))
            .await?;
        let Written::Submit(stored) = written else {
            return Err(LifecycleError::Corrupt(
                req.id.clone(),
                "not a submission".into(),
            ));
        };
        match stored {
            Stored::New => {}
            Stored::Again => {
                return match self.resubmitted(runner, req).await? {
                    Some(answer) => Ok(answer),
                    None => Err(LifecycleError::Corrupt(req.id.clone(), "vanished".into())),
                };
            }
            Stored::Revoked => return Err(LifecycleError::Revoked),
            Stored::Full => {
                self.metrics.limit_refused("pending");
                return Err(LifecycleError::Limit(format!(
                    "this runner already has {pending_cap} requests waiting for review; \
                     wait for some to be decided"
                )));
            }
        }
        self.metrics.submitted();
        self.feed.wake();
        Ok(Submitted::Pending { expires_at })
    }

    /// [`Bot::submit`] for a runner connection: the connection waits for
    /// the decision from before the request is stored, so one made the
    /// instant after finds it. Whose request it is and its hash are checked
    /// before the connection is made to wait, so a submission of another
    /// runner's id (or another command under the same id) never takes over
    /// that runner's wait; a refused submission takes nothing over.
    pub async fn submit_on(
        &self,
        conn: super::ConnId,
        runner: &RunnerId,
        req: &ReviewRequest,
    ) -> Result<Submitted, LifecycleError> {
        req.validate()?;
        let known = self.resubmitted(runner, req).await?;
        let previous = self.hub.wait(&req.id, conn);
        let answer = match known {
            Some(answer) => Ok(answer),
            None => self.store(runner, req).await,
        };
        if answer.is_err() {
            self.hub.restore(&req.id, previous);
        }
        answer
    }

    /// Whom the request is for. A runner bound to a requester
    /// (`[runners.NAME] requester`) submits for that person only: an
    /// omitted claim becomes the binding, another claim is refused. An
    /// unbound runner's claim is taken as it is (and without one, no
    /// reviewer is the requester).
    fn requester(
        &self,
        runner: &RunnerId,
        req: &ReviewRequest,
    ) -> Result<Option<String>, LifecycleError> {
        let Some(bound) = self
            .config
            .runners
            .get(&runner.name)
            .and_then(|r| r.requester.as_ref())
        else {
            return Ok(req.requested_by.clone());
        };
        let bound = bound.to_string();
        match req.requested_by.as_deref() {
            None => Ok(Some(bound)),
            Some(c) if c == bound => Ok(Some(bound)),
            Some(c) => Err(LifecycleError::Requester {
                bound,
                claimed: c.to_string(),
            }),
        }
    }

    async fn resubmitted(
        &self,
        runner: &RunnerId,
        req: &ReviewRequest,
    ) -> Result<Option<Submitted>, LifecycleError> {
        let Some(existing) = self.get(&req.id).await? else {
            return Ok(None);
        };
        if existing.runner_id != Some(runner.id)
            || existing.request.command_hash != req.command_hash
        {
            return Err(LifecycleError::Conflict(req.id.clone()));
        }
        Ok(Some(match existing.decision() {
            Some(d) => Submitted::Decided(d),
            None => Submitted::Pending {
                expires_at: existing.expires_at,
            },
        }))
    }

    /// Whether `reviewer`'s realm counts them as a reviewer (a chat's user
    /// and group lists). Doors ask before they show anything that leads to
    /// a decision; [`Bot::decide`] asks again.
    pub async fn admits(&self, reviewer: &Reviewer) -> Result<(), Refusal> {
        if matches!(reviewer.realm, super::Realm::Runner | super::Realm::System) {
            return Err(Refusal::NotAReviewer);
        }
        let Some(directory) = self.directory(reviewer.realm) else {
            return Ok(());
        };
        match directory.admits(&reviewer.id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Refusal::NotAReviewer),
            Err(r) => Err(r),
        }
    }

    /// Whether `reviewer` may act on `req` with `intent`.
    pub async fn may_decide(
        &self,
        reviewer: &Reviewer,
        req: &StoredRequest,
        intent: &Intent,
    ) -> Result<(), Refusal> {
        if intent.is_approval()
            && req.request.requested_by.as_deref().is_some_and(|by| {
                self.config.person_of(by) == self.config.person_of(&reviewer.to_string())
            })
        {
            return Err(Refusal::OwnRequest);
        }
        self.admits(reviewer).await
    }

    /// A reviewer's intent on request `id`. `expected_hash`, when given,
    /// must match the stored command hash (a reviewer approving what they
    /// saw).
    pub async fn decide(
        &self,
        reviewer: &Reviewer,
        id: &str,
        expected_hash: Option<&str>,
        intent: Intent,
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
            return Ok(Decided::Refused(Refusal::CommandChanged));
        }
        if let Err(why) = self.may_decide(reviewer, &current, &intent).await {
            return Ok(Decided::Refused(why));
        }
        let status = if intent.is_approval() {
            Status::Approved
        } else {
            Status::Denied
        };
        let reason = clean_reason(intent.reason());
        if intent.is_approval() && current.quorum.counts_votes() {
            return self
                .vote(reviewer, &current, &current.quorum, reason.as_deref())
                .await;
        }
        let now = self.now_ms();
        if let Some(d) = self
            .commit_move(
                &Subject::of(&current),
                status,
                reviewer,
                reason.as_deref(),
                now,
                true,
            )
            .await?
        {
            return Ok(Decided::Won(d));
        }
        if let Some(d) = self.get(id).await?.and_then(|r| r.decision()) {
            return Ok(Decided::Already(d));
        }
        // Still pending although the guarded update did nothing: the
        // deadline passed. Expire it now rather than wait for the sweep.
        self.expire_due().await?;
        match self.get(id).await?.and_then(|r| r.decision()) {
            Some(d) => Ok(Decided::Already(d)),
            None => Err(LifecycleError::Corrupt(id.into(), "undecidable".into())),
        }
    }

    /// The guarded transition pending → `to` (for a reviewer's decision,
    /// only before the deadline), committed with its audit row and its
    /// change row in one transaction. Only after the commit is the decision
    /// relayed to the runner waiting here. `None`: someone else moved it
    /// first (or the deadline passed).
    async fn commit_move(
        &self,
        s: &Subject<'_>,
        to: Status,
        by: &Reviewer,
        reason: Option<&str>,
        at: i64,
        before_deadline: bool,
    ) -> Result<Option<DecisionMessage>, LifecycleError> {
        let (d, m) = planned_move(s, to, by, reason, at, before_deadline);
        let won = matches!(
            self.writer.write(Write::Move(Box::new(m))).await?,
            Written::Move(true)
        );
        Ok(won.then(|| self.moved(d, s.created_at)))
    }

    /// After a move committed: relays the decision to the runner waiting
    /// here and wakes the feed.
    fn moved(&self, d: DecisionMessage, created_at: i64) -> DecisionMessage {
        self.hub.deliver(&d);
        self.feed.wake();
        self.metrics
            .ended(d.status, d.decided_at.saturating_sub(created_at));
        d
    }

    /// The runner that submitted a request gives up on it.
    pub async fn cancel(&self, runner: &RunnerId, id: &str) -> Result<Decided, LifecycleError> {
        let Some(current) = self.get(id).await? else {
            return Ok(Decided::NotFound);
        };
        if current.runner_id != Some(runner.id) {
            return Ok(Decided::Refused(Refusal::OtherRunner));
        }
        if let Some(d) = current.decision() {
            return Ok(Decided::Already(d));
        }
        let by = Reviewer::new(super::Realm::Runner, &runner.name);
        if let Some(d) = self
            .commit_move(
                &Subject::of(&current),
                Status::Cancelled,
                &by,
                Some("the agent stopped waiting"),
                self.now_ms(),
                false,
            )
            .await?
        {
            return Ok(Decided::Won(d));
        }
        match self.get(id).await?.and_then(|r| r.decision()) {
            Some(d) => Ok(Decided::Already(d)),
            None => Err(LifecycleError::Corrupt(id.into(), "still pending".into())),
        }
    }

    /// Cancels every pending request of `runner` (its token was revoked).
    /// Returns how many this call cancelled.
    pub(super) async fn cancel_pending_of(
        &self,
        runner: &RunnerId,
        reason: &str,
    ) -> Result<usize, LifecycleError> {
        let rows = request::Entity::find()
            .filter(request::Column::Status.eq(Status::Pending.as_str()))
            .filter(request::Column::RunnerId.eq(runner.id))
            .all(&self.db)
            .await?;
        self.end_by_system(rows, Status::Cancelled, |_| reason.to_string())
            .await
    }

    /// Expires every pending request whose deadline passed. Returns how
    /// many this call expired.
    pub async fn expire_due(&self) -> Result<usize, LifecycleError> {
        let due = request::Entity::find()
            .filter(request::Column::Status.eq(Status::Pending.as_str()))
            .filter(request::Column::ExpiresAt.lte(self.now_ms()))
            .limit(500)
            .all(&self.db)
            .await?;
        self.end_by_system(due, Status::Expired, |row| {
            let waited = crate::time::human_duration(row.expires_at - row.created_at);
            format!("no reviewer decided within {waited}")
        })
        .await
    }

    /// The bot itself moves these pending rows to `to`, each with its
    /// reason. Rows are taken as stored, so one whose verdict cannot be
    /// read still ends. Returns how many this call moved.
    async fn end_by_system(
        &self,
        rows: Vec<request::Model>,
        to: Status,
        reason: impl Fn(&request::Model) -> String,
    ) -> Result<usize, LifecycleError> {
        let now = self.now_ms();
        let mut decisions = Vec::with_capacity(rows.len());
        let mut writes = Vec::with_capacity(rows.len());
        for row in &rows {
            let subject = Subject {
                id: &row.id,
                runner_id: row.runner_id,
                runner: &row.runner,
                command_hash: &row.command_hash,
                created_at: row.created_at,
            };
            let why = reason(row);
            let (d, m) = planned_move(&subject, to, &Reviewer::system(), Some(&why), now, false);
            decisions.push((d, row.created_at));
            writes.push(Write::Move(Box::new(m)));
        }
        // Queued together, so they commit in as few transactions as the
        // writer takes.
        let mut n = 0;
        let mut failed = None;
        for ((d, created_at), done) in decisions
            .into_iter()
            .zip(self.writer.write_all(writes).await)
        {
            match done {
                Ok(Written::Move(true)) => {
                    self.moved(d, created_at);
                    n += 1;
                }
                Ok(_) => {}
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(n),
        }
    }

    /// Which of `ids` name requests another runner submitted. (Ids no
    /// request has are not foreign: a runner records `submitted` before it
    /// submits, and a submission may never arrive.)
    pub async fn foreign_requests(
        &self,
        runner: &RunnerId,
        ids: &[String],
    ) -> Result<Vec<String>, LifecycleError> {
        use sea_orm::Condition;
        if ids.is_empty() {
            return Ok(vec![]);
        }
        Ok(request::Entity::find()
            .filter(request::Column::Id.is_in(ids.iter().cloned()))
            .filter(
                Condition::any()
                    .add(request::Column::RunnerId.ne(runner.id))
                    .add(request::Column::RunnerId.is_null()),
            )
            .select_only()
            .column(request::Column::Id)
            .into_tuple::<String>()
            .all(&self.db)
            .await?)
    }

    /// The runner has the decision.
    /// `conn` is the runner connection that received it: an ack on any
    /// other connection (another runner's, with a request id it saw in a
    /// review link) leaves the wait alone.
    pub async fn acknowledged(
        &self,
        conn: super::ConnId,
        runner: &RunnerId,
        id: &str,
    ) -> Result<(), LifecycleError> {
        self.hub.acked(id, conn);
        self.writer
            .write(Write::Ack {
                id: id.to_string(),
                runner_id: runner.id,
                at: self.now_ms(),
            })
            .await?;
        Ok(())
    }

    /// The pending queue as reviewers see it, fair across runners: each
    /// runner's newest `per_runner` pending requests, at most `cap` in all
    /// (taken round-robin, each runner's newest first, so one runner that
    /// floods the queue cannot push another's request out of it), shown
    /// oldest first. `runners` says how many each runner has pending, so a
    /// page can say what it does not show.
    pub async fn pending_fair(
        &self,
        per_runner: u64,
        cap: u64,
    ) -> Result<PendingQueue, LifecycleError> {
        use sea_orm::{FromQueryResult, Statement};
        let pending = Status::Pending.as_str();
        // Both numbers are ours, not a caller's text: they are written into
        // the statement, which then reads the same on SQLite and PostgreSQL.
        let sql = format!(
            "SELECT * FROM (SELECT requests.*, ROW_NUMBER() OVER \
             (PARTITION BY runner ORDER BY created_at DESC, id DESC) AS place \
             FROM requests WHERE status = '{pending}') ranked \
             WHERE place <= {per_runner} ORDER BY place, created_at DESC LIMIT {cap}"
        );
        let backend = self.db.get_database_backend();
        let rows = request::Model::find_by_statement(Statement::from_string(backend, sql))
            .all(&self.db)
            .await?;
        let mut requests = readable(rows, &self.config.quorum);
        requests.sort_by(|a, b| (a.created_at, &a.request.id).cmp(&(b.created_at, &b.request.id)));
        let counts: Vec<(String, i64)> = request::Entity::find()
            .select_only()
            .column(request::Column::Runner)
            .column_as(request::Column::Id.count(), "pending")
            .filter(request::Column::Status.eq(pending))
            .group_by(request::Column::Runner)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut runners: Vec<RunnerQueue> = counts
            .into_iter()
            .map(|(runner, n)| {
                let shown = requests.iter().filter(|r| r.runner == runner).count() as u64;
                RunnerQueue {
                    runner,
                    pending: n.max(0) as u64,
                    shown,
                }
            })
            .collect();
        runners.sort_by(|a, b| b.pending.cmp(&a.pending).then(a.runner.cmp(&b.runner)));
        let total = runners.iter().map(|r| r.pending).sum();
        Ok(PendingQueue {
            requests,
            runners,
            total,
        })
    }

    /// One runner's pending requests, newest first, `limit` at a time;
    /// `before` is the `(created_at, id)` of the last one of the previous
    /// page.
    pub async fn pending_of(
        &self,
        runner: &str,
        before: Option<(i64, &str)>,
        limit: u64,
    ) -> Result<Vec<StoredRequest>, LifecycleError> {
        use sea_orm::Condition;
        let mut q = request::Entity::find()
            .filter(request::Column::Status.eq(Status::Pending.as_str()))
            .filter(request::Column::Runner.eq(runner));
        if let Some((at, id)) = before {
            q = q.filter(
                Condition::any().add(request::Column::CreatedAt.lt(at)).add(
                    Condition::all()
                        .add(request::Column::CreatedAt.eq(at))
                        .add(request::Column::Id.lt(id)),
                ),
            );
        }
        let rows = q
            .order_by_desc(request::Column::CreatedAt)
            .order_by_desc(request::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(readable(rows, &self.config.quorum))
    }

    /// The ids of every pending request, oldest first (no commands: a
    /// reconcile needs only which ones to look at).
    pub async fn pending_ids(&self) -> Result<Vec<String>, LifecycleError> {
        Ok(request::Entity::find()
            .select_only()
            .column(request::Column::Id)
            .filter(request::Column::Status.eq(Status::Pending.as_str()))
            .order_by_asc(request::Column::CreatedAt)
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// The requests whose id starts with `prefix` (hex digits), at most
    /// `limit`: for the CLI's short ids, whatever their age or runner.
    pub async fn with_id_prefix(
        &self,
        prefix: &str,
        limit: u64,
    ) -> Result<Vec<StoredRequest>, LifecycleError> {
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Vec::new());
        }
        let rows = request::Entity::find()
            .filter(request::Column::Id.starts_with(prefix.to_ascii_lowercase()))
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(readable(rows, &self.config.quorum))
    }

    /// How many requests `runner` has pending.
    pub async fn pending_count_of(&self, runner: &str) -> Result<u64, LifecycleError> {
        Ok(request::Entity::find()
            .filter(request::Column::Status.eq(Status::Pending.as_str()))
            .filter(request::Column::Runner.eq(runner))
            .count(&self.db)
            .await?)
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
        Ok(readable(rows, &self.config.quorum))
    }

    /// The sweep's work, once: expire what is due, fire the escalation
    /// steps that are due, close revoked runners'
    /// connections, forget old feed rows. Returns what failed, for the
    /// caller to log.
    pub async fn sweep_once(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Err(e) = self.expire_due().await {
            errors.push(format!("expiring requests: {e}"));
        }
        // After expiry: a request whose deadline passed is denied, not
        // escalated.
        if let Err(e) = self.escalate_due().await {
            errors.push(format!("escalating requests: {e}"));
        }
        match self.revoked_but_connected().await {
            Ok(names) if !names.is_empty() => {
                self.hub.close_runners(
                    &names,
                    holdpoint_shared::protocol::close::REVOKED,
                    "this runner's token was revoked",
                );
            }
            Ok(_) => {}
            Err(e) => errors.push(format!("checking revocations: {e}")),
        }
        if let Err(e) = self.prune_feed().await {
            errors.push(format!("pruning the change feed: {e}"));
        }
        errors
    }
}

fn readable(rows: Vec<request::Model>, fallback: &Quorum) -> Vec<StoredRequest> {
    rows.into_iter()
        .filter_map(|r| match StoredRequest::from_row(r, fallback) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("{e}");
                None
            }
        })
        .collect()
}

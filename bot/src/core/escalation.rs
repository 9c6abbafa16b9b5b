//! Escalation: what happens while nobody answers a request.
//!
//! When a request is stored, the policy that applies to it
//! ([`crate::config::Escalation::steps_for`]) becomes one row per step in
//! `escalation_steps`, with its due time, in the submission's transaction.
//! The sweep ([`Bot::escalate_due`]) fires what is due on the core's clock:
//! a guarded update from `fired_at IS NULL` that also requires the request
//! to be pending, committed with the step's audit row and a change row, so
//! that a restart or a second replica never fires a step twice, a step due
//! while the bot was down fires when it is back, and a step of a request
//! that was decided in the meantime never fires. Expiry stays the final
//! step, always a denial.
//!
//! The change row tells every process's chat engines; each claims the
//! delivery of the step to its chat in `escalation_sends` (one insert
//! wins, a lapsed claim is taken over), as messages are claimed in
//! `deliveries`.

use super::audit::{self, NewEvent};
use super::entity::{escalation_send as send, escalation_step as step, request};
use super::lifecycle::LifecycleError;
use super::{Bot, feed};
use crate::config::{Step, StepAction};
use holdpoint_shared::protocol::Status;
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ColumnTrait, Condition, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde::Serialize;
use serde_json::json;
use std::collections::HashSet;

/// One escalation step of a request, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EscalationStep {
    /// Its place in the policy, from 0.
    pub step: u32,
    pub action: StepAction,
    /// Unix milliseconds.
    pub due_at: i64,
    pub fired_at: Option<i64>,
}

impl EscalationStep {
    fn from_row(r: step::Model) -> Option<EscalationStep> {
        Some(EscalationStep {
            step: u32::try_from(r.step).ok()?,
            action: StepAction::parse(&r.action)?,
            due_at: r.due_at,
            fired_at: r.fired_at,
        })
    }
}

/// Proof that this replica holds the claim on delivering one step to one
/// chat.
#[derive(Debug)]
#[must_use = "a claim is released, or completed, by the one who holds it"]
pub struct StepClaim {
    adapter: &'static str,
    request_id: String,
    step: i32,
    replica: String,
}

impl StepClaim {
    pub fn request_id(&self) -> &str {
        &self.request_id
    }
}

/// A message a `notify` step posted: where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepPost {
    pub destination: String,
    pub handle: String,
}

/// How a page stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PageState {
    /// Being sent, or waiting to be tried again (429, 5xx, no answer).
    Sending,
    /// The incident or alert is open.
    Open,
    /// Resolved (closed) when the request ended.
    Resolved,
    /// The pager refused it; never retried.
    Failed,
}

/// One page of a request, as the web queue shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PageSeen {
    pub pager: String,
    pub step: u32,
    pub state: PageState,
    pub sent_at: Option<i64>,
    pub resolved_at: Option<i64>,
    /// Why the pager refused it.
    pub error: Option<String>,
}

/// The most steps one transaction fires.
const BATCH: usize = 100;

fn step_no(step: u32) -> i32 {
    i32::try_from(step).unwrap_or(i32::MAX)
}

fn pending_ids() -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .column(request::Column::Id)
        .from(request::Entity)
        .and_where(request::Column::Status.eq(Status::Pending.as_str()))
        .to_owned()
}

fn of(adapter: &str, id: &str, step: i32) -> Condition {
    Condition::all()
        .add(send::Column::Adapter.eq(adapter))
        .add(send::Column::RequestId.eq(id))
        .add(send::Column::Step.eq(step))
}

/// The rows of a new request's escalation steps, inserted in the
/// submission's transaction.
pub(super) fn planned(id: &str, created_at: i64, steps: &[Step]) -> Vec<step::ActiveModel> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let after = i64::try_from(s.after.as_millis()).unwrap_or(i64::MAX);
            step::ActiveModel {
                request_id: Set(id.to_string()),
                step: Set(i32::try_from(i).unwrap_or(i32::MAX)),
                action: Set(s.action.as_str().to_string()),
                due_at: Set(created_at.saturating_add(after)),
                fired_at: Set(None),
            }
        })
        .collect()
}

impl Bot {
    /// The escalation steps of request `id`, in order.
    pub async fn escalation_of(&self, id: &str) -> Result<Vec<EscalationStep>, DbErr> {
        Ok(step::Entity::find()
            .filter(step::Column::RequestId.eq(id))
            .order_by_asc(step::Column::Step)
            .all(&self.db)
            .await?
            .into_iter()
            .filter_map(EscalationStep::from_row)
            .collect())
    }

    /// The escalation steps of these requests, by request id.
    pub async fn escalations_of(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<EscalationStep>>, DbErr> {
        let mut out: std::collections::HashMap<String, Vec<EscalationStep>> = Default::default();
        if ids.is_empty() {
            return Ok(out);
        }
        for chunk in ids.chunks(500) {
            let rows = step::Entity::find()
                .filter(step::Column::RequestId.is_in(chunk.iter().cloned()))
                .order_by_asc(step::Column::Step)
                .all(&self.db)
                .await?;
            for r in rows {
                let id = r.request_id.clone();
                if let Some(s) = EscalationStep::from_row(r) {
                    out.entry(id).or_default().push(s);
                }
            }
        }
        Ok(out)
    }

    /// Fires every escalation step that is due, of requests still pending:
    /// each in one transaction with its audit row and its change row.
    /// Returns how many this call fired.
    pub async fn escalate_due(&self) -> Result<usize, LifecycleError> {
        let now = self.now_ms();
        let due = step::Entity::find()
            .filter(step::Column::FiredAt.is_null())
            .filter(step::Column::DueAt.lte(now))
            .filter(step::Column::RequestId.in_subquery(pending_ids()))
            .order_by_asc(step::Column::DueAt)
            .order_by_asc(step::Column::Step)
            .limit(500)
            .all(&self.db)
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let ids: HashSet<String> = due.iter().map(|s| s.request_id.clone()).collect();
        let runners: std::collections::HashMap<String, String> = request::Entity::find()
            .select_only()
            .column(request::Column::Id)
            .column(request::Column::Runner)
            .filter(request::Column::Id.is_in(ids))
            .into_tuple::<(String, String)>()
            .all(&self.db)
            .await?
            .into_iter()
            .collect();
        let mut fired = 0;
        // Steps that came due together fire in batches: one transaction,
        // one audit append and one commit for up to BATCH of them, each
        // still its own guarded update.
        let due: Vec<(step::Model, StepAction, u32)> = due
            .into_iter()
            .filter_map(|s| {
                let Some(action) = StepAction::parse(&s.action) else {
                    tracing::error!(
                        "escalation step {} of {} has an unknown action {:?}; skipped",
                        s.step,
                        s.request_id,
                        s.action
                    );
                    return None;
                };
                let n = u32::try_from(s.step).ok()?;
                Some((s, action, n))
            })
            .collect();
        for batch in due.chunks(BATCH) {
            let at = self.now_ms();
            let won: Vec<&(step::Model, StepAction, u32)> = {
                let _w = self.write_lock.lock().await;
                audit::retrying(|| async {
                    let txn = audit::begin_write(&self.db).await?;
                    let mut won = Vec::new();
                    for item in batch {
                        let (s, _, _) = item;
                        let moved = step::Entity::update_many()
                            .col_expr(step::Column::FiredAt, Expr::value(at))
                            .filter(step::Column::RequestId.eq(s.request_id.as_str()))
                            .filter(step::Column::Step.eq(s.step))
                            .filter(step::Column::FiredAt.is_null())
                            .filter(step::Column::RequestId.in_subquery(pending_ids()))
                            .exec(&txn)
                            .await?
                            .rows_affected;
                        if moved == 1 {
                            won.push(item);
                        }
                    }
                    if won.is_empty() {
                        txn.rollback().await?;
                        return Ok(won);
                    }
                    let events: Vec<NewEvent> = won
                        .iter()
                        .map(|(s, action, n)| {
                            NewEvent::at(
                                at,
                                "request.escalated",
                                runners.get(&s.request_id).map(String::as_str),
                                Some(&s.request_id),
                                json!({
                                    "step": n,
                                    "action": action,
                                    "due_at": s.due_at,
                                    "late_ms": at.saturating_sub(s.due_at),
                                }),
                            )
                        })
                        .collect();
                    audit::append_in(&txn, &events, at).await?;
                    for (s, _, n) in &won {
                        feed::record_step(&txn, &s.request_id, *n, at).await?;
                    }
                    txn.commit().await?;
                    Ok(won)
                })
                .await?
            };
            for (s, action, n) in won {
                fired += 1;
                self.metrics.escalated(*action);
                tracing::info!(
                    "request {}: escalation step {n} ({}) fired {} ms after it was due",
                    s.request_id,
                    action.as_str(),
                    at.saturating_sub(s.due_at)
                );
            }
        }
        if fired > 0 {
            self.feed.wake();
        }
        Ok(fired)
    }

    /// Claims the delivery of step `n` of request `id` to `adapter` for
    /// `replica`: inserts the row (one insert wins), or takes over one whose
    /// claim lapsed and that was not delivered. `None`: someone else has
    /// it, or it was delivered.
    pub async fn claim_step(
        &self,
        adapter: &'static str,
        replica: &str,
        id: &str,
        n: u32,
        lease_ms: i64,
    ) -> Result<Option<StepClaim>, DbErr> {
        let now = self.now_ms();
        let lease = now.saturating_add(lease_ms);
        let n = step_no(n);
        let inserted = send::Entity::insert(send::ActiveModel {
            adapter: Set(adapter.to_string()),
            request_id: Set(id.to_string()),
            step: Set(n),
            claimed_by: Set(Some(replica.to_string())),
            lease_until: Set(Some(lease)),
            sent_at: Set(None),
            destination: Set(None),
            handle: Set(None),
            resolved_at: Set(None),
            error: Set(None),
        })
        .on_conflict_do_nothing()
        .exec_without_returning(&self.db)
        .await?;
        let won = matches!(inserted, sea_orm::TryInsertResult::Inserted(k) if k > 0)
            || send::Entity::update_many()
                .col_expr(send::Column::ClaimedBy, Expr::value(replica))
                .col_expr(send::Column::LeaseUntil, Expr::value(lease))
                .filter(of(adapter, id, n))
                .filter(send::Column::SentAt.is_null())
                .filter(
                    Condition::any()
                        .add(send::Column::LeaseUntil.is_null())
                        .add(send::Column::LeaseUntil.lt(now)),
                )
                .exec(&self.db)
                .await?
                .rows_affected
                == 1;
        Ok(won.then(|| StepClaim {
            adapter,
            request_id: id.to_string(),
            step: n,
            replica: replica.to_string(),
        }))
    }

    /// The step was delivered (a `notify` step's message is at `post`).
    /// `false`: the claim had lapsed and another replica took it over.
    pub async fn step_sent(
        &self,
        claim: StepClaim,
        post: Option<&StepPost>,
    ) -> Result<bool, DbErr> {
        Ok(send::Entity::update_many()
            .col_expr(send::Column::SentAt, Expr::value(self.now_ms()))
            .col_expr(send::Column::ClaimedBy, Expr::value(Option::<String>::None))
            .col_expr(send::Column::LeaseUntil, Expr::value(Option::<i64>::None))
            .col_expr(
                send::Column::Destination,
                Expr::value(post.map(|p| p.destination.clone())),
            )
            .col_expr(
                send::Column::Handle,
                Expr::value(post.map(|p| p.handle.clone())),
            )
            .filter(of(claim.adapter, &claim.request_id, claim.step))
            .filter(send::Column::SentAt.is_null())
            .filter(send::Column::ClaimedBy.eq(claim.replica.as_str()))
            .exec(&self.db)
            .await?
            .rows_affected
            == 1)
    }

    /// Gives a claim up after a failed call; the next try is due after
    /// `wait_ms`.
    pub async fn release_step(&self, claim: StepClaim, wait_ms: i64) -> Result<(), DbErr> {
        send::Entity::update_many()
            .col_expr(send::Column::ClaimedBy, Expr::value(Option::<String>::None))
            .col_expr(
                send::Column::LeaseUntil,
                Expr::value(self.now_ms().saturating_add(wait_ms)),
            )
            .filter(of(claim.adapter, &claim.request_id, claim.step))
            .filter(send::Column::SentAt.is_null())
            .filter(send::Column::ClaimedBy.eq(claim.replica.as_str()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Fired steps of pending requests that `adapter` has not delivered and
    /// that no live claim holds: `(request id, step)`, oldest first. What a
    /// restart, a failed call or a replica that died leaves behind.
    pub async fn steps_to_send(
        &self,
        adapter: &str,
        actions: &[StepAction],
        limit: u64,
    ) -> Result<Vec<(String, u32)>, DbErr> {
        let now = self.now_ms();
        let fired = step::Entity::find()
            .filter(step::Column::FiredAt.is_not_null())
            .filter(step::Column::Action.is_in(actions.iter().map(|a| a.as_str())))
            .filter(step::Column::RequestId.in_subquery(pending_ids()))
            .order_by_asc(step::Column::DueAt)
            .limit(2000)
            .all(&self.db)
            .await?;
        if fired.is_empty() {
            return Ok(Vec::new());
        }
        let ids: HashSet<String> = fired.iter().map(|s| s.request_id.clone()).collect();
        let busy: HashSet<(String, i32)> = send::Entity::find()
            .filter(send::Column::Adapter.eq(adapter))
            .filter(send::Column::RequestId.is_in(ids))
            .filter(
                Condition::any()
                    .add(send::Column::SentAt.is_not_null())
                    .add(send::Column::LeaseUntil.gte(now)),
            )
            .all(&self.db)
            .await?
            .into_iter()
            .map(|r| (r.request_id, r.step))
            .collect();
        Ok(fired
            .into_iter()
            .filter(|s| !busy.contains(&(s.request_id.clone(), s.step)))
            .filter_map(|s| Some((s.request_id, u32::try_from(s.step).ok()?)))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect())
    }

    /// A pager refused step `n` as invalid: recorded as delivered with the
    /// reason, so it is never tried again (and there is nothing to resolve).
    pub async fn step_refused(&self, claim: StepClaim, error: &str) -> Result<bool, DbErr> {
        Ok(send::Entity::update_many()
            .col_expr(send::Column::SentAt, Expr::value(self.now_ms()))
            .col_expr(send::Column::ClaimedBy, Expr::value(Option::<String>::None))
            .col_expr(send::Column::LeaseUntil, Expr::value(Option::<i64>::None))
            .col_expr(send::Column::Error, Expr::value(error.to_string()))
            .filter(of(claim.adapter, &claim.request_id, claim.step))
            .filter(send::Column::SentAt.is_null())
            .filter(send::Column::ClaimedBy.eq(claim.replica.as_str()))
            .exec(&self.db)
            .await?
            .rows_affected
            == 1)
    }

    /// Claims resolving the page that step `n` of request `id` opened on
    /// `adapter`: one replica resolves it. `None`: nothing to resolve
    /// (never opened, refused, resolved) or someone else holds it.
    pub async fn claim_resolve(
        &self,
        adapter: &'static str,
        replica: &str,
        id: &str,
        n: u32,
        lease_ms: i64,
    ) -> Result<Option<StepClaim>, DbErr> {
        let now = self.now_ms();
        let n = step_no(n);
        let won = send::Entity::update_many()
            .col_expr(send::Column::ClaimedBy, Expr::value(replica))
            .col_expr(
                send::Column::LeaseUntil,
                Expr::value(now.saturating_add(lease_ms)),
            )
            .filter(of(adapter, id, n))
            .filter(send::Column::SentAt.is_not_null())
            .filter(send::Column::ResolvedAt.is_null())
            .filter(send::Column::Error.is_null())
            .filter(send::Column::Handle.is_not_null())
            .filter(
                Condition::any()
                    .add(send::Column::LeaseUntil.is_null())
                    .add(send::Column::LeaseUntil.lt(now)),
            )
            .exec(&self.db)
            .await?
            .rows_affected
            == 1;
        Ok(won.then(|| StepClaim {
            adapter,
            request_id: id.to_string(),
            step: n,
            replica: replica.to_string(),
        }))
    }

    /// The page was resolved. `false`: the claim had lapsed.
    pub async fn page_resolved(&self, claim: StepClaim) -> Result<bool, DbErr> {
        Ok(send::Entity::update_many()
            .col_expr(send::Column::ResolvedAt, Expr::value(self.now_ms()))
            .col_expr(send::Column::ClaimedBy, Expr::value(Option::<String>::None))
            .col_expr(send::Column::LeaseUntil, Expr::value(Option::<i64>::None))
            .filter(of(claim.adapter, &claim.request_id, claim.step))
            .filter(send::Column::ResolvedAt.is_null())
            .filter(send::Column::ClaimedBy.eq(claim.replica.as_str()))
            .exec(&self.db)
            .await?
            .rows_affected
            == 1)
    }

    /// Gives up a claim on resolving a page after a failed call, or (with
    /// `error`) records that the pager refused the resolve: then it is not
    /// tried again.
    pub async fn release_resolve(
        &self,
        claim: StepClaim,
        wait_ms: i64,
        error: Option<&str>,
    ) -> Result<(), DbErr> {
        let mut update = send::Entity::update_many()
            .col_expr(send::Column::ClaimedBy, Expr::value(Option::<String>::None))
            .col_expr(
                send::Column::LeaseUntil,
                Expr::value(self.now_ms().saturating_add(wait_ms)),
            );
        if let Some(e) = error {
            update = update.col_expr(send::Column::Error, Expr::value(e.to_string()));
        }
        update
            .filter(of(claim.adapter, &claim.request_id, claim.step))
            .filter(send::Column::ResolvedAt.is_null())
            .filter(send::Column::ClaimedBy.eq(claim.replica.as_str()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Pages `adapter` opened for requests that have ended and that are not
    /// resolved yet, with no live claim: `(request id, step)`, oldest first.
    pub async fn pages_to_resolve(
        &self,
        adapter: &str,
        limit: u64,
    ) -> Result<Vec<(String, u32)>, DbErr> {
        let now = self.now_ms();
        Ok(send::Entity::find()
            .filter(send::Column::Adapter.eq(adapter))
            .filter(send::Column::SentAt.is_not_null())
            .filter(send::Column::ResolvedAt.is_null())
            .filter(send::Column::Error.is_null())
            .filter(send::Column::Handle.is_not_null())
            .filter(send::Column::RequestId.not_in_subquery(pending_ids()))
            .filter(
                Condition::any()
                    .add(send::Column::LeaseUntil.is_null())
                    .add(send::Column::LeaseUntil.lt(now)),
            )
            .order_by_asc(send::Column::SentAt)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .filter_map(|r| Some((r.request_id, u32::try_from(r.step).ok()?)))
            .collect())
    }

    /// The pages of these requests, by request id: which pager, for which
    /// step, and how it stands.
    pub async fn pages_of(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<PageSeen>>, DbErr> {
        let mut out: std::collections::HashMap<String, Vec<PageSeen>> = Default::default();
        for chunk in ids.chunks(500) {
            for r in send::Entity::find()
                .filter(send::Column::Adapter.is_in(crate::metrics::PAGERS))
                .filter(send::Column::RequestId.is_in(chunk.iter().cloned()))
                .order_by_asc(send::Column::Step)
                .all(&self.db)
                .await?
            {
                let state = match (&r.error, r.resolved_at, r.sent_at) {
                    (Some(_), _, _) => PageState::Failed,
                    (None, Some(_), _) => PageState::Resolved,
                    (None, None, Some(_)) => PageState::Open,
                    (None, None, None) => PageState::Sending,
                };
                out.entry(r.request_id).or_default().push(PageSeen {
                    pager: r.adapter,
                    step: u32::try_from(r.step).unwrap_or(u32::MAX),
                    state,
                    sent_at: r.sent_at,
                    resolved_at: r.resolved_at,
                    error: r.error,
                });
            }
        }
        Ok(out)
    }

    /// The request whose `notify` step posted message `handle` in
    /// `adapter`, and where.
    pub async fn step_post_of(
        &self,
        adapter: &str,
        handle: &str,
    ) -> Result<Option<(String, StepPost)>, DbErr> {
        Ok(send::Entity::find()
            .filter(send::Column::Adapter.eq(adapter))
            .filter(send::Column::Handle.eq(handle))
            .filter(send::Column::SentAt.is_not_null())
            .one(&self.db)
            .await?
            .and_then(|r| {
                Some((
                    r.request_id,
                    StepPost {
                        destination: r.destination?,
                        handle: r.handle?,
                    },
                ))
            }))
    }

    /// The messages `notify` steps posted for request `id` in `adapter`.
    pub async fn step_posts(&self, adapter: &str, id: &str) -> Result<Vec<StepPost>, DbErr> {
        Ok(send::Entity::find()
            .filter(send::Column::Adapter.eq(adapter))
            .filter(send::Column::RequestId.eq(id))
            .filter(send::Column::SentAt.is_not_null())
            .all(&self.db)
            .await?
            .into_iter()
            .filter_map(|r| {
                Some(StepPost {
                    destination: r.destination?,
                    handle: r.handle?,
                })
            })
            .collect())
    }
}

//! Chat deliveries: the message an adapter posted for a request, and the
//! claim that makes one replica, and only one, post it and update it.
//!
//! The row is the claim. Posting starts by inserting it in `posting` (the
//! key is adapter and request, so one insert wins); updating starts with a
//! guarded move from `open` to `finishing` (one update wins); only the
//! winner calls the chat. Claims are leases: one held by a replica that
//! died is taken over after it lapses. After a failed call the claim is
//! released with the lease set to when the next try is due.

use super::Bot;
use super::entity::delivery as row;
use holdpoint_shared::protocol::Status;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, DbErr, EntityTrait, QueryFilter, QuerySelect, Set};
use std::collections::HashMap;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Claimed for posting, not posted yet.
    Posting,
    /// Posted; it shows the actions.
    Open,
    /// Claimed for the update to its final status.
    Finishing,
    /// Updated to its final status.
    Done,
}

impl DeliveryState {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Posting => row::POSTING,
            DeliveryState::Open => row::OPEN,
            DeliveryState::Finishing => row::FINISHING,
            DeliveryState::Done => row::DONE,
        }
    }

    fn parse(s: &str) -> DeliveryState {
        match s {
            row::POSTING => DeliveryState::Posting,
            row::FINISHING => DeliveryState::Finishing,
            row::DONE => DeliveryState::Done,
            _ => DeliveryState::Open,
        }
    }
}

/// A request's message in one adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub request_id: String,
    /// The channel or room.
    pub destination: String,
    /// The message's id there; empty while posting.
    pub handle: String,
    pub state: DeliveryState,
    pub final_status: Option<Status>,
    /// When the claim lapses, or when the next try is due.
    pub lease_until: Option<i64>,
}

impl Delivery {
    fn from_row(r: row::Model) -> Delivery {
        Delivery {
            state: DeliveryState::parse(&r.state),
            final_status: r.final_status.as_deref().and_then(Status::parse),
            request_id: r.request_id,
            destination: r.destination,
            handle: r.handle,
            lease_until: r.lease_until,
        }
    }

    /// Whether no claim holds it at `now` (none, or one that lapsed).
    pub fn lapsed(&self, now: i64) -> bool {
        self.lease_until.is_none_or(|l| l < now)
    }
}

/// Proof that this replica holds the claim on a delivery in `state`.
#[derive(Debug)]
#[must_use = "a claim is released, or completed, by the one who holds it"]
pub struct Claim {
    adapter: &'static str,
    request_id: String,
    replica: String,
    state: DeliveryState,
}

impl Claim {
    fn new(adapter: &'static str, id: &str, replica: &str, state: DeliveryState) -> Claim {
        Claim {
            adapter,
            request_id: id.to_string(),
            replica: replica.to_string(),
            state,
        }
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }
}

/// No lease, or a lease that ended before `now`.
fn lapsed(now: i64) -> Condition {
    Condition::any()
        .add(row::Column::LeaseUntil.is_null())
        .add(row::Column::LeaseUntil.lt(now))
}

fn of(adapter: &str, id: &str) -> Condition {
    Condition::all()
        .add(row::Column::Adapter.eq(adapter))
        .add(row::Column::RequestId.eq(id))
}

impl Bot {
    /// The delivery of request `id` in `adapter`.
    pub async fn delivery(&self, adapter: &str, id: &str) -> Result<Option<Delivery>, DbErr> {
        Ok(row::Entity::find()
            .filter(of(adapter, id))
            .one(&self.db)
            .await?
            .map(Delivery::from_row))
    }

    /// The deliveries of these requests in `adapter`, by request id.
    pub async fn deliveries_of(
        &self,
        adapter: &str,
        ids: &[String],
    ) -> Result<HashMap<String, Delivery>, DbErr> {
        Ok(row::Entity::find()
            .filter(row::Column::Adapter.eq(adapter))
            .filter(row::Column::RequestId.is_in(ids.iter().cloned()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|r| (r.request_id.clone(), Delivery::from_row(r)))
            .collect())
    }

    /// Open or finishing deliveries that no live claim holds: candidates
    /// for an update. Request ids.
    pub async fn unfinished_deliveries(
        &self,
        adapter: &str,
        limit: u64,
    ) -> Result<Vec<String>, DbErr> {
        self.delivery_ids(adapter, &[row::OPEN, row::FINISHING], false, limit)
            .await
    }

    /// Deliveries whose lease ran out: a failed post or update due again
    /// (`Posting`; `Open`, which also finds lapsed `finishing` claims), or
    /// a claim whose holder died. Request ids.
    pub async fn retries_due(
        &self,
        adapter: &str,
        state: DeliveryState,
        limit: u64,
    ) -> Result<Vec<String>, DbErr> {
        let states: &[&str] = match state {
            DeliveryState::Posting => &[row::POSTING],
            _ => &[row::OPEN, row::FINISHING],
        };
        self.delivery_ids(adapter, states, true, limit).await
    }

    async fn delivery_ids(
        &self,
        adapter: &str,
        states: &[&str],
        leased: bool,
        limit: u64,
    ) -> Result<Vec<String>, DbErr> {
        let mut q = row::Entity::find()
            .filter(row::Column::Adapter.eq(adapter))
            .filter(row::Column::State.is_in(states.iter().copied()))
            .filter(lapsed(self.now_ms()));
        if leased {
            q = q.filter(row::Column::LeaseUntil.is_not_null());
        }
        q.select_only()
            .column(row::Column::RequestId)
            .limit(limit)
            .into_tuple::<String>()
            .all(&self.db)
            .await
    }

    /// Claims the posting of `id`'s message for `replica`: inserts the row
    /// in `posting` (one insert wins), or takes over a `posting` claim
    /// whose lease lapsed. `None`: someone else has it, or it is posted.
    pub async fn claim_post(
        &self,
        adapter: &'static str,
        replica: &str,
        id: &str,
        destination: &str,
        lease_ms: i64,
    ) -> Result<Option<Claim>, DbErr> {
        let now = self.now_ms();
        let lease = now.saturating_add(lease_ms);
        let claim = row::ActiveModel {
            adapter: Set(adapter.to_string()),
            request_id: Set(id.to_string()),
            destination: Set(destination.to_string()),
            handle: Set(String::new()),
            state: Set(row::POSTING.to_string()),
            final_status: Set(None),
            posted_at: Set(now),
            updated_at: Set(None),
            claimed_by: Set(Some(replica.to_string())),
            lease_until: Set(Some(lease)),
        };
        let inserted = row::Entity::insert(claim)
            .on_conflict_do_nothing()
            .exec_without_returning(&self.db)
            .await?;
        let won = matches!(inserted, sea_orm::TryInsertResult::Inserted(n) if n > 0)
            || row::Entity::update_many()
                .col_expr(row::Column::ClaimedBy, Expr::value(replica))
                .col_expr(row::Column::LeaseUntil, Expr::value(lease))
                .col_expr(row::Column::Destination, Expr::value(destination))
                .filter(of(adapter, id))
                .filter(row::Column::State.eq(row::POSTING))
                .filter(lapsed(now))
                .exec(&self.db)
                .await?
                .rows_affected
                == 1;
        Ok(won.then(|| Claim::new(adapter, id, replica, DeliveryState::Posting)))
    }

    /// The message was posted to `destination` as `handle`: `posting` → `open`. `false`: the
    /// claim had lapsed and another replica took it over (the message may
    /// show twice).
    pub async fn posted(
        &self,
        claim: Claim,
        destination: &str,
        handle: &str,
    ) -> Result<bool, DbErr> {
        let now = self.now_ms();
        Ok(row::Entity::update_many()
            .col_expr(row::Column::Destination, Expr::value(destination))
            .col_expr(row::Column::Handle, Expr::value(handle))
            .col_expr(row::Column::PostedAt, Expr::value(now))
            .col_expr(row::Column::State, Expr::value(row::OPEN))
            .col_expr(row::Column::ClaimedBy, Expr::value(Option::<String>::None))
            .col_expr(row::Column::LeaseUntil, Expr::value(Option::<i64>::None))
            .filter(of(claim.adapter, &claim.request_id))
            .filter(row::Column::State.eq(row::POSTING))
            .filter(row::Column::ClaimedBy.eq(claim.replica.as_str()))
            .exec(&self.db)
            .await?
            .rows_affected
            == 1)
    }

    /// Claims the update of `id`'s message to `status`: the guarded move
    /// from `open` (or a lapsed `finishing`) to `finishing`.
    pub async fn claim_finish(
        &self,
        adapter: &'static str,
        replica: &str,
        id: &str,
        status: Status,
        lease_ms: i64,
    ) -> Result<Option<Claim>, DbErr> {
        let now = self.now_ms();
        let won = row::Entity::update_many()
            .col_expr(row::Column::State, Expr::value(row::FINISHING))
            .col_expr(row::Column::FinalStatus, Expr::value(status.as_str()))
            .col_expr(row::Column::ClaimedBy, Expr::value(replica))
            .col_expr(
                row::Column::LeaseUntil,
                Expr::value(now.saturating_add(lease_ms)),
            )
            .filter(of(adapter, id))
            .filter(row::Column::State.is_in([row::OPEN, row::FINISHING]))
            .filter(lapsed(now))
            .exec(&self.db)
            .await?
            .rows_affected
            == 1;
        Ok(won.then(|| Claim::new(adapter, id, replica, DeliveryState::Finishing)))
    }

    /// The message was updated: `finishing` → `done`. `false`: the claim
    /// had lapsed and another replica took it over.
    pub async fn finished(&self, claim: Claim) -> Result<bool, DbErr> {
        let now = self.now_ms();
        Ok(row::Entity::update_many()
            .col_expr(row::Column::State, Expr::value(row::DONE))
            .col_expr(row::Column::UpdatedAt, Expr::value(now))
            .col_expr(row::Column::ClaimedBy, Expr::value(Option::<String>::None))
            .col_expr(row::Column::LeaseUntil, Expr::value(Option::<i64>::None))
            .filter(of(claim.adapter, &claim.request_id))
            .filter(row::Column::State.eq(row::FINISHING))
            .filter(row::Column::ClaimedBy.eq(claim.replica.as_str()))
            .exec(&self.db)
            .await?
            .rows_affected
            == 1)
    }

    /// Gives a claim up after a failed call, with the next try due after
    /// `wait_ms`: a posting claim stays `posting`, an update goes back to
    /// `open`.
    pub async fn release(&self, claim: Claim, wait_ms: i64) -> Result<(), DbErr> {
        let then = match claim.state {
            DeliveryState::Finishing => row::OPEN,
            other => other.as_str(),
        };
        let retry_at = self.now_ms().saturating_add(wait_ms);
        row::Entity::update_many()
            .col_expr(row::Column::State, Expr::value(then))
            .col_expr(row::Column::ClaimedBy, Expr::value(Option::<String>::None))
            .col_expr(row::Column::LeaseUntil, Expr::value(retry_at))
            .filter(of(claim.adapter, &claim.request_id))
            .filter(row::Column::State.eq(claim.state.as_str()))
            .filter(row::Column::ClaimedBy.eq(claim.replica.as_str()))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}

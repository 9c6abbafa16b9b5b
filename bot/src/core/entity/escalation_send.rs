//! The delivery of one fired escalation step to one chat: the claim that
//! makes one replica deliver it, and when it was delivered.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "escalation_sends")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub adapter: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub request_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub step: i32,
    pub claimed_by: Option<String>,
    /// When the claim lapses, or (after a failed call) when the next try
    /// is due.
    pub lease_until: Option<i64>,
    pub sent_at: Option<i64>,
    /// Where a `notify` step's message was posted, and its id there.
    pub destination: Option<String>,
    pub handle: Option<String>,
    /// When a page's incident was resolved (its alert closed).
    pub resolved_at: Option<i64>,
    /// Why a pager refused a page (never retried).
    pub error: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

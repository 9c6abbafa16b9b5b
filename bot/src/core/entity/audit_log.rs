//! One link of the hash-chained, append-only audit log.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub seq: i64,
    #[sea_orm(unique)]
    pub event_id: String,
    /// When it happened (unix ms, the clock of whoever saw it happen).
    pub at: i64,
    /// When the bot stored it (unix ms).
    pub recorded_at: i64,
    pub kind: String,
    pub runner: Option<String>,
    pub request_id: Option<String>,
    /// The event, as canonical JSON.
    pub body: String,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! A review request and its state.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "requests")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub runner: String,
    pub command: String,
    pub command_hash: String,
    pub risk: String,
    /// The verdict, as JSON.
    pub verdict: String,
    /// The annotations, as a JSON array.
    pub annotations: String,
    pub host: String,
    pub cwd: String,
    pub agent: Option<String>,
    pub session: Option<String>,
    pub front_end: String,
    pub requested_by: Option<String>,
    pub status: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    /// When the runner acknowledged the decision.
    pub relayed_at: Option<i64>,
    /// The identity (`runners.id`) that submitted it.
    pub runner_id: Option<i64>,
    /// What it needs before it is approved (`config::Requirement`, as
    /// JSON), chosen at submission; `None` for requests stored before.
    pub quorum: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

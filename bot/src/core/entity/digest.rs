//! One scheduled digest run: who claimed it, when it was sent.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "digests")]
pub struct Model {
    /// When it was due (unix ms): one row per due time.
    #[sea_orm(primary_key, auto_increment = false)]
    pub due_at: i64,
    /// Where an asked-for digest's period starts (a scheduled one covers
    /// the configured period before `due_at`).
    pub from_ms: Option<i64>,
    /// Empty for one asked for that no replica has taken yet.
    pub claimed_by: String,
    pub claimed_at: i64,
    pub sent_at: Option<i64>,
    /// Sent after its due time by a bot that was down then.
    pub late: bool,
    /// Why a destination could not be sent to.
    pub error: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

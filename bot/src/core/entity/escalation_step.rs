//! One escalation step of a request: its action, when it is due and when
//! it fired.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "escalation_steps")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub request_id: String,
    /// The step's place in its policy, from 0.
    #[sea_orm(primary_key, auto_increment = false)]
    pub step: i32,
    /// `remind` or `notify`.
    pub action: String,
    /// Milliseconds since the epoch.
    pub due_at: i64,
    pub fired_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

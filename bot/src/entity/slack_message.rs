//! The Slack message posted for a request: its channel and timestamp, and
//! the final status it was last updated to (none while it shows buttons).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "slack_messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub request_id: String,
    pub channel: String,
    pub ts: String,
    pub posted_at: i64,
    /// The final status the message was updated to, once it was.
    pub final_status: Option<String>,
    pub updated_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! The Slack message posted for a request: its channel and timestamp, the
//! final status it was (or is being) updated to, and the claim that makes
//! one replica, and only one, post it and update it.

use sea_orm::entity::prelude::*;

/// The message is being posted by `claimed_by`; `ts` is still empty.
pub const POSTING: &str = "posting";
/// Posted; it shows the buttons.
pub const OPEN: &str = "open";
/// `claimed_by` is updating it to `final_status`.
pub const FINISHING: &str = "finishing";
/// Updated to `final_status`.
pub const DONE: &str = "done";

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "slack_messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub request_id: String,
    pub channel: String,
    /// Empty while `posting`.
    pub ts: String,
    pub posted_at: i64,
    /// The final status the message was (or is being) updated to.
    pub final_status: Option<String>,
    pub updated_at: Option<i64>,
    /// `posting`, `open`, `finishing` or `done`.
    pub state: String,
    /// The replica holding a `posting` or `finishing` claim.
    pub claimed_by: Option<String>,
    /// When the claim lapses, or (after a failed call) when the next try is
    /// due; milliseconds since the epoch.
    pub lease_until: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

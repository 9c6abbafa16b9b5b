//! The message a chat adapter posted for a request: where it is, the final
//! status it was (or is being) updated to, and the claim that makes one
//! replica, and only one, post it and update it.

use sea_orm::entity::prelude::*;

/// The message is being posted by `claimed_by`; `handle` is still empty.
pub const POSTING: &str = "posting";
/// Posted; it shows the buttons.
pub const OPEN: &str = "open";
/// `claimed_by` is updating it to `final_status`.
pub const FINISHING: &str = "finishing";
/// Updated to `final_status`.
pub const DONE: &str = "done";

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "deliveries")]
pub struct Model {
    /// `slack`, `matrix`, …
    #[sea_orm(primary_key, auto_increment = false)]
    pub adapter: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub request_id: String,
    /// The channel or room.
    pub destination: String,
    /// The message's id in that channel (Slack's `ts`); empty while
    /// `posting`.
    pub handle: String,
    /// `posting`, `open`, `finishing` or `done`.
    pub state: String,
    /// The final status the message was (or is being) updated to.
    pub final_status: Option<String>,
    pub posted_at: i64,
    pub updated_at: Option<i64>,
    /// The replica holding a `posting` or `finishing` claim.
    pub claimed_by: Option<String>,
    /// When the claim lapses, or (after a failed call) when the next try is
    /// due; milliseconds since the epoch.
    pub lease_until: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

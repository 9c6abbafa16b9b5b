//! One approval counted towards a request's quorum.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "votes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub request_id: String,
    /// Who approved, as one person (`person:alice`, or the identity).
    #[sea_orm(primary_key, auto_increment = false)]
    pub person: String,
    /// The identity they approved with (`slack:U…`).
    pub reviewer: String,
    pub at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

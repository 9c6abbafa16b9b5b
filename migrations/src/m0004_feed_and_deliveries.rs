//! The change feed and the deliveries table.
//!
//! - `changes`: one row per request transition (submitted, then its final
//!   state), written in the same transaction as the transition and its
//!   audit row. `seq` orders them; every bot process tails this table, so a
//!   decision made by the CLI or another replica reaches the runners,
//!   pages and chats connected to this one. Old rows may be pruned; they
//!   are a notification, not a record (the audit log is the record).
//! - `deliveries`: the message a chat adapter posted for a request, and the
//!   claim that makes one replica, and only one, post it and update it.
//!   One row per (adapter, request). It replaces `slack_messages`, whose
//!   rows are copied over as adapter `slack`: `channel` becomes
//!   `destination`, `ts` becomes `handle`; `state`, the claim and the lease
//!   keep their meaning.
//!
//! It never touches the audit log.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Changes {
    Table,
    Seq,
    RequestId,
    Status,
    At,
}

#[derive(DeriveIden)]
enum Deliveries {
    Table,
    Adapter,
    RequestId,
    Destination,
    Handle,
    State,
    FinalStatus,
    PostedAt,
    UpdatedAt,
    ClaimedBy,
    LeaseUntil,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Changes::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Changes::Seq))
                    .col(string(Changes::RequestId))
                    .col(string(Changes::Status))
                    .col(big_integer(Changes::At))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Deliveries::Table)
                    .if_not_exists()
                    .col(string(Deliveries::Adapter))
                    .col(string(Deliveries::RequestId))
                    .col(string(Deliveries::Destination))
                    .col(string(Deliveries::Handle))
                    .col(string(Deliveries::State))
                    .col(string_null(Deliveries::FinalStatus))
                    .col(big_integer(Deliveries::PostedAt))
                    .col(big_integer_null(Deliveries::UpdatedAt))
                    .col(string_null(Deliveries::ClaimedBy))
                    .col(big_integer_null(Deliveries::LeaseUntil))
                    .primary_key(
                        Index::create()
                            .col(Deliveries::Adapter)
                            .col(Deliveries::RequestId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("deliveries_state")
                    .table(Deliveries::Table)
                    .col(Deliveries::Adapter)
                    .col(Deliveries::State)
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO deliveries (adapter, request_id, destination, handle, state, \
                 final_status, posted_at, updated_at, claimed_by, lease_until) \
                 SELECT 'slack', request_id, channel, ts, state, final_status, posted_at, \
                 updated_at, claimed_by, lease_until FROM slack_messages",
            )
            .await?;
        manager
            .drop_table(Table::drop().table(Alias::new("slack_messages")).to_owned())
            .await
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Err(DbErr::Migration(
            "the change feed and deliveries cannot be migrated down: restore a backup instead"
                .into(),
        ))
    }
}

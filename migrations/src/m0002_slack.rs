//! Where each request's Slack message lives (channel and timestamp), so the
//! bot can update it in place after a decision or an expiry, also after a
//! restart. It stores no request data and never touches the audit log.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SlackMessages {
    Table,
    RequestId,
    Channel,
    Ts,
    PostedAt,
    FinalStatus,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SlackMessages::Table)
                    .if_not_exists()
                    .col(string(SlackMessages::RequestId).primary_key())
                    .col(string(SlackMessages::Channel))
                    .col(string(SlackMessages::Ts))
                    .col(big_integer(SlackMessages::PostedAt))
                    .col(string_null(SlackMessages::FinalStatus))
                    .col(big_integer_null(SlackMessages::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("slack_messages_final_status")
                    .table(SlackMessages::Table)
                    .col(SlackMessages::FinalStatus)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SlackMessages::Table).to_owned())
            .await
    }
}

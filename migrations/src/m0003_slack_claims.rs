//! Several bot replicas may share one database. Each request's Slack
//! message must still be posted once and updated once, so the row that says
//! where the message lives is now also the claim on posting or updating it:
//!
//! - `state`: `posting` (claimed, not posted yet: `ts` is empty), `open`
//!   (posted, shows buttons), `finishing` (claimed to be updated to
//!   `final_status`), `done` (updated);
//! - `claimed_by`: the replica holding a `posting` or `finishing` claim;
//! - `lease_until`: when that claim lapses (its holder died or hung) and
//!   another replica may take it over; after a failed call, when the next
//!   try is due.
//!
//! Rows from before keep their meaning: no final status is `open`, one is
//! `done`. It stores no request data and never touches the audit log.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SlackMessages {
    Table,
    FinalStatus,
    State,
    ClaimedBy,
    LeaseUntil,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        let columns = [
            string(SlackMessages::State).default("open").to_owned(),
            string_null(SlackMessages::ClaimedBy),
            big_integer_null(SlackMessages::LeaseUntil),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(SlackMessages::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .exec_stmt(
                Query::update()
                    .table(SlackMessages::Table)
                    .value(SlackMessages::State, "done")
                    .and_where(Expr::col(SlackMessages::FinalStatus).is_not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("slack_messages_state")
                    .table(SlackMessages::Table)
                    .col(SlackMessages::State)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("slack_messages_state")
                    .table(SlackMessages::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            SlackMessages::LeaseUntil,
            SlackMessages::ClaimedBy,
            SlackMessages::State,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(SlackMessages::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

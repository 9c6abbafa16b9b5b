//! Escalation: every step's due time, stored when the request is.
//!
//! - `escalation_steps`: one row per (request, step) of the escalation
//!   policy that applied when the request was submitted, with its action
//!   (`remind`, `notify`), when it is due and when it fired. The sweep
//!   fires a step with a guarded update from `fired_at IS NULL`, in the
//!   transaction of its audit row and its change row, so a restart or a
//!   second replica never fires it twice.
//! - `escalation_sends`: one row per (adapter, request, step): the claim
//!   that makes one replica, and only one, deliver a fired step to a chat,
//!   when it was delivered and, for a post in the pager channel, where that
//!   message is (it is updated to the outcome with the request's own).
//! - `changes.step`: the step a change row announces (none for a
//!   transition).
//! - `votes`: the approvals counted towards a request's quorum, one per
//!   person (a reviewer's identities in several realms may be one person).
//!
//! It never touches the audit log.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EscalationSteps {
    Table,
    RequestId,
    Step,
    Action,
    DueAt,
    FiredAt,
}

#[derive(DeriveIden)]
enum EscalationSends {
    Table,
    Adapter,
    RequestId,
    Step,
    ClaimedBy,
    LeaseUntil,
    SentAt,
    Destination,
    Handle,
}

#[derive(DeriveIden)]
enum Votes {
    Table,
    RequestId,
    Person,
    Reviewer,
    At,
}

#[derive(DeriveIden)]
enum Changes {
    Table,
    Step,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(EscalationSteps::Table)
                    .if_not_exists()
                    .col(string(EscalationSteps::RequestId))
                    .col(integer(EscalationSteps::Step))
                    .col(string(EscalationSteps::Action))
                    .col(big_integer(EscalationSteps::DueAt))
                    .col(big_integer_null(EscalationSteps::FiredAt))
                    .primary_key(
                        Index::create()
                            .col(EscalationSteps::RequestId)
                            .col(EscalationSteps::Step),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("escalation_steps_due")
                    .table(EscalationSteps::Table)
                    .col(EscalationSteps::FiredAt)
                    .col(EscalationSteps::DueAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(EscalationSends::Table)
                    .if_not_exists()
                    .col(string(EscalationSends::Adapter))
                    .col(string(EscalationSends::RequestId))
                    .col(integer(EscalationSends::Step))
                    .col(string_null(EscalationSends::ClaimedBy))
                    .col(big_integer_null(EscalationSends::LeaseUntil))
                    .col(big_integer_null(EscalationSends::SentAt))
                    .col(string_null(EscalationSends::Destination))
                    .col(string_null(EscalationSends::Handle))
                    .primary_key(
                        Index::create()
                            .col(EscalationSends::Adapter)
                            .col(EscalationSends::RequestId)
                            .col(EscalationSends::Step),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Votes::Table)
                    .if_not_exists()
                    .col(string(Votes::RequestId))
                    .col(string(Votes::Person))
                    .col(string(Votes::Reviewer))
                    .col(big_integer(Votes::At))
                    .primary_key(Index::create().col(Votes::RequestId).col(Votes::Person))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Changes::Table)
                    .add_column(integer_null(Changes::Step))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Err(DbErr::Migration(
            "escalation cannot be migrated down: restore a backup instead".into(),
        ))
    }
}

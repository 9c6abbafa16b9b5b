//! The quorum a request needs is chosen when it is submitted and stored
//! with it (`requests.quorum`, JSON: `{"approvals":2,"from":{"sre":1}}`),
//! so a configuration change never lowers the bar of a request already
//! waiting. Rows from before have none; they need what the configuration
//! asks for their risk, as they did.
//!
//! Also an index to find the request of a message a `notify` step posted
//! (a reaction in a Matrix pager room names only the message), and
//! `leases`: a named hold one replica has until `until` (ms) unless it
//! renews it, such as the Matrix device, which must never be used by two
//! processes at once.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Requests {
    Table,
    Quorum,
}

#[derive(DeriveIden)]
enum Leases {
    Table,
    Name,
    Holder,
    Until,
}

#[derive(DeriveIden)]
enum EscalationSends {
    Table,
    Adapter,
    Handle,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Requests::Table)
                    .add_column(text_null(Requests::Quorum))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("escalation_sends_handle")
                    .table(EscalationSends::Table)
                    .col(EscalationSends::Adapter)
                    .col(EscalationSends::Handle)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Leases::Table)
                    .if_not_exists()
                    .col(string(Leases::Name).primary_key())
                    .col(string(Leases::Holder))
                    .col(big_integer(Leases::Until))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Err(DbErr::Migration(
            "stored quorums and leases cannot be migrated down: restore a backup instead".into(),
        ))
    }
}

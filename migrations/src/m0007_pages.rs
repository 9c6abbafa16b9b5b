//! Pages: what became of a `page` step's incident or alert.
//!
//! A `page` step is delivered like the others, through its
//! `escalation_sends` row (adapter `pagerduty` or `opsgenie`, the
//! incident's dedup key or the alert's alias as `handle`). Two columns say
//! the rest:
//!
//! - `resolved_at`: when the incident was resolved (the alert closed)
//!   because its request ended. A row sent but not resolved, whose request
//!   is no longer pending, is what the pager engine still has to resolve;
//!   its claim columns are reused for that.
//! - `error`: why the pager refused it (a 400 with its reason). Such a
//!   page is never retried.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum EscalationSends {
    Table,
    ResolvedAt,
    Error,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(EscalationSends::Table)
                    .add_column(big_integer_null(EscalationSends::ResolvedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(EscalationSends::Table)
                    .add_column(text_null(EscalationSends::Error))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Err(DbErr::Migration(
            "pages cannot be migrated down: restore a backup instead".into(),
        ))
    }
}

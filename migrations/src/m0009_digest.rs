//! The weekly digest: indexes for the ranges its aggregates read
//! (`audit_log (kind, at)` for verdicts and escalations by when they
//! happened, `audit_log (recorded_at)` for the chain over a period,
//! `requests (decided_at)` for outcomes), and `digests`, one row per
//! scheduled run: the first replica to insert a due time sends it, so a
//! digest goes out once per period however many replicas run, and one due
//! while every replica was down is sent once when one is back (`late`).
//! `holdpoint-bot digest --send` inserts an unclaimed row (`claimed_by`
//! empty, with its own `from_ms`) that a running replica claims and sends.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Kind,
    At,
    RecordedAt,
}

#[derive(DeriveIden)]
enum Digests {
    Table,
    DueAt,
    FromMs,
    ClaimedBy,
    ClaimedAt,
    SentAt,
    Late,
    Error,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("audit_log_kind_at")
                    .if_not_exists()
                    .table(AuditLog::Table)
                    .col(AuditLog::Kind)
                    .col(AuditLog::At)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("audit_log_recorded_at")
                    .if_not_exists()
                    .table(AuditLog::Table)
                    .col(AuditLog::RecordedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Digests::Table)
                    .if_not_exists()
                    .col(big_integer(Digests::DueAt).primary_key())
                    .col(big_integer_null(Digests::FromMs))
                    .col(string(Digests::ClaimedBy))
                    .col(big_integer(Digests::ClaimedAt))
                    .col(big_integer_null(Digests::SentAt))
                    .col(boolean(Digests::Late))
                    .col(text_null(Digests::Error))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Err(DbErr::Migration(
            "the digest cannot be migrated down: restore a backup instead".into(),
        ))
    }
}

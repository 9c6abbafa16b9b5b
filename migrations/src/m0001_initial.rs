//! Runners and their tokens, review requests, the audit log and web logins.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runners {
    Table,
    Id,
    Name,
    TokenHash,
    CreatedAt,
    RevokedAt,
    LastSeenAt,
}

#[derive(DeriveIden)]
enum Requests {
    Table,
    Id,
    Runner,
    Command,
    CommandHash,
    Risk,
    Verdict,
    Annotations,
    Host,
    Cwd,
    Agent,
    Session,
    FrontEnd,
    RequestedBy,
    Status,
    CreatedAt,
    ExpiresAt,
    DecidedAt,
    DecidedBy,
    Reason,
    RelayedAt,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Seq,
    EventId,
    At,
    RecordedAt,
    Kind,
    Runner,
    RequestId,
    Body,
    PrevHash,
    Hash,
}

#[derive(DeriveIden)]
enum WebTokens {
    Table,
    TokenHash,
    Kind,
    Name,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Runners::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Runners::Id))
                    .col(string_uniq(Runners::Name))
                    .col(string_uniq(Runners::TokenHash))
                    .col(big_integer(Runners::CreatedAt))
                    .col(big_integer_null(Runners::RevokedAt))
                    .col(big_integer_null(Runners::LastSeenAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Requests::Table)
                    .if_not_exists()
                    .col(string(Requests::Id).primary_key())
                    .col(string(Requests::Runner))
                    .col(text(Requests::Command))
                    .col(string(Requests::CommandHash))
                    .col(string(Requests::Risk))
                    .col(text(Requests::Verdict))
                    .col(text(Requests::Annotations))
                    .col(string(Requests::Host))
                    .col(text(Requests::Cwd))
                    .col(string_null(Requests::Agent))
                    .col(string_null(Requests::Session))
                    .col(string(Requests::FrontEnd))
                    .col(string_null(Requests::RequestedBy))
                    .col(string(Requests::Status))
                    .col(big_integer(Requests::CreatedAt))
                    .col(big_integer(Requests::ExpiresAt))
                    .col(big_integer_null(Requests::DecidedAt))
                    .col(string_null(Requests::DecidedBy))
                    .col(text_null(Requests::Reason))
                    .col(big_integer_null(Requests::RelayedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("requests_status_expires")
                    .table(Requests::Table)
                    .col(Requests::Status)
                    .col(Requests::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("requests_decided_at")
                    .table(Requests::Table)
                    .col(Requests::DecidedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .if_not_exists()
                    .col(big_pk_auto(AuditLog::Seq))
                    .col(string_uniq(AuditLog::EventId))
                    .col(big_integer(AuditLog::At))
                    .col(big_integer(AuditLog::RecordedAt))
                    .col(string(AuditLog::Kind))
                    .col(string_null(AuditLog::Runner))
                    .col(string_null(AuditLog::RequestId))
                    .col(text(AuditLog::Body))
                    .col(string(AuditLog::PrevHash))
                    .col(string(AuditLog::Hash))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("audit_log_at")
                    .table(AuditLog::Table)
                    .col(AuditLog::At)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebTokens::Table)
                    .if_not_exists()
                    .col(string(WebTokens::TokenHash).primary_key())
                    .col(string(WebTokens::Kind))
                    .col(string(WebTokens::Name))
                    .col(big_integer(WebTokens::CreatedAt))
                    .col(big_integer(WebTokens::ExpiresAt))
                    .col(big_integer_null(WebTokens::UsedAt))
                    .to_owned(),
            )
            .await?;

        // The audit log is append-only: the database itself refuses to change
        // or remove a row.
        let db = manager.get_connection();
        let backend = manager.get_database_backend();
        let statements: &[&str] = match backend {
            DatabaseBackend::Sqlite => &[
                "CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log \
                 BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
                "CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log \
                 BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
            ],
            DatabaseBackend::Postgres => &[
                "CREATE OR REPLACE FUNCTION holdpoint_audit_log_append_only() RETURNS trigger \
                 LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$",
                "DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log",
                "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log \
                 FOR EACH STATEMENT EXECUTE FUNCTION holdpoint_audit_log_append_only()",
            ],
            _ => &[],
        };
        for sql in statements {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Err(DbErr::Migration(
            "holdpoint's first migration holds the audit log and cannot be undone".into(),
        ))
    }
}

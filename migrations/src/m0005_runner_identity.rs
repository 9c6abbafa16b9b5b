//! A runner's identity is its row, not its name.
//!
//! - `runners.name` is unique only among runners that are not revoked: a
//!   revoked runner's row stays as it was, and `runner add` with its name
//!   makes a new row, a new identity that owns nothing the old one did.
//!   (SQLite cannot drop a column's UNIQUE constraint, so the table is
//!   rebuilt there with the same rows and ids.)
//! - `requests.runner_id`: the identity that submitted the request, filled
//!   in for existing requests from the runner that has their name.
//!
//! It never touches the audit log.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Runners {
    Table,
    Name,
}

#[derive(DeriveIden)]
enum Requests {
    Table,
    RunnerId,
    Status,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DatabaseBackend::Sqlite => {
                // One batch on one connection, in one transaction: the rows
                // move to a table without the constraint, which then takes
                // the old name.
                db.execute_unprepared(
                    "BEGIN IMMEDIATE;
                     CREATE TABLE runners_rebuilt (
                         id integer NOT NULL PRIMARY KEY AUTOINCREMENT,
                         name varchar NOT NULL,
                         token_hash varchar NOT NULL UNIQUE,
                         created_at bigint NOT NULL,
                         revoked_at bigint NULL,
                         last_seen_at bigint NULL);
                     INSERT INTO runners_rebuilt (id, name, token_hash, created_at, revoked_at,
                         last_seen_at)
                         SELECT id, name, token_hash, created_at, revoked_at, last_seen_at
                         FROM runners;
                     DROP TABLE runners;
                     ALTER TABLE runners_rebuilt RENAME TO runners;
                     COMMIT;",
                )
                .await?;
            }
            _ => {
                // The name PostgreSQL gives a column's UNIQUE constraint.
                db.execute_unprepared("ALTER TABLE runners DROP CONSTRAINT runners_name_key")
                    .await?;
            }
        }
        db.execute_unprepared(
            "CREATE UNIQUE INDEX runners_active_name ON runners (name) WHERE revoked_at IS NULL",
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("runners_name")
                    .table(Runners::Table)
                    .col(Runners::Name)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Requests::Table)
                    .add_column(big_integer_null(Requests::RunnerId))
                    .to_owned(),
            )
            .await?;
        db.execute_unprepared(
            "UPDATE requests SET runner_id = \
             (SELECT runners.id FROM runners WHERE runners.name = requests.runner)",
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("requests_runner_id_status")
                    .table(Requests::Table)
                    .col(Requests::RunnerId)
                    .col(Requests::Status)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Err(DbErr::Migration(
            "runner identities cannot be migrated down: restore a backup instead".into(),
        ))
    }
}

//! The database schema of `holdpoint-bot`, as sea-orm migrations. The bot
//! applies them when it starts and `holdpoint-bot migrate` applies them on
//! demand; both SQLite and PostgreSQL are supported.
//!
//! A migration must never rewrite or drop audit rows: the audit log is
//! append-only and hash-chained, and the database refuses updates and deletes
//! on it.

pub use sea_orm_migration::prelude::*;

mod m0001_initial;
mod m0002_slack;
mod m0003_slack_claims;
mod m0004_feed_and_deliveries;
mod m0005_runner_identity;
mod m0006_escalation;
mod m0007_pages;
mod m0008_quorum_and_leases;
mod m0009_digest;

/// Every migration, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_initial::Migration),
            Box::new(m0002_slack::Migration),
            Box::new(m0003_slack_claims::Migration),
            Box::new(m0004_feed_and_deliveries::Migration),
            Box::new(m0005_runner_identity::Migration),
            Box::new(m0006_escalation::Migration),
            Box::new(m0007_pages::Migration),
            Box::new(m0008_quorum_and_leases::Migration),
            Box::new(m0009_digest::Migration),
        ]
    }
}

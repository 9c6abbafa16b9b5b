//! Fresh PostgreSQL databases on this machine's server.

use crate::util::random_hex;
use std::process::Command;

/// Which database a bot uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh PostgreSQL database on 127.0.0.1:5432 (or the server in
/// `HOLDPOINT_E2E_POSTGRES_URL`), dropped again at drop.
pub struct PgDatabase {
    base: String,
    name: String,
}

/// The database `psql` connects to for CREATE and DROP.
const ADMIN_DB: &str = "test";

impl PgDatabase {
    /// Creates one, or returns `None` (with the reason printed) when no
    /// server is reachable. With `HOLDPOINT_E2E_POSTGRES=required` (set by
    /// CI) an unreachable server is a failure, not a skip.
    pub fn create() -> Option<PgDatabase> {
        let base = std::env::var("HOLDPOINT_E2E_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let name = format!("holdpoint_test_{}", random_hex(6));
        let required = std::env::var("HOLDPOINT_E2E_POSTGRES").is_ok_and(|v| v == "required");
        match psql(&base, &format!("CREATE DATABASE {name}")) {
            Ok(()) => Some(PgDatabase { base, name }),
            Err(why) => {
                assert!(
                    !required,
                    "PostgreSQL is required here (HOLDPOINT_E2E_POSTGRES=required) but unreachable: {why}"
                );
                eprintln!("skipped on PostgreSQL: no server reachable ({why})");
                None
            }
        }
    }

    /// The database's URL.
    pub fn url(&self) -> String {
        format!("{}/{}", self.base, self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = psql(
            &self.base,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs one SQL statement on the server's admin database.
fn psql(base: &str, sql: &str) -> Result<(), String> {
    match Command::new("psql")
        .args([&format!("{base}/{ADMIN_DB}"), "-qAtc", sql])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(format!("psql: {e}")),
    }
}

//! Opening the database (SQLite by default, PostgreSQL by URL) and applying
//! the migrations; random secrets and their hashes.

use holdpoint_migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

pub use sea_orm::DbErr;

/// Why the database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("cannot open the database {url}: {source}")]
    Connect { url: String, source: DbErr },
    #[error("cannot apply the database migrations: {0}")]
    Migrate(DbErr),
    #[error("unsupported database URL {0}: use sqlite://PATH or postgres://…")]
    Scheme(String),
}

/// Opens the database at `url`, creating an SQLite file (and its directory)
/// on first use. It does not migrate.
pub(super) async fn open(url: &str) -> Result<DatabaseConnection, OpenError> {
    let shown = holdpoint_shared::redact::redact(url);
    let sqlite = url.starts_with("sqlite:");
    if !sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        return Err(OpenError::Scheme(shown));
    }
    if sqlite {
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let path = path.split('?').next().unwrap_or_default();
        create_private(Path::new(path))?;
    }
    let mut opts = ConnectOptions::new(url.to_string());
    opts.connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .max_connections(if sqlite { 4 } else { 16 })
        .sqlx_logging(false);
    let db = Database::connect(opts)
        .await
        .map_err(|source| OpenError::Connect {
            url: shown.clone(),
            source,
        })?;
    if db.get_database_backend() == DatabaseBackend::Sqlite {
        // WAL lets the CLI write while the server reads; NORMAL is durable
        // across process crashes, which is what a request needs.
        for pragma in ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"] {
            db.execute_unprepared(pragma)
                .await
                .map_err(|source| OpenError::Connect {
                    url: shown.clone(),
                    source,
                })?;
        }
    }
    Ok(db)
}

/// Creates the database's directory (0700) and file (0600) when they do
/// not exist yet: the database holds every command and the audit log, so
/// no other local user may read it. SQLite gives its journal files the
/// database file's mode. What exists already is left as its owner set it.
fn create_private(path: &Path) -> Result<(), OpenError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if path.as_os_str().is_empty() || path.to_str().is_some_and(|p| p.starts_with(':')) {
        return Ok(());
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| OpenError::DataDir(dir.display().to_string(), e))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(OpenError::DataDir(path.display().to_string(), e)),
    }
}

/// Opens and migrates.
pub(super) async fn open_and_migrate(url: &str) -> Result<DatabaseConnection, OpenError> {
    let db = open(url).await?;
    Migrator::up(&db, None).await.map_err(OpenError::Migrate)?;
    Ok(db)
}

/// A fresh random secret: `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The operating system's generator does not fail on Linux after boot; if
    // it ever did, an all-zero secret would be guessable, so stop instead.
    if let Err(e) = getrandom::fill(&mut buf) {
        panic!("the operating system's random generator failed: {e}");
    }
    hex::encode(buf)
}

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn a_new_database_is_readable_by_its_owner_only() {
        let root = std::env::temp_dir().join(format!("holdpoint-db-{}", random_hex(6)));
        let dir = root.join("data");
        let file = dir.join("holdpoint.db");
        let db = open_and_migrate(&format!("sqlite://{}?mode=rwc", file.display()))
            .await
            .expect("open");
        drop(db);
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode(&dir).ok(), Some(0o700));
        assert_eq!(mode(&file).ok(), Some(0o600));
        for extra in ["holdpoint.db-wal", "holdpoint.db-shm"] {
            if let Ok(m) = mode(&dir.join(extra)) {
                assert_eq!(m & 0o077, 0, "{extra} is {m:o}");
            }
        }
        let _ = std::fs::remove_dir_all(root);
    }
}

//! Opening the database (SQLite by default, PostgreSQL by URL) and applying
//! the migrations; random secrets and their hashes.

use holdpoint_migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    process_start();
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
    // A connection is never handed out again when it may lie:
    // - one whose COMMIT and then ROLLBACK both failed (a disk that turned
    //   read-only, a server gone mid-statement) goes back to the pool still
    //   counting itself inside a transaction, and the next "transaction" on
    //   it would be a savepoint whose commit reports success and stores
    //   nothing;
    // - an SQLite connection opened before a write failed at the storage
    //   level may have fallen back to read-only files and would refuse
    //   writes for ever, even once the disk takes them again.
    // Either is closed, and the pool opens a fresh one.
    opts.map_sqlx_sqlite_before_acquire(|conn, meta| {
        let keep =
            !sea_orm::sqlx::Connection::is_in_transaction(conn) && opened_since_failure(meta.age);
        Box::pin(async move { Ok(keep) })
    });
    opts.map_sqlx_postgres_before_acquire(|conn, _| {
        Box::pin(async move { Ok(!sea_orm::sqlx::Connection::is_in_transaction(conn)) })
    });
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

fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// When (ms since the process started, plus one; 0: never) a write last
/// failed at the storage level.
static STORAGE_FAILED_AT: AtomicU64 = AtomicU64::new(0);

/// Whether a pooled connection of this `age` was opened after the last
/// storage failure.
fn opened_since_failure(age: Duration) -> bool {
    let failed = STORAGE_FAILED_AT.load(Ordering::Acquire);
    if failed == 0 {
        return true;
    }
    let opened = process_start().elapsed().saturating_sub(age).as_millis() as u64 + 1;
    opened > failed
}

/// Notes a write error: when SQLite says its files cannot be written (read
/// only, an I/O error, a full disk, a file it cannot open), the connections
/// open now are replaced as they are next taken from the pool.
pub(super) fn note_write_error(e: &DbErr) {
    use sea_orm::RuntimeErr;
    let (DbErr::Exec(RuntimeErr::SqlxError(err))
    | DbErr::Query(RuntimeErr::SqlxError(err))
    | DbErr::Conn(RuntimeErr::SqlxError(err))) = e
    else {
        return;
    };
    let Some(code) = err
        .as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<u32>().ok())
    else {
        return;
    };
    // SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN, with
    // their extended codes.
    if matches!(code & 0xff, 8 | 10 | 13 | 14) {
        let now = process_start().elapsed().as_millis() as u64 + 1;
        STORAGE_FAILED_AT.fetch_max(now, Ordering::AcqRel);
    }
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

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

/// A PostgreSQL server of the test's own, on a free port with its data in a
/// temporary directory, so that a test can stop and start it without
/// touching the machine's server. Stopped at drop.
pub struct PgCluster {
    dir: crate::util::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl PgCluster {
    /// Makes and starts one, or returns `None` (with the reason printed)
    /// when this machine has no PostgreSQL server binaries. With
    /// `HOLDPOINT_E2E_POSTGRES=required` their absence is a failure.
    pub fn start() -> Option<PgCluster> {
        let required = std::env::var("HOLDPOINT_E2E_POSTGRES").is_ok_and(|v| v == "required");
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| {
                let mut v: Vec<_> = d.flatten().map(|e| e.path().join("bin")).collect();
                v.sort();
                v.into_iter().rev().find(|b| b.join("initdb").exists())
            })
            .or_else(|| {
                std::env::var_os("HOLDPOINT_PG_BIN")
                    .map(std::path::PathBuf::from)
                    .filter(|b| b.join("initdb").exists())
            });
        let Some(bin) = bin else {
            assert!(
                !required,
                "PostgreSQL's server binaries (initdb, pg_ctl) are required here but not found"
            );
            eprintln!("skipped: no PostgreSQL server binaries (initdb) on this machine");
            return None;
        };
        let dir = crate::util::TempDir::new("pgcluster");
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("the cluster's directory");
        // The server refuses to run as root: it runs as `postgres` then.
        if as_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown the cluster's directory to postgres");
        }
        let c = PgCluster {
            dir,
            bin,
            port: crate::util::free_port(),
        };
        let init = c
            .tool("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            init.status.success(),
            "initdb: {}",
            crate::util::text(&init.stderr)
        );
        c.start_again();
        Some(c)
    }

    fn tool(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        if as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops it at once (`pg_ctl stop -m immediate`: connections are cut, as
    /// in a crash).
    pub fn stop(&self) {
        let out = self
            .tool("pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(self.dir.join("data"))
            .output()
            .expect("run pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            crate::util::text(&out.stderr)
        );
    }

    /// Starts it (again), and waits until it answers.
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let out = self
            .tool("pg_ctl")
            .args(["start", "-w", "-t", "60", "-l"])
            .arg(self.dir.join("server.log"))
            .args(["-o", &opts, "-D"])
            .arg(self.dir.join("data"))
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            crate::util::text(&out.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .output();
    }
}

fn as_root() -> bool {
    std::env::var("USER").is_ok_and(|u| u == "root")
        || Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

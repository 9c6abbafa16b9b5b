//! The harness for holdpoint's end-to-end tests: it starts the real
//! `holdpoint-bot` and `holdpoint` binaries (built by `cargo test
//! --workspace`) against a fresh SQLite file or a fresh PostgreSQL database,
//! and drives them the way an agent and a reviewer would.
//!
//! It must never make a test pass that should fail: every wait has a bound
//! and ends in a panic that says what did not happen.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the workspace's binaries are: next to this test's `deps/` folder.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("the test binary lives in target/<profile>/deps");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo test --workspace` (or `cargo build --workspace`) first",
        p.display()
    );
    p
}

/// A fresh directory, removed at drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let mut buf = [0u8; 6];
        let _ = getrandom_bytes(&mut buf);
        let name: String = buf.iter().map(|b| format!("{b:02x}")).collect();
        let p = std::env::temp_dir().join(format!("holdpoint-e2e-{tag}-{name}"));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn getrandom_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// A random lowercase hex string.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom_bytes(&mut buf).expect("/dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Which database the bot uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh PostgreSQL database on this machine's server, or `None` (with the
/// reason printed) when none is reachable. With `HOLDPOINT_E2E_POSTGRES=required`
/// (set by CI) an unreachable server is a failure, not a skip.
pub fn postgres_database() -> Option<String> {
    let base = std::env::var("HOLDPOINT_E2E_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name = format!("holdpoint_e2e_{}", random_hex(6));
    let out = Command::new("psql")
        .args([
            &format!("{base}/test"),
            "-qAtc",
            &format!("CREATE DATABASE {name}"),
        ])
        .output();
    let required = std::env::var("HOLDPOINT_E2E_POSTGRES").is_ok_and(|v| v == "required");
    match out {
        Ok(o) if o.status.success() => Some(format!("{base}/{name}")),
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => format!("psql: {e}"),
            };
            assert!(
                !required,
                "PostgreSQL is required here but unreachable: {why}"
            );
            eprintln!("skipped on PostgreSQL: no server reachable ({why})");
            None
        }
    }
}

/// A running bot.
pub struct BotProc {
    pub dir: TempDir,
    pub port: u16,
    pub database_url: String,
    pub token: String,
    extra_env: Vec<(String, String)>,
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
}

impl BotProc {
    /// Starts a bot on `backend` (`None` if PostgreSQL is wanted and absent).
    pub fn start(backend: Backend, env: &[(&str, &str)]) -> Option<BotProc> {
        let dir = TempDir::new("bot");
        let database_url = match backend {
            Backend::Sqlite => format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("holdpoint.db").display()
            ),
            Backend::Postgres => postgres_database()?,
        };
        let mut bot = BotProc {
            dir,
            port: free_port(),
            database_url,
            token: String::new(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            stderr: Arc::new(Mutex::new(String::new())),
        };
        bot.spawn();
        let envfile = std::fs::read_to_string(bot.dir.path().join("runner-local.env"))
            .expect("the bot wrote runner-local.env at first start");
        bot.token = envfile
            .lines()
            .find_map(|l| l.strip_prefix("export HOLDPOINT_TOKEN="))
            .expect("a token in runner-local.env")
            .to_string();
        Some(bot)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A command for the bot binary with this bot's settings.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(bin("holdpoint-bot"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("USER", "reviewer")
            .env("HOLDPOINT_DATA_DIR", self.dir.path())
            .env("HOLDPOINT_DATABASE_URL", &self.database_url)
            .env("HOLDPOINT_LISTEN", format!("127.0.0.1:{}", self.port));
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    fn spawn(&mut self) {
        let mut child = self
            .cli()
            .arg("serve")
            .env("HOLDPOINT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start holdpoint-bot");
        let err = child.stderr.take().expect("piped stderr");
        let sink = self.stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if http_get(self.port, "/healthz").is_some_and(|(code, _)| code == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the bot did not start:\n{}", self.log());
    }

    /// Everything the bot wrote on stderr.
    pub fn log(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Kills the bot hard (no graceful shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same database and port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs a CLI command to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cli().args(args).output().expect("run holdpoint-bot")
    }

    /// The pending and recent requests, as the CLI prints them.
    pub fn requests(&self) -> serde_json::Value {
        let out = self.run(&["requests", "list", "--json"]);
        assert!(
            out.status.success(),
            "requests list failed: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("requests list --json prints JSON")
    }

    /// Waits until exactly one request is pending; returns it.
    pub fn wait_pending(&self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let r = self.requests();
            if let Some(p) = r["pending"].as_array()
                && let Some(first) = p.first()
            {
                return first.clone();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no request became pending; bot log:\n{}", self.log());
    }

    /// The audit log as JSON rows.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["audit", "export", "--format", "json"]);
        assert!(
            out.status.success(),
            "audit export failed: {}",
            text(&out.stderr)
        );
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).expect("a JSON array")
    }
}

impl Drop for BotProc {
    fn drop(&mut self) {
        self.kill();
        if let Some(name) = self
            .database_url
            .starts_with("postgres")
            .then(|| self.database_url.rsplit('/').next().map(str::to_string))
            .flatten()
        {
            let base = self
                .database_url
                .rsplit_once('/')
                .map(|x| x.0)
                .unwrap_or("");
            let _ = Command::new("psql")
                .args([
                    &format!("{base}/test"),
                    "-qAtc",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ])
                .output();
        }
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A minimal HTTP GET: status and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    Some((code, body))
}

/// An agent's working directory: a git repository with a commit, pushed to
/// a bare `origin`, so that `git push --force origin main` really runs.
pub struct Workspace {
    pub dir: TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = TempDir::new("ws");
        let git = |args: &[&str], cwd: &Path| {
            let out = Command::new("git")
                .args(args)
                .current_dir(cwd)
                .env("GIT_AUTHOR_NAME", "Agent")
                .env("GIT_AUTHOR_EMAIL", "agent@example.com")
                .env("GIT_COMMITTER_NAME", "Agent")
                .env("GIT_COMMITTER_EMAIL", "agent@example.com")
                .output()
                .expect("git");
            assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
            text(&out.stdout)
        };
        let origin = dir.path().join("origin.git");
        let repo = dir.path().join("repo");
        git(
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                origin.to_str().unwrap_or_default(),
            ],
            dir.path(),
        );
        git(&["init", "-q", "-b", "main", "repo"], dir.path());
        std::fs::write(repo.join("README"), "one\n").expect("write");
        git(&["add", "README"], &repo);
        git(&["commit", "-qm", "one"], &repo);
        git(
            &[
                "remote",
                "add",
                "origin",
                origin.to_str().unwrap_or_default(),
            ],
            &repo,
        );
        git(&["push", "-q", "origin", "main"], &repo);
        // A rewritten history that only a force push can publish.
        git(&["commit", "-q", "--amend", "-m", "one, rewritten"], &repo);
        Workspace { dir }
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// The commit `origin` has on main.
    pub fn origin_head(&self) -> String {
        let out = Command::new("git")
            .args(["rev-parse", "main"])
            .current_dir(self.dir.path().join("origin.git"))
            .output()
            .expect("git");
        text(&out.stdout).trim().to_string()
    }

    /// The local commit on main.
    pub fn local_head(&self) -> String {
        let out = Command::new("git")
            .args(["rev-parse", "main"])
            .current_dir(self.repo())
            .output()
            .expect("git");
        text(&out.stdout).trim().to_string()
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Workspace::new()
    }
}

/// The runner, configured for a bot, run from `cwd`.
pub fn runner(bot_url: &str, token: &str, cwd: &Path, spool: &Path) -> Command {
    let mut c = Command::new(bin("holdpoint"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", cwd)
        .env("USER", "agent")
        .env("HOLDPOINT_URL", bot_url)
        .env("HOLDPOINT_TOKEN", token)
        .env("HOLDPOINT_SPOOL_DIR", spool)
        .env("HOLDPOINT_CONNECT_TIMEOUT", "5")
        .env("HOLDPOINT_PROBE_TIMEOUT_MS", "2000")
        .env("GIT_AUTHOR_NAME", "Agent")
        .env("GIT_AUTHOR_EMAIL", "agent@example.com")
        .env("GIT_COMMITTER_NAME", "Agent")
        .env("GIT_COMMITTER_EMAIL", "agent@example.com")
        .current_dir(cwd);
    c
}

/// A runner process in the background, with its output collected.
pub struct Agent {
    child: Child,
}

impl Agent {
    pub fn spawn(mut cmd: Command) -> Agent {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start holdpoint");
        Agent { child }
    }

    /// Waits for it to exit (bounded); returns the output.
    pub fn finish(mut self, within: Duration) -> Output {
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = self.child.kill();
                    let out = self.child.wait_with_output().expect("output");
                    panic!(
                        "the runner did not finish within {within:?}; stderr so far:\n{}",
                        text(&out.stderr)
                    );
                }
            }
        }
        self.child.wait_with_output().expect("output")
    }

    /// Sends a signal (`INT`, `TERM`) as a terminal or a supervisor would.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -s {sig} failed");
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// A TCP proxy whose connections can be cut, to break a websocket mid-wait
/// without touching the bot.
pub struct Proxy {
    pub port: u16,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c2, s2) = (conns.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                if let Ok(mut g) = c2.lock() {
                    g.extend(client.try_clone().ok());
                    g.extend(server.try_clone().ok());
                }
                let (mut a, mut b) = (client, server);
                let (Ok(mut a2), Ok(mut b2)) = (a.try_clone(), b.try_clone()) else {
                    continue;
                };
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut b2, &mut a2);
                    let _ = a2.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Proxy { port, conns, stop }
    }

    /// Cuts every open connection; returns how many were cut.
    pub fn cut(&self) -> usize {
        let mut g = self.conns.lock().expect("proxy lock");
        let n = g.len() / 2;
        for s in g.drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        n
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after `within`.
pub fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

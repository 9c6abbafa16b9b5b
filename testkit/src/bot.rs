//! The one launcher of the real `holdpoint-bot` binary.

use crate::bins::bin;
use crate::http::try_http;
use crate::pg::{Backend, PgDatabase};
use crate::util::{TempDir, free_port, text};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a bot keeps its data.
pub enum Database {
    /// A SQLite file in the bot's own data directory.
    Sqlite,
    /// A fresh PostgreSQL database, dropped with the bot.
    Postgres(PgDatabase),
    /// A database someone else owns (several replicas on one database):
    /// the bot neither creates nor drops it.
    Shared(String),
}

impl Database {
    /// The database for `backend`; `None` when PostgreSQL is wanted and
    /// absent (see [`PgDatabase::create`]).
    pub fn of(backend: Backend) -> Option<Database> {
        match backend {
            Backend::Sqlite => Some(Database::Sqlite),
            Backend::Postgres => PgDatabase::create().map(Database::Postgres),
        }
    }
}

/// How to start a bot: [`BotOptions::start`] launches it.
///
/// The bot runs with a cleared environment: `PATH`, a data directory of its
/// own as `HOME`, `HOLDPOINT_DATA_DIR` and XDG folders, `USER` (the name a
/// CLI decision is recorded under), `HOLDPOINT_LISTEN`,
/// `HOLDPOINT_DATABASE_URL`, `HOLDPOINT_LOG`, `HOLDPOINT_CONFIG` if
/// [`Self::config`] gave one, then whatever [`Self::env`] adds. Its CLI gets exactly the same environment.
pub struct BotOptions {
    bin: Option<PathBuf>,
    database: Database,
    env: Vec<(String, String)>,
    config: Option<String>,
    user: String,
    log: String,
    raise_open_files: bool,
    keep: bool,
    listen_ip: String,
}

impl Default for BotOptions {
    fn default() -> Self {
        BotOptions {
            bin: None,
            database: Database::Sqlite,
            env: Vec::new(),
            config: None,
            user: "reviewer".into(),
            log: "info".into(),
            raise_open_files: false,
            keep: false,
            listen_ip: "127.0.0.1".into(),
        }
    }
}

impl BotOptions {
    pub fn new() -> BotOptions {
        BotOptions::default()
    }

    /// The binary to run (default: `holdpoint-bot` next to this test).
    pub fn bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.bin = Some(path.into());
        self
    }

    pub fn database(mut self, db: Database) -> Self {
        self.database = db;
        self
    }

    /// One more environment variable (later ones win).
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }

    pub fn envs(mut self, vars: &[(&str, &str)]) -> Self {
        for (k, v) in vars {
            self.env.push((k.to_string(), v.to_string()));
        }
        self
    }

    /// A configuration file with `toml` in it, written to the bot's data
    /// directory and named by `HOLDPOINT_CONFIG`.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.into());
        self
    }

    /// `USER` of the bot and its CLI (default `reviewer`).
    pub fn user(mut self, user: &str) -> Self {
        self.user = user.into();
        self
    }

    /// `HOLDPOINT_LOG` (default `info`).
    pub fn log(mut self, filter: &str) -> Self {
        self.log = filter.into();
        self
    }

    /// Raises the bot's open-file limit to the hard limit before it starts
    /// (for thousands of connections). The bot binary is exec'd by a fixed
    /// `/bin/sh` line that receives its path as `$0`, nothing else.
    pub fn raise_open_files(mut self) -> Self {
        self.raise_open_files = true;
        self
    }

    /// Keeps the data directory after the bot is dropped.
    /// The address it listens on (default 127.0.0.1; the port is picked).
    pub fn listen_ip(mut self, ip: &str) -> Self {
        self.listen_ip = ip.to_string();
        self
    }

    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    /// Starts the bot and waits until `/healthz` answers; panics with its
    /// log if it does not.
    pub fn start(self) -> Bot {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::start`], saying why instead of panicking.
    pub fn try_start(self) -> Result<Bot, String> {
        let dir = TempDir::new("bot");
        let bin = match self.bin {
            Some(p) => p,
            None => bin("holdpoint-bot"),
        };
        let listen_ip = self.listen_ip.clone();
        let fresh = !matches!(self.database, Database::Shared(_));
        let (database_url, pg) = match self.database {
            Database::Sqlite => (
                format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("holdpoint.db").display()
                ),
                None,
            ),
            Database::Postgres(pg) => (pg.url(), Some(pg)),
            Database::Shared(url) => (url, None),
        };
        let d = |rel: &str| dir.path().join(rel).display().to_string();
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            ("HOME".into(), d("")),
            ("USER".into(), self.user.clone()),
            ("HOLDPOINT_DATA_DIR".into(), d("")),
            ("XDG_CONFIG_HOME".into(), d("config")),
            ("XDG_DATA_HOME".into(), d("share")),
            ("HOLDPOINT_DATABASE_URL".into(), database_url.clone()),
            ("HOLDPOINT_LOG".into(), self.log.clone()),
        ];
        if let Some(toml) = &self.config {
            env.push((
                "HOLDPOINT_CONFIG".into(),
                dir.file("bot.toml", toml).display().to_string(),
            ));
        }
        env.extend(self.env);
        let mut bot = Bot {
            port: 0,
            token: String::new(),
            database_url,
            cli: Cli {
                bin,
                env: Vec::new(),
            },
            dir: Some(dir),
            child: None,
            log: Arc::default(),
            login: Arc::default(),
            raise_open_files: self.raise_open_files,
            keep: self.keep,
            _pg: pg,
        };
        // The port is free when picked but another process may take it
        // before the bot binds it: try again with another.
        let mut last = String::new();
        for _ in 0..3 {
            bot.port = free_port();
            bot.cli.env = env.clone();
            bot.cli.env.push((
                "HOLDPOINT_LISTEN".into(),
                format!("{listen_ip}:{}", bot.port),
            ));
            match bot.spawn() {
                Ok(()) => {
                    bot.token = std::fs::read_to_string(bot.dir().join("runner-local.env"))
                        .ok()
                        .and_then(|env| {
                            env.lines()
                                .find_map(|l| l.trim().strip_prefix("export HOLDPOINT_TOKEN="))
                                .map(|t| t.trim().to_string())
                        })
                        .unwrap_or_default();
                    if fresh && bot.token.is_empty() {
                        return Err(format!(
                            "a fresh bot writes runner-local.env with a token; it did not:\n{}",
                            bot.log()
                        ));
                    }
                    return Ok(bot);
                }
                Err(e) if bot.log().contains("cannot listen") => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}

/// The bot's CLI: its binary and environment, to run `holdpoint-bot ARGS`
/// against the same database (cheap to clone and send to a thread).
#[derive(Clone, Debug)]
pub struct Cli {
    bin: PathBuf,
    env: Vec<(String, String)>,
}

impl Cli {
    /// `holdpoint-bot` with the bot's environment and nothing else.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    /// Runs `holdpoint-bot ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run holdpoint-bot")
    }
}

/// A running `holdpoint-bot serve`, killed (and its data removed) at drop.
pub struct Bot {
    pub port: u16,
    /// The `local` runner's token; empty when the database already had
    /// runners (a second replica on a shared database).
    pub token: String,
    pub database_url: String,
    cli: Cli,
    dir: Option<TempDir>,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    login: Arc<Mutex<Option<String>>>,
    raise_open_files: bool,
    keep: bool,
    _pg: Option<PgDatabase>,
}

impl Bot {
    /// A bot on `backend` with `env` added; `None` when PostgreSQL is
    /// wanted and absent (see [`PgDatabase::create`]).
    pub fn on(backend: Backend, env: &[(&str, &str)]) -> Option<Bot> {
        Some(
            BotOptions::new()
                .database(Database::of(backend)?)
                .envs(env)
                .start(),
        )
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut c = if self.raise_open_files {
            let mut c = Command::new("/bin/sh");
            c.arg("-c")
                .arg(r#"ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" serve"#)
                .arg(&self.cli.bin)
                .env_clear()
                .envs(self.cli.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            c
        } else {
            let mut c = self.cli.command();
            c.arg("serve");
            c
        };
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.cli.bin.display()))?;
        let err = child.stderr.take().expect("piped stderr");
        let (sink, login) = (self.log.clone(), self.login.clone());
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("bot.log"))
            .ok();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(f) = file.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if let Some(i) = line.find("http://")
                    && line.contains("/login?token=")
                    && let Ok(mut g) = login.lock()
                    && g.is_none()
                {
                    *g = Some(line[i..].trim().to_string());
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // A bot serving TLS is up when it says so (the kit's client
            // speaks plain HTTP only).
            let up = if self.tls() {
                self.log().contains("listening on https://")
            } else {
                try_http(self.port, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
            };
            if up {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                // Let the log reader catch up with the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!("the bot exited ({status}):\n{}", self.log()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the bot did not start within 60 s:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        if self.tls() {
            // The name the test certificates are made for.
            format!("https://localhost:{}", self.port)
        } else {
            format!("http://127.0.0.1:{}", self.port)
        }
    }

    /// Whether it serves TLS (`HOLDPOINT_TLS_CERT` is set).
    pub fn tls(&self) -> bool {
        self.cli.env.iter().any(|(k, _)| k == "HOLDPOINT_TLS_CERT")
    }

    /// Its data directory (also its `HOME`).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the bot has its directory").path()
    }

    /// The process id (of the bot itself, also behind `raise_open_files`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The binary it runs.
    pub fn bin(&self) -> &Path {
        &self.cli.bin
    }

    /// The environment it and its CLI run with.
    pub fn env(&self) -> &[(String, String)] {
        &self.cli.env
    }

    /// Its CLI, to take elsewhere.
    pub fn cli_handle(&self) -> Cli {
        self.cli.clone()
    }

    /// `holdpoint-bot` with this bot's settings, to add arguments to.
    pub fn command(&self) -> Command {
        self.cli.command()
    }

    /// Runs `holdpoint-bot ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cli.run(args)
    }

    /// Runs `holdpoint-bot ARGS`: (success, stdout, stderr).
    pub fn try_cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.run(args);
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    }

    /// Runs `holdpoint-bot ARGS`, which must succeed; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.try_cli(args);
        assert!(ok, "holdpoint-bot {args:?} failed: {out}{err}");
        out
    }

    /// Registers a runner named `name`; returns its token.
    pub fn add_runner(&self, name: &str) -> String {
        self.cli(&["runner", "add", name]).trim().to_string()
    }

    /// The pending and recent requests, as the CLI prints them.
    pub fn requests(&self) -> serde_json::Value {
        let out = self.cli(&["requests", "list", "--json"]);
        serde_json::from_str(&out).expect("requests list --json prints JSON")
    }

    /// Waits until a request is pending; returns the first.
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
        let out = self.cli(&["audit", "export", "--format", "json"]);
        serde_json::from_str(&out).expect("audit export prints a JSON array")
    }

    /// `/metrics`, as text (empty if it does not answer).
    pub fn metrics(&self) -> String {
        try_http(self.port, "GET", "/metrics", &[], b"")
            .map(|r| r.body)
            .unwrap_or_default()
    }

    /// Everything the bot wrote on stderr, over all its starts.
    pub fn log(&self) -> String {
        self.log.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The single-use login link the bot printed at its first start.
    pub fn login_link(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self.login.lock().ok().and_then(|g| g.clone()) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "holdpoint-bot printed no login link; it said:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The path and query of [`Self::login_link`].
    pub fn login_path(&self) -> String {
        let link = self.login_link();
        link.strip_prefix(&self.url())
            .unwrap_or_else(|| panic!("the link {link} starts with the base URL"))
            .to_string()
    }

    /// Opens the login link at `path` (with `extra` headers); returns the
    /// response and the `Cookie` header for the session.
    /// It opens the link's page, as a browser (or a link previewer) does,
    /// then presses its button, as only the person does.
    pub fn log_in(&self, path: &str, extra: &[(&str, &str)]) -> (crate::http::Response, String) {
        let page = crate::http::http(self.port, "GET", path, extra, "");
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(
            page.header("set-cookie").is_none(),
            "opening the link logs nobody in"
        );
        let token = path
            .split_once("token=")
            .map(|(_, t)| t.split('&').next().unwrap_or(t))
            .expect("a login path with a token");
        let origin = self.url();
        let mut headers: Vec<(&str, &str)> = vec![
            ("Origin", origin.as_str()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ];
        headers.extend_from_slice(extra);
        let r = crate::http::http(
            self.port,
            "POST",
            "/login",
            &headers,
            format!("token={token}"),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let set = r
            .header("set-cookie")
            .expect("a session cookie")
            .to_string();
        let value = set
            .split(';')
            .next()
            .and_then(|kv| kv.trim().strip_prefix("holdpoint_session="))
            .expect("the holdpoint_session cookie")
            .to_string();
        (r, format!("holdpoint_session={value}"))
    }

    /// A web session from the login link the bot printed at its first
    /// start: the `Cookie` header.
    pub fn web_session(&self) -> String {
        self.log_in(&self.login_path(), &[]).1
    }

    /// `GET path` on the web API with the session `cookie`: the JSON answer.
    pub fn web_get(&self, cookie: &str, path: &str) -> (u16, serde_json::Value) {
        let r = crate::http::http(
            self.port,
            "GET",
            path,
            &[("Cookie", cookie), ("Accept", "application/json")],
            "",
        );
        let v = serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null);
        (r.status, v)
    }

    /// Sends the bot a signal (`HUP`, `TERM`) as a supervisor would.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -s {sig} failed");
    }

    /// Kills the bot hard (SIGKILL: no shutdown code runs).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills it (if it runs) and starts it again with the same settings,
    /// data directory, database and port.
    pub fn restart(&mut self) {
        self.kill();
        if let Ok(mut s) = self.log.lock() {
            s.push_str("----- killed; restarting -----\n");
        }
        if let Err(e) = self.spawn() {
            panic!("{e}");
        }
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- holdpoint-bot log ---\n{}", self.log_tail(200));
        }
        if self.keep
            && let Some(d) = self.dir.take()
        {
            d.keep();
        }
    }
}

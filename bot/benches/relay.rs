//! The bot against its goals, end to end: the real `holdpoint-bot` binary in
//! its own process, runners on real websockets, approvals over the web API.
//!
//! - Phase A, memory: the bot's resident memory with N idle runners
//!   connected (goal: 10,000 in at most 256 MiB).
//! - Phase B, relay latency: with 1,000 runners connected, the time from
//!   just before a reviewer's approve call to the moment the waiting
//!   runner's socket yields the decision (goal: p99 at most 10 ms).
//! - Phase C, throughput: runners submit concurrently, a reviewer approves
//!   each as soon as it is pending; requests completed (decision received
//!   and acknowledged) per second, and a check that none was lost (goal:
//!   200/s, none lost).
//! - Phase S, Slack relay latency: a second bot, with Slack configured in
//!   HTTP mode against a fake Web API inside this bench, and 1,000 runners
//!   connected. For each request the bench waits until the bot has posted
//!   its message (the fake API saw `chat.postMessage` with its buttons),
//!   then posts a signed `block_actions` click on Approve by the configured
//!   reviewer to `POST /slack/interactions`, and times it from just before
//!   the POST to the moment the runner's socket yields the decision (goal:
//!   p99 at most 10 ms).
//!
//! ```text
//! cargo bench -p holdpoint-bot --bench relay
//! cargo bench -p holdpoint-bot --bench relay -- --runners 10000
//! cargo bench -p holdpoint-bot --bench relay --profile dev -- --quick
//! cargo bench -p holdpoint-bot --bench relay -- --only slack
//! ```
//!
//! Options: `--runners N` (phase A's largest step, default 10000),
//! `--relay-runners N` (runners connected in B and C, default 1000),
//! `--relays N` (default 500), `--seconds S` (phase C, default 10),
//! `--concurrency N` (requests in flight in phase C, default 64),
//! `--reviewers N` (approving connections in phase C, default 8),
//! `--think-ms N` (phase B: wait this long between pending and the approve
//! call, as a human would; default 0),
//! `--approve api|cli|auto` (default auto: the web API, or the
//! `holdpoint-bot approve` command if the API is missing),
//! `--slack-relays N` (phase S, default 300), `--only web|slack` (only
//! phases A to C, or only phase S), `--quick` (every phase, smaller),
//! `--keep` (keep the data directory). `HOLDPOINT_BOT_BIN` runs another
//! build of the bot; `HOLDPOINT_LOG` sets its log level (default `warn`).

use futures_util::{SinkExt, StreamExt, stream};
use holdpoint_shared::protocol::{
    BotMessage, DecisionMessage, PROTOCOL_VERSION, ReviewRequest, RunnerMessage, Status, WS_PATH,
};
use holdpoint_shared::{Context, Decision, Policy, Verdict};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

const GOAL_IDLE_RUNNERS: usize = 10_000;
const GOAL_RSS_BYTES: f64 = 256.0 * 1024.0 * 1024.0;
const GOAL_RELAY_RUNNERS: usize = 1_000;
const GOAL_P99: Duration = Duration::from_millis(10);
const GOAL_RPS: f64 = 200.0;
/// Runners send a ping this often (the bot closes after 90 silent seconds).
const PING_EVERY: Duration = Duration::from_secs(20);
const COMMAND: &str = "git push --force origin main";

// ---------------------------------------------------------------- options

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    Auto,
    Api,
    Cli,
}

/// Which phases run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Only {
    All,
    /// Phases A to C: the bot without Slack.
    Web,
    /// Phase S: the bot with Slack.
    Slack,
}

#[derive(Debug)]
struct Opts {
    runners: usize,
    relay_runners: usize,
    relays: usize,
    warmup: usize,
    seconds: f64,
    concurrency: usize,
    reviewers: usize,
    think: Duration,
    via: Via,
    slack_relays: usize,
    only: Only,
    keep: bool,
    quick: bool,
}

fn parse_opts() -> Result<Opts> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mut o = if quick {
        Opts {
            runners: 100,
            relay_runners: 100,
            relays: 50,
            warmup: 5,
            seconds: 3.0,
            concurrency: 16,
            reviewers: 4,
            think: Duration::ZERO,
            via: Via::Auto,
            slack_relays: 50,
            only: Only::All,
            keep: false,
            quick,
        }
    } else {
        Opts {
            runners: GOAL_IDLE_RUNNERS,
            relay_runners: GOAL_RELAY_RUNNERS,
            relays: 500,
            warmup: 20,
            seconds: 10.0,
            concurrency: 64,
            reviewers: 8,
            think: Duration::ZERO,
            via: Via::Auto,
            slack_relays: 300,
            only: Only::All,
            keep: false,
            quick,
        }
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<String> {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value").into())
        };
        let num = |s: String, name: &str| -> Result<usize> {
            s.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name}: {s:?} is not a positive number").into())
        };
        match a.as_str() {
            "--quick" => {}
            // Cargo passes `--bench` to every bench binary.
            "--bench" => {}
            "--keep" => o.keep = true,
            "--runners" => o.runners = num(value(a)?, a)?,
            "--relay-runners" => o.relay_runners = num(value(a)?, a)?,
            "--relays" => o.relays = num(value(a)?, a)?,
            "--slack-relays" => o.slack_relays = num(value(a)?, a)?,
            "--only" => {
                o.only = match value(a)?.as_str() {
                    "web" => Only::Web,
                    "slack" => Only::Slack,
                    other => return Err(format!("--only {other}: use web or slack").into()),
                }
            }
            "--concurrency" => o.concurrency = num(value(a)?, a)?,
            "--reviewers" => o.reviewers = num(value(a)?, a)?,
            "--think-ms" => {
                let v = value(a)?;
                o.think =
                    Duration::from_millis(v.parse().map_err(|_| {
                        format!("--think-ms: {v:?} is not a number of milliseconds")
                    })?);
            }
            "--seconds" => {
                let v = value(a)?;
                o.seconds = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| *s > 0.0)
                    .ok_or_else(|| format!("--seconds: {v:?} is not a positive number"))?;
            }
            "--approve" => {
                o.via = match value(a)?.as_str() {
                    "auto" => Via::Auto,
                    "api" => Via::Api,
                    "cli" => Via::Cli,
                    other => return Err(format!("--approve {other}: use api, cli or auto").into()),
                }
            }
            "-h" | "--help" => {
                println!(
                    "relay bench: --runners N --relay-runners N --relays N --seconds S \
                     --concurrency N --reviewers N --think-ms N --approve api|cli|auto \
                     --slack-relays N --only web|slack --quick --keep"
                );
                std::process::exit(0);
            }
            other if other.starts_with('-') => {
                return Err(format!("unknown option {other} (try --help)").into());
            }
            // A name filter from `cargo bench relay`: nothing to filter.
            _ => {}
        }
    }
    o.relay_runners = o.relay_runners.min(o.runners);
    Ok(o)
}

// ------------------------------------------------------------- the bot

/// The bot's executable: `HOLDPOINT_BOT_BIN`, else the one cargo built for
/// this bench.
fn bot_binary() -> Result<(PathBuf, String)> {
    if let Some(p) = std::env::var_os("HOLDPOINT_BOT_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(format!("HOLDPOINT_BOT_BIN={} does not exist", p.display()).into());
        }
        let shown = format!("HOLDPOINT_BOT_BIN={}", p.display());
        return Ok((p, shown));
    }
    let p = PathBuf::from(env!("CARGO_BIN_EXE_holdpoint-bot"));
    if !p.is_file() {
        return Err(format!(
            "{} is missing: build it with the same profile as this bench, or set HOLDPOINT_BOT_BIN",
            p.display()
        )
        .into());
    }
    // target/<profile dir>/holdpoint-bot; `cargo bench` builds into
    // target/release with the bench profile (release settings).
    let dir = p
        .parent()
        .and_then(Path::file_name)
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    let profile = match (dir.as_str(), cfg!(debug_assertions)) {
        ("release", false) => "bench/release (optimised, fat LTO)".to_string(),
        ("debug", true) => {
            "dev (debug build: NOT representative of production performance)".to_string()
        }
        (d, _) => format!("{d} (target/{d})"),
    };
    Ok((p, profile))
}

struct Bot {
    child: Child,
    pid: u32,
    bin: PathBuf,
    addr: SocketAddr,
    data_dir: PathBuf,
    config_home: PathBuf,
    log: PathBuf,
    login_link: Arc<Mutex<Option<String>>>,
    keep: bool,
}

impl Bot {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        env_for(&mut c, &self.data_dir, &self.config_home, self.addr);
        c
    }

    /// Runs a CLI subcommand against the same database; returns stdout.
    fn cli(&self, args: &[&str]) -> Result<String> {
        let out = self.command().args(args).stdin(Stdio::null()).output()?;
        if !out.status.success() {
            return Err(format!(
                "holdpoint-bot {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn status(&self) -> Result<ProcStatus> {
        proc_status(self.pid)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn database_url(&self) -> String {
        format!(
            "sqlite://{}?mode=rw",
            self.data_dir.join("holdpoint.db").display()
        )
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep {
            let _ = std::fs::remove_dir_all(self.data_dir.parent().unwrap_or(&self.data_dir));
        }
    }
}

fn env_for(c: &mut Command, data_dir: &Path, config_home: &Path, addr: SocketAddr) {
    c.env("HOLDPOINT_DATA_DIR", data_dir)
        .env("HOLDPOINT_LISTEN", addr.to_string())
        .env("XDG_CONFIG_HOME", config_home)
        .env("HOLDPOINT_LOG_FORMAT", "text")
        .env("USER", "bench-reviewer")
        .env_remove("HOLDPOINT_CONFIG")
        .env_remove("HOLDPOINT_DATABASE_URL")
        .env_remove("HOLDPOINT_PUBLIC_URL")
        .env_remove("HOLDPOINT_EXPIRY");
    // Slack only where the bench asks for it (phase S).
    for var in SLACK_VARS {
        c.env_remove(var);
    }
}

const SLACK_VARS: [&str; 6] = [
    "HOLDPOINT_SLACK_BOT_TOKEN",
    "HOLDPOINT_SLACK_SIGNING_SECRET",
    "HOLDPOINT_SLACK_APP_TOKEN",
    "HOLDPOINT_SLACK_CHANNEL",
    "HOLDPOINT_SLACK_REVIEWERS",
    "HOLDPOINT_SLACK_API_URL",
];

fn free_port() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// Starts `holdpoint-bot serve` with `extra` in its environment.
async fn start_bot(bin: &Path, keep: bool, extra: &[(&str, String)]) -> Result<Bot> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let root = std::env::temp_dir().join(format!(
        "holdpoint-relay-bench-{}-{nanos}",
        std::process::id()
    ));
    let data_dir = root.join("data");
    let config_home = root.join("config");
    std::fs::create_dir_all(&data_dir)?;
    std::fs::create_dir_all(&config_home)?;
    let log = root.join("bot.log");
    let addr = free_port()?;

    // Through sh, to raise the open-file limit to the hard limit first.
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(r#"ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" serve"#)
        .arg(bin);
    env_for(&mut c, &data_dir, &config_home, addr);
    for (k, v) in extra {
        c.env(k, v);
    }
    if std::env::var_os("HOLDPOINT_LOG").is_none() {
        c.env("HOLDPOINT_LOG", "warn");
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn()?;
    let pid = child.id();
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let login_link = Arc::new(Mutex::new(None));
    {
        let login_link = login_link.clone();
        let mut file = std::fs::File::create(&log)?;
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                if let Some(i) = line.find("http://")
                    && line.contains("/login?token=")
                {
                    let link = line[i..].trim().to_string();
                    let mut g = login_link.lock().unwrap_or_else(|e| e.into_inner());
                    if g.is_none() {
                        *g = Some(link);
                    }
                }
            }
        });
    }
    let mut bot = Bot {
        child,
        pid,
        bin: bin.to_path_buf(),
        addr,
        data_dir,
        config_home,
        log,
        login_link,
        keep,
    };
    let t = Instant::now();
    loop {
        if let Some(status) = bot.child.try_wait()? {
            return Err(format!("the bot exited at start ({status}):\n{}", bot.log_tail()).into());
        }
        if let Ok(r) = Http::new(addr).send("GET", "/healthz", &[], b"").await
            && r.status == 200
            && bot
                .login_link
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
        {
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "the bot did not become ready within 60 s:\n{}",
                bot.log_tail()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(bot)
}

struct ProcStatus {
    rss: u64,
    hwm: u64,
    threads: u64,
}

fn proc_status(pid: u32) -> Result<ProcStatus> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcStatus {
        rss: field("VmRSS:") * 1024,
        hwm: field("VmHWM:") * 1024,
        threads: field("Threads:"),
    })
}

/// The soft open-file limit of a process (`self` or a pid).
fn open_file_limit(pid: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

// ------------------------------------------------------ a tiny HTTP client

/// HTTP/1.1 over one keep-alive connection, enough for the bot's API.
struct Http {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    cookie: Option<String>,
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        let t = String::from_utf8_lossy(&self.body);
        t.chars().take(300).collect()
    }
}

impl Http {
    fn new(addr: SocketAddr) -> Http {
        Http {
            addr,
            conn: None,
            cookie: None,
        }
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        loop {
            let reused = self.conn.is_some();
            if !reused {
                let s = TcpStream::connect(self.addr).await?;
                s.set_nodelay(true)?;
                self.conn = Some(BufReader::new(s));
            }
            match self.once(method, path, headers, body).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.conn = None;
                    // A kept-alive connection the server closed meanwhile:
                    // once more on a new one.
                    if !reused {
                        return Err(e);
                    }
                }
            }
        }
    }

    async fn once(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        use std::io::{Error, ErrorKind};
        let bad = |what: String| Error::new(ErrorKind::InvalidData, what);
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(c) = &self.cookie {
            head.push_str(&format!("Cookie: {c}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut wire = head.into_bytes();
        wire.extend_from_slice(body);
        let Some(conn) = self.conn.as_mut() else {
            return Err(Error::new(ErrorKind::NotConnected, "no connection"));
        };
        conn.get_mut().write_all(&wire).await?;

        let mut line = String::new();
        if conn.read_line(&mut line).await? == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "closed before a response",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            if conn.read_line(&mut line).await? == 0 {
                return Err(Error::new(
                    ErrorKind::UnexpectedEof,
                    "closed in the headers",
                ));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        let mut body = Vec::new();
        let mut close = get("connection").is_some_and(|v| v.contains("close"));
        if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                line.clear();
                conn.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    loop {
                        line.clear();
                        if conn.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let start = body.len();
                body.resize(start + size, 0);
                conn.read_exact(&mut body[start..]).await?;
                line.clear();
                conn.read_line(&mut line).await?;
            }
        } else if let Some(n) = get("content-length") {
            let n: usize = n
                .parse()
                .map_err(|_| bad(format!("bad content-length {n:?}")))?;
            body.resize(n, 0);
            conn.read_exact(&mut body).await?;
        } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
            conn.read_to_end(&mut body).await?;
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// Follows the single-use login link (without following its redirect) and
/// keeps the session cookie.
async fn log_in(addr: SocketAddr, link: &str) -> Result<Http> {
    let path = link
        .find("/login?")
        .map(|i| &link[i..])
        .ok_or_else(|| format!("not a login link: {link}"))?;
    let mut http = Http::new(addr);
    let r = http.send("GET", path, &[], b"").await?;
    let cookie = r
        .headers("set-cookie")
        .filter_map(|v| v.split(';').next())
        .map(str::trim)
        .find(|c| c.starts_with("holdpoint_session="))
        .map(str::to_string);
    match cookie {
        Some(c) => {
            http.cookie = Some(c);
            Ok(http)
        }
        None => Err(format!(
            "GET /login answered {} without a holdpoint_session cookie: {}",
            r.status,
            r.text()
        )
        .into()),
    }
}

// ------------------------------------------------------------- reviewers

/// How approvals are made.
#[derive(Clone)]
enum Approver {
    /// `POST /api/requests/{id}/approve` with a session cookie.
    Api { addr: SocketAddr, cookie: String },
    /// `holdpoint-bot approve ID`: goes through the database and reaches
    /// the runner with the bot's next sweep (every 250 ms).
    Cli {
        bin: PathBuf,
        data_dir: PathBuf,
        config_home: PathBuf,
        addr: SocketAddr,
    },
}

/// One reviewer's session: an approver with its own connection.
enum Session {
    Api(Http),
    Cli(Approver),
}

impl Approver {
    fn session(&self) -> Session {
        match self {
            Approver::Api { addr, cookie } => {
                let mut h = Http::new(*addr);
                h.cookie = Some(cookie.clone());
                Session::Api(h)
            }
            cli => Session::Cli(cli.clone()),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Approver::Api { .. } => "web API (POST /api/requests/{id}/approve)",
            Approver::Cli { .. } => {
                "CLI `holdpoint-bot approve` (database + 250 ms sweep; NOT the relay path)"
            }
        }
    }

    fn is_api(&self) -> bool {
        matches!(self, Approver::Api { .. })
    }
}

impl Session {
    async fn approve(&mut self, id: &str, hash: &str) -> Result<()> {
        match self {
            Session::Api(http) => {
                let body = serde_json::json!({ "command_hash": hash }).to_string();
                let r = http
                    .send(
                        "POST",
                        &format!("/api/requests/{id}/approve"),
                        &[("Content-Type", "application/json"), ("X-Holdpoint", "1")],
                        body.as_bytes(),
                    )
                    .await?;
                if (200..300).contains(&r.status) {
                    Ok(())
                } else {
                    Err(format!("approve answered {}: {}", r.status, r.text()).into())
                }
            }
            Session::Cli(Approver::Cli {
                bin,
                data_dir,
                config_home,
                addr,
            }) => {
                let mut c = Command::new(&*bin);
                env_for(&mut c, data_dir, config_home, *addr);
                c.args(["approve", id]).stdin(Stdio::null());
                let out = tokio::task::spawn_blocking(move || c.output()).await??;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "holdpoint-bot approve {id}: {} {}",
                        String::from_utf8_lossy(&out.stdout).trim(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                    .into())
                }
            }
            Session::Cli(_) => Err("not a CLI approver".into()),
        }
    }
}

// --------------------------------------------------------------- runners

type Ws = WebSocketStream<TcpStream>;

/// What a runner saw of one decision.
struct Got {
    /// When the decision frame was read (before the ack was sent).
    at: Instant,
    decision: DecisionMessage,
}

enum Cmd {
    Submit {
        request: Box<ReviewRequest>,
        pending: oneshot::Sender<Result<Instant, String>>,
        decided: oneshot::Sender<Got>,
    },
}

/// Counters every runner task updates.
#[derive(Default)]
struct Shared {
    duplicates: AtomicU64,
    unexpected: AtomicU64,
    closed_by_bot: AtomicU64,
    close_reason: Mutex<Option<String>>,
}

struct Runner {
    tx: mpsc::UnboundedSender<Cmd>,
    task: tokio::task::JoinHandle<()>,
}

async fn connect(addr: SocketAddr, token: &str, host: &str) -> Result<Ws> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut req = format!("ws://{addr}{WS_PATH}").into_client_request()?;
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse()?);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = client_async_with_config(req, tcp, Some(config)).await?;
    let hello = RunnerMessage::Hello {
        protocol: PROTOCOL_VERSION,
        runner_version: "relay-bench".into(),
        host: host.to_string(),
    };
    ws.send(Message::text(hello.encode())).await?;
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .map_err(|_| "no welcome within 10 s")?;
    match first {
        Some(Ok(Message::Text(t))) => match BotMessage::decode(&t)? {
            BotMessage::Welcome { protocol, .. } if protocol == PROTOCOL_VERSION => Ok(ws),
            other => Err(format!("expected welcome, got {other:?}").into()),
        },
        Some(Ok(Message::Close(f))) => Err(format!("closed instead of welcome: {f:?}").into()),
        Some(Ok(other)) => Err(format!("expected welcome, got {other:?}").into()),
        Some(Err(e)) => Err(e.into()),
        None => Err("closed before welcome".into()),
    }
}

fn spawn_runner(ws: Ws, shared: Arc<Shared>) -> Runner {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(runner_task(ws, rx, shared));
    Runner { tx, task }
}

type Waiting = HashMap<
    String,
    (
        Option<oneshot::Sender<Result<Instant, String>>>,
        Option<oneshot::Sender<Got>>,
    ),
>;

async fn runner_task(mut ws: Ws, mut rx: mpsc::UnboundedReceiver<Cmd>, shared: Arc<Shared>) {
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut nonce = 0u64;
    let mut waiting: Waiting = HashMap::new();
    let mut decided: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Cmd::Submit { request, pending, decided }) => {
                    let id = request.id.clone();
                    let frame = RunnerMessage::Submit { request }.encode();
                    if let Err(e) = ws.send(Message::text(frame)).await {
                        let _ = pending.send(Err(format!("cannot send: {e}")));
                        return;
                    }
                    waiting.insert(id, (Some(pending), Some(decided)));
                }
                None => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    return;
                }
            },
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(f))) => {
                        shared.closed_by_bot.fetch_add(1, Ordering::Relaxed);
                        let mut g = shared.close_reason.lock().unwrap_or_else(|e| e.into_inner());
                        if g.is_none() {
                            *g = Some(format!("{f:?}"));
                        }
                        return;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        shared.closed_by_bot.fetch_add(1, Ordering::Relaxed);
                        let mut g = shared.close_reason.lock().unwrap_or_else(|e| e.into_inner());
                        if g.is_none() {
                            *g = Some(format!("error: {e}"));
                        }
                        return;
                    }
                    None => {
                        shared.closed_by_bot.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                let at = Instant::now();
                match BotMessage::decode(&text) {
                    Ok(BotMessage::Pending { request_id, .. }) => {
                        if let Some((p, _)) = waiting.get_mut(&request_id)
                            && let Some(p) = p.take()
                        {
                            let _ = p.send(Ok(at));
                        }
                    }
                    Ok(BotMessage::Decision(d)) => {
                        if !decided.insert(d.request_id.clone()) {
                            shared.duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                        let ack = RunnerMessage::Ack { request_id: d.request_id.clone() };
                        if ws.send(Message::text(ack.encode())).await.is_err() {
                            return;
                        }
                        if let Some((p, dtx)) = waiting.remove(&d.request_id) {
                            if let Some(p) = p {
                                // A decision without a pending first (a
                                // re-submission): pending is implied.
                                let _ = p.send(Ok(at));
                            }
                            if let Some(dtx) = dtx {
                                let _ = dtx.send(Got { at, decision: d });
                            }
                        }
                    }
                    Ok(BotMessage::Rejected { request_id, reason }) => {
                        if let Some((Some(p), _)) = waiting.remove(&request_id) {
                            let _ = p.send(Err(format!("rejected: {reason}")));
                        }
                    }
                    Ok(BotMessage::Ping { nonce }) => {
                        let pong = RunnerMessage::Pong { nonce };
                        if ws.send(Message::text(pong.encode())).await.is_err() {
                            return;
                        }
                    }
                    Ok(BotMessage::Pong { .. }) => {}
                    Ok(_) | Err(_) => {
                        shared.unexpected.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ = pings.tick() => {
                nonce += 1;
                if ws.send(Message::text(RunnerMessage::Ping { nonce }.encode())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Submits a request on a runner; returns when it is pending, with the
/// receiver of its decision.
async fn submit(
    runner: &Runner,
    request: ReviewRequest,
) -> Result<(Instant, oneshot::Receiver<Got>)> {
    let (ptx, prx) = oneshot::channel();
    let (dtx, drx) = oneshot::channel();
    runner
        .tx
        .send(Cmd::Submit {
            request: Box::new(request),
            pending: ptx,
            decided: dtx,
        })
        .map_err(|_| "the runner's connection is gone")?;
    let at = tokio::time::timeout(Duration::from_secs(30), prx)
        .await
        .map_err(|_| "no pending within 30 s")?
        .map_err(|_| "the runner's connection closed before pending")??;
    Ok((at, drx))
}

fn request(verdict: &Verdict) -> ReviewRequest {
    ReviewRequest {
        id: holdpoint_bot::db::random_hex(16),
        command: COMMAND.into(),
        command_hash: holdpoint_bot::db::random_hex(32),
        verdict: verdict.clone(),
        annotations: vec![],
        host: "bench-host".into(),
        cwd: "/home/dev/project".into(),
        agent: Some("relay-bench".into()),
        session: None,
        front_end: "sh".into(),
        requested_by: Some("bench-agent".into()),
    }
}

/// Connects `count` runners (64 handshakes at a time), spreading them over
/// the tokens. Stops early at the first failures and says why.
async fn connect_many(
    addr: SocketAddr,
    tokens: &[String],
    first: usize,
    count: usize,
    shared: &Arc<Shared>,
) -> (Vec<Runner>, Vec<String>) {
    let results: Vec<Result<Ws>> = stream::iter(first..first + count)
        .map(|i| {
            let token = tokens[i % tokens.len()].clone();
            async move { connect(addr, &token, &format!("bench-{i}")).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut runners = Vec::with_capacity(count);
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(ws) => runners.push(spawn_runner(ws, shared.clone())),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (runners, errors)
}

async fn close_runners(runners: Vec<Runner>) {
    let tasks: Vec<_> = runners
        .into_iter()
        .map(|r| {
            drop(r.tx);
            r.task
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// The bot's own count of open runner connections, from /metrics.
async fn connected(addr: SocketAddr) -> Option<u64> {
    let r = Http::new(addr)
        .send("GET", "/metrics", &[], b"")
        .await
        .ok()?;
    String::from_utf8_lossy(&r.body)
        .lines()
        .find_map(|l| l.strip_prefix("holdpoint_runners_connected "))
        .and_then(|v| v.trim().parse().ok())
}

// ------------------------------------------------------------- statistics

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn mib(b: f64) -> String {
    format!("{:.1} MiB", b / (1024.0 * 1024.0))
}

struct Dist {
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    n: usize,
    /// Samples over 30 ms.
    slow: usize,
}

fn dist(mut v: Vec<Duration>) -> Dist {
    v.sort();
    Dist {
        p50: pct(&v, 0.50),
        p90: pct(&v, 0.90),
        p99: pct(&v, 0.99),
        max: v.last().copied().unwrap_or_default(),
        n: v.len(),
        slow: v.iter().filter(|d| **d > Duration::from_millis(30)).count(),
    }
}

fn print_dist(label: &str, d: &Dist) {
    println!(
        "  {label:<34} p50 {:>10}  p90 {:>10}  p99 {:>10}  max {:>10}  (n={}, {} over 30 ms)",
        ms(d.p50),
        ms(d.p90),
        ms(d.p99),
        ms(d.max),
        d.n,
        d.slow
    );
}

// ---------------------------------------------------------------- phases

struct MemoryResult {
    baseline: ProcStatus,
    steps: Vec<(usize, ProcStatus)>,
    wanted: usize,
    errors: Vec<String>,
}

struct RelayResult {
    runners: usize,
    relay: Dist,
    http: Option<Dist>,
    submit: Dist,
    failures: Vec<String>,
}

struct ThroughputResult {
    window: f64,
    in_window: usize,
    per_second: Vec<usize>,
    submitted: usize,
    completed: usize,
    not_approved: usize,
    errors: Vec<String>,
    db_missing: usize,
    db_not_approved: usize,
    db_not_acked: usize,
    cli_pending: Option<usize>,
}

async fn phase_b(
    runners: &[Runner],
    approver: &Approver,
    verdict: &Verdict,
    opts: &Opts,
) -> Result<RelayResult> {
    let mut session = approver.session();
    let mut relay = Vec::new();
    let mut http = Vec::new();
    let mut submit_times = Vec::new();
    let mut failures = Vec::new();
    let mut rng = Rng::new();
    // A CLI approval costs a process and up to a 250 ms sweep.
    let relays = if approver.is_api() {
        opts.relays
    } else {
        opts.relays.min(100)
    };
    let total = opts.warmup + relays;
    for i in 0..total {
        let runner = &runners[rng.below(runners.len())];
        let req = request(verdict);
        let (id, hash) = (req.id.clone(), req.command_hash.clone());
        let t_submit = Instant::now();
        let (pending_at, decided) = match submit(runner, req).await {
            Ok(x) => x,
            Err(e) => {
                failures.push(format!("submit: {e}"));
                continue;
            }
        };
        if !opts.think.is_zero() {
            tokio::time::sleep(opts.think).await;
        }
        let t0 = Instant::now();
        if let Err(e) = session.approve(&id, &hash).await {
            if i == 0 {
                return Err(e);
            }
            failures.push(format!("approve: {e}"));
            continue;
        }
        let t_http = Instant::now();
        let got = match tokio::time::timeout(Duration::from_secs(10), decided).await {
            Ok(Ok(g)) => g,
            Ok(Err(_)) => {
                failures.push("the runner's connection closed before the decision".into());
                continue;
            }
            Err(_) => {
                failures.push(format!("no decision for {id} within 10 s"));
                continue;
            }
        };
        if got.decision.status != Status::Approved || got.decision.command_hash != hash {
            failures.push(format!("unexpected decision {:?}", got.decision));
        }
        if i >= opts.warmup {
            relay.push(got.at.saturating_duration_since(t0));
            http.push(t_http.saturating_duration_since(t0));
            submit_times.push(pending_at.saturating_duration_since(t_submit));
        }
    }
    Ok(RelayResult {
        runners: runners.len(),
        relay: dist(relay),
        http: approver.is_api().then(|| dist(http)),
        submit: dist(submit_times),
        failures,
    })
}

struct Completion {
    at: Instant,
    approved: bool,
}

async fn phase_c(
    bot: &Bot,
    runners: Arc<Vec<Runner>>,
    approver: &Approver,
    verdict: &Verdict,
    opts: &Opts,
) -> Result<ThroughputResult> {
    let (idtx, idrx) = mpsc::unbounded_channel::<(String, String)>();
    let idrx = Arc::new(tokio::sync::Mutex::new(idrx));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let push_error = |errors: &Arc<Mutex<Vec<String>>>, e: String| {
        errors.lock().unwrap_or_else(|e| e.into_inner()).push(e);
    };
    let reviewers = if approver.is_api() {
        opts.reviewers
    } else {
        opts.reviewers.min(4)
    };
    let mut reviewer_tasks = Vec::new();
    for _ in 0..reviewers {
        let idrx = idrx.clone();
        let mut session = approver.session();
        let errors = errors.clone();
        reviewer_tasks.push(tokio::spawn(async move {
            loop {
                let next = idrx.lock().await.recv().await;
                let Some((id, hash)) = next else { break };
                if let Err(e) = session.approve(&id, &hash).await {
                    push_error(&errors, format!("approve {id}: {e}"));
                }
            }
        }));
    }

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(opts.seconds);
    let submitted = Arc::new(Mutex::new(Vec::<String>::new()));
    let completions = Arc::new(Mutex::new(Vec::<Completion>::new()));
    let workers = opts.concurrency;
    let mut worker_tasks = Vec::new();
    for w in 0..workers {
        let runners = runners.clone();
        let idtx = idtx.clone();
        let verdict = verdict.clone();
        let submitted = submitted.clone();
        let completions = completions.clone();
        let errors = errors.clone();
        worker_tasks.push(tokio::spawn(async move {
            let mut k = 0usize;
            while Instant::now() < deadline {
                let runner = &runners[(w + k * workers) % runners.len()];
                k += 1;
                let req = request(&verdict);
                let (id, hash) = (req.id.clone(), req.command_hash.clone());
                let decided = match submit(runner, req).await {
                    Ok((_, d)) => d,
                    Err(e) => {
                        push_error(&errors, format!("submit: {e}"));
                        continue;
                    }
                };
                submitted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(id.clone());
                if idtx.send((id.clone(), hash)).is_err() {
                    break;
                }
                match tokio::time::timeout(Duration::from_secs(60), decided).await {
                    Ok(Ok(g)) => {
                        completions
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(Completion {
                                at: g.at,
                                approved: g.decision.status == Status::Approved,
                            })
                    }
                    Ok(Err(_)) => push_error(&errors, format!("{id}: connection closed")),
                    Err(_) => push_error(&errors, format!("{id}: no decision within 60 s")),
                }
            }
        }));
    }
    drop(idtx);
    for t in worker_tasks {
        t.await?;
    }
    for t in reviewer_tasks {
        t.await?;
    }

    let submitted = std::mem::take(&mut *submitted.lock().unwrap_or_else(|e| e.into_inner()));
    let completions = std::mem::take(&mut *completions.lock().unwrap_or_else(|e| e.into_inner()));
    let window = opts.seconds;
    let mut per_second = vec![0usize; window.ceil() as usize];
    let mut in_window = 0;
    for c in &completions {
        let t = c.at.saturating_duration_since(start).as_secs_f64();
        if t < window {
            in_window += 1;
            if let Some(b) = per_second.get_mut(t as usize) {
                *b += 1;
            }
        }
    }
    // A partial last second would read low.
    if window.fract() > 0.0 {
        per_second.pop();
    }

    // What the database says, once the acks are in.
    let db = holdpoint_bot::db::open(&bot.database_url()).await?;
    let t = Instant::now();
    let (db_missing, db_not_approved, db_not_acked) = loop {
        use holdpoint_bot::entity::request as req;
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        let mut rows = HashMap::new();
        for chunk in submitted.chunks(500) {
            for r in req::Entity::find()
                .filter(req::Column::Id.is_in(chunk.iter().cloned()))
                .all(&db)
                .await?
            {
                rows.insert(r.id.clone(), r);
            }
        }
        let missing = submitted
            .iter()
            .filter(|id| !rows.contains_key(*id))
            .count();
        let not_approved = rows.values().filter(|r| r.status != "approved").count();
        let not_acked = rows.values().filter(|r| r.relayed_at.is_none()).count();
        if not_acked == 0 || t.elapsed() > Duration::from_secs(5) {
            break (missing, not_approved, not_acked);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    db.close().await?;
    let cli_pending = bot
        .cli(&["requests", "list", "--json"])
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["pending"].as_array().map(Vec::len));

    let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(ThroughputResult {
        window,
        in_window,
        per_second,
        submitted: submitted.len(),
        completed: completions.len(),
        not_approved: completions.iter().filter(|c| !c.approved).count(),
        errors,
        db_missing,
        db_not_approved,
        db_not_acked,
        cli_pending,
    })
}

/// xorshift64*, seeded from the clock: good enough to pick runners.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng(seed | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}

// ------------------------------------------------------------------ main

fn main() -> std::process::ExitCode {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("relay bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relay bench: cannot start a runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(opts)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The summary table's rows (goal, measured, against the goal, met) and
/// the lines printed under it.
#[derive(Default)]
struct Summary {
    rows: Vec<(String, String, String, bool)>,
    after: Vec<String>,
}

impl Summary {
    fn row(&mut self, goal: &str, measured: String, ratio: String, met: bool) {
        self.rows.push((goal.to_string(), measured, ratio, met));
    }
}

async fn run(opts: Opts) -> Result<()> {
    let (bin, profile) = bot_binary()?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let verdict = Policy::builtin()?.classify(COMMAND, &Context::fixed());
    if verdict.decision != Decision::Review {
        return Err(format!(
            "`{COMMAND}` is {:?} under the built-in policy, not review",
            verdict.decision
        )
        .into());
    }
    println!(
        "holdpoint-bot relay bench{}",
        if opts.quick { " (--quick)" } else { "" }
    );
    println!("  bot binary: {}", bin.display());
    println!("  bot build:  {profile}");
    println!("  cores:      {cores} (the bench's runners and reviewers share them with the bot)");

    let mut summary = Summary::default();
    if opts.only != Only::Slack {
        web_phases(&bin, &verdict, &opts, &mut summary).await?;
    }
    if opts.only != Only::Web {
        slack_phase(&bin, &verdict, &opts, &mut summary).await?;
    }

    println!("\nSummary ({cores} cores; bot build: {profile})");
    let line = |goal: &str, measured: &str, ratio: &str, result: &str| {
        println!("  {goal:<48} {measured:<50} {ratio:<12} {result}");
    };
    line("goal", "measured", "vs goal", "result");
    for (goal, measured, ratio, met) in &summary.rows {
        line(goal, measured, ratio, if *met { "met" } else { "NOT met" });
    }
    if !summary.after.is_empty() {
        println!();
        for l in &summary.after {
            println!("  {l}");
        }
    }
    Ok(())
}

/// The runner tokens: the auto-registered `local`, and a few more.
fn runner_tokens(bot: &Bot) -> Result<Vec<String>> {
    let env_file = std::fs::read_to_string(bot.data_dir.join("runner-local.env"))?;
    let mut tokens: Vec<String> = env_file
        .lines()
        .filter_map(|l| l.strip_prefix("export HOLDPOINT_TOKEN="))
        .map(|t| t.trim().to_string())
        .collect();
    for i in 1..=4 {
        tokens.push(
            bot.cli(&["runner", "add", &format!("bench-{i}")])?
                .trim()
                .to_string(),
        );
    }
    if tokens.len() != 5 || tokens.iter().any(|t| t.is_empty()) {
        return Err("cannot read the runner tokens".into());
    }
    Ok(tokens)
}

/// Phases A to C, on a bot without Slack.
async fn web_phases(
    bin: &Path,
    verdict: &Verdict,
    opts: &Opts,
    summary: &mut Summary,
) -> Result<()> {
    let bot = start_bot(bin, opts.keep, &[]).await?;
    println!(
        "  bot pid {} on http://{} (data {})",
        bot.pid,
        bot.addr,
        bot.data_dir.display()
    );
    if opts.keep {
        println!("  log: {}", bot.log.display());
    }
    let bot_fds = open_file_limit(&bot.pid.to_string());
    let own_fds = open_file_limit("self");
    let fmt_limit = |l: Option<u64>| match l {
        Some(u64::MAX) => "unlimited".to_string(),
        Some(n) => n.to_string(),
        None => "unknown".to_string(),
    };
    println!(
        "  open-file limits: bot {}, bench {}",
        fmt_limit(bot_fds),
        fmt_limit(own_fds)
    );
    let mut wanted = opts.runners;
    for (who, limit) in [("bot", bot_fds), ("bench", own_fds)] {
        if let Some(l) = limit
            && (l as usize) < wanted + 64
        {
            let fit = (l as usize).saturating_sub(64);
            println!(
                "  WARNING: the {who}'s open-file limit ({l}) cannot hold {wanted} connections; \
                 phase A stops at {fit} (raise it with `ulimit -n` before running the bench)"
            );
            wanted = fit;
        }
    }

    let tokens = runner_tokens(&bot)?;

    // Reviewing: the API with the printed login link, else the CLI.
    let link = bot
        .login_link
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or("the bot printed no login link")?;
    let cli = Approver::Cli {
        bin: bot.bin.clone(),
        data_dir: bot.data_dir.clone(),
        config_home: bot.config_home.clone(),
        addr: bot.addr,
    };
    let mut notes = Vec::new();
    let mut approver = match opts.via {
        Via::Cli => cli.clone(),
        Via::Api | Via::Auto => match log_in(bot.addr, &link).await {
            Ok(http) => Approver::Api {
                addr: bot.addr,
                cookie: http.cookie.unwrap_or_default(),
            },
            Err(e) if opts.via == Via::Auto => {
                notes.push(format!(
                    "web login failed ({e}); approvals go through the CLI"
                ));
                cli.clone()
            }
            Err(e) => return Err(e),
        },
    };

    // ---- Phase A: memory.
    let shared = Arc::new(Shared::default());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = bot.status()?;
    println!("\nPhase A: memory of idle runners");
    println!(
        "  baseline (no runner connected): RSS {}  HWM {}  threads {}",
        mib(baseline.rss as f64),
        mib(baseline.hwm as f64),
        baseline.threads
    );
    let mut steps_wanted = vec![opts.relay_runners.min(wanted), wanted];
    steps_wanted.dedup();
    let mut runners: Vec<Runner> = Vec::new();
    let mut memory = MemoryResult {
        baseline,
        steps: Vec::new(),
        wanted: opts.runners,
        errors: Vec::new(),
    };
    let phase_start = Instant::now();
    for step in steps_wanted {
        let have = runners.len();
        if step <= have {
            continue;
        }
        let t = Instant::now();
        let (more, errors) = connect_many(bot.addr, &tokens, have, step - have, &shared).await;
        let took = t.elapsed();
        let n_more = more.len();
        runners.extend(more);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = bot.status()?;
        let seen = connected(bot.addr).await;
        println!(
            "  {:>6} connected ({} new in {:.1} s, {:.0}/s; bot counts {}): RSS {}  HWM {}  threads {}  → {:.1} KiB per connection over baseline",
            runners.len(),
            n_more,
            took.as_secs_f64(),
            n_more as f64 / took.as_secs_f64().max(1e-9),
            seen.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
            mib(s.rss as f64),
            mib(s.hwm as f64),
            s.threads,
            (s.rss as f64 - memory.baseline.rss as f64) / runners.len().max(1) as f64 / 1024.0
        );
        if !errors.is_empty() {
            println!(
                "  {} connections FAILED; first error: {}",
                errors.len(),
                errors[0]
            );
        }
        memory.errors.extend(errors);
        memory.steps.push((runners.len(), s));
        if !memory.errors.is_empty() {
            break;
        }
    }
    if let [(n1, s1), .., (n2, s2)] = memory.steps.as_slice() {
        println!(
            "  marginal cost from {n1} to {n2}: {:.1} KiB per connection",
            (s2.rss as f64 - s1.rss as f64) / (*n2 - *n1).max(1) as f64 / 1024.0
        );
    }
    println!(
        "  phase A took {:.1} s (the bot closes runners silent for 90 s; they ping every {} s)",
        phase_start.elapsed().as_secs_f64(),
        PING_EVERY.as_secs()
    );

    // Down to the runners of phases B and C.
    let keep = opts.relay_runners.min(runners.len());
    let extra = runners.split_off(keep);
    close_runners(extra).await;
    let t = Instant::now();
    while connected(bot.addr).await.is_some_and(|n| n as usize > keep)
        && t.elapsed() < Duration::from_secs(15)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if runners.is_empty() {
        return Err("no runner could connect".into());
    }

    // ---- Phase B: relay latency.
    println!(
        "\nPhase B: relay latency with {} runners connected, {} relays after {} warm-up",
        runners.len(),
        if approver.is_api() {
            opts.relays
        } else {
            opts.relays.min(100)
        },
        opts.warmup
    );
    println!("  approvals via {}", approver.label());
    if !opts.think.is_zero() {
        println!(
            "  reviewer think time {} ms between pending and approve",
            opts.think.as_millis()
        );
    }
    let relay = match phase_b(&runners, &approver, verdict, opts).await {
        Ok(r) => r,
        Err(e) if approver.is_api() && opts.via == Via::Auto => {
            notes.push(format!(
                "the approve API failed ({e}); approvals went through the CLI instead"
            ));
            println!("  the approve API failed ({e}); falling back to the CLI");
            approver = cli.clone();
            println!("  approvals via {}", approver.label());
            phase_b(&runners, &approver, verdict, opts).await?
        }
        Err(e) => return Err(e),
    };
    print_dist("approve call → Decision at runner", &relay.relay);
    if let Some(h) = &relay.http {
        print_dist("approve call → HTTP response", h);
    }
    print_dist("submit → Pending at runner", &relay.submit);
    if !relay.failures.is_empty() {
        println!(
            "  {} FAILURES; first: {}",
            relay.failures.len(),
            relay.failures[0]
        );
    }

    // ---- Phase C: throughput.
    println!(
        "\nPhase C: throughput for {:.0} s, {} requests in flight over {} runners, {} reviewer connections",
        opts.seconds,
        opts.concurrency,
        runners.len(),
        if approver.is_api() {
            opts.reviewers
        } else {
            opts.reviewers.min(4)
        }
    );
    println!("  approvals via {}", approver.label());
    let runners = Arc::new(runners);
    let thr = phase_c(&bot, runners.clone(), &approver, verdict, opts).await?;
    let rps = thr.in_window as f64 / thr.window;
    let (min_s, max_s) = (
        thr.per_second.iter().min().copied().unwrap_or(0),
        thr.per_second.iter().max().copied().unwrap_or(0),
    );
    println!(
        "  {} completed in the {:.0} s window: {:.1} requests/s (per second: min {min_s}, max {max_s}; {:?})",
        thr.in_window, thr.window, rps, thr.per_second
    );
    let lost = thr.submitted - thr.completed;
    println!(
        "  submitted {}, decided at the runner {}, lost {}, not approved {}, duplicate decisions {}",
        thr.submitted,
        thr.completed,
        lost,
        thr.not_approved,
        shared.duplicates.load(Ordering::Relaxed)
    );
    println!(
        "  database: missing {}, not approved {}, ack not recorded {}; `requests list --json` pending: {}",
        thr.db_missing,
        thr.db_not_approved,
        thr.db_not_acked,
        thr.cli_pending
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into())
    );
    if !thr.errors.is_empty() {
        println!("  {} ERRORS; first: {}", thr.errors.len(), thr.errors[0]);
    }

    let audit = bot
        .cli(&["audit", "verify"])
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| e.to_string());
    let after = bot.status()?;
    let closed = shared.closed_by_bot.load(Ordering::Relaxed);
    let unexpected = shared.unexpected.load(Ordering::Relaxed);
    match Arc::try_unwrap(runners) {
        Ok(r) => close_runners(r).await,
        Err(_) => notes.push("runner handles still shared at the end".into()),
    }

    // ---- Summary rows.
    // Memory at 10,000 (or extrapolated from the largest step).
    if let Some((n, s)) = memory.steps.last() {
        let (rss, how) = if *n == GOAL_IDLE_RUNNERS {
            (s.rss as f64, String::new())
        } else {
            let per = (s.rss as f64 - memory.baseline.rss as f64) / *n as f64;
            (
                memory.baseline.rss as f64 + per * GOAL_IDLE_RUNNERS as f64,
                format!(" (extrapolated from {n})"),
            )
        };
        summary.row(
            "10,000 idle runners in ≤ 256 MiB RSS",
            format!("{}{how}", mib(rss)),
            format!("{:.2}× limit", rss / GOAL_RSS_BYTES),
            rss <= GOAL_RSS_BYTES && memory.errors.is_empty() && memory.wanted >= *n,
        );
    }
    let p99 = relay.relay.p99;
    let latency_goal = if relay.runners == GOAL_RELAY_RUNNERS {
        "relay p99 ≤ 10 ms, 1,000 runners".to_string()
    } else {
        format!("relay p99 ≤ 10 ms ({} runners, goal: 1,000)", relay.runners)
    };
    summary.row(
        &format!(
            "{latency_goal}{}",
            if approver.is_api() { "" } else { " [CLI]" }
        ),
        format!("p99 {}", ms(p99)),
        format!("{:.2}× limit", p99.as_secs_f64() / GOAL_P99.as_secs_f64()),
        p99 <= GOAL_P99 && relay.failures.is_empty() && relay.relay.n > 0,
    );
    let none_lost = lost == 0
        && thr.not_approved == 0
        && thr.db_missing == 0
        && thr.db_not_approved == 0
        && thr.errors.is_empty();
    summary.row(
        &format!(
            "≥ 200 requests/s end to end{}",
            if approver.is_api() { "" } else { " [CLI]" }
        ),
        format!("{rps:.1} requests/s"),
        format!("{:.2}× goal", rps / GOAL_RPS),
        rps >= GOAL_RPS,
    );
    summary.row(
        "none lost",
        format!("{lost} lost of {}", thr.submitted),
        String::new(),
        none_lost,
    );
    summary.after.push(format!(
        "bot after phases A to C: RSS {}  HWM {}  threads {}",
        mib(after.rss as f64),
        mib(after.hwm as f64),
        after.threads
    ));
    summary.after.push(format!("audit chain: {audit}"));
    if closed > 0 {
        summary.after.push(format!(
            "the bot closed {closed} runner connections during phases A to C (first: {})",
            shared
                .close_reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default()
        ));
    }
    if unexpected > 0 {
        summary
            .after
            .push(format!("{unexpected} unexpected frames from the bot"));
    }
    for n in &notes {
        summary.after.push(format!("note: {n}"));
    }
    if !approver.is_api() {
        summary.after.push(
            "note: approvals went through the CLI, so latency and throughput above measure \
             process start + database + the 250 ms sweep, not the relay path the goals are about"
                .into(),
        );
    }
    Ok(())
}

// ------------------------------------------------------------ phase S: Slack

const SLACK_BOT_TOKEN: &str = "xoxb-relay-bench";
const SLACK_SECRET: &str = "relay-bench-signing-secret-0123456789";
const SLACK_CHANNEL: &str = "C0BENCH";
const SLACK_REVIEWER: &str = "U0BENCH";

/// What the fake Web API saw.
#[derive(Default)]
struct FakeSlackState {
    /// Requests whose message (with its buttons) was posted, and when the
    /// `chat.postMessage` arrived.
    posted: Mutex<HashMap<String, Instant>>,
    /// Calls per Web API method.
    calls: Mutex<BTreeMap<String, u64>>,
    /// Calls without a bot token, or that could not be read.
    refused: AtomicU64,
    ts: AtomicU64,
    changed: tokio::sync::Notify,
}

/// A stand-in for the Slack Web API on loopback: HTTP/1.1 with keep-alive,
/// every method answered with a minimal valid body.
struct FakeSlack {
    addr: SocketAddr,
    state: Arc<FakeSlackState>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FakeSlack {
    async fn start() -> Result<FakeSlack> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(FakeSlackState::default());
        let accept = tokio::spawn({
            let state = state.clone();
            async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            tokio::spawn(fake_slack_connection(stream, state.clone()));
                        }
                        // Out of descriptors, say: try again shortly.
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            }
        });
        Ok(FakeSlack {
            addr,
            state,
            accept,
        })
    }

    fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    fn posted_at(&self, id: &str) -> Option<Instant> {
        self.state
            .posted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
    }

    /// When the message of `id` was posted, waiting up to `within`.
    async fn wait_posted(&self, id: &str, within: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.state.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(at) = self.posted_at(id) {
                return Some(at);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.posted_at(id);
            }
        }
    }

    fn calls(&self) -> BTreeMap<String, u64> {
        self.state
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn calls_of(&self, method: &str) -> u64 {
        self.calls().get(method).copied().unwrap_or(0)
    }
}

struct HttpRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    close: bool,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Serves one connection until the bot closes it (or asks to).
async fn fake_slack_connection(stream: TcpStream, state: Arc<FakeSlackState>) {
    let mut conn = BufReader::new(stream);
    loop {
        let req = match read_http_request(&mut conn).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(_) => {
                state.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let (status, body) = fake_slack_answer(&req, &state);
        let mut wire = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if req.close { "Connection: close\r\n" } else { "" }
        )
        .into_bytes();
        wire.extend_from_slice(body.as_bytes());
        if conn.get_mut().write_all(&wire).await.is_err() || req.close {
            return;
        }
    }
}

/// One HTTP/1.1 request; `None` when the connection ends between requests.
async fn read_http_request(
    conn: &mut BufReader<TcpStream>,
) -> std::io::Result<Option<HttpRequest>> {
    use std::io::{Error, ErrorKind};
    const MAX_BODY: usize = 16 << 20;
    let bad = |what: String| Error::new(ErrorKind::InvalidData, what);
    let mut line = String::new();
    // Empty lines before a request line are allowed.
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), version) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad(format!("bad request line {line:?}")));
    };
    let (method, target) = (method.to_string(), target.to_string());
    let http10 = version == Some("HTTP/1.0");
    let mut headers = Vec::new();
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "closed in the headers",
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let connection = get("connection").unwrap_or_default();
    let close = connection.contains("close") || (http10 && !connection.contains("keep-alive"));
    if get("expect").is_some_and(|v| v.contains("100-continue")) {
        conn.get_mut()
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await?;
    }
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            conn.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                loop {
                    line.clear();
                    if conn.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            if body.len() + size > MAX_BODY {
                return Err(bad("body too large".into()));
            }
            let start = body.len();
            body.resize(start + size, 0);
            conn.read_exact(&mut body[start..]).await?;
            line.clear();
            conn.read_line(&mut line).await?;
        }
    } else if let Some(n) = get("content-length") {
        let n: usize = n
            .parse()
            .map_err(|_| bad(format!("bad content-length {n:?}")))?;
        if n > MAX_BODY {
            return Err(bad("body too large".into()));
        }
        body.resize(n, 0);
        conn.read_exact(&mut body).await?;
    }
    Ok(Some(HttpRequest {
        method,
        target,
        headers,
        body,
        close,
    }))
}

fn form_object(bytes: &[u8]) -> serde_json::Value {
    serde_json::Value::Object(
        form_urlencoded::parse(bytes)
            .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
            .collect(),
    )
}

/// The ids of the requests whose buttons (`ID:HASH` values) are in `v`.
fn button_requests(v: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            if let Some(Value::String(s)) = m.get("value")
                && let Some((id, hash)) = s.split_once(':')
                && id.len() == 32
                && hash.len() == 64
                && id
                    .bytes()
                    .chain(hash.bytes())
                    .all(|b| b.is_ascii_hexdigit())
            {
                out.push(id.to_string());
            }
            for x in m.values() {
                button_requests(x, out);
            }
        }
        Value::Array(a) => {
            for x in a {
                button_requests(x, out);
            }
        }
        _ => {}
    }
}

/// The status line and JSON body for one Web API call.
fn fake_slack_answer(req: &HttpRequest, state: &FakeSlackState) -> (&'static str, String) {
    use serde_json::{Value, json};
    let (path, query) = req
        .target
        .split_once('?')
        .unwrap_or((req.target.as_str(), ""));
    let Some(method) = path.strip_prefix("/api/") else {
        state.refused.fetch_add(1, Ordering::Relaxed);
        return (
            "404 Not Found",
            json!({"ok": false, "error": "unknown_path"}).to_string(),
        );
    };
    *state
        .calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(method.to_string())
        .or_default() += 1;
    let params = if req.method == "GET" {
        form_object(query.as_bytes())
    } else if req
        .header("content-type")
        .is_some_and(|t| t.contains("json"))
    {
        serde_json::from_slice(&req.body).unwrap_or(Value::Null)
    } else {
        form_object(&req.body)
    };
    if !req
        .header("authorization")
        .is_some_and(|a| a.starts_with("Bearer xoxb-"))
    {
        state.refused.fetch_add(1, Ordering::Relaxed);
        return (
            "200 OK",
            json!({"ok": false, "error": "not_authed"}).to_string(),
        );
    }
    let field = |k: &str| params.get(k).and_then(Value::as_str).unwrap_or("");
    let answer = match method {
        "chat.postMessage" => {
            let n = state.ts.fetch_add(1, Ordering::Relaxed) + 1;
            let ts = format!("{}.000100", 1_700_000_000 + n);
            if params.get("thread_ts").is_none() {
                let mut ids = Vec::new();
                button_requests(&params, &mut ids);
                if !ids.is_empty() {
                    let now = Instant::now();
                    let mut posted = state.posted.lock().unwrap_or_else(|e| e.into_inner());
                    for id in ids {
                        posted.entry(id).or_insert(now);
                    }
                    drop(posted);
                    state.changed.notify_waiters();
                }
            }
            json!({"ok": true, "channel": field("channel"), "ts": ts, "message": {"ts": ts}})
        }
        "chat.update" => json!({"ok": true, "channel": field("channel"), "ts": field("ts")}),
        "chat.postEphemeral" => json!({"ok": true, "message_ts": "1700000000.000001"}),
        "views.open" => json!({"ok": true, "view": {"id": "V0BENCH"}}),
        "usergroups.users.list" => json!({"ok": true, "users": [SLACK_REVIEWER]}),
        "users.info" => {
            json!({"ok": true, "user": {"id": field("user"), "name": "bench-reviewer"}})
        }
        "auth.test" => json!({
            "ok": true, "url": "https://bench.slack.invalid/", "team": "bench",
            "user": "holdpoint", "team_id": "T0BENCH", "user_id": "U0BOT", "bot_id": "B0BENCH"
        }),
        _ => json!({"ok": true}),
    };
    ("200 OK", answer.to_string())
}

/// Percent-encodes everything but unreserved characters, as Slack does.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Slack's request signature: `v0=` hex(HMAC-SHA256(secret, `v0:TS:BODY`)).
fn slack_sign(secret: &str, ts: i64, body: &str) -> String {
    format!(
        "v0={}",
        hex::encode(hmac_sha256(
            secret.as_bytes(),
            format!("v0:{ts}:{body}").as_bytes()
        ))
    )
}

fn unix_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A click on a request message's button, as Slack sends it.
fn slack_click(user: &str, action_id: &str, value: &str, ts: i64) -> serde_json::Value {
    serde_json::json!({
        "type": "block_actions",
        "user": {"id": user, "username": "bench-reviewer", "team_id": "T0BENCH"},
        "api_app_id": "A0BENCH",
        "token": "legacy",
        "container": {
            "type": "message",
            "message_ts": "1700000001.000100",
            "channel_id": SLACK_CHANNEL,
            "is_ephemeral": false
        },
        "trigger_id": format!("{ts}.{}", holdpoint_bot::db::random_hex(8)),
        "team": {"id": "T0BENCH", "domain": "bench"},
        "channel": {"id": SLACK_CHANNEL, "name": "holdpoint"},
        "response_url": "https://hooks.slack.invalid/actions/bench",
        "actions": [{
            "action_id": action_id,
            "block_id": "hp_actions",
            "text": {"type": "plain_text", "text": "Approve"},
            "value": value,
            "type": "button",
            "action_ts": format!("{ts}.000200")
        }]
    })
}

struct SlackResult {
    runners: usize,
    relay: Dist,
    http: Dist,
    posted: Dist,
    failures: Vec<String>,
}

/// Phase S: a bot with Slack in HTTP mode, `relay_runners` runners, and
/// approvals by signed clicks.
async fn slack_phase(
    bin: &Path,
    verdict: &Verdict,
    opts: &Opts,
    summary: &mut Summary,
) -> Result<()> {
    let fake = FakeSlack::start().await?;
    let env = [
        ("HOLDPOINT_SLACK_BOT_TOKEN", SLACK_BOT_TOKEN.to_string()),
        ("HOLDPOINT_SLACK_SIGNING_SECRET", SLACK_SECRET.to_string()),
        ("HOLDPOINT_SLACK_CHANNEL", SLACK_CHANNEL.to_string()),
        ("HOLDPOINT_SLACK_REVIEWERS", SLACK_REVIEWER.to_string()),
        ("HOLDPOINT_SLACK_API_URL", fake.api_url()),
    ];
    let bot = start_bot(bin, opts.keep, &env).await?;
    println!(
        "\nPhase S: Slack relay latency with {} runners, {} relays after {} warm-up",
        opts.relay_runners, opts.slack_relays, opts.warmup
    );
    println!(
        "  a second bot, pid {} on http://{} (data {}), Slack in HTTP mode; its Web API is a fake at {}",
        bot.pid,
        bot.addr,
        bot.data_dir.display(),
        fake.api_url()
    );
    println!(
        "  approvals: signed block_actions clicks on Approve by {SLACK_REVIEWER}, \
         POST /slack/interactions, each once the bot has posted the request's message"
    );
    if opts.keep {
        println!("  log: {}", bot.log.display());
    }
    let tokens = runner_tokens(&bot)?;
    let shared = Arc::new(Shared::default());
    let t = Instant::now();
    let (runners, errors) = connect_many(bot.addr, &tokens, 0, opts.relay_runners, &shared).await;
    println!(
        "  {} runners connected in {:.1} s (bot counts {})",
        runners.len(),
        t.elapsed().as_secs_f64(),
        connected(bot.addr)
            .await
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into())
    );
    if !errors.is_empty() {
        println!(
            "  {} connections FAILED; first error: {}",
            errors.len(),
            errors[0]
        );
    }
    if runners.is_empty() {
        return Err("no runner could connect to the Slack bot".into());
    }
    let result = phase_s(&bot, &fake, &runners, verdict, opts).await;
    let after = bot.status();
    close_runners(runners).await;
    let r = result?;
    print_dist("click POST → Decision at runner", &r.relay);
    print_dist("click POST → HTTP response", &r.http);
    print_dist("Pending → chat.postMessage at API", &r.posted);
    if !r.failures.is_empty() {
        println!("  {} FAILURES; first: {}", r.failures.len(), r.failures[0]);
    }
    let calls = fake.calls();
    let ephemeral = calls.get("chat.postEphemeral").copied().unwrap_or(0);
    println!(
        "  fake Web API calls: {}",
        calls
            .iter()
            .map(|(m, n)| format!("{m} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let refused = fake.state.refused.load(Ordering::Relaxed);
    if refused > 0 {
        println!("  the fake Web API refused {refused} calls (no bot token, or unreadable)");
    }
    if ephemeral > 0 {
        println!(
            "  the bot answered {ephemeral} clicks with an ephemeral message (a refusal, or already decided)"
        );
    }
    let closed = shared.closed_by_bot.load(Ordering::Relaxed);
    let duplicates = shared.duplicates.load(Ordering::Relaxed);
    let unexpected = shared.unexpected.load(Ordering::Relaxed);
    if closed + duplicates + unexpected > 0 {
        println!(
            "  runners: {closed} closed by the bot, {duplicates} duplicate decisions, {unexpected} unexpected frames"
        );
    }

    let goal = if r.runners == GOAL_RELAY_RUNNERS {
        "Slack click relay p99 ≤ 10 ms, 1,000 runners".to_string()
    } else {
        format!("Slack click relay p99 ≤ 10 ms ({} runners)", r.runners)
    };
    let p99 = r.relay.p99;
    summary.row(
        &goal,
        format!(
            "p99 {} (p50 {:.3}, p90 {:.3}, max {:.3})",
            ms(p99),
            r.relay.p50.as_secs_f64() * 1e3,
            r.relay.p90.as_secs_f64() * 1e3,
            r.relay.max.as_secs_f64() * 1e3
        ),
        format!("{:.2}× limit", p99.as_secs_f64() / GOAL_P99.as_secs_f64()),
        p99 <= GOAL_P99 && r.failures.is_empty() && r.relay.n > 0 && ephemeral == 0,
    );
    if let Ok(s) = after {
        summary.after.push(format!(
            "Slack bot after phase S: RSS {}  HWM {}  threads {}; {} messages posted, {} updated",
            mib(s.rss as f64),
            mib(s.hwm as f64),
            s.threads,
            fake.state
                .posted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len(),
            fake.calls_of("chat.update")
        ));
    }
    if !r.failures.is_empty() {
        summary.after.push(format!(
            "phase S: {} failures; first: {}",
            r.failures.len(),
            r.failures[0]
        ));
    }
    Ok(())
}

async fn phase_s(
    bot: &Bot,
    fake: &FakeSlack,
    runners: &[Runner],
    verdict: &Verdict,
    opts: &Opts,
) -> Result<SlackResult> {
    let mut http = Http::new(bot.addr);
    let mut rng = Rng::new();
    let (mut relay, mut answered, mut posted) = (Vec::new(), Vec::new(), Vec::new());
    let mut failures = Vec::new();
    let total = opts.warmup + opts.slack_relays;
    for i in 0..total {
        // The first round's failure is a setup problem: stop and say why.
        let fail = |failures: &mut Vec<String>, e: String| -> Result<()> {
            if i == 0 {
                return Err(format!("{e}\nbot log:\n{}", bot.log_tail()).into());
            }
            failures.push(e);
            Ok(())
        };
        let runner = &runners[rng.below(runners.len())];
        let req = request(verdict);
        let (id, hash) = (req.id.clone(), req.command_hash.clone());
        let (pending_at, decided) = match submit(runner, req).await {
            Ok(x) => x,
            Err(e) => {
                fail(&mut failures, format!("submit: {e}"))?;
                continue;
            }
        };
        let Some(posted_at) = fake.wait_posted(&id, Duration::from_secs(10)).await else {
            fail(
                &mut failures,
                format!("the bot posted no message for {id} within 10 s"),
            )?;
            continue;
        };
        // Slack signs the click before sending it: not part of the time.
        let ts = unix_secs();
        let click = slack_click(SLACK_REVIEWER, "hp_approve", &format!("{id}:{hash}"), ts);
        let body = format!("payload={}", form_encode(&click.to_string()));
        let signature = slack_sign(SLACK_SECRET, ts, &body);
        let ts = ts.to_string();
        let headers = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-Slack-Signature", signature.as_str()),
            ("X-Slack-Request-Timestamp", ts.as_str()),
        ];
        let t0 = Instant::now();
        let r = match http
            .send("POST", "/slack/interactions", &headers, body.as_bytes())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                fail(&mut failures, format!("POST /slack/interactions: {e}"))?;
                continue;
            }
        };
        let t_http = Instant::now();
        if r.status != 200 {
            fail(
                &mut failures,
                format!(
                    "POST /slack/interactions answered {}: {}",
                    r.status,
                    r.text()
                ),
            )?;
            continue;
        }
        let got = match tokio::time::timeout(Duration::from_secs(10), decided).await {
            Ok(Ok(g)) => g,
            Ok(Err(_)) => {
                fail(
                    &mut failures,
                    "the runner's connection closed before the decision".into(),
                )?;
                continue;
            }
            Err(_) => {
                fail(
                    &mut failures,
                    format!(
                        "no decision for {id} within 10 s of the click ({} ephemeral answers so far)",
                        fake.calls_of("chat.postEphemeral")
                    ),
                )?;
                continue;
            }
        };
        if got.decision.status != Status::Approved || got.decision.command_hash != hash {
            fail(
                &mut failures,
                format!("unexpected decision {:?}", got.decision),
            )?;
        }
        if i >= opts.warmup {
            relay.push(got.at.saturating_duration_since(t0));
            answered.push(t_http.saturating_duration_since(t0));
            posted.push(posted_at.saturating_duration_since(pending_at));
        }
    }
    Ok(SlackResult {
        runners: runners.len(),
        relay: dist(relay),
        http: dist(answered),
        posted: dist(posted),
        failures,
    })
}

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
//! - Phase I, audit ingestion: runners flush their spools at once, each
//!   sending batches of 256 verdict events (the protocol's largest) and
//!   waiting for the ack before the next, as `holdpoint spool flush` does;
//!   events stored per second, then a check that every event sent is in the
//!   chain exactly once (one batch is sent twice) and that the chain
//!   verifies (goal: 10,000 events/s on PostgreSQL).
//! - Phases A to C and I run on SQLite, or with `--database postgres` on a
//!   fresh PostgreSQL database (`HOLDPOINT_E2E_POSTGRES_URL`, default the
//!   local server); the throughput goal is 500 requests/s on SQLite and
//!   1,000 on PostgreSQL.
//! - Phase S, Slack relay latency: a second bot, with Slack configured in
//!   HTTP mode against a fake Web API inside this bench, and 1,000 runners
//!   connected. For each request the bench waits until the bot has posted
//!   its message (the fake API saw `chat.postMessage` with its buttons),
//!   then posts a signed `block_actions` click on Approve by the configured
//!   reviewer to `POST /slack/interactions`, and times it from just before
//!   the POST to the moment the runner's socket yields the decision (goal:
//!   p99 at most 10 ms).
//! - Phase M, Matrix relay latency: a third bot, logged in to a real
//!   Synapse on loopback (the Matrix test environment,
//!   `HOLDPOINT_MATRIX_VENV`; skipped, saying so, without it), a reviewer
//!   played by a matrix-nio client. For each request the reviewer waits
//!   for the review message, then reacts ✅; timed from just before the
//!   client's send of the reaction to the moment the runner's socket yields
//!   the decision (the homeserver's delivery to the bot's sync included;
//!   no goal of its own: reported beside the Slack one).
//!
//! ```text
//! cargo bench -p holdpoint-bot --bench relay
//! cargo bench -p holdpoint-bot --bench relay -- --runners 10000
//! cargo bench -p holdpoint-bot --bench relay --profile dev -- --quick
//! cargo bench -p holdpoint-bot --bench relay -- --only slack
//! cargo bench -p holdpoint-bot --bench relay -- --only matrix
//! cargo bench -p holdpoint-bot --bench relay -- --only web --database postgres
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
//! `--slack-relays N` (phase S, default 300), `--matrix-relays N` (phase
//! M, default 100), `--ingest-seconds S` (phase I, default 5; 0 skips
//! it), `--ingest-senders N` (runners flushing at once, default 32),
//! `--database sqlite|postgres` (phases A to C and I; default sqlite),
//! `--only web|slack|matrix` (only phases A to C and I, only
//! phase S, or only phase M), `--quick` (every phase, smaller),
//! `--keep` (keep the data directory). `HOLDPOINT_BOT_BIN` runs another
//! build of the bot; `HOLDPOINT_LOG` sets its log level (default `warn`).

use holdpoint_shared::protocol::{ReviewRequest, Status};
use holdpoint_shared::{Context, Decision, Policy, Verdict};
use holdpoint_testkit::load::fleet::{
    PING_EVERY, Runner, Shared, close_runners, connect_many, connected, send_audit, submit,
};
use holdpoint_testkit::load::http::{Http, log_in};
use holdpoint_testkit::load::slack_api::FakeWebApi;
use holdpoint_testkit::slack::{self, CHANNEL, REVIEWER, SECRET};
use holdpoint_testkit::{Bot, BotOptions, Cli, Database, PgDatabase, review};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

const GOAL_IDLE_RUNNERS: usize = 10_000;
const GOAL_RSS_BYTES: f64 = 256.0 * 1024.0 * 1024.0;
const GOAL_RELAY_RUNNERS: usize = 1_000;
const GOAL_P99: Duration = Duration::from_millis(10);
const GOAL_RPS_SQLITE: f64 = 500.0;
const GOAL_RPS_POSTGRES: f64 = 1000.0;
const GOAL_EVENTS_PER_SECOND: f64 = 10_000.0;
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
    /// Phase M: the bot with Matrix.
    Matrix,
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
    matrix_relays: usize,
    only: Only,
    keep: bool,
    quick: bool,
    ingest_seconds: f64,
    ingest_senders: usize,
    postgres: bool,
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
            matrix_relays: 20,
            only: Only::All,
            keep: false,
            quick,
            ingest_seconds: if quick { 2.0 } else { 5.0 },
            ingest_senders: if quick { 8 } else { 32 },
            postgres: false,
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
            matrix_relays: 100,
            only: Only::All,
            keep: false,
            quick,
            ingest_seconds: if quick { 2.0 } else { 5.0 },
            ingest_senders: if quick { 8 } else { 32 },
            postgres: false,
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
            "--matrix-relays" => o.matrix_relays = num(value(a)?, a)?,
            "--only" => {
                o.only = match value(a)?.as_str() {
                    "web" => Only::Web,
                    "slack" => Only::Slack,
                    "matrix" => Only::Matrix,
                    other => {
                        return Err(format!("--only {other}: use web, slack or matrix").into());
                    }
                }
            }
            "--ingest-senders" => o.ingest_senders = num(value(a)?, a)?,
            "--ingest-seconds" => {
                let v = value(a)?;
                o.ingest_seconds =
                    v.parse::<f64>().ok().filter(|s| *s >= 0.0).ok_or_else(|| {
                        format!("--ingest-seconds: {v:?} is not a number of seconds")
                    })?;
            }
            "--database" => {
                o.postgres = match value(a)?.as_str() {
                    "sqlite" => false,
                    "postgres" | "postgresql" => true,
                    other => {
                        return Err(format!("--database {other}: use sqlite or postgres").into());
                    }
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
                     --slack-relays N --matrix-relays N --only web|slack|matrix --quick --keep"
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

/// Starts `holdpoint-bot serve` with `extra` in its environment, its
/// open-file limit raised to the hard limit.
fn start_bot(bin: &Path, keep: bool, database: Database, extra: &[(&str, String)]) -> Result<Bot> {
    let log = std::env::var("HOLDPOINT_LOG").unwrap_or_else(|_| "warn".into());
    let mut options = BotOptions::new()
        .bin(bin)
        .database(database)
        .keep(keep)
        .user("bench-reviewer")
        .log(&log)
        .env("HOLDPOINT_LOG_FORMAT", "text")
        // The bench plays thousands of runners with five tokens: one
        // token's share of the fleet is far above a real runner's limits.
        .env("HOLDPOINT_LIMIT_CONNECTIONS_PER_RUNNER", "1000000")
        .env("HOLDPOINT_LIMIT_PENDING_PER_RUNNER", "1000000")
        .env("HOLDPOINT_LIMIT_SUBMISSIONS_PER_SECOND", "1000000")
        .raise_open_files();
    for (k, v) in extra {
        options = options.env(k, v.clone());
    }
    Ok(options.try_start()?)
}

/// Where the bot listens.
fn addr(bot: &Bot) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], bot.port))
}

/// Runs a CLI subcommand against the bot's database; returns stdout.
fn cli(bot: &Bot, args: &[&str]) -> Result<String> {
    let (ok, out, err) = bot.try_cli(args);
    if !ok {
        return Err(format!("holdpoint-bot {} failed: {out}{err}", args.join(" ")).into());
    }
    Ok(out)
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

// ------------------------------------------------------------- reviewers

/// How approvals are made.
#[derive(Clone)]
enum Approver {
    /// `POST /api/requests/{id}/approve` with a session cookie.
    Api { addr: SocketAddr, cookie: String },
    /// `holdpoint-bot approve ID`: goes through the database and reaches
    /// the runner with the bot's next sweep (every 250 ms).
    Cli(Cli),
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
            Approver::Cli(_) => {
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
            Session::Cli(Approver::Cli(cli)) => {
                let mut c = cli.command();
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

// ---------------------------------------------------------------- requests

fn request(verdict: &Verdict) -> ReviewRequest {
    review(COMMAND)
        .verdict(verdict.clone())
        .host("bench-host")
        .cwd("/home/dev/project")
        .agent("relay-bench")
        .front_end("sh")
        .requested_by(Some("bench-agent"))
        .build()
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
    let (db_missing, db_not_approved, db_not_acked) = stored(&bot.database_url, &submitted).await?;
    let cli_pending = cli(bot, &["requests", "list", "--json"])
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

struct IngestResult {
    /// Events the bot acknowledged (each sent once, but for the re-sent batch).
    acked: usize,
    took: f64,
    batches: Dist,
    /// Of the acked events, how many rows the chain holds, and how many ids
    /// it holds twice.
    stored: usize,
    twice: usize,
    resent_acked: bool,
    errors: Vec<String>,
}

/// A runner's spooled verdict of an allowed command.
fn spooled_event(i: usize) -> holdpoint_shared::protocol::AuditEvent {
    holdpoint_shared::protocol::AuditEvent {
        id: holdpoint_testkit::random_hex(16),
        at: holdpoint_testkit::now(),
        command: format!("git status --short # {i}"),
        decision: Decision::Allow,
        risk: holdpoint_shared::Risk::Low,
        rules: vec![],
        host: "bench".into(),
        cwd: "/home/dev/project".into(),
        agent: Some("bench".into()),
        front_end: "sh".into(),
        action: "ran".into(),
        request_id: None,
    }
}

/// Phase I: `senders` runners flush full batches for `seconds`.
async fn phase_i(
    bot: &Bot,
    runners: Arc<Vec<Runner>>,
    senders: usize,
    seconds: f64,
) -> Result<IngestResult> {
    let batch = holdpoint_shared::protocol::MAX_AUDIT_BATCH;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for w in 0..senders {
        let runners = runners.clone();
        tasks.push(tokio::spawn(async move {
            let runner = &runners[w];
            let mut sent = Vec::new();
            let mut lat = Vec::new();
            let mut errors = Vec::new();
            let mut first_batch: Option<Vec<holdpoint_shared::protocol::AuditEvent>> = None;
            while Instant::now() < deadline {
                let events: Vec<_> = (0..batch).map(|i| spooled_event(sent.len() + i)).collect();
                let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
                if first_batch.is_none() {
                    first_batch = Some(events.clone());
                }
                let t = Instant::now();
                match send_audit(runner, events).await {
                    Ok(acked) if acked == ids => {
                        lat.push(t.elapsed());
                        sent.extend(ids);
                    }
                    Ok(acked) => errors.push(format!("{} of {} acked", acked.len(), ids.len())),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            let end = Instant::now();
            // The first sender sends its first batch again, as a runner
            // whose ack was lost does.
            let resent = match (w, first_batch) {
                (0, Some(events)) => {
                    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
                    Some(send_audit(runner, events).await.is_ok_and(|a| a == ids))
                }
                _ => None,
            };
            (sent, lat, errors, end, resent)
        }));
    }
    let mut sent = Vec::new();
    let mut lat = Vec::new();
    let mut errors = Vec::new();
    let mut end = start;
    let mut resent_acked = false;
    for t in tasks {
        let (s, l, e, at, resent) = t.await?;
        sent.extend(s);
        lat.extend(l);
        errors.extend(e);
        end = end.max(at);
        if let Some(r) = resent {
            resent_acked = r;
        }
    }
    let took = end.saturating_duration_since(start).as_secs_f64().max(1e-9);
    let (stored, twice) = stored_events(&bot.database_url, &sent).await?;
    Ok(IngestResult {
        acked: sent.len(),
        took,
        batches: dist(lat),
        stored,
        twice,
        resent_acked,
        errors,
    })
}

/// Of these runner event ids, how many the audit log holds, and how many
/// of them it holds more than once. (Only phase I sends runner events to
/// this bot, stored as `RUNNER_ID:ID`.)
async fn stored_events(database_url: &str, ids: &[String]) -> Result<(usize, usize)> {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let db = Database::connect(database_url).await?;
    let sql = "SELECT event_id FROM audit_log WHERE kind = 'verdict'";
    let mut rows: HashMap<String, usize> = HashMap::new();
    for row in db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?
    {
        let id: String = row.try_get("", "event_id")?;
        let own = id
            .split_once(':')
            .map_or(id.as_str(), |(_, e)| e)
            .to_string();
        *rows.entry(own).or_default() += 1;
    }
    let stored = ids.iter().filter(|id| rows.contains_key(*id)).count();
    let twice = ids
        .iter()
        .filter(|id| rows.get(*id).is_some_and(|n| *n > 1))
        .count();
    Ok((stored, twice))
}

/// What the database holds of the submitted requests, once every ack is
/// recorded (or 5 s have passed): (missing, not approved, ack not
/// recorded). Plain SQL on the bot's database URL.
async fn stored(database_url: &str, submitted: &[String]) -> Result<(usize, usize, usize)> {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let db = Database::connect(database_url).await?;
    let t = Instant::now();
    let counts = loop {
        let mut rows: HashMap<String, (String, Option<i64>)> = HashMap::new();
        for chunk in submitted.chunks(500) {
            // The ids are hex digits made by this bench: safe to inline.
            let ids: Vec<String> = chunk.iter().map(|id| format!("'{id}'")).collect();
            let sql = format!(
                "SELECT id, status, relayed_at FROM requests WHERE id IN ({})",
                ids.join(",")
            );
            for row in db
                .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
                .await?
            {
                rows.insert(
                    row.try_get("", "id")?,
                    (row.try_get("", "status")?, row.try_get("", "relayed_at")?),
                );
            }
        }
        let missing = submitted
            .iter()
            .filter(|id| !rows.contains_key(*id))
            .count();
        let not_approved = rows.values().filter(|(s, _)| s != "approved").count();
        let not_acked = rows.values().filter(|(_, r)| r.is_none()).count();
        if not_acked == 0 || t.elapsed() > Duration::from_secs(5) {
            break (missing, not_approved, not_acked);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    db.close().await?;
    Ok(counts)
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
    if matches!(opts.only, Only::All | Only::Web) {
        web_phases(&bin, &verdict, &opts, &mut summary).await?;
    }
    if matches!(opts.only, Only::All | Only::Slack) {
        slack_phase(&bin, &verdict, &opts, &mut summary).await?;
    }
    if matches!(opts.only, Only::All | Only::Matrix) {
        let (bin, n, warmup) = (bin.clone(), opts.matrix_relays, opts.warmup.min(5));
        let v = verdict.clone();
        let r = tokio::task::spawn_blocking(move || phase_m(&bin, &v, n, warmup)).await?;
        match r {
            Ok(Some(d)) => {
                print_dist("✅ sent → Decision at runner", &d);
                summary.row(
                    "Matrix reaction relay (reported, no goal)",
                    format!("p50 {} p99 {} (n={})", ms(d.p50), ms(d.p99), d.n),
                    "-".into(),
                    d.n == n,
                );
            }
            Ok(None) => {}
            Err(e) => return Err(e),
        }
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

/// Phase M: the Matrix relay, blocking (the Matrix test kit is), on its
/// own bot and homeserver. `None`: skipped (no Matrix test environment).
fn phase_m(bin: &Path, verdict: &Verdict, n: usize, warmup: usize) -> Result<Option<Dist>> {
    use holdpoint_testkit::matrix::{Synapse, is_request_message, python};
    let py = match python() {
        Ok(p) => p,
        Err(why) => {
            println!("\nPhase M: Matrix relay latency skipped: {why}");
            return Ok(None);
        }
    };
    println!("\nPhase M: Matrix relay latency, {n} reactions after {warmup} warm-up");
    let hs = Synapse::start(&py);
    let peer = hs.peer();
    let bot_user = peer.register("holdpoint", "bench-bot-pw");
    peer.user("alice", "alice-pw");
    let room = peer.create_room("alice", false, &[&bot_user], serde_json::json!({}));
    let bot = BotOptions::new()
        .bin(bin)
        .env("HOLDPOINT_MATRIX_HOMESERVER", hs.url())
        .env("HOLDPOINT_MATRIX_USER_ID", bot_user)
        .env("HOLDPOINT_MATRIX_PASSWORD", "bench-bot-pw")
        .env("HOLDPOINT_MATRIX_ROOM", room.clone())
        .env("HOLDPOINT_MATRIX_REVIEWERS", "@alice:localhost")
        .try_start()?;
    bot.wait_log("Matrix: ready as", Duration::from_secs(90));
    println!(
        "  bot pid {} on {}, Synapse on {}, reviewer @alice:localhost (matrix-nio), a plain room",
        bot.pid(),
        bot.url(),
        hs.url()
    );
    let mut runner = holdpoint_testkit::Runner::connect(&bot);
    let mut lat = Vec::with_capacity(n);
    let mut send = Vec::with_capacity(n);
    for i in 0..(warmup + n) {
        let req = request(verdict);
        runner.submit(&req);
        let msg = peer.wait_event(
            "alice",
            &room,
            "the review message",
            Duration::from_secs(30),
            |e| is_request_message(e, &req.id),
        );
        let event = msg["event_id"].as_str().unwrap_or_default().to_string();
        let sent = peer.call(serde_json::json!({
            "op": "react", "who": "alice", "room": room, "event_id": event, "key": "✅",
        }));
        let d = runner
            .decision(Duration::from_secs(30))
            .ok_or_else(|| format!("no decision for request {i}"))?;
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0);
        if d.status != Status::Approved {
            return Err(format!("request {i} ended {:?}", d.status).into());
        }
        let sent_at = sent["sent_at_ms"]
            .as_f64()
            .ok_or("the peer did not say when it sent")?;
        let answered_at = sent["answered_at_ms"].as_f64().unwrap_or(sent_at);
        if i >= warmup {
            let ms = |v: f64| Duration::from_secs_f64(v.max(0.0) / 1e3);
            lat.push(ms(at - sent_at));
            send.push(ms(answered_at - sent_at));
        }
    }
    print_dist("✅ send → homeserver's answer", &dist(send));
    Ok(Some(dist(lat)))
}

/// The runner tokens: the auto-registered `local`, and a few more.
fn runner_tokens(bot: &Bot) -> Result<Vec<String>> {
    let mut tokens = vec![bot.token.clone()];
    for i in 1..=4 {
        tokens.push(
            cli(bot, &["runner", "add", &format!("bench-{i}")])?
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
    let database = if opts.postgres {
        Database::Postgres(
            PgDatabase::create().ok_or("--database postgres: no PostgreSQL server is reachable")?,
        )
    } else {
        Database::Sqlite
    };
    let backend = if opts.postgres {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let goal_rps = if opts.postgres {
        GOAL_RPS_POSTGRES
    } else {
        GOAL_RPS_SQLITE
    };
    println!("  database:   {backend}");
    let bot = tokio::task::block_in_place(|| start_bot(bin, opts.keep, database, &[]))?;
    println!(
        "  bot pid {} on http://{} (data {})",
        bot.pid(),
        addr(&bot),
        bot.dir().display()
    );
    if opts.keep {
        println!("  log: {}", bot.dir().join("bot.log").display());
    }
    let bot_fds = open_file_limit(&bot.pid().to_string());
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
    let link = bot.login_link();
    let cli_approver = Approver::Cli(bot.cli_handle());
    let mut notes = Vec::new();
    let mut approver = match opts.via {
        Via::Cli => cli_approver.clone(),
        Via::Api | Via::Auto => match log_in(addr(&bot), &link).await {
            Ok(http) => Approver::Api {
                addr: addr(&bot),
                cookie: http.cookie.unwrap_or_default(),
            },
            Err(e) if opts.via == Via::Auto => {
                notes.push(format!(
                    "web login failed ({e}); approvals go through the CLI"
                ));
                cli_approver.clone()
            }
            Err(e) => return Err(e.into()),
        },
    };

    // ---- Phase A: memory.
    let shared = Arc::new(Shared::default());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = proc_status(bot.pid())?;
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
        let (more, errors) = connect_many(addr(&bot), &tokens, have, step - have, &shared).await;
        let took = t.elapsed();
        let n_more = more.len();
        runners.extend(more);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = proc_status(bot.pid())?;
        let seen = connected(addr(&bot)).await;
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
    while connected(addr(&bot))
        .await
        .is_some_and(|n| n as usize > keep)
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
            approver = cli_approver.clone();
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

    // ---- Phase I: audit ingestion.
    let ingest = if opts.ingest_seconds > 0.0 {
        let senders = opts.ingest_senders.min(runners.len());
        println!(
            "\nPhase I: audit ingestion for {:.0} s, {senders} runners flushing batches of {} events",
            opts.ingest_seconds,
            holdpoint_shared::protocol::MAX_AUDIT_BATCH
        );
        let r = phase_i(&bot, runners.clone(), senders, opts.ingest_seconds).await?;
        println!(
            "  {} events stored in {:.1} s: {:.0} events/s ({} batches; ack p50 {} p99 {})",
            r.acked,
            r.took,
            r.acked as f64 / r.took,
            r.batches.n,
            ms(r.batches.p50),
            ms(r.batches.p99)
        );
        println!(
            "  in the chain: {} of {} sent, {} twice; the batch sent again was acked: {}",
            r.stored, r.acked, r.twice, r.resent_acked
        );
        if !r.errors.is_empty() {
            println!("  {} ERRORS; first: {}", r.errors.len(), r.errors[0]);
        }
        Some(r)
    } else {
        None
    };

    let audit = cli(&bot, &["audit", "verify"])
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| e.to_string());
    let after = proc_status(bot.pid())?;
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
            "≥ {goal_rps:.0} requests/s end to end on {backend}{}",
            if approver.is_api() { "" } else { " [CLI]" }
        ),
        format!("{rps:.1} requests/s"),
        format!("{:.2}× goal", rps / goal_rps),
        rps >= goal_rps,
    );
    summary.row(
        "none lost",
        format!("{lost} lost of {}", thr.submitted),
        String::new(),
        none_lost,
    );
    if let Some(r) = &ingest {
        let eps = r.acked as f64 / r.took;
        summary.row(
            &format!("≥ 10,000 audit events/s ingested on {backend}"),
            format!("{eps:.0} events/s"),
            format!("{:.2}× goal", eps / GOAL_EVENTS_PER_SECOND),
            eps >= GOAL_EVENTS_PER_SECOND,
        );
        summary.row(
            "every event in the chain exactly once",
            format!("{} of {} stored, {} twice", r.stored, r.acked, r.twice),
            String::new(),
            r.stored == r.acked && r.twice == 0 && r.resent_acked && r.errors.is_empty(),
        );
    }
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
    let fake = FakeWebApi::start().await?;
    let mut env = slack::bot_env(&fake.api_url(), slack::Mode::Http);
    // One reviewer, named directly: no group to resolve on a click.
    env.push(("HOLDPOINT_SLACK_REVIEWERS", REVIEWER.to_string()));
    let bot = tokio::task::block_in_place(|| start_bot(bin, opts.keep, Database::Sqlite, &env))?;
    println!(
        "\nPhase S: Slack relay latency with {} runners, {} relays after {} warm-up",
        opts.relay_runners, opts.slack_relays, opts.warmup
    );
    println!(
        "  a second bot, pid {} on http://{} (data {}), Slack in HTTP mode; its Web API is a fake at {}",
        bot.pid(),
        addr(&bot),
        bot.dir().display(),
        fake.api_url()
    );
    println!(
        "  approvals: signed block_actions clicks on Approve by {REVIEWER}, \
         POST /slack/interactions, each once the bot has posted the request's message"
    );
    if opts.keep {
        println!("  log: {}", bot.dir().join("bot.log").display());
    }
    let tokens = runner_tokens(&bot)?;
    let shared = Arc::new(Shared::default());
    let t = Instant::now();
    let (runners, errors) = connect_many(addr(&bot), &tokens, 0, opts.relay_runners, &shared).await;
    println!(
        "  {} runners connected in {:.1} s (bot counts {})",
        runners.len(),
        t.elapsed().as_secs_f64(),
        connected(addr(&bot))
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
    let after = proc_status(bot.pid());
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
    fake: &FakeWebApi,
    runners: &[Runner],
    verdict: &Verdict,
    opts: &Opts,
) -> Result<SlackResult> {
    let mut http = Http::new(addr(bot));
    let mut rng = Rng::new();
    let (mut relay, mut answered, mut posted) = (Vec::new(), Vec::new(), Vec::new());
    let mut failures = Vec::new();
    let total = opts.warmup + opts.slack_relays;
    for i in 0..total {
        // The first round's failure is a setup problem: stop and say why.
        let fail = |failures: &mut Vec<String>, e: String| -> Result<()> {
            if i == 0 {
                return Err(format!("{e}\nbot log:\n{}", bot.log_tail(20)).into());
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
        let ts = holdpoint_testkit::now();
        let click = slack::click(REVIEWER, "hp_approve", &format!("{id}:{hash}"), CHANNEL);
        let body = format!("payload={}", slack::form_encode(&click.to_string()));
        let signature = slack::sign(SECRET, ts, &body);
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

//! Escalation under load: how long after its due time each step fires and
//! reaches Slack while N requests (default 1,000) are pending at once.
//!
//! The real `holdpoint-bot serve` runs with Slack pointed at an in-process
//! Web API stand-in that answers at once, a policy of a reminder after
//! `--after` seconds (default 15) and a pager-channel post five seconds
//! later, and a ten-minute expiry. N runners each submit one request, all
//! before the first step is due; then the bench waits until every step is
//! delivered and reads, by plain SQL on the bot's database, each step's due
//! time, when the sweep fired it and when its delivery to Slack was
//! recorded (after Slack answered).
//!
//! `cargo bench -p holdpoint-bot --bench escalation -- [--pending N]
//! [--after S] [--postgres]` (`--profile dev` for a quick debug build); `HOLDPOINT_BOT_BIN` runs another build of the bot,
//! `HOLDPOINT_LOG` sets its log level (default `warn`).

use futures_util::{StreamExt, stream};
use holdpoint_testkit::load::fleet::{Shared, close_runners, connect_many, submit};
use holdpoint_testkit::load::slack_api::FakeWebApi;
use holdpoint_testkit::slack;
use holdpoint_testkit::{Backend, BotOptions, Database, review};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

const PAGER: &str = "C0PAGER01";

fn main() -> std::process::ExitCode {
    let mut pending = 1000usize;
    let mut after = 15u64;
    let mut postgres = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value =
            |args: &mut dyn Iterator<Item = String>| args.next().and_then(|v| v.parse().ok());
        match a.as_str() {
            "--pending" => match value(&mut args) {
                Some(n) => pending = n,
                None => return usage("--pending wants a number"),
            },
            "--after" => match value(&mut args) {
                Some(n) => after = n as u64,
                None => return usage("--after wants a number of seconds"),
            },
            "--postgres" => postgres = true,
            // cargo bench passes --bench.
            "--bench" => {}
            other => return usage(&format!("unknown argument {other}")),
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("escalation bench: cannot start a runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(pending, after, postgres)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("escalation bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn usage(why: &str) -> std::process::ExitCode {
    eprintln!(
        "escalation bench: {why}\nusage: escalation [--pending N] [--after SECONDS] [--postgres]"
    );
    std::process::ExitCode::FAILURE
}

fn bot_binary() -> PathBuf {
    std::env::var_os("HOLDPOINT_BOT_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_holdpoint-bot")))
}

fn pct(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn line(label: &str, mut v: Vec<i64>) {
    v.sort_unstable();
    println!(
        "  {label:<40} p50 {:>6} ms  p99 {:>6} ms  max {:>6} ms  (n={})",
        pct(&v, 0.50),
        pct(&v, 0.99),
        v.last().copied().unwrap_or(0),
        v.len()
    );
}

async fn run(pending: usize, after: u64, postgres: bool) -> Result<()> {
    let bin = bot_binary();
    let fake = FakeWebApi::start().await?;
    let mut options = BotOptions::new()
        .bin(&bin)
        .log(&std::env::var("HOLDPOINT_LOG").unwrap_or_else(|_| "warn".into()))
        .env("HOLDPOINT_LIMIT_CONNECTIONS_PER_RUNNER", "1000000")
        .env("HOLDPOINT_LIMIT_PENDING_PER_RUNNER", "1000000")
        .env("HOLDPOINT_LIMIT_SUBMISSIONS_PER_SECOND", "1000000")
        .env("HOLDPOINT_EXPIRY", "10m")
        .env("HOLDPOINT_SLACK_PAGER_CHANNEL", PAGER)
        .config(&format!(
            "[[escalation.policies]]\nname = \"bench\"\nsteps = [\n  \
             {{ after = \"{after}s\", action = \"remind\" }},\n  \
             {{ after = \"{}s\", action = \"notify\" }},\n]\n",
            after + 5
        ))
        .raise_open_files();
    if postgres {
        let db = Database::of(Backend::Postgres).ok_or("no PostgreSQL server reachable")?;
        options = options.database(db);
    }
    for (k, v) in slack::bot_env(&fake.api_url(), slack::Mode::Http) {
        options = options.env(k, v);
    }
    let bot = tokio::task::block_in_place(|| options.try_start())?;
    let addr = SocketAddr::from(([127, 0, 0, 1], bot.port));
    println!(
        "holdpoint-bot escalation bench: {pending} pending requests on {}",
        if postgres { "PostgreSQL" } else { "SQLite" }
    );
    println!("  bot binary: {}", bin.display());
    println!(
        "  build: {}",
        if cfg!(debug_assertions) {
            "debug (not representative of production)"
        } else {
            "optimised"
        }
    );
    println!(
        "  policy: remind after {after}s, notify after {}s; expiry 10m",
        after + 5
    );

    let shared = Arc::new(Shared::default());
    let t = Instant::now();
    let (runners, errors) =
        connect_many(addr, std::slice::from_ref(&bot.token), 0, pending, &shared).await;
    if !errors.is_empty() {
        return Err(format!("{} runners could not connect: {}", errors.len(), errors[0]).into());
    }
    let results: Vec<Result<(), String>> = stream::iter(runners.iter())
        .map(|r| async move {
            let req = review("git push --force origin main")
                .agent("escalation-bench")
                .build();
            submit(r, req).await.map(drop).map_err(|e| e.to_string())
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    if let Some(first) = failed.first() {
        return Err(format!("{} submissions failed: {first}", failed.len()).into());
    }
    let submitted_in = t.elapsed();
    println!(
        "  {pending} runners connected and submitted in {:.1} s",
        submitted_in.as_secs_f64()
    );
    if submitted_in >= Duration::from_secs(after) {
        println!("  WARNING: submitting took longer than --after; steps came due meanwhile");
    }

    use sea_orm::{ConnectionTrait, Statement};
    let db = sea_orm::Database::connect(&bot.database_url).await?;
    let backend = db.get_database_backend();
    let want = 2 * pending as i64;
    let deadline = Instant::now() + Duration::from_secs(after + 5 + 120);
    loop {
        let row = db
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT COUNT(*) AS n FROM escalation_sends WHERE adapter = 'slack' AND sent_at IS NOT NULL",
            ))
            .await?;
        let n: i64 = row.map(|r| r.try_get("", "n")).transpose()?.unwrap_or(0);
        if n >= want {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {n} of {want} steps were delivered in time").into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT st.action AS action, st.due_at AS due_at, st.fired_at AS fired_at, \
             se.sent_at AS sent_at FROM escalation_steps st JOIN escalation_sends se \
             ON se.request_id = st.request_id AND se.step = st.step AND se.adapter = 'slack'",
        ))
        .await?;
    let mut fired = [Vec::new(), Vec::new()];
    let mut sent = [Vec::new(), Vec::new()];
    for r in rows {
        let action: String = r.try_get("", "action")?;
        let due: i64 = r.try_get("", "due_at")?;
        let f: Option<i64> = r.try_get("", "fired_at")?;
        let s: Option<i64> = r.try_get("", "sent_at")?;
        let i = usize::from(action == "notify");
        if let Some(f) = f {
            fired[i].push(f - due);
        }
        if let Some(s) = s {
            sent[i].push(s - due);
        }
    }
    println!("\n  step due → fired by the sweep, and → delivery recorded after Slack answered:");
    line("remind: due → fired", fired[0].clone());
    line("remind: due → delivered", sent[0].clone());
    line("notify: due → fired", fired[1].clone());
    line("notify: due → delivered", sent[1].clone());
    let all: Vec<i64> = sent.iter().flatten().copied().collect();
    line("every step: due → delivered", all);
    let calls = fake.calls();
    println!(
        "\n  Slack calls: chat.postMessage {} (request messages, reminders and pager posts: {} expected)",
        calls.get("chat.postMessage").copied().unwrap_or(0),
        3 * pending
    );
    db.close().await?;
    close_runners(runners).await;
    Ok(())
}

//! `holdpoint-bot`: the approval server and its administration commands.

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use holdpoint_bot::config::{Config, LogFormat};
use holdpoint_bot::core::ExportFormat as Format;
use holdpoint_bot::core::{PendingQueue, RunnerQueue};
use holdpoint_bot::time::{human_duration, parse_since, rfc3339};
use holdpoint_bot::{Bot, Decided, Intent, Realm, Reviewer, StoredRequest};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// How many of one runner's pending requests `requests list` prints.
const LISTED_PER_RUNNER: u64 = 100;
/// How many pending requests `requests list` prints in all.
const LISTED: u64 = 1000;

#[derive(Parser)]
#[command(
    name = "holdpoint-bot",
    version,
    about = "Holds risky agent commands until a human approves or denies them"
)]
struct Cli {
    /// The configuration file (default: HOLDPOINT_CONFIG, then
    /// ~/.config/holdpoint/bot.toml if it exists).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Register, list and revoke runners.
    Runner {
        #[command(subcommand)]
        action: RunnerAction,
    },
    /// List requests.
    Requests {
        #[command(subcommand)]
        action: RequestsAction,
    },
    /// Approve a pending request (the id or a unique prefix of it).
    Approve {
        id: String,
        /// An optional note kept with the decision.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a pending request; the reason reaches the agent.
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Check or export the audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Print the audit digest of a period (what agents ran, what was held,
    /// who decided and how fast), send it now, or say when the next one is
    /// due.
    Digest {
        #[command(subcommand)]
        action: Option<DigestAction>,
        /// Where the period starts: a duration back from now (`7d`) or a
        /// date (`2026-11-23`, RFC 3339).
        #[arg(long, default_value = "7d")]
        since: String,
        /// Where it ends (default now).
        #[arg(long)]
        until: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: holdpoint_bot::digest::Format,
        /// Have the running bot send it now to the digest's Slack channels
        /// and Matrix rooms.
        #[arg(long)]
        send: bool,
        /// Also write its charts (PNG) into this directory.
        #[arg(long, value_name = "DIR")]
        charts: Option<PathBuf>,
    },
    /// Print a new single-use login link for the web queue.
    LoginLink {
        /// The reviewer name shown with decisions made in that browser.
        #[arg(long, default_value = "local")]
        name: String,
    },
}

#[derive(Subcommand)]
enum DigestAction {
    /// When the next scheduled digest is due, and the last one sent.
    Next,
}

#[derive(Subcommand)]
enum RunnerAction {
    /// Register a runner and print its token (shown only this once).
    Add { name: String },
    /// List runners.
    List,
    /// Revoke a runner's token; its open connections close at once.
    Revoke { name: String },
}

#[derive(Subcommand)]
enum RequestsAction {
    /// Pending requests (each runner's newest 100, oldest first), then the
    /// latest decisions.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this runner's pending requests, newest first.
        #[arg(long)]
        runner: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check that the hash chain is unbroken.
    Verify,
    /// Export the log.
    Export {
        /// A date (2026-11-01, 2026-11-01T12:00:00Z) or an age (7d, 24h).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOLDPOINT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("holdpoint-bot: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("holdpoint-bot: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn open(config: Config) -> Result<Arc<Bot>> {
    Ok(Arc::new(Bot::open(config).await?))
}

fn cli_reviewer() -> Reviewer {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| std::env::var("LOGNAME").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    Reviewer::new(Realm::Cli, user)
}

async fn resolve(bot: &Bot, id: &str) -> Result<String> {
    if holdpoint_shared::protocol::is_hex(id, 32) {
        return Ok(id.to_string());
    }
    if id.len() < 6 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{id:?} is not a request id (32 hex digits, or a unique prefix of at least 6)");
    }
    let id = id.to_ascii_lowercase();
    let mut matches: Vec<StoredRequest> = bot.with_id_prefix(&id, 2).await?;
    match matches.len() {
        1 => Ok(matches.remove(0).request.id),
        0 => bail!("no request starts with {id}"),
        _ => bail!("more than one request starts with {id}: give more digits"),
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    let command = cli.command.unwrap_or(Command::Serve);
    if matches!(command, Command::Serve) {
        init_logging(config.log_format);
    }
    match command {
        Command::Serve => {
            let bot = open(config).await?;
            holdpoint_bot::server::serve(bot).await?;
        }
        Command::Migrate => {
            Bot::migrate(&config).await?;
            println!("migrations applied to {}", config.database_display());
        }
        Command::Runner { action } => {
            let bot = open(config).await?;
            match action {
                RunnerAction::Add { name } => {
                    let token = bot.add_runner(&name).await?;
                    eprintln!("Registered runner {name}. Its token is shown only now:");
                    println!("{token}");
                    eprintln!(
                        "On the runner's machine:\n  export HOLDPOINT_URL={}\n  export HOLDPOINT_TOKEN={token}",
                        bot.config().base_url()
                    );
                }
                RunnerAction::List => {
                    println!("{:<24} {:<10} {:<25} LAST SEEN", "NAME", "STATE", "CREATED");
                    for r in bot.runners().await? {
                        println!(
                            "{:<24} {:<10} {:<25} {}",
                            r.name,
                            if r.revoked_at.is_some() {
                                "revoked"
                            } else {
                                "active"
                            },
                            rfc3339(r.created_at),
                            r.last_seen_at
                                .map(rfc3339)
                                .unwrap_or_else(|| "never".into())
                        );
                    }
                }
                RunnerAction::Revoke { name } => {
                    bot.revoke_runner(&name).await?;
                    println!("revoked {name}; its token no longer connects");
                }
            }
        }
        Command::Requests {
            action: RequestsAction::List { json, runner },
        } => {
            let bot = open(config).await?;
            let queue = match runner.as_deref() {
                Some(name) => {
                    let requests = bot.pending_of(name, None, LISTED_PER_RUNNER).await?;
                    let total = bot.pending_count_of(name).await?;
                    PendingQueue {
                        runners: vec![RunnerQueue {
                            runner: name.to_string(),
                            pending: total,
                            shown: requests.len() as u64,
                        }],
                        requests,
                        total,
                    }
                }
                None => bot.pending_fair(LISTED_PER_RUNNER, LISTED).await?,
            };
            let recent = bot.recent(20).await?;
            if json {
                let v = serde_json::json!({
                    "pending": queue.requests,
                    "pending_total": queue.total,
                    "runners": queue.runners,
                    "recent": recent,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let now = bot.now_ms();
                let pending = &queue.requests;
                if pending.len() as u64 == queue.total {
                    println!("{} pending", queue.total);
                } else {
                    println!("{} pending, {} shown", queue.total, pending.len());
                    for q in queue.runners.iter().filter(|q| q.shown < q.pending) {
                        println!(
                            "  {} has {} pending; its newest {} are shown (`--runner {}` lists them)",
                            q.runner, q.pending, q.shown, q.runner
                        );
                    }
                }
                for r in pending {
                    println!(
                        "  {}  {:<8} {:<14} expires in {:<8} {}",
                        r.request.id,
                        r.request.risk().as_str(),
                        r.runner,
                        human_duration(r.expires_at - now),
                        one_line(&r.request.command)
                    );
                }
                println!("{} recent", recent.len());
                for r in &recent {
                    println!(
                        "  {}  {:<9} by {:<16} {}",
                        r.request.id,
                        r.status.as_str(),
                        r.decided_by.as_deref().unwrap_or("-"),
                        one_line(&r.request.command)
                    );
                }
            }
        }
        Command::Approve { id, reason } => {
            let bot = open(config).await?;
            let id = resolve(&bot, &id).await?;
            let intent = Intent::Approve { reason };
            return report(bot.decide(&cli_reviewer(), &id, None, intent).await?);
        }
        Command::Deny { id, reason } => {
            let bot = open(config).await?;
            let id = resolve(&bot, &id).await?;
            let intent = Intent::Deny {
                reason: Some(reason),
            };
            return report(bot.decide(&cli_reviewer(), &id, None, intent).await?);
        }
        Command::Audit { action } => {
            let bot = open(config).await?;
            match action {
                AuditAction::Verify => {
                    let v = bot.verify_audit().await?;
                    match v.broken {
                        None => println!(
                            "ok: {} rows, the hash chain is unbroken (head {})",
                            v.rows, v.head
                        ),
                        Some((seq, why)) => {
                            println!("BROKEN at row {seq}: {why}");
                            return Ok(ExitCode::FAILURE);
                        }
                    }
                }
                AuditAction::Export { since, format } => {
                    let since = match since {
                        Some(s) => parse_since(&s, bot.now_ms()).map_err(anyhow::Error::msg)?,
                        None => i64::MIN,
                    };
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    let n = bot.export_audit(since, format, &mut out).await?;
                    std::io::Write::flush(&mut out).context("writing the export")?;
                    eprintln!("{n} rows");
                }
            }
        }
        Command::Digest {
            action,
            since,
            until,
            format,
            send,
            charts,
        } => {
            let bot = open(config).await?;
            let now = bot.now_ms();
            if let Some(DigestAction::Next) = action {
                let Some(cfg) = bot.config().digest.clone() else {
                    bail!(
                        "no digest is scheduled: set [digest] schedule in the bot's configuration"
                    );
                };
                match cfg.next_after(now) {
                    Some(t) => println!(
                        "next digest: {} ({} from now; schedule {:?} in {}, covering {})",
                        rfc3339(t),
                        human_duration(t - now),
                        cfg.source,
                        cfg.timezone,
                        human_duration(i64::try_from(cfg.period.as_millis()).unwrap_or(i64::MAX))
                    ),
                    None => println!("the schedule {:?} has no next time", cfg.source),
                }
                match bot.last_digest().await? {
                    Some((due, sent, late)) => println!(
                        "last sent: {} for the one due {}{}",
                        rfc3339(sent),
                        rfc3339(due),
                        if late { " (late)" } else { "" }
                    ),
                    None => println!("none sent yet"),
                }
                return Ok(ExitCode::SUCCESS);
            }
            let from = parse_since(&since, now).map_err(anyhow::Error::msg)?;
            let until = match until {
                Some(u) => parse_since(&u, now).map_err(anyhow::Error::msg)?,
                None => now,
            };
            if until <= from {
                bail!("--until must come after --since");
            }
            let period = holdpoint_bot::core::digest::Period { from, until };
            if send {
                if bot.config().digest.is_none() {
                    bail!("no digest destinations: set [digest] in the bot's configuration");
                }
                bot.ask_for_digest(period).await?;
                println!(
                    "asked the running bot to send {}; it sends within {} s",
                    holdpoint_bot::digest::title(period),
                    holdpoint_bot::digest::TICK.as_secs()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let report = bot.digest(period).await?;
            if let Some(dir) = charts {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                for c in holdpoint_bot::chart::charts(&report) {
                    let path = dir.join(c.name);
                    std::fs::write(&path, &c.png)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!(
                        "wrote {} ({}×{}): {}",
                        path.display(),
                        c.width,
                        c.height,
                        c.alt
                    );
                }
            }
            print!(
                "{}",
                holdpoint_bot::digest::render(&report, format, &bot.config().base_url())
            );
        }
        Command::LoginLink { name } => {
            let bot = open(config).await?;
            let base = bot.config().base_url();
            println!(
                "{}",
                holdpoint_bot::web::login_link(&bot, &base, &name).await?
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A command on one line, with control characters made visible.
fn one_line(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(100)
        .map(|c| if c.is_control() { '⏎' } else { c })
        .collect();
    if s.chars().count() > 100 {
        out.push('…');
    }
    out
}

/// A refusal as the command line says it.
fn refusal(r: &holdpoint_bot::Refusal) -> String {
    use holdpoint_bot::Refusal as R;
    let text = match r {
        R::OwnRequest => "you asked for this command to run, so someone else must approve it",
        R::CommandChanged => "the command changed since it was shown",
        R::NotAReviewer => "not one of the reviewers",
        R::DirectoryUnavailable => "the reviewer list could not be checked; nothing was decided",
        R::OtherRunner => "another runner submitted this request",
        R::AlreadyVoted => "this person's approval is counted already",
        R::GroupsNeeded(_) => return r.to_string(),
    };
    text.to_string()
}

fn report(d: Decided) -> Result<ExitCode> {
    match d {
        Decided::Won(d) => {
            println!("{} {}", d.status, d.request_id);
            Ok(ExitCode::SUCCESS)
        }
        Decided::Already(d) => {
            println!(
                "already {} by {} at {}{}",
                d.status,
                d.decided_by,
                rfc3339(d.decided_at),
                d.reason.map(|r| format!(": {r}")).unwrap_or_default()
            );
            Ok(ExitCode::from(3))
        }
        Decided::Voted {
            approvals,
            required,
            missing,
        } => {
            let from = if missing.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} among them",
                    holdpoint_bot::core::groups_needed(&missing)
                )
            };
            println!("approval counted: {approvals} of {required}; it waits for more{from}");
            Ok(ExitCode::SUCCESS)
        }
        Decided::Refused(why) => {
            println!("refused: {}", refusal(&why));
            Ok(ExitCode::from(4))
        }
        Decided::NotFound => {
            println!("no such request");
            Ok(ExitCode::from(2))
        }
    }
}

//! `holdpoint`: the runner's command line, over the `holdpoint_runner`
//! library. It parses the arguments and hands them to a front end; a panic
//! anywhere refuses.

#![forbid(unsafe_code)]

use anyhow::Result;
use clap::{Parser, Subcommand};
use holdpoint_runner::{bot, config, front, gate, hooks, spool};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "holdpoint",
    version,
    about = "An approval gate for the commands autonomous agents run"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify commands without running them. With no COMMAND, reads one
    /// command per line on stdin and writes one JSON object per line.
    Check {
        /// A policy file layered over the built-in one (default: HOLDPOINT_POLICY,
        /// then ~/.config/holdpoint/policy.toml).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Explain, in prose, which part of the line hit which rule.
        #[arg(long)]
        explain: bool,
        /// Classify as if run from this directory (default: the current one).
        #[arg(long)]
        cwd: Option<String>,
        /// Also show, as text after the verdict, the risk annotations a
        /// reviewer would see (read-only probes; none for allowed commands).
        #[arg(long)]
        annotate: bool,
        /// Classify every command of FILE (one a line, or labelled corpus
        /// lines) and report the share allowed, reviewed and denied, and the
        /// rules and unknown programs that hold most.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["command", "explain", "annotate"])]
        stats: Option<PathBuf>,
        /// The command line to classify.
        command: Option<String>,
    },
    /// Check or show policies.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Run ARGV if the policy allows it; refuse it otherwise.
    Exec {
        #[arg(long)]
        policy: Option<PathBuf>,
        /// The program and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        argv: Vec<String>,
    },
    /// A shell for agents: `holdpoint sh -c STRING` runs STRING through the real
    /// shell if the policy allows it (usable as an agent's SHELL).
    Sh {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The local audit spool.
    Spool {
        #[command(subcommand)]
        action: SpoolAction,
    },
    /// Agent hooks.
    Hook {
        #[command(subcommand)]
        agent: HookAgent,
    },
    /// An MCP server on stdio with a gated run_command tool (runs
    /// holdpoint-mcp from beside this binary).
    Mcp {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum PolicyAction {
    /// Check every rule's examples (the built-in policy plus FILE, or the
    /// configured user policy).
    Test { file: Option<PathBuf> },
    /// Print the effective policy as TOML.
    Show {
        #[arg(long)]
        policy: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SpoolAction {
    /// Send the spooled audit events to the bot now.
    Flush {
        /// Print nothing (used when the runner starts a flusher itself).
        #[arg(long)]
        quiet: bool,
    },
    /// Show how many events wait to be sent.
    Status,
}

#[derive(Subcommand)]
enum HookAgent {
    /// Claude Code's PreToolUse and PermissionRequest hooks.
    ClaudeCode(HookArgs),
    /// Codex CLI's PreToolUse and PermissionRequest hooks.
    Codex(HookArgs),
    /// Gemini CLI's BeforeTool hook.
    Gemini(HookArgs),
    /// GitHub Copilot CLI's preToolUse hook.
    Copilot(HookArgs),
    /// Cursor's beforeShellExecution hook.
    Cursor(HookArgs),
}

/// What every hook takes: JSON on stdin, the agent's answer on stdout.
#[derive(clap::Args)]
struct HookArgs {
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The hook's time limit in seconds, as configured in the agent
    /// (default: the agent's documented default, or HOLDPOINT_HOOK_TIMEOUT).
    /// holdpoint stops waiting for a reviewer a little before it.
    #[arg(long, value_parser = hooks::parse_seconds)]
    timeout: Option<std::time::Duration>,
    /// Hand commands that need review to the user at the agent's own prompt
    /// instead of the bot, where the agent has such a prompt
    /// (also HOLDPOINT_HOOK_ASK=1).
    #[arg(long)]
    ask: bool,
}

impl HookArgs {
    fn run(self, agent: hooks::Agent) -> ExitCode {
        hooks::run(
            agent,
            &hooks::Options {
                policy: self.policy,
                timeout: self.timeout,
                ask_locally: self.ask,
            },
        )
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // A bug must refuse, never let a command through: hook hosts treat exit
    // code 2 as "blocked", other callers see that nothing ran.
    let refusal: u8 = if args.get(1).is_some_and(|a| a == "hook") {
        2
    } else {
        gate::EXIT_GATE_ERROR as u8
    };
    match std::panic::catch_unwind(|| real_main(&args)) {
        Ok(code) => code,
        Err(_) => {
            eprintln!("holdpoint: internal error; refusing");
            ExitCode::from(refusal)
        }
    }
}

fn real_main(args: &[String]) -> ExitCode {
    // Used as SHELL, holdpoint is called as `holdpoint -c STRING` (or `-lc`).
    if args.get(1).is_some_and(|a| front::looks_like_shell_flag(a)) {
        return front::sh(&args[1..], None);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("holdpoint: {e:#}");
            ExitCode::from(gate::EXIT_GATE_ERROR as u8)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check {
            policy,
            explain,
            cwd,
            annotate,
            stats,
            command,
        } => match stats {
            Some(file) => front::check_stats(policy.as_deref(), cwd, &file),
            None => front::check(policy.as_deref(), explain, cwd, command, annotate),
        },
        Command::Policy { action } => match action {
            PolicyAction::Test { file } => front::policy_test(file.as_deref()),
            PolicyAction::Show { policy } => {
                let p = config::load_policy(policy.as_deref())?;
                print!("{}", p.to_toml());
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Exec { policy, argv } => Ok(front::exec(&argv, policy.as_deref())),
        Command::Sh { args } => Ok(front::sh(&args, None)),
        Command::Spool { action } => spool_command(action),
        Command::Mcp { args } => Ok(holdpoint_runner::mcp::exec(&args)),
        Command::Hook { agent } => Ok(match agent {
            HookAgent::ClaudeCode(a) => a.run(hooks::Agent::ClaudeCode),
            HookAgent::Codex(a) => a.run(hooks::Agent::Codex),
            HookAgent::Gemini(a) => a.run(hooks::Agent::Gemini),
            HookAgent::Copilot(a) => a.run(hooks::Agent::Copilot),
            HookAgent::Cursor(a) => a.run(hooks::Agent::Cursor),
        }),
    }
}

fn spool_command(action: SpoolAction) -> Result<ExitCode> {
    let dir = spool::dir()
        .ok_or_else(|| anyhow::anyhow!("no spool directory: set HOLDPOINT_SPOOL_DIR or HOME"))?;
    match action {
        SpoolAction::Status => {
            println!("{}", spool::status(&dir));
            Ok(ExitCode::SUCCESS)
        }
        SpoolAction::Flush { quiet } => {
            let Some(cfg) = bot::BotConfig::load()? else {
                anyhow::bail!("no bot is configured (set HOLDPOINT_URL and HOLDPOINT_TOKEN)");
            };
            let (linger, give_up) = if quiet {
                (
                    std::time::Duration::from_secs(5),
                    std::time::Duration::from_secs(30),
                )
            } else {
                (
                    std::time::Duration::ZERO,
                    std::time::Duration::from_secs(10),
                )
            };
            let done = spool::flush(&cfg, &dir, linger, give_up)?;
            if !quiet {
                println!(
                    "sent {} events ({} unreadable lines skipped)",
                    done.sent, done.skipped
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

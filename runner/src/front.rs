//! The front ends. They differ only in how they read a command and report
//! the answer; the decision itself is [`gate::settle`].

use crate::config;
use crate::gate::{self, Outcome};
use crate::project;
use anyhow::{Context as _, Result};
use holdpoint_shared::{Context, Decision, Policy, Verdict};
use serde::Serialize;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::ExitCode;

fn code(c: i32) -> ExitCode {
    ExitCode::from(c.clamp(0, 255) as u8)
}

/// One line of `holdpoint check` output.
#[derive(Serialize)]
struct CheckLine<'a> {
    command: &'a str,
    decision: Decision,
    risk: holdpoint_shared::Risk,
    rules: Vec<&'a str>,
    reasons: Vec<&'a str>,
}

fn check_line<'a>(command: &'a str, v: &'a Verdict) -> CheckLine<'a> {
    CheckLine {
        command,
        decision: v.decision,
        risk: v.risk,
        rules: v.deciding_rules(),
        reasons: v.deciding_reasons(),
    }
}

/// The context of this process (or of `cwd`), with the project root found
/// once; [`project::establish`] adds each line's link facts.
fn check_context(cwd: Option<String>) -> Context {
    let mut ctx = Context::from_process();
    if let Some(c) = cwd {
        let abs = if c.starts_with('/') {
            c
        } else {
            format!("{}/{c}", ctx.cwd.clone().unwrap_or_default())
        };
        ctx = ctx.with_cwd(abs);
    }
    ctx.project = project::project_root(&ctx);
    ctx
}

pub fn check(
    policy: Option<&Path>,
    explain: bool,
    cwd: Option<String>,
    command: Option<String>,
    annotate: bool,
) -> Result<ExitCode> {
    let policy = config::load_policy(policy)?;
    let mut ctx = check_context(cwd);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut one = |line: &str, out: &mut dyn Write| -> Result<()> {
        project::establish(&mut ctx, &policy, line);
        let v = policy.classify(line, &ctx);
        if explain {
            write_explanation(out, line, &v)?;
        } else {
            serde_json::to_writer(&mut *out, &check_line(line, &v))?;
            writeln!(out)?;
        }
        if annotate {
            let opts = crate::annotate::AnnotateOptions::from_env();
            for a in crate::annotate::annotate(line, &ctx, &v, &opts) {
                write!(out, "{}", a.render_text())?;
            }
        }
        Ok(())
    };
    match command {
        Some(c) => one(&c, &mut out)?,
        None => {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                let line = line.context("reading commands from stdin")?;
                if line.trim().is_empty() {
                    continue;
                }
                one(&line, &mut out)?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// What `holdpoint check --stats FILE` counts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub allowed: usize,
    pub reviewed: usize,
    pub denied: usize,
    /// Rules that decided a held command, with how many they held.
    pub rules: Vec<(String, usize)>,
    /// Programs no rule vouches for, with how many commands they held.
    pub unknown: Vec<(String, usize)>,
}

impl Stats {
    pub fn total(&self) -> usize {
        self.allowed + self.reviewed + self.denied
    }
}

/// The command of one line of a stats file: a command per line, or a
/// labelled corpus line (`safe<TAB>ls`); blank lines and `#` comments are
/// skipped.
fn stats_command(line: &str) -> Option<&str> {
    const LABELS: &[&str] = &["allow", "safe", "review", "deny", "gated", "risky"];
    if line.trim().is_empty() || line.trim_start().starts_with('#') {
        return None;
    }
    match line.split_once('\t') {
        Some((label, cmd)) if LABELS.contains(&label) => Some(cmd),
        _ => Some(line),
    }
}

/// Classifies every command of `text` and counts the decisions, the rules
/// that hold and the unknown programs.
pub fn stats(policy: &Policy, ctx: &mut Context, text: &str) -> Stats {
    use std::collections::HashMap;
    let mut s = Stats::default();
    let mut rules: HashMap<String, usize> = HashMap::new();
    let mut unknown: HashMap<String, usize> = HashMap::new();
    for line in text.lines() {
        let Some(cmd) = stats_command(line) else {
            continue;
        };
        project::establish(ctx, policy, cmd);
        let v = policy.classify(cmd, ctx);
        match v.decision {
            Decision::Allow => {
                s.allowed += 1;
                continue;
            }
            Decision::Review => s.reviewed += 1,
            Decision::Deny => s.denied += 1,
        }
        for r in v.deciding_rules() {
            *rules.entry(r.to_string()).or_default() += 1;
        }
        let mut seen = Vec::new();
        for h in v.hits.iter().filter(|h| h.rule == "gate.unknown") {
            let program = h.part.split_whitespace().next().unwrap_or("").to_string();
            if !program.is_empty() && !seen.contains(&program) {
                *unknown.entry(program.clone()).or_default() += 1;
                seen.push(program);
            }
        }
    }
    let sorted = |m: HashMap<String, usize>| {
        let mut v: Vec<(String, usize)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    };
    s.rules = sorted(rules);
    s.unknown = sorted(unknown);
    s
}

fn share(n: usize, total: usize) -> String {
    if total == 0 {
        return "0.0%".into();
    }
    format!("{:.1}%", n as f64 * 100.0 / total as f64)
}

/// `holdpoint check --stats FILE`: how often a file of commands would run
/// at once, wait for a reviewer or be refused, and what holds them.
pub fn check_stats(policy: Option<&Path>, cwd: Option<String>, file: &Path) -> Result<ExitCode> {
    let policy = config::load_policy(policy)?;
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the commands in {}", file.display()))?;
    let mut ctx = check_context(cwd);
    let s = stats(&policy, &mut ctx, &text);
    let total = s.total();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    writeln!(out, "commands: {total}")?;
    writeln!(
        out,
        "allowed:  {:>6}  {}",
        s.allowed,
        share(s.allowed, total)
    )?;
    writeln!(
        out,
        "reviewed: {:>6}  {}",
        s.reviewed,
        share(s.reviewed, total)
    )?;
    writeln!(out, "denied:   {:>6}  {}", s.denied, share(s.denied, total))?;
    const TOP: usize = 15;
    if !s.rules.is_empty() {
        writeln!(out, "rules that hold most:")?;
        for (r, n) in s.rules.iter().take(TOP) {
            writeln!(out, "  {n:>6}  {r}")?;
        }
    }
    if !s.unknown.is_empty() {
        writeln!(out, "unknown programs that hold most:")?;
        for (p, n) in s.unknown.iter().take(TOP) {
            writeln!(out, "  {n:>6}  {}", holdpoint_shared::shell::shorten(p, 60))?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn write_explanation(out: &mut dyn Write, line: &str, v: &Verdict) -> Result<()> {
    writeln!(out, "command:  {line}")?;
    writeln!(out, "decision: {} ({} risk)", v.decision, v.risk)?;
    for h in &v.hits {
        let mark = if h.decision == v.decision { "*" } else { " " };
        writeln!(
            out,
            " {mark} {:<6} {:<8} {}",
            h.decision.as_str(),
            h.risk.as_str(),
            h.rule
        )?;
        if !h.part.is_empty() {
            writeln!(out, "       on:  {}", h.part)?;
        }
        writeln!(out, "       why: {}", h.reason)?;
    }
    writeln!(out)?;
    Ok(())
}

pub fn policy_test(file: Option<&Path>) -> Result<ExitCode> {
    let policy = match file {
        Some(_) => config::load_policy(file),
        None => config::load_policy(None),
    };
    let policy = match policy {
        Ok(p) => p,
        Err(e) => {
            eprintln!("holdpoint: the policy does not load:\n{e:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let failures = policy.check_examples(None);
    let examples: usize = policy.len();
    if failures.is_empty() {
        println!("ok: {examples} rules, every example behaves as written");
        Ok(ExitCode::SUCCESS)
    } else {
        for f in &failures {
            println!("FAIL {f}");
        }
        println!("{} example(s) failed", failures.len());
        Ok(ExitCode::FAILURE)
    }
}

fn load_or_refuse(policy: Option<&Path>) -> Result<Policy, ExitCode> {
    config::load_policy(policy).map_err(|e| {
        eprintln!("holdpoint: refusing to run anything: the policy does not load: {e:#}");
        code(gate::EXIT_GATE_ERROR)
    })
}

/// `holdpoint exec -- ARGV…`: the words are the command; no shell is involved.
pub fn exec(argv: &[String], policy: Option<&Path>) -> ExitCode {
    let policy = match load_or_refuse(policy) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let line = gate::shell_join(argv);
    let mut ctx = Context::from_process();
    project::establish(&mut ctx, &policy, &line);
    let (_, outcome) = gate::settle(
        &policy,
        &gate::Invocation {
            line: &line,
            ctx: &ctx,
            front_end: "exec",
            agent: agent_from_env(),
            session: None,
        },
    );
    match outcome {
        Outcome::Run => {
            let err = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
            eprintln!("holdpoint: cannot run {}: {err}", argv[0]);
            code(if err.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            })
        }
        Outcome::Refuse { code: c, message } => {
            eprintln!("{message}");
            code(c)
        }
    }
}

/// The agent's name from `HOLDPOINT_AGENT`, if set.
fn agent_from_env() -> Option<String> {
    std::env::var("HOLDPOINT_AGENT")
        .ok()
        .map(|a| a.trim().chars().take(64).collect::<String>())
        .filter(|a| !a.is_empty())
}

/// Whether an argument is a shell's option word that includes `-c`.
pub fn looks_like_shell_flag(a: &str) -> bool {
    a.len() >= 2
        && a.starts_with('-')
        && !a.starts_with("--")
        && a[1..].bytes().all(|b| b.is_ascii_alphabetic())
        && a.contains('c')
}

/// `holdpoint sh -c STRING [NAME [ARGS…]]`, and holdpoint used as SHELL.
pub fn sh(args: &[String], policy: Option<&Path>) -> ExitCode {
    let mut flags: Vec<String> = Vec::new();
    let mut i = 0;
    let mut has_c = false;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        if a.starts_with('-')
            && a.len() > 1
            && !a.starts_with("--")
            && a[1..].bytes().all(|b| b.is_ascii_alphabetic())
        {
            has_c |= a.contains('c');
            flags.push(a.clone());
            i += 1;
            continue;
        }
        if a == "-o" || a == "+o" {
            flags.push(a.clone());
            if let Some(v) = args.get(i + 1) {
                flags.push(v.clone());
            }
            i += 2;
            continue;
        }
        if a.starts_with("--") {
            flags.push(a.clone());
            i += 1;
            continue;
        }
        break;
    }
    if !has_c {
        eprintln!(
            "holdpoint: only `-c STRING` is supported: an interactive shell or a script file would run commands the gate cannot see"
        );
        return code(gate::EXIT_NOT_APPROVED);
    }
    let Some(script) = args.get(i) else {
        eprintln!("holdpoint: -c needs a command string");
        return code(2);
    };
    let rest = &args[i + 1..];
    let policy = match load_or_refuse(policy) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let mut ctx = Context::from_process();
    project::establish(&mut ctx, &policy, script);
    let (_, outcome) = gate::settle(
        &policy,
        &gate::Invocation {
            line: script,
            ctx: &ctx,
            front_end: "sh",
            agent: agent_from_env(),
            session: None,
        },
    );
    match outcome {
        Outcome::Run => {
            let shell = real_shell();
            let err = std::process::Command::new(&shell)
                .args(&flags)
                .arg(script)
                .args(rest)
                .exec();
            eprintln!("holdpoint: cannot start the shell {shell}: {err}");
            code(126)
        }
        Outcome::Refuse { code: c, message } => {
            eprintln!("{message}");
            code(c)
        }
    }
}

/// The shell that really runs allowed commands: `HOLDPOINT_REAL_SHELL`, or
/// bash (whose syntax the gate parses), or sh.
fn real_shell() -> String {
    if let Ok(s) = std::env::var("HOLDPOINT_REAL_SHELL")
        && !s.is_empty()
    {
        return s;
    }
    for s in ["/bin/bash", "/usr/bin/bash", "/bin/sh"] {
        if Path::new(s).exists() {
            return s.to_string();
        }
    }
    "/bin/sh".to_string()
}

/// The Claude Code hook; see [`crate::hooks::claude`].
pub fn claude_code(policy: Option<&Path>) -> ExitCode {
    crate::hooks::run(
        crate::hooks::Agent::ClaudeCode,
        &crate::hooks::Options {
            policy: policy.map(Path::to_path_buf),
            ..Default::default()
        },
    )
}

//! Agent hooks: `holdpoint hook AGENT`, one front end per agent's hook
//! protocol (Claude Code, Codex CLI, Gemini CLI, GitHub Copilot CLI,
//! Cursor). Each agent module only reads that agent's JSON into a [`Call`]
//! and writes a [`Reply`] back in that agent's words; the decision is the
//! gate's ([`gate::settle_held`]), the same for every agent.
//!
//! Every hook has a time limit set by its agent. The hook stops waiting for
//! a reviewer a little before it (see [`Limit`]) and blocks the call with
//! the request id; the request stays open on the bot and a retry of the
//! same command picks up its decision ([`crate::pending`]).
//!
//! Never lets a command through by accident: malformed input, a policy that
//! does not load, an internal error and a panic all answer in the way that
//! agent treats as blocking.

use crate::config;
use crate::gate::{self, Outcome};
use holdpoint_shared::{Context, Decision};
use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub mod claude;
pub mod codex;
pub mod copilot;
pub mod cursor;
pub mod gemini;

/// Largest hook input accepted, in bytes.
pub const MAX_INPUT: u64 = 4 * 1024 * 1024;

/// The agents holdpoint has a hook front end for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    ClaudeCode,
    Codex,
    Gemini,
    Copilot,
    Cursor,
}

impl Agent {
    /// The agent's name, as requests and audit events show it.
    pub fn name(self) -> &'static str {
        match self {
            Agent::ClaudeCode => "claude-code",
            Agent::Codex => "codex",
            Agent::Gemini => "gemini",
            Agent::Copilot => "copilot",
            Agent::Cursor => "cursor",
        }
    }

    /// The agent's documented default time limit for one hook call.
    pub fn default_limit(self) -> Duration {
        match self {
            // Claude Code: command hooks time out after 600 s unless `timeout` says.
            Agent::ClaudeCode => Duration::from_secs(600),
            // Codex: `timeout` (seconds) defaults to 600.
            Agent::Codex => Duration::from_secs(600),
            // Gemini CLI: `timeout` in milliseconds, default 60000.
            Agent::Gemini => Duration::from_secs(60),
            // Copilot CLI: `timeoutSec`, default 30.
            Agent::Copilot => Duration::from_secs(30),
            // Cursor documents a per-hook `timeout` but, as read, no default:
            // assume a short one and let the configuration say otherwise.
            Agent::Cursor => Duration::from_secs(30),
        }
    }

    /// Reads this agent's hook input (a JSON object) into a [`Call`], or
    /// says what is wrong with it.
    pub fn parse(self, input: &str) -> Result<Call, String> {
        match self {
            Agent::ClaudeCode => claude::parse(input),
            Agent::Codex => codex::parse(input),
            Agent::Gemini => gemini::parse(input),
            Agent::Copilot => copilot::parse(input),
            Agent::Cursor => cursor::parse(input),
        }
    }

    /// How `reply` is said to this agent. `call` is `None` when the input
    /// could not be read at all.
    pub fn answer(self, call: Option<&Call>, reply: &Reply) -> Answer {
        match self {
            Agent::ClaudeCode => claude::answer(call, reply),
            Agent::Codex => codex::answer(call, reply),
            Agent::Gemini => gemini::answer(call, reply),
            Agent::Copilot => copilot::answer(call, reply),
            Agent::Cursor => cursor::answer(call, reply),
        }
    }

    /// Whether this agent reads `answer` as "the call is blocked": the
    /// exit code or JSON decision its hook documentation gives for that.
    /// Every denial and every error must be one.
    pub fn blocks(self, answer: &Answer) -> bool {
        let out: Option<serde_json::Value> = answer
            .stdout
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok());
        let field = |path: &[&str]| {
            let mut v = out.as_ref()?;
            for p in path {
                v = v.get(p)?;
            }
            v.as_str().map(str::to_string)
        };
        let is_deny = |path: &[&str]| field(path).as_deref() == Some("deny");
        match self {
            Agent::ClaudeCode | Agent::Codex => {
                answer.code == 2
                    || is_deny(&["hookSpecificOutput", "permissionDecision"])
                    || is_deny(&["hookSpecificOutput", "decision", "behavior"])
            }
            Agent::Gemini => answer.code == 2 || is_deny(&["decision"]),
            Agent::Copilot => is_deny(&["permissionDecision"]),
            Agent::Cursor => is_deny(&["permission"]),
        }
    }

    /// Whether this agent, for this call, can be told "ask the user".
    fn can_ask(self, call: &Call) -> bool {
        match self {
            Agent::ClaudeCode => true,
            Agent::Codex => call.event == Event::PermissionRequest,
            Agent::Cursor => true,
            // Gemini's BeforeTool has allow and deny only; Copilot CLI
            // processes only deny.
            Agent::Gemini | Agent::Copilot => false,
        }
    }
}

/// Which of the agent's hook events called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Before a tool runs (Claude Code and Codex `PreToolUse`, Gemini
    /// `BeforeTool`, Copilot `preToolUse`, Cursor `beforeShellExecution`).
    PreToolUse,
    /// When the agent would ask its user for permission (Claude Code and
    /// Codex `PermissionRequest`).
    PermissionRequest,
}

/// One hook call, as the agent described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub event: Event,
    /// The shell command; `None` for a tool that is not a shell (passed
    /// through untouched).
    pub command: Option<String>,
    /// The directory the command runs in, when the agent says (absolute).
    pub cwd: Option<String>,
    /// The agent's session (or conversation) id, when it has one.
    pub session: Option<String>,
}

/// What the hook tells the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Not a shell command: say nothing, change nothing.
    Pass,
    /// The gate lets it run.
    Allow(String),
    /// Blocked: denied by the policy or a reviewer, or still waiting for one.
    Deny(String),
    /// Hand the decision to the user at the agent's own prompt.
    Ask(String),
    /// holdpoint could not work (bad input, bad policy, a bug): blocked, in
    /// the agent's most certain blocking form.
    Error(String),
}

/// Bytes for the agent: stdout, stderr and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub code: u8,
}

impl Answer {
    /// A JSON object on stdout, exit 0.
    pub(crate) fn json(v: serde_json::Value) -> Answer {
        Answer {
            stdout: Some(v.to_string()),
            stderr: None,
            code: 0,
        }
    }

    /// Nothing on stdout, exit 0: the agent carries on as if no hook ran.
    pub(crate) fn silent() -> Answer {
        Answer {
            stdout: None,
            stderr: None,
            code: 0,
        }
    }

    /// Exit code 2 with the reason on stderr: "blocked" for every agent
    /// whose hooks document it.
    pub(crate) fn exit2(reason: &str) -> Answer {
        Answer {
            stdout: None,
            stderr: Some(format!("holdpoint: {reason}")),
            code: 2,
        }
    }
}

/// How long one hook call may take, and when to stop waiting within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Duration);

impl Limit {
    /// The time left for the reviewer: the limit less a margin to answer in
    /// (a tenth of it, at least a second, at most half).
    pub fn wait(self) -> Duration {
        let margin = (self.0 / 10).max(Duration::from_secs(1)).min(self.0 / 2);
        self.0.saturating_sub(margin)
    }
}

/// `holdpoint hook AGENT` options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A policy file layered over the built-in one.
    pub policy: Option<PathBuf>,
    /// The hook's time limit as configured in the agent (default: the
    /// agent's documented default; also `HOLDPOINT_HOOK_TIMEOUT`).
    pub timeout: Option<Duration>,
    /// Send commands that need review to the user at the agent's own
    /// prompt instead of the bot, where the agent can ask (off by default;
    /// also `HOLDPOINT_HOOK_ASK=1`).
    pub ask_locally: bool,
}

/// Seconds, as `--timeout` and `HOLDPOINT_HOOK_TIMEOUT` take them.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.trim()
        .trim_end_matches('s')
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0 && *v <= 86400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?} is not a number of seconds (0 < s <= 86400)"))
}

fn env_flag(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes" | "on"))
}

/// Runs one hook call for `agent`: reads stdin, writes the answer, returns
/// the exit code. A panic inside is answered as an error.
pub fn run(agent: Agent, opts: &Options) -> ExitCode {
    let start = Instant::now();
    let answer = std::panic::catch_unwind(|| respond(agent, opts, start)).unwrap_or_else(|_| {
        agent.answer(
            None,
            &Reply::Error("internal error; refusing the tool call".into()),
        )
    });
    emit(&answer)
}

fn emit(a: &Answer) -> ExitCode {
    use std::io::Write as _;
    if let Some(e) = &a.stderr {
        eprintln!("{e}");
    }
    if let Some(o) = &a.stdout {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{o}").and_then(|_| out.flush()).is_err() {
            eprintln!("holdpoint: cannot write the hook answer; refusing the tool call");
            return ExitCode::from(2);
        }
    }
    ExitCode::from(a.code)
}

fn read_input() -> Result<String, String> {
    let mut buf = String::new();
    std::io::stdin()
        .take(MAX_INPUT + 1)
        .read_to_string(&mut buf)
        .map_err(|e| format!("cannot read the hook input: {e}"))?;
    if buf.len() as u64 > MAX_INPUT {
        return Err(format!("the hook input is larger than {MAX_INPUT} bytes"));
    }
    Ok(buf)
}

fn respond(agent: Agent, opts: &Options, start: Instant) -> Answer {
    let input = match read_input() {
        Ok(i) => i,
        Err(e) => return agent.answer(None, &Reply::Error(format!("{e}; refusing the tool call"))),
    };
    let call = match agent.parse(&input) {
        Ok(c) => c,
        Err(e) => {
            return agent.answer(None, &Reply::Error(format!("{e}; refusing the tool call")));
        }
    };
    let reply = decide(agent, opts, &call, start);
    agent.answer(Some(&call), &reply)
}

fn limit(agent: Agent, opts: &Options) -> Result<Limit, String> {
    if let Some(t) = opts.timeout {
        return Ok(Limit(t));
    }
    match std::env::var("HOLDPOINT_HOOK_TIMEOUT") {
        Ok(v) if !v.trim().is_empty() => parse_seconds(&v)
            .map(Limit)
            .map_err(|e| format!("HOLDPOINT_HOOK_TIMEOUT: {e}")),
        _ => Ok(Limit(agent.default_limit())),
    }
}

fn decide(agent: Agent, opts: &Options, call: &Call, start: Instant) -> Reply {
    let Some(command) = call.command.as_deref() else {
        return Reply::Pass;
    };
    let limit = match limit(agent, opts) {
        Ok(l) => l,
        Err(e) => return Reply::Error(format!("{e}; refusing the tool call")),
    };
    let policy = match config::load_policy(opts.policy.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            return Reply::Error(format!(
                "the policy does not load ({e:#}); refusing the tool call"
            ));
        }
    };
    let mut ctx = Context::from_process();
    if let Some(cwd) = call.cwd.as_deref().filter(|c| c.starts_with('/')) {
        ctx = ctx.with_cwd(cwd.to_string());
    }
    // The project root and the links on a deletion's way, as every front
    // end establishes them before classifying.
    crate::project::establish(&mut ctx, &policy, command);
    if (opts.ask_locally || env_flag("HOLDPOINT_HOOK_ASK")) && agent.can_ask(call) {
        let v = policy.classify(command, &ctx);
        if v.decision == Decision::Review {
            return Reply::Ask(format!(
                "holdpoint: this command needs a human's approval ({} risk): {}",
                v.risk,
                v.deciding_reasons().join("; ")
            ));
        }
    }
    let hold = gate::Hold {
        until: start + limit.wait(),
        store: crate::pending::Store::from_env().ok(),
    };
    let agent_name = std::env::var("HOLDPOINT_AGENT")
        .ok()
        .map(|a| a.trim().chars().take(64).collect::<String>())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| agent.name().to_string());
    let (verdict, outcome) = gate::settle_held(
        &policy,
        &gate::Invocation {
            line: command,
            ctx: &ctx,
            front_end: "hook",
            agent: Some(agent_name),
            session: call.session.clone(),
        },
        &hold,
    );
    match outcome {
        Outcome::Run => Reply::Allow(format!(
            "holdpoint: allowed ({})",
            verdict.deciding_rules().join(", ")
        )),
        Outcome::Refuse { message, .. } => Reply::Deny(message),
    }
}

/// Every agent with a hook front end.
pub const AGENTS: [Agent; 5] = [
    Agent::ClaudeCode,
    Agent::Codex,
    Agent::Gemini,
    Agent::Copilot,
    Agent::Cursor,
];

/// The property the `hooks` fuzz target checks on arbitrary input, for
/// every agent: reading it never panics; input that cannot be read is
/// answered with that agent's blocking answer; and for input that can,
/// every denial and every error is blocking whatever its text says (the
/// text here is the input itself). Panics when the property fails (the
/// regression test runs it on every kept input).
#[doc(hidden)]
pub fn check_input(input: &str) {
    for agent in AGENTS {
        match agent.parse(input) {
            Err(e) => {
                let a = agent.answer(None, &Reply::Error(e));
                assert!(
                    agent.blocks(&a),
                    "{agent:?}: unreadable input not blocked: {a:?}"
                );
            }
            Ok(call) => {
                for reply in [
                    Reply::Deny(input.to_string()),
                    Reply::Error(input.to_string()),
                ] {
                    let a = agent.answer(Some(&call), &reply);
                    assert!(agent.blocks(&a), "{agent:?} {call:?} {reply:?}: {a:?}");
                }
            }
        }
    }
}

/// Reads a JSON object, or says what is wrong with it.
pub(crate) fn object(input: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str::<serde_json::Value>(input) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err("the hook input is not a JSON object".into()),
        Err(e) => Err(format!("the hook input is not JSON ({e})")),
    }
}

/// A required string field.
pub(crate) fn string<'a>(
    m: &'a serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Result<&'a str, String> {
    match m.get(field) {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(_) => Err(format!("the hook input's `{field}` is not a string")),
        None => Err(format!("the hook input has no `{field}`")),
    }
}

/// An optional string field (absent or null is `None`; another type is an error).
pub(crate) fn opt_string(
    m: &serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Result<Option<String>, String> {
    match m.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("the hook input's `{field}` is not a string")),
    }
}

/// The call of a hook whose input names the tool in `tool_name`, the
/// shell tool `Bash` with its `tool_input.command`, and `cwd` and
/// `session_id` (Claude Code's shape, which Codex follows).
pub(crate) fn bash_tool_call(
    m: &serde_json::Map<String, serde_json::Value>,
    event: Event,
) -> Result<Call, String> {
    let tool = string(m, "tool_name")?;
    let command = if tool == "Bash" {
        Some(command_of(m.get("tool_input"), "Bash")?)
    } else {
        None
    };
    Ok(Call {
        event,
        command,
        cwd: opt_string(m, "cwd")?,
        session: opt_string(m, "session_id")?,
    })
}

/// The `command` string of a shell tool's input object.
pub(crate) fn command_of(
    tool_input: Option<&serde_json::Value>,
    tool: &str,
) -> Result<String, String> {
    match tool_input.and_then(|t| t.get("command")) {
        Some(serde_json::Value::String(c)) => Ok(c.clone()),
        _ => Err(format!("the {tool} tool input has no `command` string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_leaves_a_margin_to_answer_in() {
        assert_eq!(
            Limit(Duration::from_secs(600)).wait(),
            Duration::from_secs(540)
        );
        assert_eq!(
            Limit(Duration::from_secs(30)).wait(),
            Duration::from_secs(27)
        );
        assert_eq!(Limit(Duration::from_secs(4)).wait(), Duration::from_secs(3));
        assert_eq!(
            Limit(Duration::from_secs(1)).wait(),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn seconds_are_positive_and_bounded() {
        assert_eq!(parse_seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_seconds("2.5s"), Ok(Duration::from_millis(2500)));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("NaN").is_err());
        assert!(parse_seconds("soon").is_err());
    }
}

#[cfg(test)]
mod answers {
    use super::*;

    #[test]
    fn the_fuzz_targets_seeds_and_regressions_keep_their_property() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut n = 0;
        for dir in ["seeds/hooks", "regressions/hooks"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                if let Ok(text) = std::str::from_utf8(&bytes) {
                    check_input(text);
                    n += 1;
                }
            }
        }
        assert!(n >= 5, "the seeds are missing ({n} inputs read)");
    }

    /// What a panic or unreadable input is answered with (`call` is `None`).
    #[test]
    fn an_error_without_a_call_is_each_agents_blocking_answer() {
        for agent in AGENTS {
            let a = agent.answer(None, &Reply::Error("internal error".into()));
            assert!(agent.blocks(&a), "{agent:?}: {a:?}");
            // Cursor also exits 2, and the others that use exit codes do.
            if agent != Agent::Copilot {
                assert_eq!(a.code, 2, "{agent:?}: {a:?}");
            }
        }
    }

    #[test]
    fn an_error_with_a_call_never_allows() {
        for agent in AGENTS {
            for event in [Event::PreToolUse, Event::PermissionRequest] {
                let call = Call {
                    event,
                    command: Some("ls".into()),
                    cwd: None,
                    session: None,
                };
                let a = agent.answer(Some(&call), &Reply::Error("bad policy".into()));
                let text = a.stdout.clone().unwrap_or_default();
                assert!(!text.contains("allow"), "{agent:?} {event:?}: {a:?}");
                assert!(agent.blocks(&a), "{agent:?} {event:?}: {a:?}");
                // And an allow is never read as blocking, so the check can fail.
                let a = agent.answer(Some(&call), &Reply::Allow("ok".into()));
                assert!(!agent.blocks(&a), "{agent:?} {event:?}: {a:?}");
            }
        }
    }
}

//! End to end, for every agent's hook format: the real `holdpoint hook
//! AGENT` against the real bot, with a hook time limit far shorter than a
//! reviewer takes. A force push is held, the limit runs out, the hook
//! blocks with the request id; a reviewer approves; the agent's retry of
//! the same command is allowed exactly once, and a second retry is held
//! again. The test plays the agent: it "runs" the command (records it) only
//! when the hook allows it.

use holdpoint_testkit::*;
use serde_json::{Value, json};
use std::io::Write as _;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

const FORCE_PUSH: &str = "git push --force origin main";

/// The hook's time limit given to `--timeout`: holdpoint waits 3 s of it.
const LIMIT: &str = "4";

struct Format {
    agent: &'static str,
    input: fn(cwd: &str, session: &str) -> Value,
    /// Whether the answer lets the command run.
    allows: fn(&Output) -> bool,
    /// The message of a blocking answer, if it blocks.
    blocked: fn(&Output) -> Option<String>,
}

fn stdout_json(o: &Output) -> Option<Value> {
    serde_json::from_slice(&o.stdout).ok()
}

fn silent(o: &Output) -> bool {
    o.status.code() == Some(0) && o.stdout.iter().all(u8::is_ascii_whitespace)
}

fn claude_code() -> Format {
    Format {
        agent: "claude-code",
        input: |cwd, session| {
            json!({"session_id": session, "cwd": cwd, "hook_event_name": "PreToolUse",
                   "tool_name": "Bash", "tool_input": {"command": FORCE_PUSH}})
        },
        allows: |o| {
            o.status.code() == Some(0)
                && stdout_json(o)
                    .is_some_and(|v| v["hookSpecificOutput"]["permissionDecision"] == "allow")
        },
        blocked: |o| {
            let v = stdout_json(o)?;
            (o.status.code() == Some(0) && v["hookSpecificOutput"]["permissionDecision"] == "deny")
                .then(|| v["hookSpecificOutput"]["permissionDecisionReason"].to_string())
        },
    }
}

fn codex() -> Format {
    Format {
        agent: "codex",
        input: |cwd, session| {
            json!({"session_id": session, "turn_id": "t1", "cwd": cwd, "model": "gpt-5-codex",
                   "hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_use_id": "call_1",
                   "tool_input": {"command": FORCE_PUSH}})
        },
        allows: silent,
        blocked: |o| {
            let v = stdout_json(o)?;
            (o.status.code() == Some(0) && v["hookSpecificOutput"]["permissionDecision"] == "deny")
                .then(|| v["hookSpecificOutput"]["permissionDecisionReason"].to_string())
        },
    }
}

fn gemini() -> Format {
    Format {
        agent: "gemini",
        input: |cwd, session| {
            json!({"session_id": session, "cwd": cwd, "hook_event_name": "BeforeTool",
                   "timestamp": "2026-12-02T15:00:00Z", "tool_name": "run_shell_command",
                   "tool_input": {"command": FORCE_PUSH}})
        },
        allows: |o| {
            o.status.code() == Some(0) && stdout_json(o).is_some_and(|v| v["decision"] == "allow")
        },
        blocked: |o| {
            let v = stdout_json(o)?;
            (o.status.code() == Some(0) && v["decision"] == "deny").then(|| v["reason"].to_string())
        },
    }
}

fn copilot() -> Format {
    Format {
        agent: "copilot",
        input: |cwd, session| {
            json!({"timestamp": 1764687000000u64, "cwd": cwd, "sessionId": session,
                   "toolName": "bash", "toolArgs": json!({"command": FORCE_PUSH}).to_string()})
        },
        allows: silent,
        blocked: |o| {
            let v = stdout_json(o)?;
            (o.status.code() == Some(0) && v["permissionDecision"] == "deny")
                .then(|| v["permissionDecisionReason"].to_string())
        },
    }
}

fn cursor() -> Format {
    Format {
        agent: "cursor",
        input: |cwd, session| {
            json!({"conversation_id": session, "generation_id": "g1",
                   "hook_event_name": "beforeShellExecution", "workspace_roots": [cwd],
                   "command": FORCE_PUSH, "cwd": cwd})
        },
        allows: |o| {
            o.status.code() == Some(0) && stdout_json(o).is_some_and(|v| v["permission"] == "allow")
        },
        blocked: |o| {
            let v = stdout_json(o)?;
            (o.status.code() == Some(0) && v["permission"] == "deny")
                .then(|| v["agent_message"].to_string())
        },
    }
}

/// One hook call, as the agent makes it; how long it took.
fn call(
    bot: &Bot,
    ws: &Workspace,
    spool: &TempDir,
    state: &std::path::Path,
    f: &Format,
    input: &Value,
) -> (Output, Duration) {
    let mut cmd = runner(&bot.url(), &bot.token, &ws.repo(), spool.path());
    cmd.args(["hook", f.agent, "--timeout", LIMIT])
        .env("HOLDPOINT_STATE_DIR", state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("start the hook");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write the hook input");
    let out = child.wait_with_output().expect("hook output");
    (out, start.elapsed())
}

fn pending_ids(bot: &Bot) -> Vec<String> {
    bot.requests()["pending"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(|r| r["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn held_then_approved_runs_once(backend: Backend, f: Format) {
    let Some(bot) = Bot::on(backend, &[]) else {
        return;
    };
    let ws = Workspace::new();
    let spool = TempDir::new("spool");
    let state_root = TempDir::new("held");
    // Made by the runner itself, private.
    let state = state_root.path().join("held");
    let cwd = ws.repo().to_string_lossy().into_owned();
    let input = (f.input)(&cwd, "session-1");
    let ran = std::cell::Cell::new(0usize);
    let agent_call = |input: &Value| {
        let (out, took) = call(&bot, &ws, &spool, &state, &f, input);
        if (f.allows)(&out) {
            ran.set(ran.get() + 1);
        }
        (out, took)
    };

    // 1. Held: the limit runs out before anyone decides; the hook blocks
    //    in time, with the request id, and the request stays open.
    let (out, took) = agent_call(&input);
    let why = (f.blocked)(&out).unwrap_or_else(|| {
        panic!(
            "{}: the first call must block: {:?} {} {}",
            f.agent,
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    assert!(
        took < Duration::from_secs(4),
        "{}: the hook answered after its limit ({took:?})",
        f.agent
    );
    let ids = pending_ids(&bot);
    assert_eq!(ids.len(), 1, "{}: one request stays open: {ids:?}", f.agent);
    let id = ids[0].clone();
    assert!(
        why.contains(&id),
        "{}: the block names the request: {why}",
        f.agent
    );
    assert!(why.contains("reviewer") && why.contains("Retry"), "{why}");
    let held: Vec<_> = std::fs::read_dir(state.as_path())
        .expect("state dir")
        .collect();
    assert_eq!(
        held.len(),
        1,
        "{}: the request is kept for the retry",
        f.agent
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state.as_path())
            .expect("state")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "the held requests are private");
        let file = held[0].as_ref().expect("entry").path();
        let mode = std::fs::metadata(&file).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(ran.get(), 0, "nothing runs before approval");

    // 2. A reviewer approves.
    let approve = bot.run(&["approve", &id]);
    assert!(approve.status.success(), "{}", text(&approve.stdout));

    // 3. The retry of the same command runs it, once.
    let (out, _) = agent_call(&input);
    assert!(
        (f.allows)(&out),
        "{}: the retry after approval is allowed: {:?} {} {}",
        f.agent,
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(ran.get(), 1);
    assert!(
        pending_ids(&bot).is_empty(),
        "no new request for the approved retry"
    );

    // 4. The approval was used: a second retry is held again, as a new request.
    let (out, _) = agent_call(&input);
    let why = (f.blocked)(&out).unwrap_or_else(|| {
        panic!(
            "{}: the second retry must be held: {}",
            f.agent,
            text(&out.stdout)
        )
    });
    let ids = pending_ids(&bot);
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_ne!(ids[0], id, "a new request, not the used one");
    assert!(why.contains(&ids[0]), "{why}");

    // Another session's identical command does not pick up that request.
    let other = (f.input)(&cwd, "session-2");
    assert!(bot.run(&["approve", &ids[0]]).status.success());
    let (out, _) = agent_call(&other);
    assert!(
        (f.blocked)(&out).is_some(),
        "{}: another session's retry is not this approval",
        f.agent
    );
    assert_eq!(ran.get(), 1, "{}: the command ran exactly once", f.agent);
}

fn claude_code_hook_holds_then_runs_the_approved_retry_once(b: Backend) {
    held_then_approved_runs_once(b, claude_code())
}
fn codex_hook_holds_then_runs_the_approved_retry_once(b: Backend) {
    held_then_approved_runs_once(b, codex())
}
fn gemini_hook_holds_then_runs_the_approved_retry_once(b: Backend) {
    held_then_approved_runs_once(b, gemini())
}
fn copilot_hook_holds_then_runs_the_approved_retry_once(b: Backend) {
    held_then_approved_runs_once(b, copilot())
}
fn cursor_hook_holds_then_runs_the_approved_retry_once(b: Backend) {
    held_then_approved_runs_once(b, cursor())
}

/// A denial reaches the retry with the reviewer's reason, and is used up.
fn a_denied_held_request_blocks_the_retry_with_the_reason(backend: Backend) {
    let Some(bot) = Bot::on(backend, &[]) else {
        return;
    };
    let ws = Workspace::new();
    let spool = TempDir::new("spool");
    let state_root = TempDir::new("held");
    // Made by the runner itself, private.
    let state = state_root.path().join("held");
    let f = gemini();
    let input = (f.input)(&ws.repo().to_string_lossy(), "s");
    let (out, _) = call(&bot, &ws, &spool, &state, &f, &input);
    assert!((f.blocked)(&out).is_some());
    let id = pending_ids(&bot).pop().expect("pending");
    assert!(
        bot.run(&["deny", &id, "--reason", "main is frozen"])
            .status
            .success()
    );
    let (out, _) = call(&bot, &ws, &spool, &state, &f, &input);
    let why = (f.blocked)(&out).expect("the retry is blocked");
    assert!(why.contains("main is frozen"), "{why}");
    assert_eq!(
        std::fs::read_dir(state.as_path()).expect("dir").count(),
        0,
        "the denial is used up"
    );
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(holdpoint_testkit::Backend::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(holdpoint_testkit::Backend::Postgres) } )*
        }
    };
}

on_both_backends!(
    claude_code_hook_holds_then_runs_the_approved_retry_once,
    codex_hook_holds_then_runs_the_approved_retry_once,
    gemini_hook_holds_then_runs_the_approved_retry_once,
    copilot_hook_holds_then_runs_the_approved_retry_once,
    cursor_hook_holds_then_runs_the_approved_retry_once,
    a_denied_held_request_blocks_the_retry_with_the_reason,
);

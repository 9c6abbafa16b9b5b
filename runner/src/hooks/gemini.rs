//! Gemini CLI's `BeforeTool` hook.
//!
//! Input: `session_id`, `transcript_path`, `cwd`, `hook_event_name`
//! (`BeforeTool`), `timestamp`, `tool_name` (`run_shell_command` for shell
//! commands), `tool_input` (`command`, and optionally `description` and
//! `dir_path`, the directory to run in, relative to `cwd` or absolute).
//! Answer: `{"decision": "allow" | "deny", "reason": …}` on stdout with
//! exit 0; exit code 2 blocks with stderr as the reason, which is the
//! answer to input we cannot read. Gemini's `BeforeTool` has no "ask the
//! user" answer, so the ask setting does not apply.

use super::{Answer, Call, Event, Reply, command_of, object, opt_string, string};
use serde_json::json;

/// Gemini CLI's shell tool.
const SHELL_TOOL: &str = "run_shell_command";

pub(super) fn parse(input: &str) -> Result<Call, String> {
    let m = object(input)?;
    match string(&m, "hook_event_name")? {
        "BeforeTool" => {}
        other => return Err(format!("`{other}` is not a hook event this hook answers")),
    }
    let tool = string(&m, "tool_name")?;
    let cwd = opt_string(&m, "cwd")?;
    let (command, cwd) = if tool == SHELL_TOOL {
        let input = m.get("tool_input");
        let command = command_of(input, SHELL_TOOL)?;
        let dir = match input.and_then(|i| i.get("dir_path")) {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(d)) => Some(d.clone()),
            Some(_) => return Err("the run_shell_command `dir_path` is not a string".into()),
        };
        let cwd = match (dir, cwd) {
            (Some(d), _) if d.starts_with('/') => Some(d),
            (Some(d), Some(c)) if !d.is_empty() => {
                Some(format!("{}/{}", c.trim_end_matches('/'), d))
            }
            (_, c) => c,
        };
        (Some(command), cwd)
    } else {
        (None, cwd)
    };
    Ok(Call {
        event: Event::PreToolUse,
        command,
        cwd,
        session: opt_string(&m, "session_id")?,
    })
}

pub(super) fn answer(call: Option<&Call>, reply: &Reply) -> Answer {
    match (call, reply) {
        (Some(_), Reply::Pass) => Answer::silent(),
        (Some(_), Reply::Allow(m)) => Answer::json(json!({"decision": "allow", "reason": m})),
        (Some(_), Reply::Deny(m) | Reply::Ask(m)) => {
            Answer::json(json!({"decision": "deny", "reason": m}))
        }
        (_, Reply::Error(e) | Reply::Deny(e)) => Answer::exit2(e),
        (None, _) => Answer::exit2("no readable hook input; refusing the tool call"),
    }
}

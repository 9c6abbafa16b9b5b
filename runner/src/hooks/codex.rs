//! Codex CLI's `PreToolUse` and `PermissionRequest` hooks.
//!
//! Input: `session_id`, `turn_id`, `transcript_path`, `cwd`,
//! `hook_event_name`, `model`, `tool_name` (`Bash` for shell commands),
//! `tool_use_id`, `tool_input.command`. Answers:
//!
//! - `PreToolUse`: to block, `hookSpecificOutput.permissionDecision` =
//!   `deny` with `permissionDecisionReason` (shown to the model), or exit
//!   code 2 with the reason on stderr. An allowed command gets no output,
//!   which is "no opinion": Codex goes on as if no hook ran, and its own
//!   sandbox and approval rules still apply. Holding back `allow` here costs
//!   nothing and never loosens Codex's own checks.
//! - `PermissionRequest` (Codex is about to ask its user): `allow` or
//!   `deny` in `hookSpecificOutput.decision.behavior`, `message` on a deny.
//!   Its "ask" is to answer nothing: Codex shows its own approval prompt.
//!   With the ask setting on, a command that needs review goes there.
//! - Input we cannot read: exit code 2 and stderr, which blocks a
//!   `PreToolUse`; a `PermissionRequest` hook that fails falls back to
//!   Codex's own prompt, where a human decides.

use super::{Answer, Call, Event, Reply, bash_tool_call, object, string};
use serde_json::json;

pub(super) fn parse(input: &str) -> Result<Call, String> {
    let m = object(input)?;
    let event = match string(&m, "hook_event_name")? {
        "PreToolUse" => Event::PreToolUse,
        "PermissionRequest" => Event::PermissionRequest,
        other => return Err(format!("`{other}` is not a hook event this hook answers")),
    };
    bash_tool_call(&m, event)
}

pub(super) fn answer(call: Option<&Call>, reply: &Reply) -> Answer {
    let Some(call) = call else {
        return match reply {
            Reply::Error(e) | Reply::Deny(e) => Answer::exit2(e),
            _ => Answer::exit2("no readable hook input; refusing the tool call"),
        };
    };
    match (call.event, reply) {
        (_, Reply::Pass) => Answer::silent(),
        (_, Reply::Error(e)) => Answer::exit2(e),
        (Event::PreToolUse, Reply::Allow(_)) => Answer::silent(),
        // No ask on PreToolUse: a command to be asked about is blocked.
        (Event::PreToolUse, Reply::Deny(m) | Reply::Ask(m)) => Answer::json(json!({
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": m,
            }
        })),
        (Event::PermissionRequest, Reply::Ask(_)) => Answer::silent(),
        (Event::PermissionRequest, Reply::Allow(_)) => Answer::json(json!({
            "hookSpecificOutput": {
                "hookEventName": "PermissionRequest",
                "decision": {"behavior": "allow"},
            }
        })),
        (Event::PermissionRequest, Reply::Deny(m)) => Answer::json(json!({
            "hookSpecificOutput": {
                "hookEventName": "PermissionRequest",
                "decision": {"behavior": "deny", "message": m},
            }
        })),
    }
}

//! Claude Code's `PreToolUse` and `PermissionRequest` hooks.
//!
//! Input (both events): `session_id`, `transcript_path`, `cwd`,
//! `permission_mode`, `hook_event_name`, `tool_name`, `tool_input` (for
//! `Bash`: `command`, `description`, …). Answers:
//!
//! - `PreToolUse`: `hookSpecificOutput.permissionDecision` = `allow`,
//!   `deny` or `ask`, with `permissionDecisionReason` (shown to Claude on a
//!   deny, to the user on an ask).
//! - `PermissionRequest`: `hookSpecificOutput.decision.behavior` = `allow`
//!   or `deny` (with `message`). Its "ask" is to answer nothing: Claude Code
//!   then shows its own permission dialog to the user.
//! - Exit code 2 blocks either event whatever stdout says, with stderr as
//!   the reason: that is the answer to input we cannot read.
//!
//! With the ask setting on, a command that needs review is handed to the
//! user at Claude Code's prompt instead of the bot: a human decides either
//! way, and one at the keyboard decides sooner. Denied commands stay denied.

use super::{Answer, Call, Event, Reply, bash_tool_call, object, opt_string};
use serde_json::json;

pub(super) fn parse(input: &str) -> Result<Call, String> {
    let m = object(input)?;
    let event = match opt_string(&m, "hook_event_name")?.as_deref() {
        // The event is optional for older callers of this hook.
        None | Some("PreToolUse") => Event::PreToolUse,
        Some("PermissionRequest") => Event::PermissionRequest,
        Some(other) => return Err(format!("`{other}` is not a hook event this hook answers")),
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
        (Event::PreToolUse, Reply::Allow(m)) => pre_tool_use("allow", m),
        (Event::PreToolUse, Reply::Ask(m)) => pre_tool_use("ask", m),
        (Event::PreToolUse, Reply::Deny(m)) => pre_tool_use("deny", m),
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

fn pre_tool_use(decision: &str, reason: &str) -> Answer {
    Answer::json(json!({
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": decision,
            "permissionDecisionReason": reason,
        }
    }))
}

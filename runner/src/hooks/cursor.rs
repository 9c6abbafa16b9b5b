//! Cursor's `beforeShellExecution` hook.
//!
//! Input: `conversation_id`, `generation_id`, `model`, `hook_event_name`
//! (`beforeShellExecution`), `cursor_version`, `workspace_roots`,
//! `user_email`, `transcript_path`, `command`, `cwd`, `sandbox`. Answer:
//! `{"permission": "allow" | "deny" | "ask", "user_message": …,
//! "agent_message": …}`; exit code 2 also blocks. Input we cannot read is
//! answered with both (a deny object and exit code 2). With the ask setting
//! on, a command that needs review is handed to the user at Cursor's own
//! prompt (`ask`) instead of the bot.
//!
//! Every call of this hook is a shell command: there is nothing to pass
//! through.

use super::{Answer, Call, Event, Reply, object, opt_string, string};
use serde_json::json;

pub(super) fn parse(input: &str) -> Result<Call, String> {
    let m = object(input)?;
    match string(&m, "hook_event_name")? {
        "beforeShellExecution" => {}
        other => return Err(format!("`{other}` is not a hook event this hook answers")),
    }
    Ok(Call {
        event: Event::PreToolUse,
        command: Some(string(&m, "command")?.to_string()),
        cwd: opt_string(&m, "cwd")?,
        session: opt_string(&m, "conversation_id")?,
    })
}

fn permission(permission: &str, user: &str, agent: &str) -> serde_json::Value {
    json!({
        "permission": permission,
        "user_message": user,
        "agent_message": agent,
    })
}

pub(super) fn answer(call: Option<&Call>, reply: &Reply) -> Answer {
    match (call, reply) {
        (Some(_), Reply::Pass) => Answer::silent(),
        (Some(_), Reply::Allow(m)) => {
            Answer::json(json!({"permission": "allow", "agent_message": m}))
        }
        (Some(_), Reply::Ask(m)) => Answer::json(permission("ask", m, m)),
        (Some(_), Reply::Deny(m)) => Answer::json(permission("deny", m, m)),
        (_, Reply::Error(m) | Reply::Deny(m)) => Answer {
            code: 2,
            stderr: Some(format!("holdpoint: {m}")),
            ..Answer::json(permission("deny", m, m))
        },
        (None, _) => {
            let m = "no readable hook input; refusing the tool call";
            Answer {
                code: 2,
                stderr: Some(format!("holdpoint: {m}")),
                ..Answer::json(permission("deny", m, m))
            }
        }
    }
}

//! GitHub Copilot CLI's `preToolUse` hook.
//!
//! Input: `timestamp` (Unix milliseconds), `cwd`, `toolName` (`bash` for
//! shell commands; `powershell` on Windows) and `toolArgs`, the tool's
//! arguments as a JSON *string* (for `bash`: `command`, `description`);
//! newer versions add `sessionId`. Answer: `{"permissionDecision": "deny",
//! "permissionDecisionReason": …}` on stdout blocks the call. Copilot CLI
//! acts only on `deny`: an allowed command gets no output, and there is no
//! "ask" to hand a command to the user. Every failure, including input we
//! cannot read, answers with that deny object too, since the deny object
//! is the one answer this hook documents as blocking.

use super::{Answer, Call, Event, Reply, object, opt_string, string};
use serde_json::json;

pub(super) fn parse(input: &str) -> Result<Call, String> {
    let m = object(input)?;
    let tool = string(&m, "toolName")?;
    let command = if matches!(tool, "bash" | "powershell") {
        let args = string(&m, "toolArgs")?;
        let args: serde_json::Value = serde_json::from_str(args)
            .map_err(|e| format!("the {tool} tool's `toolArgs` is not JSON ({e})"))?;
        match args.get("command") {
            Some(serde_json::Value::String(c)) => Some(c.clone()),
            _ => {
                return Err(format!(
                    "the {tool} tool's `toolArgs` has no `command` string"
                ));
            }
        }
    } else {
        None
    };
    Ok(Call {
        event: Event::PreToolUse,
        command,
        cwd: opt_string(&m, "cwd")?,
        session: opt_string(&m, "sessionId")?,
    })
}

pub(super) fn answer(_call: Option<&Call>, reply: &Reply) -> Answer {
    match reply {
        Reply::Pass | Reply::Allow(_) => Answer::silent(),
        Reply::Deny(m) | Reply::Ask(m) | Reply::Error(m) => Answer::json(json!({
            "permissionDecision": "deny",
            "permissionDecisionReason": m,
        })),
    }
}

//! Every agent's hook front end, through the `holdpoint` binary, with input
//! written field by field from each agent's hook documentation (named, with
//! the version or date read, above each fixture) and checked field by field
//! against the documented answer and blocking exit codes. No bot is
//! configured here: a command that needs review is refused with the reason.
//! The waits on a bot are end-to-end tests (tests/tests/hooks.rs).

use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_holdpoint");

const ALLOWED: &str = "cargo test -p core";
const DENIED: &str = "cat ~/.ssh/id_rsa";
const REVIEW: &str = "git push --force origin main";

struct Sandbox {
    root: PathBuf,
}

impl Sandbox {
    fn new(name: &str) -> Sandbox {
        let root =
            std::env::temp_dir().join(format!("holdpoint-hooks-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("home/.config")).unwrap();
        std::fs::create_dir_all(root.join("project/sub")).unwrap();
        Sandbox { root }
    }
    fn project(&self) -> String {
        self.root.join("project").to_string_lossy().into_owned()
    }
    fn run(&self, agent: &str, extra: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
        let mut c = Command::new(BIN);
        c.args(["hook", agent])
            .args(extra)
            .current_dir(self.root.join("project"))
            .env_clear()
            .env("HOME", self.root.join("home"))
            .env("XDG_CONFIG_HOME", self.root.join("home/.config"))
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", text(&o.stdout)))
}

// --- Claude Code: "Hooks reference", code.claude.com/docs/en/hooks, read 2026-12.

fn claude_pre_tool_use(cwd: &str, command: &str) -> Value {
    json!({
        "session_id": "3f2a9c1e-claude-session",
        "transcript_path": "/home/dev/.claude/projects/demo/3f2a9c1e.jsonl",
        "cwd": cwd,
        "permission_mode": "default",
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": {
            "command": command,
            "description": "Run the command",
            "timeout": 120000,
            "run_in_background": false
        },
        "tool_use_id": "toolu_01ABCdefGHI"
    })
}

fn claude_permission_request(cwd: &str, command: &str) -> Value {
    json!({
        "session_id": "3f2a9c1e-claude-session",
        "transcript_path": "/home/dev/.claude/projects/demo/3f2a9c1e.jsonl",
        "cwd": cwd,
        "permission_mode": "default",
        "hook_event_name": "PermissionRequest",
        "tool_name": "Bash",
        "tool_input": {"command": command, "description": "Run the command"},
        "permission_suggestions": [
            {"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "git push:*"}],
             "behavior": "allow", "destination": "localSettings"}
        ]
    })
}

#[test]
fn claude_code_pre_tool_use_answers_allow_deny_and_needs_review_as_documented() {
    let sb = Sandbox::new("claude-pre");
    let cwd = sb.project();
    let o = sb.run(
        "claude-code",
        &[],
        &[],
        &claude_pre_tool_use(&cwd, ALLOWED).to_string(),
    );
    assert_eq!(o.status.code(), Some(0));
    let v = json_out(&o);
    assert_eq!(v["hookSpecificOutput"]["hookEventName"], "PreToolUse");
    assert_eq!(v["hookSpecificOutput"]["permissionDecision"], "allow");
    assert!(v["hookSpecificOutput"]["permissionDecisionReason"].is_string());

    for command in [DENIED, REVIEW] {
        let o = sb.run(
            "claude-code",
            &[],
            &[],
            &claude_pre_tool_use(&cwd, command).to_string(),
        );
        assert_eq!(o.status.code(), Some(0));
        let v = json_out(&o);
        assert_eq!(
            v["hookSpecificOutput"]["permissionDecision"], "deny",
            "{command}"
        );
        assert!(
            v["hookSpecificOutput"]["permissionDecisionReason"]
                .as_str()
                .is_some_and(|r| r.contains("holdpoint")),
            "{v}"
        );
    }
}

#[test]
fn claude_code_ask_setting_hands_review_to_the_local_user_but_still_denies() {
    let sb = Sandbox::new("claude-ask");
    let cwd = sb.project();
    let o = sb.run(
        "claude-code",
        &["--ask"],
        &[],
        &claude_pre_tool_use(&cwd, REVIEW).to_string(),
    );
    let v = json_out(&o);
    assert_eq!(v["hookSpecificOutput"]["permissionDecision"], "ask", "{v}");
    let o = sb.run(
        "claude-code",
        &[],
        &[("HOLDPOINT_HOOK_ASK", "1")],
        &claude_pre_tool_use(&cwd, DENIED).to_string(),
    );
    assert_eq!(
        json_out(&o)["hookSpecificOutput"]["permissionDecision"],
        "deny"
    );
    // PermissionRequest has no "ask": silence lets Claude Code show its dialog.
    let o = sb.run(
        "claude-code",
        &["--ask"],
        &[],
        &claude_permission_request(&cwd, REVIEW).to_string(),
    );
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout), "");
}

#[test]
fn claude_code_permission_request_answers_with_a_decision_behavior() {
    let sb = Sandbox::new("claude-perm");
    let cwd = sb.project();
    let o = sb.run(
        "claude-code",
        &[],
        &[],
        &claude_permission_request(&cwd, ALLOWED).to_string(),
    );
    assert_eq!(o.status.code(), Some(0));
    let v = json_out(&o);
    assert_eq!(
        v["hookSpecificOutput"]["hookEventName"],
        "PermissionRequest"
    );
    assert_eq!(v["hookSpecificOutput"]["decision"]["behavior"], "allow");
    let o = sb.run(
        "claude-code",
        &[],
        &[],
        &claude_permission_request(&cwd, DENIED).to_string(),
    );
    let v = json_out(&o);
    assert_eq!(v["hookSpecificOutput"]["decision"]["behavior"], "deny");
    assert!(
        v["hookSpecificOutput"]["decision"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("secrets.file.read")),
        "{v}"
    );
}

// --- Codex CLI: "Hooks", developers.openai.com/codex/hooks, revision of 2026-05-18.

fn codex(event: &str, cwd: &str, tool: &str, command: &str) -> Value {
    json!({
        "session_id": "0199a0c2-codex-session",
        "turn_id": "0199a0c2-turn-7",
        "transcript_path": "/home/dev/.codex/sessions/2026/05/18/rollout.jsonl",
        "cwd": cwd,
        "hook_event_name": event,
        "model": "gpt-5-codex",
        "permission_mode": "default",
        "tool_name": tool,
        "tool_use_id": "call_8f3e",
        "tool_input": {"command": command}
    })
}

#[test]
fn codex_pre_tool_use_is_silent_when_allowed_and_denies_with_a_reason() {
    let sb = Sandbox::new("codex-pre");
    let cwd = sb.project();
    let o = sb.run(
        "codex",
        &[],
        &[],
        &codex("PreToolUse", &cwd, "Bash", ALLOWED).to_string(),
    );
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        text(&o.stdout),
        "",
        "Codex does not act on allow: say nothing"
    );
    for command in [DENIED, REVIEW] {
        let o = sb.run(
            "codex",
            &[],
            &[],
            &codex("PreToolUse", &cwd, "Bash", command).to_string(),
        );
        assert_eq!(o.status.code(), Some(0));
        let v = json_out(&o);
        assert_eq!(v["hookSpecificOutput"]["hookEventName"], "PreToolUse");
        assert_eq!(v["hookSpecificOutput"]["permissionDecision"], "deny");
        assert!(v["hookSpecificOutput"]["permissionDecisionReason"].is_string());
    }
    let o = sb.run(
        "codex",
        &[],
        &[],
        &codex("PreToolUse", &cwd, "apply_patch", "x").to_string(),
    );
    assert_eq!((o.status.code(), text(&o.stdout)), (Some(0), String::new()));
}

#[test]
fn codex_permission_request_allows_denies_and_asks_by_silence() {
    let sb = Sandbox::new("codex-perm");
    let cwd = sb.project();
    let o = sb.run(
        "codex",
        &[],
        &[],
        &codex("PermissionRequest", &cwd, "Bash", ALLOWED).to_string(),
    );
    let v = json_out(&o);
    assert_eq!(
        v["hookSpecificOutput"]["hookEventName"],
        "PermissionRequest"
    );
    assert_eq!(v["hookSpecificOutput"]["decision"]["behavior"], "allow");
    let o = sb.run(
        "codex",
        &[],
        &[],
        &codex("PermissionRequest", &cwd, "Bash", REVIEW).to_string(),
    );
    let v = json_out(&o);
    assert_eq!(v["hookSpecificOutput"]["decision"]["behavior"], "deny");
    assert!(v["hookSpecificOutput"]["decision"]["message"].is_string());
    let o = sb.run(
        "codex",
        &["--ask"],
        &[],
        &codex("PermissionRequest", &cwd, "Bash", REVIEW).to_string(),
    );
    assert_eq!((o.status.code(), text(&o.stdout)), (Some(0), String::new()));
}

// --- Gemini CLI: "Hooks reference", geminicli.com/docs/hooks/reference, read 2026-12.

fn gemini(cwd: &str, tool: &str, command: &str, dir: Option<&str>) -> Value {
    let mut input = json!({"command": command, "description": "Run the command"});
    if let Some(d) = dir {
        input["dir_path"] = json!(d);
    }
    json!({
        "session_id": "gemini-session-51",
        "transcript_path": "/home/dev/.gemini/tmp/chats/session-51.json",
        "cwd": cwd,
        "hook_event_name": "BeforeTool",
        "timestamp": "2026-12-02T14:50:00.000Z",
        "tool_name": tool,
        "tool_input": input
    })
}

#[test]
fn gemini_before_tool_answers_a_decision_and_a_reason() {
    let sb = Sandbox::new("gemini");
    let cwd = sb.project();
    let o = sb.run(
        "gemini",
        &[],
        &[],
        &gemini(&cwd, "run_shell_command", ALLOWED, Some("sub")).to_string(),
    );
    assert_eq!(o.status.code(), Some(0));
    let v = json_out(&o);
    assert_eq!(v["decision"], "allow");
    assert!(v["reason"].is_string());
    for command in [DENIED, REVIEW] {
        let o = sb.run(
            "gemini",
            &[],
            &[],
            &gemini(&cwd, "run_shell_command", command, None).to_string(),
        );
        assert_eq!(o.status.code(), Some(0));
        let v = json_out(&o);
        assert_eq!(v["decision"], "deny", "{command}");
        assert!(
            v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("holdpoint"))
        );
    }
    let o = sb.run(
        "gemini",
        &[],
        &[],
        &gemini(&cwd, "read_file", "x", None).to_string(),
    );
    assert_eq!((o.status.code(), text(&o.stdout)), (Some(0), String::new()));
}

// --- GitHub Copilot CLI: "Hooks configuration",
// docs.github.com/en/copilot/reference/hooks-configuration, read 2026-12.

fn copilot(cwd: &str, tool: &str, command: &str) -> Value {
    json!({
        "timestamp": 1764687000000u64,
        "cwd": cwd,
        "toolName": tool,
        "toolArgs": json!({"command": command, "description": "Run the command"}).to_string()
    })
}

#[test]
fn copilot_pre_tool_use_denies_with_a_permission_decision_and_is_silent_otherwise() {
    let sb = Sandbox::new("copilot");
    let cwd = sb.project();
    let o = sb.run(
        "copilot",
        &[],
        &[],
        &copilot(&cwd, "bash", ALLOWED).to_string(),
    );
    assert_eq!((o.status.code(), text(&o.stdout)), (Some(0), String::new()));
    for command in [DENIED, REVIEW] {
        let o = sb.run(
            "copilot",
            &[],
            &[],
            &copilot(&cwd, "bash", command).to_string(),
        );
        assert_eq!(o.status.code(), Some(0));
        let v = json_out(&o);
        assert_eq!(v["permissionDecision"], "deny");
        assert!(v["permissionDecisionReason"].is_string());
    }
    let o = sb.run("copilot", &[], &[], &copilot(&cwd, "view", "x").to_string());
    assert_eq!((o.status.code(), text(&o.stdout)), (Some(0), String::new()));
}

// --- Cursor: "Hooks", cursor.com/docs/agent/hooks, read 2026-12 (Cursor 1.7+).

fn cursor(cwd: &str, command: &str) -> Value {
    json!({
        "conversation_id": "c0ffee00-cursor-conversation",
        "generation_id": "gen-2b7d",
        "model": "claude-sonnet-4",
        "hook_event_name": "beforeShellExecution",
        "cursor_version": "1.7.44",
        "workspace_roots": [cwd],
        "user_email": "dev@example.com",
        "transcript_path": null,
        "command": command,
        "cwd": cwd,
        "sandbox": false
    })
}

#[test]
fn cursor_before_shell_execution_answers_a_permission_with_messages() {
    let sb = Sandbox::new("cursor");
    let cwd = sb.project();
    let o = sb.run("cursor", &[], &[], &cursor(&cwd, ALLOWED).to_string());
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(json_out(&o)["permission"], "allow");
    for command in [DENIED, REVIEW] {
        let o = sb.run("cursor", &[], &[], &cursor(&cwd, command).to_string());
        assert_eq!(o.status.code(), Some(0));
        let v = json_out(&o);
        assert_eq!(v["permission"], "deny");
        assert!(v["user_message"].is_string() && v["agent_message"].is_string());
    }
    let o = sb.run("cursor", &["--ask"], &[], &cursor(&cwd, REVIEW).to_string());
    assert_eq!(json_out(&o)["permission"], "ask");
}

// --- Every agent: what cannot be read is refused in that agent's blocking form.

/// The agent's blocking answer: `true` if `o` blocks the call.
fn blocks(agent: &str, o: &Output) -> bool {
    let out: Option<Value> = serde_json::from_slice(&o.stdout).ok();
    match agent {
        "claude-code" | "codex" | "gemini" => o.status.code() == Some(2),
        "copilot" => {
            o.status.code() == Some(0) && out.is_some_and(|v| v["permissionDecision"] == "deny")
        }
        "cursor" => o.status.code() == Some(2) && out.is_some_and(|v| v["permission"] == "deny"),
        _ => false,
    }
}

#[test]
fn malformed_input_is_refused_in_each_agents_blocking_form() {
    let sb = Sandbox::new("malformed");
    let cwd = sb.project();
    let cases: &[(&str, Vec<String>)] = &[
        (
            "claude-code",
            vec![
                r#"{"tool_name":"Bash","tool_input":{"command":123}}"#.into(),
                r#"{"hook_event_name":"Stop","tool_name":"Bash","tool_input":{"command":"ls"}}"#.into(),
            ],
        ),
        (
            "codex",
            vec![
                r#"{"hook_event_name":"PreToolUse","tool_name":"Bash","tool_input":{}}"#.into(),
                r#"{"tool_name":"Bash","tool_input":{"command":"ls"}}"#.into(),
            ],
        ),
        (
            "gemini",
            vec![
                r#"{"hook_event_name":"BeforeTool","tool_name":"run_shell_command","tool_input":{"command":["ls"]}}"#.into(),
                r#"{"hook_event_name":"BeforeTool","tool_name":"run_shell_command","tool_input":{"command":"ls","dir_path":7}}"#.into(),
            ],
        ),
        (
            "copilot",
            vec![
                r#"{"cwd":"/tmp","toolName":"bash","toolArgs":"{not json"}"#.into(),
                r#"{"cwd":"/tmp","toolName":"bash","toolArgs":{"command":"ls"}}"#.into(),
            ],
        ),
        (
            "cursor",
            vec![
                r#"{"hook_event_name":"beforeShellExecution","cwd":"/tmp"}"#.into(),
                r#"{"hook_event_name":"beforeMCPExecution","command":"ls"}"#.into(),
            ],
        ),
    ];
    let huge = format!(r#"{{"command":"echo {}"}}"#, "x".repeat(5 * 1024 * 1024));
    for (agent, inputs) in cases {
        let common = [
            "".to_string(),
            "{not json".into(),
            "[1,2]".into(),
            huge.clone(),
        ];
        for input in inputs.iter().chain(common.iter()) {
            let o = sb.run(agent, &[], &[], input);
            assert!(
                blocks(agent, &o),
                "{agent} did not block {:?}: {:?} {} {}",
                &input[..input.len().min(80)],
                o.status.code(),
                text(&o.stdout),
                text(&o.stderr)
            );
            assert!(!text(&o.stdout).contains("\"allow\""));
        }
    }
    // A policy that does not load blocks too, for every agent.
    let bad = sb.root.join("bad.toml");
    std::fs::write(&bad, "[[rule]]\nid = 3\n").unwrap();
    let bad = bad.to_string_lossy().into_owned();
    let inputs = [
        ("claude-code", claude_pre_tool_use(&cwd, ALLOWED)),
        ("codex", codex("PreToolUse", &cwd, "Bash", ALLOWED)),
        ("gemini", gemini(&cwd, "run_shell_command", ALLOWED, None)),
        ("copilot", copilot(&cwd, "bash", ALLOWED)),
        ("cursor", cursor(&cwd, ALLOWED)),
    ];
    for (agent, input) in inputs {
        let o = sb.run(
            agent,
            &[],
            &[("HOLDPOINT_POLICY", &bad)],
            &input.to_string(),
        );
        assert!(
            blocks(agent, &o),
            "{agent}: {:?} {}",
            o.status.code(),
            text(&o.stdout)
        );
        assert!(text(&o.stderr).contains("policy") || text(&o.stdout).contains("policy"));
    }
}

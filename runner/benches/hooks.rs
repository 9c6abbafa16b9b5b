//! Whole-process cost of each hook front end for an allowed command: the
//! agent's documented hook input for `cargo test -p core` piped to
//! `holdpoint hook AGENT`, against the same input piped to `true`,
//! alternated in the same run so both see the same machine. No bot is
//! configured (an allowed command never waits for one; with a bot, the
//! audit spool append of `benches/startup.rs` comes on top).
//!
//! `cargo bench -p holdpoint-runner --bench hooks` (add `--profile dev` to
//! skip the optimised build; the numbers are then a debug binary's).

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 200;

fn time(cmd: &mut Command, input: &[u8]) -> Duration {
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run: {e}"));
    // `true` does not read its input: a closed pipe is not an error here.
    let _ = child.stdin.take().map(|mut s| s.write_all(input));
    let status = child.wait().unwrap_or_else(|e| panic!("cannot wait: {e}"));
    let d = t.elapsed();
    assert!(status.success(), "{cmd:?} failed");
    d
}

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

fn inputs(cwd: &str) -> Vec<(&'static str, String)> {
    let c = "cargo test -p core";
    vec![
        (
            "claude-code",
            serde_json::json!({"session_id": "s", "transcript_path": "/tmp/t.jsonl", "cwd": cwd,
                "permission_mode": "default", "hook_event_name": "PreToolUse", "tool_name": "Bash",
                "tool_input": {"command": c, "description": "tests"}, "tool_use_id": "toolu_1"})
            .to_string(),
        ),
        (
            "codex",
            serde_json::json!({"session_id": "s", "turn_id": "t", "transcript_path": null, "cwd": cwd,
                "hook_event_name": "PreToolUse", "model": "gpt-5-codex", "tool_name": "Bash",
                "tool_use_id": "call_1", "tool_input": {"command": c}})
            .to_string(),
        ),
        (
            "gemini",
            serde_json::json!({"session_id": "s", "transcript_path": "/tmp/t.json", "cwd": cwd,
                "hook_event_name": "BeforeTool", "timestamp": "2026-12-02T15:00:00Z",
                "tool_name": "run_shell_command", "tool_input": {"command": c}})
            .to_string(),
        ),
        (
            "copilot",
            serde_json::json!({"timestamp": 1764687000000u64, "cwd": cwd, "toolName": "bash",
                "toolArgs": serde_json::json!({"command": c}).to_string()})
            .to_string(),
        ),
        (
            "cursor",
            serde_json::json!({"conversation_id": "c", "generation_id": "g", "model": "m",
                "hook_event_name": "beforeShellExecution", "cursor_version": "1.7.44",
                "workspace_roots": [cwd], "user_email": null, "command": c, "cwd": cwd})
            .to_string(),
        ),
    ]
}

fn main() {
    let bin = env!("CARGO_BIN_EXE_holdpoint");
    let home = std::env::temp_dir().join("holdpoint-bench-hooks-home");
    let _ = std::fs::create_dir_all(&home);
    let cwd = home.to_string_lossy().into_owned();
    let mk = |argv: &[&str]| {
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..])
            .current_dir(&home)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join("none"));
        c
    };
    println!("{RUNS} runs each, alternated; added = hook − true, per call");
    println!("agent        hook p50   true p50   added p50  added p90");
    for (agent, input) in inputs(&cwd) {
        let input = input.into_bytes();
        for _ in 0..10 {
            time(&mut mk(&[bin, "hook", agent]), &input);
            time(&mut mk(&["true"]), &input);
        }
        let (mut hook, mut bare, mut added) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let h = time(&mut mk(&[bin, "hook", agent]), &input);
            let b = time(&mut mk(&["true"]), &input);
            hook.push(h);
            bare.push(b);
            added.push(h.saturating_sub(b));
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{agent:<12} {:>7.2} ms {:>7.2} ms {:>8.2} ms {:>8.2} ms",
            ms(pct(hook, 0.5)),
            ms(pct(bare, 0.5)),
            ms(pct(added.clone(), 0.5)),
            ms(pct(added, 0.9)),
        );
    }
}

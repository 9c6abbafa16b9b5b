//! `holdpoint mcp` driven by a real MCP client: the official SDK's Python
//! client (PyPI `mcp`), in a virtual environment under the target directory
//! (`HOLDPOINT_MCP_VENV`, else `TARGET/mcp-venv`, made here if Python can).
//! Without Python or the venv these tests say they skipped, unless
//! `HOLDPOINT_REQUIRE_MCP=1` (as `.ci/run` sets), when they fail.
//!
//! Commands that run go to a recorder set as `HOLDPOINT_REAL_SHELL`: it
//! writes what it was asked to run to a file and prints a line; nothing
//! reaches a real shell.

use holdpoint_testkit::*;
use serde_json::{Value, json};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const FORCE_PUSH: &str = "git push --force origin main";
const ALLOWED: &str = "cargo test -p core";

/// The venv's Python, made once per test process.
fn venv() -> Option<PathBuf> {
    static VENV: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    VENV.get_or_init(make_venv).clone()
}

fn make_venv() -> Option<PathBuf> {
    let required = std::env::var("HOLDPOINT_REQUIRE_MCP").is_ok_and(|v| v == "1");
    let dir = std::env::var_os("HOLDPOINT_MCP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let t = target_dir();
            t.parent().unwrap_or(&t).join("mcp-venv")
        });
    let python = dir.join("bin/python");
    let ready = |p: &Path| {
        Command::new(p)
            .args(["-c", "import mcp"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ready(&python) {
        return Some(python);
    }
    let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/client/requirements.txt");
    let made = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(dir.join("bin/pip"))
            .args(["install", "-q", "-r"])
            .arg(&requirements)
            .status()
            .is_ok_and(|s| s.success());
    if made && ready(&python) {
        return Some(python);
    }
    assert!(
        !required,
        "HOLDPOINT_REQUIRE_MCP=1 but there is no venv with the MCP SDK at {}",
        dir.display()
    );
    eprintln!(
        "skipped: no Python venv with the MCP SDK at {} (set HOLDPOINT_REQUIRE_MCP=1 to fail instead)",
        dir.display()
    );
    None
}

/// A scratch directory with the recorder and its record.
struct Scene {
    dir: TempDir,
}

impl Scene {
    fn new() -> Scene {
        let dir = TempDir::new("mcp");
        let recorder = dir.path().join("recorder");
        // Called as `recorder -c COMMAND`: records COMMAND, prints a line.
        std::fs::write(
            &recorder,
            "#!/bin/sh\nprintf '%s\\n' \"$2\" >> \"$(dirname \"$0\")/record\"\nprintf 'ran: %s\\n' \"$2\"\nprintf 'to stderr\\n' >&2\n",
        )
        .expect("write the recorder");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&recorder, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::create_dir_all(dir.path().join("work")).expect("work dir");
        Scene { dir }
    }
    fn record(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("record"))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }
    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }
}

/// The client, driving `holdpoint mcp` through `steps`, spawned; its
/// environment is the server's.
fn client(python: &Path, scene: &Scene, bot: Option<&Bot>, steps: Value) -> std::process::Child {
    let mut c = Command::new(python);
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/client/drive.py"))
        .arg(bin("holdpoint"))
        .arg(steps.to_string())
        .current_dir(scene.work())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", scene.dir.path())
        .env("USER", "agent")
        .env("HOLDPOINT_REAL_SHELL", scene.dir.path().join("recorder"))
        .env("HOLDPOINT_SPOOL_DIR", scene.dir.path().join("spool"))
        .env("HOLDPOINT_PROBE_TIMEOUT_MS", "2000")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(bot) = bot {
        c.env("HOLDPOINT_URL", bot.url())
            .env("HOLDPOINT_TOKEN", &bot.token)
            .env("HOLDPOINT_CONNECT_TIMEOUT", "5");
    }
    c.spawn().expect("start the MCP client")
}

/// Every step's result, once the client is done.
fn results(child: std::process::Child) -> Vec<Value> {
    let out = child.wait_with_output().expect("client output");
    assert!(
        out.status.success(),
        "the client failed: {}",
        text(&out.stdout)
    );
    BufReader::new(&out.stdout[..])
        .lines()
        .map(|l| serde_json::from_str(&l.expect("line")).expect("a JSON line"))
        .collect()
}

fn call(name: &str, arguments: Value) -> Value {
    json!({"op": "call", "name": name, "arguments": arguments})
}

#[test]
fn tools_are_listed_and_an_allowed_command_returns_its_output() {
    let Some(python) = venv() else { return };
    let scene = Scene::new();
    let work = scene.work().to_string_lossy().into_owned();
    let r = results(client(
        &python,
        &scene,
        None,
        json!([
            {"op": "list"},
            call("run_command", json!({"command": ALLOWED, "cwd": work})),
            call("check_command", json!({"command": FORCE_PUSH})),
        ]),
    ));
    let names: Vec<&str> = r[0]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"run_command") && names.contains(&"check_command"),
        "{names:?}"
    );
    let run = r[0]["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "run_command"))
        .expect("run_command");
    assert_eq!(run["input_schema"]["required"], json!(["command"]));

    assert_eq!(r[1]["is_error"], false, "{}", r[1]);
    assert_eq!(r[1]["structured"]["exit_code"], 0);
    assert_eq!(r[1]["structured"]["stdout"], format!("ran: {ALLOWED}\n"));
    assert_eq!(r[1]["structured"]["stderr"], "to stderr\n");
    assert_eq!(r[1]["structured"]["stdout_truncated"], false);
    assert_eq!(scene.record(), vec![ALLOWED.to_string()]);

    assert_eq!(r[2]["structured"]["decision"], "review");
    assert_eq!(r[2]["structured"]["rules"], json!(["git.push.force"]));
    assert_eq!(scene.record().len(), 1, "check_command runs nothing");
}

#[test]
fn a_held_command_reports_progress_and_runs_after_approval() {
    let Some(python) = venv() else { return };
    let Some(bot) = Bot::on(Backend::Sqlite, &[]) else {
        return;
    };
    let scene = Scene::new();
    let child = client(
        &python,
        &scene,
        Some(&bot),
        json!([call("run_command", json!({"command": FORCE_PUSH}))]),
    );
    let pending = bot.wait_pending();
    assert_eq!(pending["command"], FORCE_PUSH);
    assert_eq!(pending["agent"], "mcp");
    assert_eq!(pending["front_end"], "mcp");
    // Long enough for progress notifications to reach the client.
    std::thread::sleep(Duration::from_millis(4500));
    assert!(scene.record().is_empty(), "nothing runs before approval");
    let id = pending["id"].as_str().expect("id").to_string();
    assert!(bot.run(&["approve", &id]).status.success());
    let r = results(child);
    assert_eq!(r[0]["is_error"], false, "{}", r[0]);
    assert_eq!(r[0]["structured"]["stdout"], format!("ran: {FORCE_PUSH}\n"));
    assert!(
        r[0]["progress"].as_array().is_some_and(|p| !p.is_empty()
            && p.iter()
                .all(|m| m.as_str().is_some_and(|m| m.contains("reviewer")))),
        "progress while waiting: {}",
        r[0]
    );
    assert_eq!(scene.record(), vec![FORCE_PUSH.to_string()]);
}

#[test]
fn a_denied_command_is_a_tool_error_with_the_reviewers_reason() {
    let Some(python) = venv() else { return };
    let Some(bot) = Bot::on(Backend::Sqlite, &[]) else {
        return;
    };
    let scene = Scene::new();
    let child = client(
        &python,
        &scene,
        Some(&bot),
        json!([call("run_command", json!({"command": FORCE_PUSH}))]),
    );
    let id = bot.wait_pending()["id"].as_str().expect("id").to_string();
    assert!(
        bot.run(&["deny", &id, "--reason", "main is frozen"])
            .status
            .success()
    );
    let r = results(child);
    assert_eq!(r[0]["is_error"], true, "{}", r[0]);
    let msg = r[0]["text"][0].as_str().unwrap_or_default();
    assert!(
        msg.contains("denied by cli:reviewer: main is frozen"),
        "{msg}"
    );
    assert!(scene.record().is_empty(), "a denied command never runs");
}

#[test]
fn a_malformed_call_is_an_error_and_runs_nothing() {
    let Some(python) = venv() else { return };
    let scene = Scene::new();
    let r = results(client(
        &python,
        &scene,
        None,
        json!([
            call("run_command", json!({})),
            call("run_command", json!({"command": 7})),
            call("run_command", json!({"command": ALLOWED, "shell": "zsh"})),
            call(
                "run_command",
                json!({"command": ALLOWED, "cwd": "relative/dir"})
            ),
            call(
                "run_command",
                json!({"command": ALLOWED, "cwd": "/no/such/dir"})
            ),
            call(
                "run_command",
                json!({"command": ALLOWED, "timeout_secs": -1})
            ),
            call("no_such_tool", json!({"command": ALLOWED})),
        ]),
    ));
    for (i, step) in r.iter().enumerate() {
        let is_error = step["is_error"] == true || step.get("rpc_error").is_some();
        assert!(is_error, "step {i} must be an error: {step}");
    }
    assert!(
        scene.record().is_empty(),
        "no malformed call runs anything: {:?}",
        scene.record()
    );
}

#[test]
fn the_server_refuses_to_start_with_a_policy_that_does_not_load() {
    let scene = Scene::new();
    let bad = scene.dir.path().join("bad.toml");
    std::fs::write(&bad, "[[rule]]\nid = 3\n").expect("write");
    let out = Command::new(bin("holdpoint"))
        .arg("mcp")
        .env_clear()
        .env("HOME", scene.dir.path())
        .env("HOLDPOINT_POLICY", &bad)
        .stdin(Stdio::null())
        .output()
        .expect("run holdpoint mcp");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("refusing to start"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn holdpoint_mcp_says_so_when_the_server_is_not_beside_it() {
    let scene = Scene::new();
    let lone = scene.dir.path().join("holdpoint");
    std::fs::copy(bin("holdpoint"), &lone).expect("copy");
    let out = Command::new(&lone)
        .arg("mcp")
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(124));
    let err = text(&out.stderr);
    assert!(
        err.contains("not installed") && err.contains("holdpoint-mcp"),
        "{err}"
    );
}

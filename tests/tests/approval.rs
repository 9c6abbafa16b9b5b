//! End to end: the real `holdpoint` runner waits for the real `holdpoint-bot`,
//! a reviewer decides with the bot's CLI, and the command runs or does not.
//! Every scenario runs on SQLite and on PostgreSQL.

use holdpoint_testkit::*;
use std::time::Duration;

const FORCE_PUSH: &str = "git push --force origin main";

fn pending_id(bot: &Bot) -> String {
    bot.wait_pending()["id"]
        .as_str()
        .expect("a pending request has an id")
        .to_string()
}

fn force_push_waits_for_approval_and_then_runs(backend: Backend) {
    let Some(bot) = Bot::on(backend, &[]) else {
        return;
    };
    let ws = Workspace::new();
    let before = ws.origin_head();
    let spool = TempDir::new("spool");
    let mut agent = Agent::spawn({
        let mut c = runner(&bot.url(), &bot.token, &ws.repo(), spool.path());
        c.args(["sh", "-c", FORCE_PUSH]);
        c
    });
    let pending = bot.wait_pending();
    assert_eq!(pending["command"], FORCE_PUSH);
    assert_eq!(pending["verdict"]["risk"], "high");
    assert!(
        pending["verdict"]["hits"]
            .as_array()
            .is_some_and(|h| h.iter().any(|h| h["rule"] == "git.push.force")),
        "the request names the rule: {pending}"
    );
    // It waits: nothing was pushed yet.
    std::thread::sleep(Duration::from_millis(500));
    assert!(agent.running(), "the runner must wait for a decision");
    assert_eq!(ws.origin_head(), before, "nothing runs before approval");

    let id = pending["id"].as_str().expect("id").to_string();
    let out = bot.run(&["approve", &id[..10]]);
    assert!(out.status.success(), "approve: {}", text(&out.stdout));
    let out = agent.finish(Duration::from_secs(20));
    let err = text(&out.stderr);
    assert!(out.status.success(), "the approved push runs: {err}");
    assert!(err.contains("waiting for a reviewer"), "{err}");
    assert!(err.contains("approved by cli:reviewer"), "{err}");
    assert_eq!(ws.origin_head(), ws.local_head(), "the force push happened");
    assert_ne!(ws.origin_head(), before);

    let audit = bot.audit();
    let kinds: Vec<&str> = audit.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert!(kinds.contains(&"request.submitted"), "{kinds:?}");
    assert!(kinds.contains(&"request.approved"), "{kinds:?}");
    let verify = bot.run(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify.stdout));
}

fn denial_reaches_the_agent_with_the_reason(backend: Backend) {
    let Some(bot) = Bot::on(backend, &[]) else {
        return;
    };
    let ws = Workspace::new();
    let before = ws.origin_head();
    let spool = TempDir::new("spool");
    let agent = Agent::spawn({
        let mut c = runner(&bot.url(), &bot.token, &ws.repo(), spool.path());
        c.args(["exec", "--", "git", "push", "--force", "origin", "main"]);
        c
    });
    let id = pending_id(&bot);
    let out = bot.run(&["deny", &id, "--reason", "main is frozen until the release"]);
    assert!(out.status.success(), "deny: {}", text(&out.stdout));
    let out = agent.finish(Duration::from_secs(20));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "a denial is exit 125: {err}");
    assert!(
        err.contains("denied by cli:reviewer: main is frozen until the release"),
        "the agent sees who denied and why: {err}"
    );
    assert_eq!(ws.origin_head(), before, "a denied command never runs");
}

fn expiry_denies(backend: Backend) {
    let Some(bot) = Bot::on(backend, &[("HOLDPOINT_EXPIRY", "2s")]) else {
        return;
    };
    let ws = Workspace::new();
    let before = ws.origin_head();
    let spool = TempDir::new("spool");
    let agent = Agent::spawn({
        let mut c = runner(&bot.url(), &bot.token, &ws.repo(), spool.path());
        c.args(["sh", "-c", FORCE_PUSH]);
        c
    });
    let out = agent.finish(Duration::from_secs(30));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("not approved in time"), "{err}");
    assert!(err.contains("no reviewer decided within 2s"), "{err}");
    assert_eq!(ws.origin_head(), before);
    let r = bot.requests();
    assert_eq!(r["recent"][0]["status"], "expired", "{r}");
    // A late approval does not count.
    let id = r["recent"][0]["id"].as_str().expect("id").to_string();
    let late = bot.run(&["approve", &id]);
    assert!(
        text(&late.stdout).contains("already expired by holdpoint"),
        "{}",
        text(&late.stdout)
    );
}

fn bot_restart_while_waiting_still_ends_correctly(backend: Backend) {
    let Some(mut bot) = Bot::on(backend, &[]) else {
        return;
    };
    let ws = Workspace::new();
    let spool = TempDir::new("spool");
    let agent = Agent::spawn({
        let mut c = runner(&bot.url(), &bot.token, &ws.repo(), spool.path());
        c.args(["sh", "-c", FORCE_PUSH]);
        c
    });
    let first = bot.wait_pending();
    bot.kill();
    std::thread::sleep(Duration::from_millis(700));
    bot.restart();
    // The request and its deadline survived the restart.
    let again = bot.wait_pending();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["expires_at"], first["expires_at"]);
    let id = again["id"].as_str().expect("id").to_string();
    let out = bot.run(&["approve", &id]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let out = agent.finish(Duration::from_secs(30));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("reconnecting"), "the agent was told: {err}");
    assert_eq!(ws.origin_head(), ws.local_head());
    // One request, decided once.
    let r = bot.requests();
    assert_eq!(r["pending"].as_array().map(Vec::len), Some(0));
    assert_eq!(r["recent"].as_array().map(Vec::len), Some(1), "{r}");
}

fn websocket_cut_mid_wait_resumes(backend: Backend) {
    let Some(bot) = Bot::on(backend, &[]) else {
        return;
    };
    let proxy = Proxy::start(bot.port);
    let ws = Workspace::new();
    let spool = TempDir::new("spool");
    let agent = Agent::spawn({
        let url = format!("http://127.0.0.1:{}", proxy.port);
        let mut c = runner(&url, &bot.token, &ws.repo(), spool.path());
        c.args(["sh", "-c", FORCE_PUSH]);
        c
    });
    let id = pending_id(&bot);
    assert!(
        proxy.cut() >= 1,
        "the runner's websocket went through the proxy"
    );
    // The decision is made while the runner is reconnecting or just back.
    std::thread::sleep(Duration::from_millis(300));
    let out = bot.run(&["approve", &id]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let out = agent.finish(Duration::from_secs(30));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("reconnecting"), "{err}");
    assert_eq!(ws.origin_head(), ws.local_head());
}

fn two_approvals_at_once_run_the_command_once(backend: Backend) {
    let Some(bot) = Bot::on(backend, &[]) else {
        return;
    };
    let ws = Workspace::new();
    let spool = TempDir::new("spool");
    // The command appends a line each time it runs.
    let command = "git push --force origin main && echo ran >> runs.log";
    let agent = Agent::spawn({
        let mut c = runner(&bot.url(), &bot.token, &ws.repo(), spool.path());
        c.args(["sh", "-c", command]);
        c
    });
    let id = pending_id(&bot);
    let spawn = || {
        bot.command()
            .args(["approve", &id])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("approve")
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    let outs = [text(&a.stdout), text(&b.stdout)];
    assert_eq!(
        outs.iter().filter(|o| o.starts_with("approved")).count(),
        1,
        "exactly one approval wins: {outs:?}"
    );
    assert!(
        outs.iter()
            .any(|o| o.contains("already approved by cli:reviewer")),
        "the other is told who decided first: {outs:?}"
    );
    let out = agent.finish(Duration::from_secs(20));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let runs = std::fs::read_to_string(ws.repo().join("runs.log")).unwrap_or_default();
    assert_eq!(runs, "ran\n", "the command ran exactly once");
}

fn bad_or_revoked_token_is_refused(backend: Backend) {
    let Some(bot) = Bot::on(backend, &[]) else {
        return;
    };
    let ws = Workspace::new();
    let before = ws.origin_head();
    let spool = TempDir::new("spool");

    let bad = runner(
        &bot.url(),
        "hpr_0000000000000000000000000000000000000000",
        &ws.repo(),
        spool.path(),
    )
    .args(["sh", "-c", FORCE_PUSH])
    .output()
    .expect("run");
    let err = text(&bad.stderr);
    assert_eq!(bad.status.code(), Some(125), "{err}");
    assert!(err.contains("unknown runner token"), "{err}");

    // A second runner, revoked while its command waits.
    let add = bot.run(&["runner", "add", "ci-7"]);
    assert!(add.status.success(), "{}", text(&add.stderr));
    let token = text(&add.stdout).trim().to_string();
    let agent = Agent::spawn({
        let mut c = runner(&bot.url(), &token, &ws.repo(), spool.path());
        c.args(["sh", "-c", FORCE_PUSH]);
        c
    });
    let id = pending_id(&bot);
    let out = bot.run(&["runner", "revoke", "ci-7"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = agent.finish(Duration::from_secs(20));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("revoked"), "the agent learns why: {err}");
    // Approving it now changes nothing for the runner: it is gone.
    let _ = bot.run(&["approve", &id]);
    assert_eq!(ws.origin_head(), before);
    // And the revoked token no longer connects at all.
    let again = runner(&bot.url(), &token, &ws.repo(), spool.path())
        .args(["sh", "-c", FORCE_PUSH])
        .output()
        .expect("run");
    assert!(
        text(&again.stderr).contains("revoked"),
        "{}",
        text(&again.stderr)
    );
}

fn allowed_commands_audit_arrives_after_the_bot_was_down(backend: Backend) {
    let Some(mut bot) = Bot::on(backend, &[]) else {
        return;
    };
    let ws = Workspace::new();
    let spool = TempDir::new("spool");
    bot.kill();
    // The bot is down: the allowed command runs at once anyway.
    let out = runner(&bot.url(), &bot.token, &ws.repo(), spool.path())
        .args(["exec", "--", "git", "status", "--short"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The spool keeps commands as typed, on this machine only; what reaches
    // the bot is redacted.
    let secret = runner(&bot.url(), &bot.token, &ws.repo(), spool.path())
        .args(["exec", "--", "echo", "--password=hunter2-not-for-the-log"])
        .output()
        .expect("run");
    assert!(secret.status.success(), "{}", text(&secret.stderr));
    bot.restart();
    eventually(
        Duration::from_secs(45),
        "the spooled verdict reaches the bot",
        || {
            let rows = bot.audit();
            rows.iter()
                .any(|r| r["kind"] == "verdict" && r["event"]["command"] == "git status --short")
                .then_some(rows)
        },
    );
    let audit = eventually(Duration::from_secs(30), "both verdicts arrive", || {
        let rows = bot.audit();
        (rows.iter().filter(|r| r["kind"] == "verdict").count() >= 2).then_some(rows)
    });
    let verdicts: Vec<_> = audit.iter().filter(|r| r["kind"] == "verdict").collect();
    assert_eq!(verdicts.len(), 2, "each counted once: {verdicts:?}");
    assert_eq!(verdicts[0]["event"]["decision"], "allow");
    assert_eq!(verdicts[0]["event"]["action"], "ran");
    let all = serde_json::to_string(&audit).expect("json");
    assert!(!all.contains("hunter2"), "a secret reached the bot: {all}");
    assert!(all.contains("--password=[REDACTED]"), "{all}");
    // Another flush sends nothing twice.
    let flush = runner(&bot.url(), &bot.token, &ws.repo(), spool.path())
        .args(["spool", "flush"])
        .output()
        .expect("flush");
    assert!(flush.status.success(), "{}", text(&flush.stderr));
    let again = bot.audit();
    assert_eq!(again.iter().filter(|r| r["kind"] == "verdict").count(), 2);
}

fn claude_code_hook_waits_for_approval(backend: Backend) {
    let Some(bot) = Bot::on(backend, &[]) else {
        return;
    };
    let ws = Workspace::new();
    let spool = TempDir::new("spool");
    let input = serde_json::json!({
        "session_id": "s-1",
        "tool_name": "Bash",
        "tool_input": {"command": FORCE_PUSH},
        "cwd": ws.repo(),
        "hook_event_name": "PreToolUse",
    });
    let mut cmd = runner(&bot.url(), &bot.token, &ws.repo(), spool.path());
    cmd.args(["hook", "claude-code"])
        .stdin(std::process::Stdio::piped());
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("hook");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(input.to_string().as_bytes())
            .expect("write hook input");
    }
    let pending = bot.wait_pending();
    assert_eq!(pending["agent"], "claude-code");
    assert_eq!(pending["session"], "s-1");
    let id = pending["id"].as_str().expect("id").to_string();
    assert!(bot.run(&["approve", &id]).status.success());
    let out = child.wait_with_output().expect("hook output");
    let answer: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the hook prints JSON");
    assert_eq!(
        answer["hookSpecificOutput"]["permissionDecision"], "allow",
        "{answer}"
    );
}

fn interrupting_the_agent_cancels_its_request(backend: Backend) {
    let Some(bot) = Bot::on(backend, &[]) else {
        return;
    };
    let ws = Workspace::new();
    let before = ws.origin_head();
    let spool = TempDir::new("spool");
    let agent = Agent::spawn({
        let mut c = runner(&bot.url(), &bot.token, &ws.repo(), spool.path());
        c.args(["sh", "-c", FORCE_PUSH]);
        c
    });
    let id = pending_id(&bot);
    agent.signal("INT");
    let out = agent.finish(Duration::from_secs(10));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("cancelled"), "{err}");
    let r = bot.requests();
    assert_eq!(r["recent"][0]["id"], id.as_str());
    assert_eq!(r["recent"][0]["status"], "cancelled", "{r}");
    // A reviewer who comes later learns it is gone; nothing runs.
    let late = bot.run(&["approve", &id]);
    assert!(
        text(&late.stdout).contains("already cancelled"),
        "{}",
        text(&late.stdout)
    );
    assert_eq!(ws.origin_head(), before);
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
    force_push_waits_for_approval_and_then_runs,
    denial_reaches_the_agent_with_the_reason,
    expiry_denies,
    bot_restart_while_waiting_still_ends_correctly,
    websocket_cut_mid_wait_resumes,
    two_approvals_at_once_run_the_command_once,
    bad_or_revoked_token_is_refused,
    allowed_commands_audit_arrives_after_the_bot_was_down,
    claude_code_hook_waits_for_approval,
    interrupting_the_agent_cancels_its_request,
);

/// The database disappears under a running bot: readiness says so, a
/// command that needs review is refused with the reason, nothing runs, and
/// allowed commands are not slowed down.
#[test]
fn a_dead_database_refuses_review_and_runs_nothing() {
    let Some(bot) = Bot::on(Backend::Postgres, &[]) else {
        return;
    };
    let ws = Workspace::new();
    let before = ws.origin_head();
    let spool = TempDir::new("spool");
    let (base, name) = bot
        .database_url
        .rsplit_once('/')
        .map(|(b, n)| (b.to_string(), n.to_string()))
        .expect("a database name");
    let drop = std::process::Command::new("psql")
        .args([
            &format!("{base}/test"),
            "-qAtc",
            &format!("DROP DATABASE {name} WITH (FORCE)"),
        ])
        .output()
        .expect("psql");
    assert!(drop.status.success(), "{}", text(&drop.stderr));
    assert_eq!(http_get(bot.port, "/readyz").map(|x| x.0), Some(503));

    let out = runner(&bot.url(), &bot.token, &ws.repo(), spool.path())
        .args(["sh", "-c", FORCE_PUSH])
        .output()
        .expect("run");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("was not run"), "{err}");
    assert_eq!(ws.origin_head(), before);

    let ok = runner(&bot.url(), &bot.token, &ws.repo(), spool.path())
        .args(["exec", "--", "git", "status", "--short"])
        .output()
        .expect("run");
    assert!(
        ok.status.success(),
        "allowed commands still run: {}",
        text(&ok.stderr)
    );
}

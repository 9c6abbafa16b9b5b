//! End to end: a force push whose risk needs two approvals. The real
//! `holdpoint` runner waits through the first approval (the bot's CLI), a
//! second approval by the same person from the web queue does not count,
//! and the push runs only after a second distinct person approves. On
//! SQLite and on PostgreSQL.

use holdpoint_testkit::*;
use serde_json::json;
use std::time::Duration;

fn approve_on_the_web(bot: &Bot, cookie: &str, id: &str, hash: &str) -> Response {
    http(
        bot.port,
        "POST",
        &format!("/api/requests/{id}/approve"),
        &[
            ("Cookie", cookie),
            ("Content-Type", "application/json"),
            ("X-Holdpoint", "1"),
        ],
        json!({ "command_hash": hash, "reason": null }).to_string(),
    )
}

fn force_push_runs_only_after_the_second_distinct_approval(backend: Backend) {
    let Some(database) = Database::of(backend) else {
        return;
    };
    // The CLI decides as cli:reviewer; the printed login link logs in as
    // web:local. Declared as one person, they count once.
    let bot = BotOptions::new()
        .database(database)
        .config("[quorum]\nhigh = 2\n\n[people.rita]\nids = [\"cli:reviewer\", \"web:local\"]\n")
        .start();
    let ws = Workspace::new();
    let before = ws.origin_head();
    let spool = TempDir::new("spool");
    let mut agent = Agent::spawn({
        let mut c = runner(&bot.url(), &bot.token, &ws.repo(), spool.path());
        c.args(["exec", "--", "git", "push", "--force", "origin", "main"]);
        c
    });
    let pending = bot.wait_pending();
    let id = pending["id"].as_str().expect("id").to_string();
    let hash = pending["command_hash"].as_str().expect("hash").to_string();

    let out = bot.run(&["approve", &id]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("approval counted: 1 of 2"), "{said}");
    let cookie = bot.web_session();
    let again = approve_on_the_web(&bot, &cookie, &id, &hash);
    assert_eq!(again.status, 403, "the same person again: {}", again.body);
    std::thread::sleep(Duration::from_millis(500));
    assert!(agent.running(), "one person's approval is not enough");
    assert_eq!(ws.origin_head(), before, "nothing was pushed yet");

    // Someone else: the quorum is met and the push runs.
    let link = bot.cli(&["login-link", "--name", "bob"]);
    let path = link
        .trim()
        .strip_prefix(&bot.url())
        .expect("a link to this bot")
        .to_string();
    let (_, bob) = bot.log_in(&path, &[]);
    let won = approve_on_the_web(&bot, &bob, &id, &hash);
    assert_eq!(won.status, 200, "{}", won.body);
    let out = agent.finish(Duration::from_secs(20));
    let err = text(&out.stderr);
    assert!(out.status.success(), "the approved push runs: {err}");
    assert!(err.contains("approved by web:bob"), "{err}");
    assert_eq!(ws.origin_head(), ws.local_head(), "the force push happened");
    let votes: Vec<String> = bot
        .audit()
        .into_iter()
        .filter(|r| r["kind"] == "request.voted" && r["request_id"] == id.as_str())
        .filter_map(|r| r["event"]["by"].as_str().map(str::to_string))
        .collect();
    assert_eq!(votes, ["cli:reviewer", "web:bob"]);
}

#[test]
fn force_push_runs_only_after_the_second_distinct_approval_on_sqlite() {
    force_push_runs_only_after_the_second_distinct_approval(Backend::Sqlite);
}

#[test]
fn force_push_runs_only_after_the_second_distinct_approval_on_postgres() {
    force_push_runs_only_after_the_second_distinct_approval(Backend::Postgres);
}

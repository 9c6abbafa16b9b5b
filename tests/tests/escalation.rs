//! End to end: the real `holdpoint` runner holds a force push that nobody
//! answers; the real `holdpoint-bot` reminds the reviewers on the local
//! Slack server, posts it to the pager channel, shows each step on the web
//! queue, and denies it at the deadline: nothing was pushed. On SQLite and
//! on PostgreSQL.

use holdpoint_testkit::slack::*;
use holdpoint_testkit::*;
use serde_json::Value;
use std::time::Duration;

const PAGER: &str = "C0PAGER01";
const WAIT: Duration = Duration::from_secs(20);

fn unanswered_force_push_climbs_the_policy_and_is_denied(backend: Backend) {
    let py = need_python!();
    let Some(database) = Database::of(backend) else {
        return;
    };
    let fake = FakeSlack::start(&py);
    let bot = bot_options(&fake, Mode::Http)
        .database(database)
        .config(
            "[[escalation.policies]]\nname = \"pushes\"\nmin_risk = \"high\"\nsteps = [\n  \
             { after = \"1s\", action = \"remind\" },\n  { after = \"2s\", action = \"notify\" },\n]\n",
        )
        .envs(&[
            ("HOLDPOINT_EXPIRY", "5s"),
            ("HOLDPOINT_SLACK_PAGER_CHANNEL", PAGER),
            ("HOLDPOINT_SLACK_ONCALL", GROUP),
        ])
        .start();
    let ws = Workspace::new();
    let before = ws.origin_head();
    let spool = TempDir::new("spool");
    let agent = Agent::spawn({
        let mut c = runner(&bot.url(), &bot.token, &ws.repo(), spool.path());
        c.args(["exec", "--", "git", "push", "--force", "origin", "main"]);
        c
    });
    let pending = bot.wait_pending();
    let id = pending["id"].as_str().expect("id").to_string();

    // The web queue shows the steps and their due times from the start.
    let cookie = bot.web_session();
    let steps_of = |list: &Value| -> Vec<Value> {
        list["pending"]
            .as_array()
            .and_then(|p| p.iter().find(|r| r["id"] == id.as_str()))
            .and_then(|r| r["escalation"].as_array().cloned())
            .unwrap_or_default()
    };
    let (code, list) = bot.web_get(&cookie, "/api/requests");
    assert_eq!(code, 200, "{list}");
    let steps = steps_of(&list);
    let actions: Vec<&str> = steps.iter().filter_map(|s| s["action"].as_str()).collect();
    assert_eq!(actions, ["remind", "notify"], "{list}");
    let created = pending["created_at"].as_i64().expect("created_at");
    assert_eq!(steps[0]["due_at"].as_i64(), Some(created + 1000));
    assert_eq!(steps[1]["due_at"].as_i64(), Some(created + 2000));

    fake.posted(&id);
    fake.wait_for("the reminder in the request's thread", WAIT, |c| {
        c["method"] == "chat.postMessage"
            && !c["body"]["thread_ts"].is_null()
            && c["body"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("still waiting for a reviewer"))
    });
    let page = fake.wait_for("the post in the pager channel", WAIT, |c| {
        c["method"] == "chat.postMessage"
            && c["body"]["channel"] == PAGER
            && c["body"].to_string().contains(id.as_str())
    });
    assert!(
        page["body"]
            .to_string()
            .contains(&format!("<!subteam^{GROUP}>")),
        "{page}"
    );
    // Both steps fired while it still waited: the queue says when.
    let (_, list) = bot.web_get(&cookie, "/api/requests");
    let fired: Vec<bool> = steps_of(&list)
        .iter()
        .map(|s| s["fired_at"].is_i64())
        .collect();
    assert_eq!(fired, [true, true], "{list}");

    let out = agent.finish(WAIT);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "expiry is a denial: {err}");
    assert!(err.contains("not approved in time"), "{err}");
    assert_eq!(ws.origin_head(), before, "nothing was pushed");
    let kinds: Vec<String> = bot
        .audit()
        .into_iter()
        .filter(|r| r["request_id"] == id.as_str())
        .filter_map(|r| r["kind"].as_str().map(str::to_string))
        .filter(|k| k.starts_with("request."))
        .collect();
    assert_eq!(
        kinds,
        [
            "request.submitted",
            "request.escalated",
            "request.escalated",
            "request.expired"
        ],
        "every step is an audit event, in order"
    );
    let verify = bot.run(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify.stdout));
}

#[test]
fn unanswered_force_push_climbs_the_policy_and_is_denied_on_sqlite() {
    unanswered_force_push_climbs_the_policy_and_is_denied(Backend::Sqlite);
}

#[test]
fn unanswered_force_push_climbs_the_policy_and_is_denied_on_postgres() {
    unanswered_force_push_climbs_the_policy_and_is_denied(Backend::Postgres);
}

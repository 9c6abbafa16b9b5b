//! Escalation in the core, in process, on the injected clock: policies
//! chosen by risk, runner and agent and checked when the config loads;
//! step due times stored with the request; each step fired by the sweep
//! once, also by two bots on one database and by a bot that was down when
//! it was due; never for a request that was decided; every step an audit
//! event and a change on the feed.

use holdpoint_bot::config::{Config, StepAction};
use holdpoint_bot::core::{ManualClock, RunnerId};
use holdpoint_bot::{Bot, Decided, Intent, Reviewer};
use holdpoint_shared::Risk;
use holdpoint_shared::protocol::ReviewRequest;
use holdpoint_testkit::{PgDatabase, TempDir, review};
use std::sync::Arc;
use std::time::Duration;

const START: i64 = 1_800_000_000_000;

fn runner(name: &str) -> RunnerId {
    let id = name
        .bytes()
        .fold(1_000_000i64, |h, b| (h * 31 + i64::from(b)) % 1_000_000_007);
    RunnerId::new(id, name)
}

/// The config: `database_url`, a ten-minute expiry, then `more`.
fn config(dir: &TempDir, database_url: &str, more: &str) -> Result<Config, String> {
    let file = dir.join("bot.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\ndatabase_url = {:?}\n[expiry]\ndefault = \"10m\"\n{more}",
            dir.path().display().to_string(),
            database_url
        ),
    )
    .expect("config");
    Config::load(Some(&file)).map_err(|e| e.to_string())
}

fn sqlite(dir: &TempDir) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("t.db").display())
}

const TWO_STEPS: &str = r#"
[[escalation.policies]]
name = "critical"
min_risk = "high"
steps = [
  { after = "2m", action = "remind" },
  { after = "5m", action = "notify" },
]
"#;

fn force_push() -> ReviewRequest {
    review("git push --force origin main")
        .agent("claude-code")
        .build()
}

async fn open(config: Config, clock: &Arc<ManualClock>) -> Arc<Bot> {
    Arc::new(
        Bot::open_with_clock(config, clock.clone())
            .await
            .expect("bot"),
    )
}

/// How many `request.escalated` rows the audit log holds for `id`, by step.
async fn escalated_in_audit(bot: &Bot, id: &str) -> Vec<u64> {
    let mut out = Vec::new();
    bot.export_audit(0, holdpoint_bot::core::ExportFormat::Json, &mut out)
        .await
        .expect("export");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out).expect("json");
    rows.iter()
        .filter(|r| r["kind"] == "request.escalated" && r["request_id"] == id)
        .filter_map(|r| r["event"]["step"].as_u64())
        .collect()
}

#[tokio::test]
async fn with_no_policy_written_a_request_is_reminded_once_at_half_its_expiry() {
    let dir = TempDir::new("escalation");
    let clock = Arc::new(ManualClock::starting_at(START));
    let bot = open(config(&dir, &sqlite(&dir), "").expect("config"), &clock).await;
    let req = force_push();
    bot.submit(&runner("local"), &req).await.expect("submit");
    let steps = bot.escalation_of(&req.id).await.expect("steps");
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].action, StepAction::Remind);
    assert_eq!(steps[0].due_at, START + 300_000, "half of ten minutes");

    clock.advance(299_999);
    assert_eq!(bot.escalate_due().await.expect("sweep"), 0, "not due yet");
    clock.advance(1);
    assert_eq!(bot.escalate_due().await.expect("sweep"), 1);
    assert_eq!(bot.escalate_due().await.expect("sweep"), 0, "fired once");
    clock.advance(60_000);
    bot.sweep_once().await;
    assert_eq!(escalated_in_audit(&bot, &req.id).await, vec![0]);
    let steps = bot.escalation_of(&req.id).await.expect("steps");
    assert_eq!(steps[0].fired_at, Some(START + 300_000));
    assert!(
        bot.metrics()
            .render(0, 0)
            .contains("holdpoint_escalations_total{action=\"remind\"} 1")
    );
}

#[tokio::test]
async fn each_step_fires_in_order_and_is_announced_on_the_feed() {
    let dir = TempDir::new("escalation");
    let clock = Arc::new(ManualClock::starting_at(START));
    let bot = open(
        config(&dir, &sqlite(&dir), TWO_STEPS).expect("config"),
        &clock,
    )
    .await;
    let mut feed = bot.subscribe();
    tokio::spawn(bot.clone().run_feed());
    let req = force_push();
    bot.submit(&runner("local"), &req).await.expect("submit");
    clock.advance(120_000);
    assert_eq!(bot.escalate_due().await.expect("sweep"), 1);
    clock.advance(180_000);
    assert_eq!(bot.escalate_due().await.expect("sweep"), 1);
    let mut steps = Vec::new();
    while steps.len() < 2 {
        let c = tokio::time::timeout(Duration::from_secs(10), feed.next(&bot))
            .await
            .expect("a change")
            .expect("feed");
        assert_eq!(c.request_id, req.id);
        if let Some(n) = c.step {
            steps.push(n);
        }
    }
    assert_eq!(steps, vec![0, 1]);
    assert_eq!(escalated_in_audit(&bot, &req.id).await, vec![0, 1]);
}

#[tokio::test]
async fn a_step_of_a_request_decided_before_it_was_due_never_fires() {
    let dir = TempDir::new("escalation");
    let clock = Arc::new(ManualClock::starting_at(START));
    let bot = open(
        config(&dir, &sqlite(&dir), TWO_STEPS).expect("config"),
        &clock,
    )
    .await;
    let req = force_push();
    bot.submit(&runner("local"), &req).await.expect("submit");
    clock.advance(120_000);
    assert_eq!(bot.escalate_due().await.expect("sweep"), 1, "the reminder");
    let won = bot
        .decide(
            &Reviewer::parse("web:alice").expect("reviewer"),
            &req.id,
            None,
            Intent::Approve { reason: None },
        )
        .await
        .expect("decide");
    assert!(matches!(won, Decided::Won(_)), "{won:?}");
    clock.advance(600_000);
    bot.sweep_once().await;
    assert_eq!(bot.escalate_due().await.expect("sweep"), 0);
    assert_eq!(
        escalated_in_audit(&bot, &req.id).await,
        vec![0],
        "no notify"
    );
    let steps = bot.escalation_of(&req.id).await.expect("steps");
    assert_eq!(steps[1].fired_at, None);
}

#[tokio::test]
async fn the_final_step_is_expiry_and_an_expired_request_is_not_escalated_after_it() {
    let dir = TempDir::new("escalation");
    let clock = Arc::new(ManualClock::starting_at(START));
    let bot = open(
        config(&dir, &sqlite(&dir), TWO_STEPS).expect("config"),
        &clock,
    )
    .await;
    let req = force_push();
    bot.submit(&runner("local"), &req).await.expect("submit");
    // The bot was stopped past every step and the deadline: it denies.
    clock.advance(700_000);
    bot.sweep_once().await;
    let r = bot.get(&req.id).await.expect("get").expect("stored");
    assert_eq!(r.status, holdpoint_shared::protocol::Status::Expired);
    assert!(escalated_in_audit(&bot, &req.id).await.is_empty());
}

#[tokio::test]
async fn steps_due_while_the_bot_was_down_fire_once_when_it_is_back() {
    let dir = TempDir::new("escalation");
    let clock = Arc::new(ManualClock::starting_at(START));
    let url = sqlite(&dir);
    let req = force_push();
    {
        let bot = open(config(&dir, &url, TWO_STEPS).expect("config"), &clock).await;
        bot.submit(&runner("local"), &req).await.expect("submit");
        clock.advance(150_000);
        assert_eq!(bot.escalate_due().await.expect("sweep"), 1);
    }
    // Down while the notify step came due; back before the deadline.
    clock.advance(200_000);
    let bot = open(config(&dir, &url, TWO_STEPS).expect("config"), &clock).await;
    assert_eq!(bot.escalate_due().await.expect("sweep"), 1, "only notify");
    assert_eq!(bot.escalate_due().await.expect("sweep"), 0);
    assert_eq!(escalated_in_audit(&bot, &req.id).await, vec![0, 1]);
}

async fn two_bots_fire_each_step_once(dir: &TempDir, url: &str) {
    let clock = Arc::new(ManualClock::starting_at(START));
    let a = open(config(dir, url, TWO_STEPS).expect("config"), &clock).await;
    let b = open(config(dir, url, TWO_STEPS).expect("config"), &clock).await;
    let reqs: Vec<ReviewRequest> = (0..10).map(|_| force_push()).collect();
    for r in &reqs {
        a.submit(&runner("local"), r).await.expect("submit");
    }
    clock.advance(400_000);
    let (x, y) = tokio::join!(
        tokio::spawn({
            let a = a.clone();
            async move { a.escalate_due().await.expect("sweep a") }
        }),
        tokio::spawn({
            let b = b.clone();
            async move { b.escalate_due().await.expect("sweep b") }
        }),
    );
    let fired = x.expect("a") + y.expect("b");
    assert_eq!(fired, 20, "two steps of ten requests, each once");
    for r in &reqs {
        assert_eq!(escalated_in_audit(&a, &r.id).await, vec![0, 1], "{url}");
    }
    assert_eq!(a.verify_audit().await.expect("verify").broken, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bots_on_one_database_fire_each_step_exactly_once() {
    let dir = TempDir::new("escalation");
    two_bots_fire_each_step_once(&dir, &sqlite(&dir)).await;
    match PgDatabase::create() {
        Some(pg) => two_bots_fire_each_step_once(&dir, &pg.url()).await,
        None => eprintln!(
            "two_bots_on_one_database_fire_each_step_exactly_once: PostgreSQL variant skipped"
        ),
    }
}

#[test]
fn policies_are_chosen_by_risk_runner_and_agent_in_order() {
    let dir = TempDir::new("escalation");
    let cfg = config(
        &dir,
        &sqlite(&dir),
        r#"
[[escalation.policies]]
name = "prod-agents"
runner = "prod-*"
agent = "codex"
steps = [{ after = "1m", action = "notify" }]

[[escalation.policies]]
name = "critical"
min_risk = "critical"
steps = [{ after = "30s", action = "remind" }, { after = "20m", action = "notify" }]

[[escalation.policies]]
name = "quiet"
runner = "lab"
steps = []
"#,
    )
    .expect("config");
    let e = &cfg.escalation;
    let ten = Duration::from_secs(600);
    let (name, steps) = e.steps_for("prod-7", Some("codex"), Risk::Low, ten);
    assert_eq!((name, steps.len()), ("prod-agents", 1));
    assert_eq!(steps[0].action, StepAction::Notify);
    let (name, _) = e.steps_for("prod-7", Some("claude-code"), Risk::Medium, ten);
    assert_eq!(name, "default", "the agent must match too");
    let (name, steps) = e.steps_for("ci", None, Risk::Critical, ten);
    assert_eq!(name, "critical");
    assert_eq!(
        steps.len(),
        1,
        "a step after the expiry never fires: {steps:?}"
    );
    let (name, steps) = e.steps_for("lab", None, Risk::High, ten);
    assert_eq!(
        (name, steps.len()),
        ("quiet", 0),
        "no escalation, only expiry"
    );
    let (name, steps) = e.steps_for("ci", None, Risk::High, ten);
    assert_eq!(name, "default");
    assert_eq!(steps[0].after, Duration::from_secs(300));
    assert_eq!(steps[0].action, StepAction::Remind);
}

#[test]
fn a_bad_policy_is_refused_when_the_config_loads_naming_the_key() {
    let dir = TempDir::new("escalation");
    for (toml, key) in [
        (
            "[[escalation.policies]]\nname = \"a\"\nsteps = [{ after = \"1m\", action = \"pager\" }]\n",
            "escalation.policies[0].steps[0].action",
        ),
        (
            "[[escalation.policies]]\nname = \"a\"\nsteps = [{ after = \"5m\", action = \"remind\" }, { after = \"2m\", action = \"notify\" }]\n",
            "escalation.policies[0].steps[1].after",
        ),
        (
            "[[escalation.policies]]\nname = \"a\"\nsteps = [{ after = \"soon\", action = \"remind\" }]\n",
            "escalation.policies[0].steps[0].after",
        ),
        (
            "[[escalation.policies]]\nsteps = []\n",
            "escalation.policies[0].name",
        ),
        (
            "[[escalation.policies]]\nname = \"a\"\n[[escalation.policies]]\nname = \"a\"\n",
            "escalation.policies[1].name",
        ),
        (
            "[[escalation.policies]]\nname = \"a\"\nsteps = [{ after = \"1m\" }]\n",
            "escalation.policies[0].steps[0].action",
        ),
        (
            "[[escalation.policies]]\nname = \"a\"\nrisk = \"high\"\n",
            "risk",
        ),
    ] {
        let err = config(&dir, &sqlite(&dir), toml).expect_err(toml);
        assert!(err.contains(key), "{toml}\nshould name {key}: {err}");
    }
}

#[test]
fn a_notify_step_with_slack_but_no_pager_channel_is_a_config_error() {
    let dir = TempDir::new("escalation");
    let toml = r#"
[slack]
bot_token = "xoxb-x"
signing_secret = "s"
channel = "C0HOLDPT1"
reviewers = ["U0REVIEW1"]

[[escalation.policies]]
name = "a"
steps = [{ after = "1m", action = "notify" }]
"#;
    let err = config(&dir, &sqlite(&dir), toml).expect_err("no pager channel");
    assert!(err.contains("slack.pager_channel"), "{err}");
    let ok = config(
        &dir,
        &sqlite(&dir),
        &toml.replace(
            "reviewers = [\"U0REVIEW1\"]",
            "reviewers = [\"U0REVIEW1\"]\npager_channel = \"C0PAGER01\"\noncall = [\"S0ONCALL1\"]",
        ),
    )
    .expect("with a pager channel");
    let slack = ok.slack.expect("slack");
    assert_eq!(slack.pager_channel.as_deref(), Some("C0PAGER01"));
    assert_eq!(slack.oncall, vec!["S0ONCALL1".to_string()]);
}

#[test]
fn a_page_step_needs_a_pager_and_a_pager_needs_a_valid_key_kept_out_of_debug_output() {
    let dir = TempDir::new("escalation");
    let page =
        "[[escalation.policies]]\nname = \"a\"\nsteps = [{ after = \"1m\", action = \"page\" }]\n";
    let err = config(&dir, &sqlite(&dir), page).expect_err("no pager");
    assert!(
        err.contains("[pagerduty]") && err.contains("[opsgenie]"),
        "{err}"
    );
    for (toml, key) in [
        (
            "[pagerduty]\nrouting_key = \"short\"\n",
            "pagerduty.routing_key",
        ),
        (
            "[pagerduty]\nurl = \"https://events.pagerduty.com/v2/enqueue\"\n",
            "pagerduty.routing_key",
        ),
        ("[opsgenie]\nresponders = [\"sre\"]\n", "opsgenie.api_key"),
        (
            "[opsgenie]\napi_key = \"k\"\nurl = \"ftp://x\"\n",
            "opsgenie.url",
        ),
        (
            "[opsgenie]\napi_key_file = \"/nonexistent/key\"\n",
            "opsgenie.api_key_file",
        ),
        ("[pagerduty]\nroutng_key = \"x\"\n", "routng_key"),
    ] {
        let err = config(&dir, &sqlite(&dir), toml).expect_err(toml);
        assert!(err.contains(key), "{toml}\nshould name {key}: {err}");
    }
    let key_file = dir.join("genie.key");
    std::fs::write(&key_file, "genie-secret-value\n").expect("key file");
    let toml = format!(
        "[pagerduty]\nrouting_key = \"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345\"\n[opsgenie]\napi_key_file = {:?}\nresponders = [\"sre\"]\n{page}",
        key_file.display().to_string()
    );
    let c = config(&dir, &sqlite(&dir), &toml).expect("both pagers");
    let og = c.pagers.opsgenie.as_ref().expect("opsgenie");
    assert_eq!(
        og.api_key.expose(),
        "genie-secret-value",
        "read from the file, trimmed"
    );
    assert_eq!(og.url, "https://api.opsgenie.com");
    let pd = c.pagers.pagerduty.as_ref().expect("pagerduty");
    assert_eq!(pd.url, "https://events.pagerduty.com/v2/enqueue");
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("genie-secret-value")
            && !shown.contains("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"),
        "keys stay out of Debug output: {shown}"
    );
}

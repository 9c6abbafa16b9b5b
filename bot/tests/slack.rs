//! Slack end to end: the real holdpoint-bot against a local Slack server
//! that validates every payload with Slack's own Python SDK, and a runner
//! simulated on the websocket. Skipped (with a message) without python3.

use holdpoint_shared::Risk;
use holdpoint_shared::protocol::Status;
use holdpoint_testkit::fixtures::{force_push, request};
use holdpoint_testkit::slack::*;
use holdpoint_testkit::{PgDatabase, Runner, TempDir, need_python, now};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// The request waits for a reviewer (no decision yet), then one Slack click
/// approves it; the message is updated in place and answered in the thread.
#[test]
fn force_push_waits_for_slack_approval() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    let bot = start_bot(&fake, Mode::Http, &[]);
    let mut runner = Runner::connect(&bot);
    let req = force_push(Some("slack:U0AGENT01"));
    runner.submit(&req);
    let posted = fake.posted(&req.id);
    assert_eq!(posted["body"]["channel"], CHANNEL);
    assert!(
        runner.decision(Duration::from_millis(500)).is_none(),
        "nothing decides before a human does"
    );
    let (value, channel) = button(&posted, "hp_approve");
    assert_eq!(value, format!("{}:{}", req.id, req.command_hash));
    let (code, _) = bot.interact(&click(REVIEWER, "hp_approve", &value, &channel));
    assert_eq!(code, 200);
    let d = runner.decision(WAIT).expect("a decision");
    assert_eq!(d.status, Status::Approved);
    assert_eq!(d.decided_by, format!("slack:{REVIEWER}"));
    assert_eq!(d.command_hash, req.command_hash);
    let updated = fake.wait_for("chat.update", WAIT, |c| c["method"] == "chat.update");
    let body = updated["body"].to_string();
    assert!(!body.contains("hp_approve"), "buttons gone: {body}");
    assert!(
        body.contains(&format!("<@{REVIEWER}>")),
        "who decided: {body}"
    );
    assert!(body.contains("Approved"), "{body}");
    assert!(body.contains(" after "), "how long it took: {body}");
    let ts = posted_ts(&fake, &req.id);
    assert_eq!(updated["body"]["ts"], ts);
    fake.wait_for("thread reply", WAIT, |c| {
        c["method"] == "chat.postMessage" && c["body"]["thread_ts"] == ts
    });
}

/// The `ts` the fake server gave the request message: the n-th post.
fn posted_ts(fake: &FakeSlack, id: &str) -> Value {
    let posts = fake.calls_of("chat.postMessage");
    let n = posts
        .iter()
        .position(|c| c["body"]["thread_ts"].is_null() && c["body"].to_string().contains(id))
        .expect("posted");
    // The fake numbers timestamps 1700000001, 1700000002… in call order,
    // counting only successful posts.
    let ok_before = posts[..n]
        .iter()
        .filter(|c| c["injected"].is_null())
        .count();
    json!(format!("{}.000100", 1_700_000_001 + ok_before))
}

#[test]
fn slack_deny_reason_reaches_the_agent() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    let bot = start_bot(&fake, Mode::Http, &[]);
    let mut runner = Runner::connect(&bot);
    let req = force_push(None);
    runner.submit(&req);
    let posted = fake.posted(&req.id);
    let (value, channel) = button(&posted, "hp_deny");
    assert_eq!(
        bot.interact(&click(REVIEWER, "hp_deny", &value, &channel))
            .0,
        200
    );
    let opened = fake.wait_for("views.open", WAIT, |c| c["method"] == "views.open");
    assert!(
        runner.decision(Duration::from_millis(300)).is_none(),
        "opening the dialog decides nothing"
    );
    let view = &opened["body"]["view"];
    let reason = "force-pushing main loses the security fix; open a PR";
    assert_eq!(
        bot.interact(&deny_submission(REVIEWER, view, reason)).0,
        200
    );
    let d = runner.decision(WAIT).expect("a decision");
    assert_eq!(d.status, Status::Denied);
    assert_eq!(d.reason.as_deref(), Some(reason));
    let updated = fake.wait_for("chat.update", WAIT, |c| c["method"] == "chat.update");
    assert!(updated["body"].to_string().contains(reason));
}

#[test]
fn non_reviewer_click_is_refused() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    fake.control("/_groups", json!({GROUP: [GROUPIE]}));
    let bot = start_bot(&fake, Mode::Http, &[]);
    let mut runner = Runner::connect(&bot);
    let req = force_push(None);
    runner.submit(&req);
    let posted = fake.posted(&req.id);
    let (value, channel) = button(&posted, "hp_approve");
    bot.interact(&click(STRANGER, "hp_approve", &value, &channel));
    let eph = fake.wait_for("an ephemeral refusal", WAIT, |c| {
        c["method"] == "chat.postEphemeral" && c["body"]["user"] == STRANGER
    });
    assert!(
        eph["body"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("not one of holdpoint's reviewers")),
        "{eph}"
    );
    // A stranger's deny is refused too, and opens no dialog.
    bot.interact(&click(STRANGER, "hp_deny", &value, &channel));
    assert!(runner.decision(Duration::from_millis(800)).is_none());
    assert!(fake.calls_of("views.open").is_empty());
    // A member of the reviewer group (resolved through usergroups.users.list) may.
    bot.interact(&click(GROUPIE, "hp_approve", &value, &channel));
    let d = runner.decision(WAIT).expect("the group member's approval");
    assert_eq!(d.status, Status::Approved);
    assert_eq!(d.decided_by, format!("slack:{GROUPIE}"));
    assert!(!fake.calls_of("usergroups.users.list").is_empty());
    // A click after the decision is told who decided.
    bot.interact(&click(REVIEWER, "hp_approve", &value, &channel));
    let late = fake.wait_for("an 'already decided' answer", WAIT, |c| {
        c["method"] == "chat.postEphemeral" && c["body"]["user"] == REVIEWER
    });
    let text = late["body"]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("already decided") && text.contains(GROUPIE) && text.contains("Approved"),
        "{text}"
    );
}

#[test]
fn self_approval_is_refused() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    let bot = start_bot(&fake, Mode::Http, &[]);
    let mut runner = Runner::connect(&bot);
    let req = force_push(Some(&format!("slack:{REVIEWER}")));
    runner.submit(&req);
    let posted = fake.posted(&req.id);
    let (value, channel) = button(&posted, "hp_approve");
    bot.interact(&click(REVIEWER, "hp_approve", &value, &channel));
    let eph = fake.wait_for("an ephemeral refusal", WAIT, |c| {
        c["method"] == "chat.postEphemeral" && c["body"]["user"] == REVIEWER
    });
    assert!(
        eph["body"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("someone else must approve")),
        "{eph}"
    );
    assert!(runner.decision(Duration::from_millis(800)).is_none());
    assert!(fake.calls_of("chat.update").is_empty());
}

/// Sends a click for a fresh request with a broken signature or timestamp;
/// the bot refuses it and the request stays pending.
fn refused_interaction(sign_with: &str, age_secs: i64) {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    let bot = start_bot(&fake, Mode::Http, &[]);
    let mut runner = Runner::connect(&bot);
    let req = force_push(None);
    runner.submit(&req);
    let posted = fake.posted(&req.id);
    let (value, channel) = button(&posted, "hp_approve");
    let (code, _) = bot.interact_signed(
        &click(REVIEWER, "hp_approve", &value, &channel),
        sign_with,
        now() - age_secs,
    );
    assert_eq!(code, 401);
    assert!(runner.decision(Duration::from_millis(800)).is_none());
    assert!(
        bot.metrics()
            .contains("holdpoint_slack_interactions_refused_total 1")
    );
}

#[test]
fn forged_signature_is_refused() {
    refused_interaction("not-the-signing-secret", 0);
}

#[test]
fn stale_timestamp_is_refused() {
    refused_interaction(SECRET, 6 * 60);
}

#[test]
fn replayed_interaction_is_refused() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    let bot = start_bot(&fake, Mode::Http, &[]);
    let mut runner = Runner::connect(&bot);
    let req = force_push(None);
    runner.submit(&req);
    let posted = fake.posted(&req.id);
    let (value, channel) = button(&posted, "hp_deny");
    let body = format!(
        "payload={}",
        form_encode(&click(STRANGER, "hp_deny", &value, &channel).to_string())
    );
    let ts = now();
    let sig = sign(SECRET, ts, &body);
    assert_eq!(bot.post_interaction(&body, &sig, ts).0, 200);
    assert_eq!(
        bot.post_interaction(&body, &sig, ts).0,
        401,
        "the same request twice"
    );
    assert!(runner.decision(Duration::from_millis(300)).is_none());
}

/// Slack (or a proxy in front of the bot) delivers one click three times,
/// each signed afresh: it decides once, the runner hears one decision, and
/// the audit log holds one approval.
#[test]
fn the_same_click_delivered_three_times_decides_once() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    let bot = start_bot(&fake, Mode::Http, &[]);
    let mut runner = Runner::connect(&bot);
    let req = force_push(None);
    runner.submit(&req);
    let posted = fake.posted(&req.id);
    let (value, channel) = button(&posted, "hp_approve");
    let payload = click(REVIEWER, "hp_approve", &value, &channel);
    for age in 0..3 {
        let (code, _) = bot.interact_signed(&payload, SECRET, now() - age);
        assert_eq!(code, 200, "delivery {age} is acknowledged");
    }
    let d = runner.decision(WAIT).expect("a decision");
    assert_eq!(d.status, Status::Approved);
    assert!(
        runner.decision(Duration::from_millis(500)).is_none(),
        "one decision only"
    );
    let approvals = bot
        .audit()
        .iter()
        .filter(|r| r["kind"] == "request.approved" && r["request_id"] == req.id.as_str())
        .count();
    assert_eq!(approvals, 1);
    // And one thread reply saying so, not three.
    let ts = posted_ts(&fake, &req.id);
    let reply = |c: &Value| c["method"] == "chat.postMessage" && c["body"]["thread_ts"] == ts;
    fake.wait_for("thread reply", WAIT, reply);
    std::thread::sleep(Duration::from_millis(500));
    let replies = fake.calls().iter().filter(|c| reply(c)).count();
    assert_eq!(replies, 1, "{replies} thread replies");
}

#[test]
fn slack_429_is_retried() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    fake.control(
        "/_fail",
        json!({"method": "chat.postMessage", "statuses": [429], "retry_after": 1}),
    );
    fake.control(
        "/_fail",
        json!({"method": "chat.postMessage", "statuses": [503]}),
    );
    let bot = start_bot(&fake, Mode::Http, &[]);
    let mut runner = Runner::connect(&bot);
    let req = force_push(None);
    runner.submit(&req);
    let posted = fake.wait_for("a successful post", WAIT, |c| {
        c["method"] == "chat.postMessage" && c["injected"].is_null()
    });
    let posts = fake.calls_of("chat.postMessage");
    assert_eq!(posts.len(), 3, "429, 503, then success");
    let waited = posts[1]["at"].as_f64().unwrap_or(0.0) - posts[0]["at"].as_f64().unwrap_or(0.0);
    assert!(waited >= 0.9, "Retry-After was honoured ({waited} s)");
    let (value, channel) = button(&posted, "hp_approve");
    bot.interact(&click(REVIEWER, "hp_approve", &value, &channel));
    assert_eq!(
        runner.decision(WAIT).map(|d| d.status),
        Some(Status::Approved)
    );
}

/// Slack refusing the post for good leaves the request pending (never
/// approved), logged and counted.
#[test]
fn slack_post_failure_leaves_the_request_pending() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    fake.control(
        "/_fail",
        json!({"method": "chat.postMessage", "statuses": ["channel_not_found"]}),
    );
    let bot = start_bot(&fake, Mode::Http, &[]);
    let mut runner = Runner::connect(&bot);
    let req = force_push(None);
    runner.submit(&req);
    fake.wait_for("the refused post", WAIT, |c| {
        c["method"] == "chat.postMessage"
    });
    assert!(runner.decision(Duration::from_millis(800)).is_none());
    let m = bot.metrics();
    assert!(
        m.contains("holdpoint_slack_failures_total{kind=\"post\"} 1"),
        "{m}"
    );
    assert!(m.contains("holdpoint_requests_pending 1"), "{m}");
    assert!(bot.log().contains("stays pending on the web queue"));
}

#[test]
fn expiry_updates_the_slack_message() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    let bot = start_bot(&fake, Mode::Http, &[("HOLDPOINT_EXPIRY", "2s")]);
    let mut runner = Runner::connect(&bot);
    let req = force_push(None);
    runner.submit(&req);
    fake.posted(&req.id);
    let d = runner.decision(WAIT).expect("the expiry");
    assert_eq!(d.status, Status::Expired);
    let updated = fake.wait_for("chat.update", WAIT, |c| c["method"] == "chat.update");
    let body = updated["body"].to_string();
    assert!(
        body.contains("Expired") && !body.contains("hp_approve"),
        "{body}"
    );
}

/// The same flows over Socket Mode, including a reconnect after Slack asks
/// for one.
#[test]
fn socket_mode_approve_deny_and_reconnect() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    let bot = start_bot(&fake, Mode::Socket, &[]);
    let mut runner = Runner::connect(&bot);

    // Approve.
    let req = force_push(None);
    runner.submit(&req);
    let posted = fake.posted(&req.id);
    let (value, channel) = button(&posted, "hp_approve");
    let sent = fake.control(
        "/_socket/send",
        json!({"payload": click(REVIEWER, "hp_approve", &value, &channel)}),
    );
    assert_eq!(sent["acked"], true, "{sent}");
    let d = runner.decision(WAIT).expect("approval over Socket Mode");
    assert_eq!(d.status, Status::Approved);

    // Deny with a reason.
    let req = force_push(None);
    runner.submit(&req);
    let posted = fake.posted(&req.id);
    let (value, channel) = button(&posted, "hp_deny");
    fake.control(
        "/_socket/send",
        json!({"payload": click(REVIEWER, "hp_deny", &value, &channel)}),
    );
    let opened = fake.wait_for("views.open", WAIT, |c| c["method"] == "views.open");
    let sent = fake.control(
        "/_socket/send",
        json!({"payload": deny_submission(REVIEWER, &opened["body"]["view"], "not on a Friday")}),
    );
    assert_eq!(sent["acked"], true);
    let d = runner.decision(WAIT).expect("denial over Socket Mode");
    assert_eq!(d.status, Status::Denied);
    assert_eq!(d.reason.as_deref(), Some("not on a Friday"));

    // Self-approval and strangers are refused here too.
    let req = force_push(Some(&format!("slack:{REVIEWER}")));
    runner.submit(&req);
    let posted = fake.posted(&req.id);
    let (value, channel) = button(&posted, "hp_approve");
    fake.control(
        "/_socket/send",
        json!({"payload": click(REVIEWER, "hp_approve", &value, &channel)}),
    );
    fake.control(
        "/_socket/send",
        json!({"payload": click(STRANGER, "hp_approve", &value, &channel)}),
    );
    assert!(runner.decision(Duration::from_millis(800)).is_none());

    // Slack asks for a reconnect; clicks keep working.
    fake.control("/_socket/disconnect", json!({}));
    let deadline = std::time::Instant::now() + WAIT;
    while fake.control("/_socket/state", json!({}))["connects"].as_u64() < Some(2) {
        assert!(
            std::time::Instant::now() < deadline,
            "no reconnect:\n{}",
            bot.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = fake.control(
        "/_socket/send",
        json!({"payload": click(GROUPIE, "hp_deny", &value, &channel)}),
    );
    assert_eq!(sent["acked"], true);
    // GROUPIE is not a member of any group here (no groups configured):
    // refused, and told so.
    fake.wait_for("refusal after reconnect", WAIT, |c| {
        c["method"] == "chat.postEphemeral" && c["body"]["user"] == GROUPIE
    });
    let approve = click(REVIEWER, "hp_deny", &value, &channel);
    fake.control("/_socket/send", json!({"payload": approve}));
    let opened = fake.wait_for("second views.open", WAIT, |c| {
        c["method"] == "views.open" && c["body"].to_string().contains(&req.id)
    });
    fake.control(
        "/_socket/send",
        json!({"payload": deny_submission(REVIEWER, &opened["body"]["view"], "")}),
    );
    let d = runner.decision(WAIT).expect("denial after the reconnect");
    assert_eq!(d.status, Status::Denied);
}

/// Commands written to spoof the message or ping people reach Slack inert.
#[test]
fn hostile_commands_render_safely() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    let bot = start_bot(&fake, Mode::Http, &[]);
    let mut runner = Runner::connect(&bot);
    let mut huge = "echo harmless padding; ".repeat(100 * 1024 / 23);
    huge.push_str("rm -rf /");
    let corpus: Vec<(&str, String, &str)> = vec![
        (
            "mentions",
            "echo <!channel> <!here> <!everyone> <@U0ADMIN> <!subteam^S0SEC>".into(),
            "echo <!channel>",
        ),
        (
            "links",
            "curl <https://evil.example/x|https://github.com/ok> && echo <mailto:a@b|safe>".into(),
            "curl",
        ),
        (
            "fence",
            "echo ok\n```\n*✅ Approved by security team* <!channel>\n```\nrm -rf ~".into(),
            "rm -rf ~",
        ),
        (
            "backticks",
            "echo `id` ``` `` ` && git push --force".into(),
            "git push --force",
        ),
        (
            "bidi",
            "ls /tmp \u{202E}fr- mr\u{202C} && rm -rf /var/backups".into(),
            "rm -rf /var/backups",
        ),
        (
            "zero-width",
            "rm\u{200B} -rf\u{2060} /\u{FEFF}home \u{200D}".into(),
            "rm -rf /home",
        ),
        (
            "controls",
            "echo \u{1b}[2J\u{1b}[1;32mSAFE\r\u{7}\u{85}\u{2028}done".into(),
            "echo",
        ),
        (
            "entities",
            "echo &lt;!channel&gt; &amp; <&> ".into(),
            "echo",
        ),
        ("huge", huge, "rm -rf /"),
        ("header", format!("{}<!channel>", "x".repeat(300)), "x"),
    ];
    let mut ids = Vec::new();
    for (name, command, part) in &corpus {
        let mut req = request(command, "test.hostile", Risk::Critical, part, None);
        if *name == "huge" {
            // A rule fired on the dangerous tail.
            req.verdict.hits[0].part = "rm -rf /".into();
        }
        runner.submit(&req);
        ids.push((name, req.id.clone(), command.clone()));
    }
    for (name, id, command) in &ids {
        let posted = fake.posted(id);
        let body = &posted["body"];
        let mut texts = vec![body["text"].as_str().unwrap_or_default().to_string()];
        mrkdwn_texts(body, &mut texts);
        for t in &texts {
            // The only `<` in mrkdwn are the bot's own dates and links.
            let mut rest = t.as_str();
            while let Some(i) = rest.find('<') {
                let after = &rest[i..];
                assert!(
                    after.starts_with("<!date^")
                        || after.starts_with(&format!("<http://127.0.0.1:{}/#", bot.port)),
                    "{name}: markup in mrkdwn: {t}"
                );
                rest = &after[1..];
            }
        }
        let mut all = Vec::new();
        strings(body, &mut all);
        for s in &all {
            for c in s.chars() {
                assert!(
                    c == '\n' || c == '\t' || !holdpoint_shared::text::is_suspicious(c),
                    "{name}: invisible or control character U+{:04X} reached Slack in {s:?}",
                    c as u32
                );
            }
        }
        let blocks = body["blocks"].as_array().cloned().unwrap_or_default();
        let command_block = blocks
            .iter()
            .find(|b| b["block_id"] == "hp_command")
            .expect("a command block");
        assert_eq!(command_block["type"], "rich_text");
        let shown = command_block["elements"][0]["elements"][0]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(shown.chars().count() <= holdpoint_bot::view::COMMAND_SHOWN + 10);
        match **name {
            "bidi" => assert!(shown.contains("⟨U+202E⟩"), "{shown}"),
            "zero-width" => assert!(shown.contains("⟨U+200B⟩") && shown.contains("⟨U+FEFF⟩")),
            "huge" => {
                assert!(command.len() > 100 * 1024);
                assert!(shown.ends_with("rm -rf /"), "the tail is shown");
                let parts = blocks
                    .iter()
                    .find(|b| b["block_id"] == "hp_parts")
                    .expect("the triggering parts, shown apart");
                assert!(parts.to_string().contains("rm -rf /"));
            }
            "fence" => {
                // The fake ✅ line is inside the preformatted block, not a
                // block of its own.
                let outside: Vec<&Value> = blocks
                    .iter()
                    .filter(|b| b["block_id"] != "hp_command")
                    .collect();
                assert!(
                    !serde_json::to_string(&outside)
                        .unwrap_or_default()
                        .contains("Approved by security")
                );
            }
            _ => {}
        }
        let header = blocks[0]["text"]["text"].as_str().unwrap_or_default();
        assert!(header.chars().count() <= 150, "{name}: header {header}");
    }
}

/// `[[slack.routes]]`: the first route whose every condition holds picks
/// the channel (`runner` exact or a `*` prefix, `min_risk` at or above);
/// anything no route takes goes to the default channel.
#[test]
fn requests_are_routed_by_runner_and_risk() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    let bot = bot_options(&fake, Mode::Http)
        .config(
            r#"
[slack]
[[slack.routes]]
runner = "prod-*"
channel = "C0PRODOPS1"

[[slack.routes]]
runner = "db-primary"
min_risk = "high"
channel = "C0DBA00001"

[[slack.routes]]
min_risk = "critical"
channel = "C0PAGER001"
"#,
        )
        .start();
    let mut runners: std::collections::HashMap<&str, Runner> = std::collections::HashMap::new();
    runners.insert("local", Runner::connect(&bot));
    for name in ["prod-web", "prod", "db-primary", "db-primary-2"] {
        let token = bot.add_runner(name);
        runners.insert(name, Runner::connect_as(&bot, &token));
    }
    let cases: [(&str, Risk, &str); 10] = [
        // The prefix route, whatever the risk (it comes first).
        ("prod-web", Risk::Low, "C0PRODOPS1"),
        ("prod-web", Risk::Critical, "C0PRODOPS1"),
        // `prod-*` needs the dash: `prod` is not `prod-…`.
        ("prod", Risk::Medium, CHANNEL),
        // Exact runner and a risk floor: both must hold.
        ("db-primary", Risk::High, "C0DBA00001"),
        ("db-primary", Risk::Critical, "C0DBA00001"),
        ("db-primary", Risk::Medium, CHANNEL),
        ("db-primary-2", Risk::High, CHANNEL),
        // Risk alone: at the floor goes there, below does not.
        ("local", Risk::Critical, "C0PAGER001"),
        ("local", Risk::High, CHANNEL),
        ("db-primary-2", Risk::Critical, "C0PAGER001"),
    ];
    let mut sent = Vec::new();
    for (runner, risk, want) in cases {
        let req = request(
            "terraform destroy -auto-approve",
            "terraform.destroy",
            risk,
            "terraform destroy",
            None,
        );
        runners
            .get_mut(runner)
            .expect("a connected runner")
            .submit(&req);
        sent.push((runner, risk, want, req.id));
    }
    for (runner, risk, want, id) in &sent {
        let posted = fake.posted(id);
        assert_eq!(
            posted["body"]["channel"], *want,
            "a {risk} request from runner {runner} went to the wrong channel"
        );
    }
    // One message each, nothing posted twice or elsewhere.
    let posts: Vec<Value> = fake
        .calls_of("chat.postMessage")
        .into_iter()
        .filter(|c| c["body"]["thread_ts"].is_null())
        .collect();
    assert_eq!(posts.len(), sent.len(), "{posts:#?}");

    // The buttons work from a routed channel, and the update goes to the
    // message where it is.
    let (_, _, want, id) = &sent[3];
    let posted = fake.posted(id);
    let (value, channel) = button(&posted, "hp_approve");
    assert_eq!(channel, *want);
    assert_eq!(
        bot.interact(&click(REVIEWER, "hp_approve", &value, &channel))
            .0,
        200
    );
    let updated = fake.wait_for("chat.update in the routed channel", WAIT, |c| {
        c["method"] == "chat.update" && c["body"].to_string().contains(id.as_str())
    });
    assert_eq!(updated["body"]["channel"], *want);
}

/// Where each message lives is in the database: after the bot is killed
/// (no shutdown code runs) and started again, a decision made by the CLI,
/// or by a click on the old message, updates the original message in its
/// channel and answers in its thread; nothing is posted again.
#[test]
fn decision_after_restart_updates_the_original_message() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    let mut bot = start_bot(&fake, Mode::Http, &[]);
    let mut runner = Runner::connect(&bot);
    let by_cli = force_push(None);
    let by_click = force_push(None);
    runner.submit(&by_cli);
    runner.submit(&by_click);
    let mut originals = Vec::new();
    for req in [&by_cli, &by_click] {
        let posted = fake.posted(&req.id);
        // Stored where it is before the kill.
        bot.wait_log(&format!("Slack: request {} posted to", req.id), WAIT);
        originals.push((
            posted["body"]["channel"].clone(),
            posted_ts(&fake, &req.id),
            posted,
        ));
    }
    drop(runner);
    bot.restart();
    // Give the restarted bot's first reconcile a chance to (wrongly) post
    // again before anything is decided.
    std::thread::sleep(Duration::from_secs(1));

    let reason = "restore the branch protection first";
    let (ok, out, err) = bot.try_cli(&["deny", &by_cli.id, "--reason", reason]);
    assert!(ok, "holdpoint-bot deny failed: {out}{err}");
    let (value, channel) = button(&originals[1].2, "hp_approve");
    assert_eq!(
        bot.interact(&click(REVIEWER, "hp_approve", &value, &channel))
            .0,
        200
    );

    for (req, (channel, ts, _), status) in [
        (&by_cli, &originals[0], "Denied"),
        (&by_click, &originals[1], "Approved"),
    ] {
        let updated = fake.wait_for("chat.update of the original message", WAIT, |c| {
            c["method"] == "chat.update" && c["body"].to_string().contains(req.id.as_str())
        });
        assert_eq!(updated["body"]["channel"], *channel, "{updated}");
        assert_eq!(updated["body"]["ts"], *ts, "{updated}");
        let body = updated["body"].to_string();
        assert!(
            body.contains(status) && !body.contains("hp_approve"),
            "{body}"
        );
        fake.wait_for("the thread reply", WAIT, |c| {
            c["method"] == "chat.postMessage"
                && c["body"]["thread_ts"] == *ts
                && c["body"]["channel"] == *channel
        });
    }
    let cli_update = fake
        .calls_of("chat.update")
        .into_iter()
        .find(|c| c["body"].to_string().contains(by_cli.id.as_str()))
        .expect("the CLI decision's update");
    assert!(cli_update["body"].to_string().contains(reason));
    // Let a reconcile pass or two run, then count.
    std::thread::sleep(Duration::from_secs(4));
    for req in [&by_cli, &by_click] {
        let top_level = fake
            .calls_of("chat.postMessage")
            .into_iter()
            .filter(|c| {
                c["body"]["thread_ts"].is_null() && c["body"].to_string().contains(req.id.as_str())
            })
            .count();
        assert_eq!(top_level, 1, "request {} was posted again", req.id);
        let updates = fake
            .calls_of("chat.update")
            .into_iter()
            .filter(|c| c["body"].to_string().contains(req.id.as_str()))
            .count();
        assert_eq!(updates, 1, "request {} was updated {updates} times", req.id);
    }
    let log = bot.log();
    let slack_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("Slack"))
        .collect();
    assert!(slack_errors.is_empty(), "Slack errors in the log:\n{log}");
}

/// Several replicas share one database: a request's message is posted by
/// one of them and updated by one of them, also while Slack is slow enough
/// that the other replica's reconcile runs in the middle of the call.
#[test]
fn two_bots_on_one_database_post_once() {
    let py = need_python!();
    on_one_shared_database_each("two_bots_on_one_database_post_once", |url| {
        two_bots_post_once(&py, url)
    });
}

/// Runs `scenario` on one SQLite file, always, and on one PostgreSQL
/// database when reachable (a failure with `HOLDPOINT_E2E_POSTGRES=required`),
/// each given as the URL every replica is to open.
fn on_one_shared_database_each(name: &str, scenario: impl Fn(&str)) {
    let dir = TempDir::new("slack");
    let sqlite = format!("sqlite://{}?mode=rwc", dir.join("shared.db").display());
    scenario(&sqlite);
    drop(dir);
    match PgDatabase::create() {
        Some(pg) => scenario(&pg.url()),
        None => eprintln!(
            "{name}: PostgreSQL variant skipped (set HOLDPOINT_E2E_POSTGRES=required to fail instead)"
        ),
    }
}

fn two_bots_post_once(py: &std::path::Path, database_url: &str) {
    let fake = FakeSlack::start(py);
    let a = start_bot_on(&fake, Mode::Http, &[], Some(database_url));
    let b = start_bot_on(&fake, Mode::Http, &[], Some(database_url));
    assert!(
        b.token.is_empty(),
        "the second replica found the first one's runner"
    );
    let mut runner = Runner::connect(&a);

    // Slack takes longer to post than a reconcile period, so B's reconcile
    // sees the requests while A's posts are in flight.
    let slow = RECONCILE_SECS + 1.0;
    fake.control(
        "/_delay",
        json!({"method": "chat.postMessage", "seconds": slow, "count": 3}),
    );
    let reqs: Vec<_> = (0..3).map(|_| force_push(None)).collect();
    for r in &reqs {
        runner.submit(r);
    }
    let mut posts = Vec::new();
    for r in &reqs {
        let posted = fake.posted(&r.id);
        // Both processes log the same way; only one stored it.
        let deadline = std::time::Instant::now() + WAIT;
        let needle = format!("Slack: request {} posted to", r.id);
        while !(a.log().contains(&needle) || b.log().contains(&needle)) {
            assert!(
                std::time::Instant::now() < deadline,
                "{} never stored",
                r.id
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        posts.push(posted);
    }

    // Slack is slow to update too; the three are decided through B (a
    // click), through A (a click) and by the CLI (which both replicas only
    // learn of from the database).
    fake.control(
        "/_delay",
        json!({"method": "chat.update", "seconds": slow, "count": 3}),
    );
    let (value, channel) = button(&posts[0], "hp_approve");
    assert_eq!(
        b.interact(&click(REVIEWER, "hp_approve", &value, &channel))
            .0,
        200
    );
    let (value, channel) = button(&posts[1], "hp_approve");
    assert_eq!(
        a.interact(&click(REVIEWER, "hp_approve", &value, &channel))
            .0,
        200
    );
    let (ok, out, err) = b.try_cli(&["deny", &reqs[2].id, "--reason", "not today"]);
    assert!(ok, "deny failed: {out}{err}");

    // The runner (on A) gets every decision, wherever it was made.
    let mut statuses = std::collections::HashMap::new();
    while statuses.len() < reqs.len() {
        let d = runner.decision(WAIT).expect("a decision");
        statuses.insert(d.request_id.clone(), d.status);
    }
    assert_eq!(statuses[&reqs[0].id], Status::Approved);
    assert_eq!(statuses[&reqs[1].id], Status::Approved);
    assert_eq!(statuses[&reqs[2].id], Status::Denied);

    for (r, want) in reqs.iter().zip(["Approved", "Approved", "Denied"]) {
        let updated = fake.wait_for("chat.update", WAIT + Duration::from_secs(5), |c| {
            c["method"] == "chat.update" && c["body"].to_string().contains(r.id.as_str())
        });
        assert!(updated["body"].to_string().contains(want), "{updated}");
    }
    // Two reconcile periods after the slow calls ended, count.
    std::thread::sleep(Duration::from_secs_f64(slow + 2.0 * RECONCILE_SECS));
    let calls = fake.calls();
    for r in &reqs {
        let mentions = |method: &str, top_level: bool| -> Vec<&Value> {
            calls
                .iter()
                .filter(|c| {
                    c["method"] == method
                        && (!top_level || c["body"]["thread_ts"].is_null())
                        && c["body"].to_string().contains(r.id.as_str())
                })
                .collect()
        };
        let posted = mentions("chat.postMessage", true);
        assert_eq!(
            posted.len(),
            1,
            "{}: posted more than once on {database_url}",
            r.id
        );
        let posted = posted[0];
        assert!(posted["ts"].is_string(), "{posted}");
        let updates = mentions("chat.update", false);
        assert_eq!(
            updates.len(),
            1,
            "{}: updated {} times on {database_url}: {updates:#?}",
            r.id,
            updates.len()
        );
        assert_eq!(updates[0]["body"]["ts"], posted["ts"]);
        let replies = calls
            .iter()
            .filter(|c| c["method"] == "chat.postMessage" && c["body"]["thread_ts"] == posted["ts"])
            .count();
        assert_eq!(replies, 1, "{}: {replies} thread replies", r.id);
    }
    for (name, bot) in [("A", &a), ("B", &b)] {
        let log = bot.log();
        assert!(
            !log.contains("may show twice") && !log.contains("took it over"),
            "replica {name} lost a claim:\n{log}"
        );
    }
}

/// The bot's reconcile period (`slack::RECONCILE_EVERY`), in seconds.
const RECONCILE_SECS: f64 = 3.0;

/// The pager channel of the escalation tests.
const PAGER: &str = "C0PAGER01";

/// A bot whose requests climb `steps` (TOML step tables) and expire after
/// `expiry`, with [`PAGER`] as its pager channel and [`GROUP`] on call.
fn escalating_bot(fake: &FakeSlack, steps: &str, expiry: &str) -> holdpoint_testkit::Bot {
    escalating_bot_on(fake, steps, expiry, None)
}

/// [`escalating_bot`] on `database_url` (another replica's), or on its own
/// SQLite database.
fn escalating_bot_on(
    fake: &FakeSlack,
    steps: &str,
    expiry: &str,
    database_url: Option<&str>,
) -> holdpoint_testkit::Bot {
    let mut o = bot_options(fake, Mode::Http);
    if let Some(url) = database_url {
        o = o.database(holdpoint_testkit::Database::Shared(url.to_string()));
    }
    o.config(&format!(
        "[[escalation.policies]]\nname = \"force-push\"\nsteps = [{steps}]\n"
    ))
    .envs(&[
        ("HOLDPOINT_EXPIRY", expiry),
        ("HOLDPOINT_SLACK_PAGER_CHANNEL", PAGER),
        ("HOLDPOINT_SLACK_ONCALL", GROUP),
    ])
    .start()
}

/// The `ts` the fake server gave the first successful post that `f` picks.
fn ts_of(fake: &FakeSlack, f: impl Fn(&Value) -> bool) -> Value {
    let posts = fake.calls_of("chat.postMessage");
    let n = posts.iter().position(f).expect("posted");
    let ok_before = posts[..n]
        .iter()
        .filter(|c| c["injected"].is_null())
        .count();
    json!(format!("{}.000100", 1_700_000_001 + ok_before))
}

fn is_pager_post(c: &Value, id: &str) -> bool {
    c["method"] == "chat.postMessage"
        && c["body"]["channel"] == PAGER
        && c["body"]["thread_ts"].is_null()
        && c["body"].to_string().contains(id)
}

fn is_reminder(c: &Value, ts: &Value) -> bool {
    c["method"] == "chat.postMessage"
        && c["body"]["thread_ts"] == *ts
        && c["body"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("still waiting for a reviewer"))
}

/// How often `f` matches the calls so far.
fn count(fake: &FakeSlack, f: impl Fn(&Value) -> bool) -> usize {
    fake.calls().iter().filter(|c| f(c)).count()
}

/// Nobody answers a force push: the reviewers are reminded in its thread,
/// then it is posted, with its buttons, in the pager channel mentioning
/// the on-call group, then it expires as a denial and both messages show
/// it. Each step is sent once and is an audit event.
#[test]
fn unanswered_force_push_is_reminded_then_posted_to_the_pager_channel_then_denied() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    let bot = escalating_bot(
        &fake,
        "{ after = \"1s\", action = \"remind\" }, { after = \"2s\", action = \"notify\" }",
        "4s",
    );
    let mut runner = Runner::connect(&bot);
    let req = force_push(None);
    runner.submit(&req);
    fake.posted(&req.id);
    let ts = posted_ts(&fake, &req.id);

    let reminder = fake.wait_for("the reminder in the thread", WAIT, |c| is_reminder(c, &ts));
    assert_eq!(reminder["body"]["channel"], CHANNEL);
    let text = reminder["body"]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains(&format!("<@{REVIEWER}>")) && text.contains(&format!("<!subteam^{GROUP}>")),
        "the reminder mentions the reviewers: {text}"
    );

    let page = fake.wait_for("the post in the pager channel", WAIT, |c| {
        is_pager_post(c, &req.id)
    });
    let body = page["body"].to_string();
    assert!(body.contains(&format!("<!subteam^{GROUP}>")), "{body}");
    assert!(body.contains("Escalated"), "{body}");
    let (value, channel) = button(&page, "hp_approve");
    assert_eq!(value, format!("{}:{}", req.id, req.command_hash));
    assert_eq!(channel, PAGER);
    let page_ts = ts_of(&fake, |c| is_pager_post(c, &req.id));

    let d = runner.decision(WAIT).expect("the expiry");
    assert_eq!(d.status, Status::Expired);
    let updated = fake.wait_for("the pager message updated", WAIT, |c| {
        c["method"] == "chat.update" && c["body"]["ts"] == page_ts
    });
    assert_eq!(updated["body"]["channel"], PAGER);
    let body = updated["body"].to_string();
    assert!(
        body.contains("Expired") && !body.contains("hp_approve"),
        "{body}"
    );
    fake.wait_for("the request message updated", WAIT, |c| {
        c["method"] == "chat.update" && c["body"]["ts"] == ts
    });

    assert_eq!(count(&fake, |c| is_reminder(c, &ts)), 1, "one reminder");
    assert_eq!(count(&fake, |c| is_pager_post(c, &req.id)), 1, "one page");
    let steps: Vec<Value> = bot
        .audit()
        .into_iter()
        .filter(|r| r["kind"] == "request.escalated" && r["request_id"] == req.id.as_str())
        .map(|r| r["event"]["action"].clone())
        .collect();
    assert_eq!(steps, vec![json!("remind"), json!("notify")]);
    let metrics = bot.metrics();
    for line in [
        "holdpoint_escalations_total{action=\"remind\"} 1",
        "holdpoint_escalations_total{action=\"notify\"} 1",
        "holdpoint_escalations_sent_total{action=\"remind\"} 1",
        "holdpoint_escalations_sent_total{action=\"notify\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

/// The on-call reviewer approves from the pager channel: the runner gets
/// the approval, and both the pager message and the request's own show
/// who approved, without buttons.
#[test]
fn a_request_approved_from_the_pager_channel_updates_both_messages() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    let bot = escalating_bot(&fake, "{ after = \"1s\", action = \"notify\" }", "10m");
    let mut runner = Runner::connect(&bot);
    let req = force_push(None);
    runner.submit(&req);
    fake.posted(&req.id);
    let ts = posted_ts(&fake, &req.id);
    let page = fake.wait_for("the post in the pager channel", WAIT, |c| {
        is_pager_post(c, &req.id)
    });
    let page_ts = ts_of(&fake, |c| is_pager_post(c, &req.id));
    let (value, channel) = button(&page, "hp_approve");
    assert_eq!(
        bot.interact(&click(REVIEWER, "hp_approve", &value, &channel))
            .0,
        200
    );
    let d = runner.decision(WAIT).expect("the approval");
    assert_eq!(d.status, Status::Approved);
    assert_eq!(d.decided_by, format!("slack:{REVIEWER}"));
    for (where_, at) in [("pager", &page_ts), ("request", &ts)] {
        let updated = fake.wait_for(&format!("the {where_} message updated"), WAIT, |c| {
            c["method"] == "chat.update" && c["body"]["ts"] == *at
        });
        let body = updated["body"].to_string();
        assert!(
            body.contains("Approved")
                && body.contains(&format!("<@{REVIEWER}>"))
                && !body.contains("hp_approve"),
            "{where_}: {body}"
        );
    }
}

/// A bot killed after the reminder and before the page, then restarted,
/// sends the reminder once and the page once.
#[test]
fn a_bot_killed_between_two_steps_sends_each_step_once_after_restart() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    let mut bot = escalating_bot(
        &fake,
        "{ after = \"1s\", action = \"remind\" }, { after = \"3s\", action = \"notify\" }",
        "6s",
    );
    let mut runner = Runner::connect(&bot);
    let req = force_push(None);
    runner.submit(&req);
    fake.posted(&req.id);
    let ts = posted_ts(&fake, &req.id);
    fake.wait_for("the reminder in the thread", WAIT, |c| is_reminder(c, &ts));
    bot.wait_log(
        &format!("request {}: escalation step 0 (remind) delivered", req.id),
        WAIT,
    );
    drop(runner);
    bot.restart();
    let mut runner = Runner::connect(&bot);
    runner.submit(&req);
    fake.wait_for("the post in the pager channel", WAIT, |c| {
        is_pager_post(c, &req.id)
    });
    let page_ts = ts_of(&fake, |c| is_pager_post(c, &req.id));
    let d = runner.decision(WAIT).expect("the expiry");
    assert_eq!(d.status, Status::Expired);
    fake.wait_for("the pager message updated", WAIT, |c| {
        c["method"] == "chat.update" && c["body"]["ts"] == page_ts
    });
    assert_eq!(count(&fake, |c| is_reminder(c, &ts)), 1, "one reminder");
    assert_eq!(count(&fake, |c| is_pager_post(c, &req.id)), 1, "one page");
}

/// The requester (`slack:U…`) hears in a direct message that nobody
/// answered and the request went to the on-call channel, then how it ended,
/// who decided and why; a request without a Slack requester sends none.
#[test]
fn the_requester_hears_the_escalation_and_the_outcome_in_a_direct_message() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    let bot = escalating_bot(&fake, "{ after = \"1s\", action = \"notify\" }", "10m");
    let mut runner = Runner::connect(&bot);
    let requester = "U0AGENT01";
    let req = force_push(Some(&format!("slack:{requester}")));
    runner.submit(&req);
    fake.posted(&req.id);
    let dm = |c: &Value| c["method"] == "chat.postMessage" && c["body"]["channel"] == requester;
    let escalated = fake.wait_for("the requester told of the escalation", WAIT, |c| {
        dm(c)
            && c["body"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("on-call reviewers"))
    });
    assert!(
        escalated["body"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("git push")),
        "{escalated}"
    );
    let page = fake.wait_for("the post in the pager channel", WAIT, |c| {
        is_pager_post(c, &req.id)
    });
    let (value, channel) = button(&page, "hp_deny");
    assert_eq!(
        bot.interact(&click(REVIEWER, "hp_deny", &value, &channel))
            .0,
        200
    );
    let opened = fake.wait_for("views.open", WAIT, |c| c["method"] == "views.open");
    let reason = "main is frozen until the release";
    assert_eq!(
        bot.interact(&deny_submission(REVIEWER, &opened["body"]["view"], reason))
            .0,
        200
    );
    assert_eq!(
        runner.decision(WAIT).expect("the denial").status,
        Status::Denied
    );
    let outcome = fake.wait_for("the requester told the outcome", WAIT, |c| {
        dm(c)
            && c["body"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("Denied"))
    });
    let text = outcome["body"]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains(&format!("<@{REVIEWER}>")),
        "who decided: {text}"
    );
    assert!(text.contains(reason), "why: {text}");
    assert_eq!(count(&fake, dm), 2, "one message for each");

    // Without a Slack requester: no direct message at all.
    let other = force_push(None);
    runner.submit(&other);
    fake.posted(&other.id);
    let (value, channel) = button(&fake.posted(&other.id), "hp_approve");
    bot.interact(&click(REVIEWER, "hp_approve", &value, &channel));
    assert_eq!(
        runner.decision(WAIT).expect("approval").status,
        Status::Approved
    );
    fake.wait_for("the update", WAIT, |c| {
        c["method"] == "chat.update" && c["body"].to_string().contains(other.id.as_str())
    });
    assert_eq!(count(&fake, dm), 2);
}

/// Two replicas on one database: each step of each request is sent once,
/// whichever replica's sweep fires it and whichever engine delivers it.
#[test]
fn two_replicas_send_each_escalation_step_exactly_once() {
    let py = need_python!();
    on_one_shared_database_each(
        "two_replicas_send_each_escalation_step_exactly_once",
        |url| two_replicas_escalate_once(&py, url),
    );
}

fn two_replicas_escalate_once(py: &std::path::Path, database_url: &str) {
    let fake = FakeSlack::start(py);
    let steps = "{ after = \"1s\", action = \"remind\" }, { after = \"2s\", action = \"notify\" }";
    let a = escalating_bot_on(&fake, steps, "4s", Some(database_url));
    let b = escalating_bot_on(&fake, steps, "4s", Some(database_url));
    let mut runner = Runner::connect(&a);
    let reqs: Vec<_> = (0..3).map(|_| force_push(None)).collect();
    for r in &reqs {
        runner.submit(r);
    }
    let mut ended = 0;
    while ended < reqs.len() {
        let d = runner.decision(WAIT).expect("every request expires");
        assert_eq!(d.status, Status::Expired);
        ended += 1;
    }
    for r in &reqs {
        fake.posted(&r.id);
        let ts = posted_ts(&fake, &r.id);
        fake.wait_for("the request message updated", WAIT, |c| {
            c["method"] == "chat.update" && c["body"]["ts"] == ts
        });
        let page_ts = ts_of(&fake, |c| is_pager_post(c, &r.id));
        fake.wait_for("the pager message updated", WAIT, |c| {
            c["method"] == "chat.update" && c["body"]["ts"] == page_ts
        });
        assert_eq!(
            count(&fake, |c| is_reminder(c, &ts)),
            1,
            "{database_url}: one reminder"
        );
        assert_eq!(
            count(&fake, |c| is_pager_post(c, &r.id)),
            1,
            "{database_url}: one page"
        );
        let fired = a
            .audit()
            .into_iter()
            .filter(|e| e["kind"] == "request.escalated" && e["request_id"] == r.id.as_str())
            .count();
        assert_eq!(fired, 2, "{database_url}: each step fired once");
    }
    drop(b);
}

/// A high-risk request that needs two approvals: the message shows the
/// count and is updated on each vote; the same person approving again
/// from the web queue (their declared second identity) does not count;
/// the runner hears only after the second distinct reviewer.
#[test]
fn a_two_approval_request_runs_only_after_the_second_distinct_reviewer() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    fake.control("/_groups", json!({GROUP: [GROUPIE]}));
    // `web:local` is the web session of the login link the bot prints.
    let bot = bot_options(&fake, Mode::Http)
        .config(&format!(
            "[quorum]\nhigh = 2\n\n[people.rita]\nids = [\"slack:{REVIEWER}\", \"web:local\"]\n"
        ))
        .start();
    let mut runner = Runner::connect(&bot);
    let req = force_push(None);
    runner.submit(&req);
    let posted = fake.posted(&req.id);
    assert!(
        posted["body"].to_string().contains("0 of 2 approvals"),
        "{posted}"
    );
    let ts = posted_ts(&fake, &req.id);
    let (value, channel) = button(&posted, "hp_approve");
    assert_eq!(
        bot.interact(&click(REVIEWER, "hp_approve", &value, &channel))
            .0,
        200
    );
    let counted = fake.wait_for("the vote acknowledged", WAIT, |c| {
        c["method"] == "chat.postEphemeral" && c["body"]["user"] == REVIEWER
    });
    assert!(
        counted["body"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("1 of 2")),
        "{counted}"
    );
    let updated = fake.wait_for("the message shows the vote", WAIT, |c| {
        c["method"] == "chat.update" && c["body"]["ts"] == ts
    });
    let body = updated["body"].to_string();
    assert!(
        body.contains("1 of 2 approvals") && body.contains(&format!("<@{REVIEWER}>")),
        "{body}"
    );
    assert!(body.contains("hp_approve"), "it still waits: {body}");
    assert!(runner.decision(Duration::from_millis(300)).is_none());

    // The same person from the web queue: refused, not counted.
    let cookie = bot.web_session();
    let path = format!("/api/requests/{}/approve", req.id);
    let again = holdpoint_testkit::http(
        bot.port,
        "POST",
        &path,
        &[
            ("Cookie", cookie.as_str()),
            ("Content-Type", "application/json"),
            ("X-Holdpoint", "1"),
        ],
        json!({ "command_hash": req.command_hash, "reason": null }).to_string(),
    );
    assert_eq!(again.status, 403, "{}", again.body);
    assert!(again.body.contains("counted already"), "{}", again.body);
    let (_, list) = bot.web_get(&cookie, "/api/requests");
    let entry = list["pending"]
        .as_array()
        .and_then(|p| p.iter().find(|r| r["id"] == req.id.as_str()).cloned())
        .expect("still pending");
    assert_eq!(entry["votes"], json!([format!("slack:{REVIEWER}")]));
    assert_eq!(entry["approvals_required"], 2);
    assert!(runner.decision(Duration::from_millis(300)).is_none());

    // A second, distinct reviewer (a member of the reviewer group).
    bot.interact(&click(GROUPIE, "hp_approve", &value, &channel));
    let d = runner.decision(WAIT).expect("the approval");
    assert_eq!(d.status, Status::Approved);
    assert_eq!(d.decided_by, format!("slack:{GROUPIE}"));
    assert!(
        d.reason
            .as_deref()
            .is_some_and(|r| r.contains("2 of 2 approvals")),
        "{d:?}"
    );
}

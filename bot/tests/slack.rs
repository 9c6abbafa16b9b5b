//! Slack end to end: the real holdpoint-bot against a local Slack server
//! that validates every payload with Slack's own Python SDK, and a runner
//! simulated on the websocket. Skipped (with a message) without python3.

#[path = "slack/harness.rs"]
mod harness;

use harness::*;
use holdpoint_shared::Risk;
use holdpoint_shared::protocol::Status;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// The request waits for a reviewer (no decision yet), then one Slack click
/// approves it; the message is updated in place and answered in the thread.
#[test]
fn force_push_waits_for_slack_approval() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    let bot = BotProc::start(&fake, Mode::Http, &[]);
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
    let bot = BotProc::start(&fake, Mode::Http, &[]);
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
    let bot = BotProc::start(&fake, Mode::Http, &[]);
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
    let bot = BotProc::start(&fake, Mode::Http, &[]);
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
    let bot = BotProc::start(&fake, Mode::Http, &[]);
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
    let bot = BotProc::start(&fake, Mode::Http, &[]);
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
    let bot = BotProc::start(&fake, Mode::Http, &[]);
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
    let bot = BotProc::start(&fake, Mode::Http, &[]);
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
    let bot = BotProc::start(&fake, Mode::Http, &[("HOLDPOINT_EXPIRY", "2s")]);
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
    let bot = BotProc::start(&fake, Mode::Socket, &[]);
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
    let bot = BotProc::start(&fake, Mode::Http, &[]);
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
                    c == '\n' || c == '\t' || !holdpoint_bot::slack::render::is_suspicious(c),
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
        assert!(shown.chars().count() <= holdpoint_bot::slack::render::COMMAND_SHOWN + 10);
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

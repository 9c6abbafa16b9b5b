//! Matrix end to end: the real `holdpoint-bot` logged in to a real Synapse
//! on loopback, reviewers played by real matrix-nio clients (with
//! encryption), and the real `holdpoint` runner (or the runner's own
//! websocket client) waiting for them. Every check is on the events as the
//! reviewers' client received them. Skipped, with the reason, without the
//! Matrix virtual environment (a failure with HOLDPOINT_REQUIRE_MATRIX=1).

use holdpoint_shared::Risk;
use holdpoint_shared::protocol::Status;
use holdpoint_testkit::fixtures::{force_push, review};
use holdpoint_testkit::matrix::{
    Peer, Synapse, content, is_edit_of, is_in_thread, is_request_message,
};
use holdpoint_testkit::*;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const FORCE_PUSH: &str = "git push --force origin main";
const BOT_PASSWORD: &str = "bot-password-1";
const ALICE: &str = "@alice:localhost";
const MALLORY: &str = "@mallory:localhost";
const CAROL: &str = "@carol:localhost";

/// A homeserver, the reviewers' clients, a review room and a bot in it.
struct World {
    hs: Synapse,
    peer: Peer,
    room: String,
    bot: Bot,
}

/// alice is a listed reviewer (and the room's creator), carol a reviewer by
/// power level 50, mallory a member and nothing more.
fn world(py: &std::path::Path, encrypted: bool, extra: &[(&str, &str)]) -> World {
    let hs = Synapse::start(py);
    let peer = hs.peer();
    let bot_user = peer.register("holdpoint", BOT_PASSWORD);
    peer.user("alice", "alice-pw");
    peer.user("mallory", "mallory-pw");
    peer.user("carol", "carol-pw");
    let room = peer.create_room(
        "alice",
        encrypted,
        &[&bot_user, MALLORY, CAROL],
        json!({ CAROL: 50 }),
    );
    peer.join("mallory", &room);
    peer.join("carol", &room);
    let hs_url = hs.url();
    let mut opts = BotOptions::new()
        .env("HOLDPOINT_MATRIX_HOMESERVER", hs_url)
        .env("HOLDPOINT_MATRIX_USER_ID", bot_user)
        .env("HOLDPOINT_MATRIX_PASSWORD", BOT_PASSWORD)
        .env("HOLDPOINT_MATRIX_ROOM", room.clone())
        .env("HOLDPOINT_MATRIX_REVIEWERS", ALICE)
        .env("HOLDPOINT_MATRIX_MIN_POWER_LEVEL", "50");
    for (k, v) in extra {
        opts = opts.env(k, *v);
    }
    let bot = opts.start();
    bot.wait_log("Matrix: ready as", Duration::from_secs(90));
    World {
        hs,
        peer,
        room,
        bot,
    }
}

impl World {
    /// The review message of request `id`, as `who` received it.
    fn request_message(&self, who: &str, id: &str) -> Value {
        self.peer
            .wait_event(who, &self.room, "review message", WAIT, |e| {
                is_request_message(e, id)
            })
    }

    fn thread_answer(&self, root: &str, what: &str, f: impl Fn(&str) -> bool) -> Value {
        self.peer.wait_event("alice", &self.room, what, WAIT, |e| {
            is_in_thread(e, root) && content(e)["body"].as_str().is_some_and(&f)
        })
    }

    fn edit(&self, root: &str, what: &str, f: impl Fn(&str) -> bool) -> Value {
        self.peer.wait_event("alice", &self.room, what, WAIT, |e| {
            is_edit_of(e, root) && content(e)["m.new_content"]["body"].as_str().is_some_and(&f)
        })
    }
}

fn event_id(e: &Value) -> String {
    e["event_id"].as_str().unwrap_or_default().to_string()
}

fn agent(bot: &Bot, ws: &Workspace, spool: &TempDir) -> Agent {
    Agent::spawn({
        let mut c = runner(&bot.url(), &bot.token, &ws.repo(), spool.path());
        c.args(["sh", "-c", FORCE_PUSH]);
        c
    })
}

#[test]
fn matrix_configured_but_incomplete_refuses_to_start_and_says_what_is_missing() {
    let err = match BotOptions::new()
        .env("HOLDPOINT_MATRIX_HOMESERVER", "http://127.0.0.1:9")
        .env("HOLDPOINT_MATRIX_USER_ID", "@holdpoint:localhost")
        .try_start()
    {
        Ok(_) => panic!("a bot with half a Matrix configuration started"),
        Err(e) => e,
    };
    assert!(err.contains("Matrix is configured but"), "{err}");
    assert!(err.contains("a way to log in"), "{err}");
    assert!(err.contains("the review room"), "{err}");
    assert!(err.contains("who may decide"), "{err}");
    assert!(
        !err.contains("homeserver URL"),
        "the homeserver was given: {err}"
    );
}

/// The force-push incident: the real runner waits for a ✅ in the review
/// room, then the push runs; the message is edited to the outcome and the
/// outcome is posted in its thread.
#[test]
fn force_push_waits_for_matrix_approval() {
    let py = need_synapse!();
    let w = world(&py, false, &[]);
    let ws = Workspace::new();
    let before = ws.origin_head();
    let spool = TempDir::new("spool");
    let mut agent = agent(&w.bot, &ws, &spool);
    let pending = w.bot.wait_pending();
    let id = pending["id"].as_str().expect("id").to_string();
    let msg = w.request_message("alice", &id);
    let c = content(&msg);
    assert_eq!(
        c["m.mentions"],
        json!({}),
        "the message notifies nobody: {c}"
    );
    assert_eq!(c["format"], "org.matrix.custom.html");
    let html = c["formatted_body"].as_str().unwrap_or_default();
    assert!(
        html.contains(&format!("<pre><code>{FORCE_PUSH}</code></pre>")),
        "{html}"
    );
    assert!(html.contains("git.push.force"), "the rule: {html}");
    let body = c["body"].as_str().unwrap_or_default();
    for shown in [FORCE_PUSH, "HIGH risk", "Runner: local", &id, "expires "] {
        assert!(body.contains(shown), "{shown:?} in {body}");
    }
    assert!(agent.running(), "the runner waits for a reviewer");
    assert_eq!(ws.origin_head(), before, "nothing runs before approval");

    let root = event_id(&msg);
    w.peer.react("alice", &w.room, &root, "✅\u{fe0f}");
    let out = agent.finish(WAIT);
    let err = text(&out.stderr);
    assert!(out.status.success(), "the approved push runs: {err}");
    assert!(
        err.contains(&format!("approved by matrix:{ALICE}")),
        "{err}"
    );
    assert_eq!(ws.origin_head(), ws.local_head(), "the force push happened");

    let edit = w.edit(&root, "edit to the outcome", |b| b.contains("Approved by"));
    let new = &content(&edit)["m.new_content"];
    assert_eq!(new["m.mentions"], json!({}));
    let text_now = new["body"].as_str().unwrap_or_default();
    assert!(text_now.contains(ALICE), "who decided: {text_now}");
    assert!(text_now.contains(" after "), "how long it took: {text_now}");
    assert!(!text_now.contains("React ✅"), "no more asking: {text_now}");
    w.thread_answer(&root, "outcome in the thread", |b| {
        b.contains("Approved by")
    });
}

/// `deny <reason>` in the thread: the reason reaches the agent, and the
/// push never runs.
#[test]
fn matrix_deny_reply_reaches_the_agent_and_the_command_never_runs() {
    let py = need_synapse!();
    let w = world(&py, false, &[]);
    let ws = Workspace::new();
    let before = ws.origin_head();
    let spool = TempDir::new("spool");
    let agent = agent(&w.bot, &ws, &spool);
    let id = w.bot.wait_pending()["id"].as_str().expect("id").to_string();
    let root = event_id(&w.request_message("alice", &id));
    let reason = "force-pushing main loses the security fix; open a PR";
    w.peer
        .reply("alice", &w.room, &root, &format!("deny {reason}"));
    let out = agent.finish(WAIT);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "a denied push must not run: {err}");
    assert!(err.contains(reason), "the agent hears why: {err}");
    assert_eq!(ws.origin_head(), before, "nothing was pushed");
    let edit = w.edit(&root, "edit to the denial", |b| b.contains("Denied by"));
    assert!(
        content(&edit)["m.new_content"]["body"]
            .as_str()
            .is_some_and(|b| b.contains(reason)),
        "{edit}"
    );
}

/// A member who is no reviewer, and the requester approving their own
/// request, are refused and told why in the thread; a reviewer by power
/// level then approves.
#[test]
fn non_reviewer_reaction_and_self_approval_are_refused_in_the_thread() {
    let py = need_synapse!();
    let w = world(&py, false, &[]);
    let mut runner = Runner::connect(&w.bot);
    let req = force_push(Some(&format!("matrix:{ALICE}")));
    runner.submit(&req);
    let root = event_id(&w.request_message("alice", &req.id));
    w.peer.react("mallory", &w.room, &root, "✅");
    w.thread_answer(&root, "refusal of mallory", |b| {
        b.contains(MALLORY) && b.contains("not one of holdpoint's reviewers")
    });
    w.peer.react("alice", &w.room, &root, "✅");
    w.thread_answer(&root, "refusal of the self-approval", |b| {
        b.contains(ALICE) && b.contains("you asked for this command")
    });
    assert!(
        runner.decision(Duration::from_millis(300)).is_none(),
        "no refused attempt decides"
    );
    w.peer.reply("carol", &w.room, &root, "approve");
    let d = runner.decision(WAIT).expect("carol's approval");
    assert_eq!(d.status, Status::Approved);
    assert_eq!(d.decided_by, format!("matrix:{CAROL}"));
    assert_eq!(d.command_hash, req.command_hash);
}

/// A request nobody answers expires, and the message says so.
#[test]
fn expiry_edits_the_matrix_message() {
    let py = need_synapse!();
    let w = world(&py, false, &[("HOLDPOINT_EXPIRY", "4s")]);
    let mut runner = Runner::connect(&w.bot);
    let req = force_push(None);
    runner.submit(&req);
    let root = event_id(&w.request_message("alice", &req.id));
    let d = runner.decision(WAIT).expect("the expiry");
    assert_eq!(d.status, Status::Expired);
    w.edit(&root, "edit to the expiry", |b| b.contains("Expired after"));
}

/// A critical request is not approved by a reaction: the bot asks for a
/// confirming reply, and the reply approves.
#[test]
fn critical_request_needs_a_confirming_reply() {
    let py = need_synapse!();
    let w = world(&py, false, &[]);
    let mut runner = Runner::connect(&w.bot);
    let req = review("rm -rf /")
        .hit("fs.rm.root", Risk::Critical, "rm -rf /")
        .build();
    runner.submit(&req);
    let root = event_id(&w.request_message("alice", &req.id));
    w.peer.react("alice", &w.room, &root, "✅");
    w.thread_answer(&root, "the request for a confirming reply", |b| {
        b.contains("critical") && b.contains("reply \"approve\"")
    });
    assert!(runner.decision(Duration::from_millis(300)).is_none());
    w.peer.reply("alice", &w.room, &root, "approve");
    let d = runner.decision(WAIT).expect("the confirmed approval");
    assert_eq!(d.status, Status::Approved);
}

/// In an encrypted room the request reaches the reviewer's client
/// encrypted, and their keys let it read it; the ✅ reaches the runner.
#[test]
fn encrypted_room_approval_reaches_the_runner() {
    let py = need_synapse!();
    let w = world(&py, true, &[]);
    let mut runner = Runner::connect(&w.bot);
    let req = force_push(None);
    runner.submit(&req);
    let msg = w.request_message("alice", &req.id);
    assert_eq!(msg["encrypted"], true, "it was encrypted: {msg}");
    assert_eq!(
        msg["undecryptable"], false,
        "and its keys reached alice: {msg}"
    );
    let root = event_id(&msg);
    w.peer.react("alice", &w.room, &root, "✅");
    let d = runner.decision(WAIT).expect("the approval");
    assert_eq!(d.status, Status::Approved);
    assert_eq!(d.decided_by, format!("matrix:{ALICE}"));
    let edit = w.edit(&root, "encrypted edit", |b| b.contains("Approved by"));
    assert_eq!(edit["encrypted"], true, "{edit}");
}

/// The bot restarted while a request waits: it restores its session (same
/// device, no new login), still decrypts an encrypted reply, and edits the
/// message it posted before the restart.
#[test]
fn restarted_bot_keeps_its_device_decrypts_and_edits_the_right_message() {
    let py = need_synapse!();
    let mut w = world(&py, true, &[]);
    let mut runner = Runner::connect(&w.bot);
    let req = force_push(None);
    runner.submit(&req);
    let root = event_id(&w.request_message("alice", &req.id));
    let device = |log: &str| {
        log.lines()
            .filter_map(|l| l.split("(device ").nth(1))
            .filter_map(|r| r.split(',').next())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let first = device(&w.bot.log());
    w.bot.restart();
    w.bot.wait_log("----- killed; restarting -----", WAIT);
    eventually(Duration::from_secs(90), "the bot ready again", || {
        (device(&w.bot.log()).len() >= 2).then_some(())
    });
    let devices = device(&w.bot.log());
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(devices[0], devices[1], "the same device after the restart");
    let mut runner2 = Runner::connect(&w.bot);
    runner2.submit(&req);
    w.peer.reply("alice", &w.room, &root, "approve");
    let d = runner2
        .decision(WAIT)
        .expect("the approval after the restart");
    assert_eq!(d.status, Status::Approved);
    w.edit(&root, "edit of the message posted before", |b| {
        b.contains("Approved by")
    });
    drop(runner);
}

/// Hostile commands render safely, as the reviewer's client receives them:
/// no mention, no markup, no link, no fence breakout, hidden characters
/// visible, and the dangerous end of a 100 KB command shown.
#[test]
fn hostile_commands_render_safely_in_matrix() {
    let py = need_synapse!();
    let w = world(&py, false, &[]);
    let mut runner = Runner::connect(&w.bot);
    let hostile = format!(
        "echo '@room {ALICE} <a href=\"https://evil.example\">docs</a> <b>bold</b> </code></pre><img src=x> ``` \u{202E}txt.exe\u{200B}'; {} ; rm -rf / --no-preserve-root",
        "x".repeat(100_000)
    );
    let req = review(&hostile)
        .hit("fs.rm.root", Risk::Critical, "rm -rf / --no-preserve-root")
        .build();
    runner.submit(&req);
    let msg = w.request_message("alice", &req.id);
    let c = content(&msg);
    assert_eq!(c["m.mentions"], json!({}), "{c}");
    let html = c["formatted_body"].as_str().unwrap_or_default();
    let body = c["body"].as_str().unwrap_or_default();
    // The one link is the bot's own, to the web queue.
    assert_eq!(html.matches("<a ").count(), 1, "{html}");
    let own = format!("<a href=\"{}/#{}\">web queue</a>", w.bot.url(), req.id);
    assert!(html.contains(&own), "{own} in {html}");
    let html = html.replace(&own, "");
    for bad in [
        "<a ",
        "<b>",
        "<img",
        "</code></pre><img",
        "\u{202E}",
        "\u{200B}",
    ] {
        assert!(!html.contains(bad), "{bad:?} in the HTML: {html}");
    }
    assert!(
        html.contains("&lt;a href=&quot;https://evil.example&quot;&gt;"),
        "{html}"
    );
    assert!(
        !body.contains('\u{202E}') && !body.contains('\u{200B}'),
        "{body}"
    );
    assert!(
        html.contains("⟨U+202E⟩") && body.contains("⟨U+202E⟩"),
        "{html}"
    );
    assert!(
        body.contains("rm -rf / --no-preserve-root"),
        "the dangerous part is shown apart"
    );
    assert!(body.contains("characters are not shown above"), "{body}");
    assert!(
        html.matches("<pre><code>").count() == html.matches("</code></pre>").count(),
        "every code block is closed once: {html}"
    );
    let source_len = msg["source"].to_string().len();
    assert!(
        source_len < 65_536,
        "within Matrix's event size: {source_len}"
    );
}

/// Nobody answers a force push in the review room: the bot reminds the
/// reviewers in its thread (mentioning them), then posts it to the pager
/// room (mentioning the on-call person) and tells the requester in a
/// direct message; the on-call person approves it there with a reaction,
/// the push runs, the pager room's copy is edited to the outcome and the
/// requester hears who approved it.
#[test]
fn unanswered_matrix_request_is_reminded_posted_to_the_pager_room_and_its_requester_hears_the_outcome()
 {
    const DAVE: &str = "@dave:localhost";
    let py = need_synapse!();
    let hs = Synapse::start(&py);
    let peer = hs.peer();
    let bot_user = peer.register("holdpoint", BOT_PASSWORD);
    peer.user("alice", "alice-pw");
    peer.user("carol", "carol-pw");
    peer.user("dave", "dave-pw");
    let room = peer.create_room("alice", true, &[&bot_user, CAROL], json!({ CAROL: 50 }));
    peer.join("carol", &room);
    let pager = peer.create_room("alice", true, &[&bot_user, CAROL], json!({}));
    peer.join("carol", &pager);
    let bot = BotOptions::new()
        .env("HOLDPOINT_MATRIX_HOMESERVER", hs.url())
        .env("HOLDPOINT_MATRIX_USER_ID", bot_user)
        .env("HOLDPOINT_MATRIX_PASSWORD", BOT_PASSWORD)
        .env("HOLDPOINT_MATRIX_ROOM", room.clone())
        .env("HOLDPOINT_MATRIX_REVIEWERS", ALICE)
        .env("HOLDPOINT_MATRIX_MIN_POWER_LEVEL", "50")
        .env("HOLDPOINT_MATRIX_PAGER_ROOM", pager.clone())
        .env("HOLDPOINT_MATRIX_ONCALL", CAROL)
        .env("HOLDPOINT_EXPIRY", "120s")
        .config(
            "[[escalation.policies]]\nname = \"pushes\"\nmin_risk = \"high\"\nsteps = [\n  \
             { after = \"1s\", action = \"remind\" },\n  { after = \"3s\", action = \"notify\" },\n]\n",
        )
        .start();
    bot.wait_log("Matrix: ready as", Duration::from_secs(90));

    let ws = Workspace::new();
    let spool = TempDir::new("spool");
    let mut agent = Agent::spawn({
        let mut c = runner(&bot.url(), &bot.token, &ws.repo(), spool.path());
        c.env("HOLDPOINT_REQUESTER", format!("matrix:{DAVE}"));
        c.args(["exec", "--", "git", "push", "--force", "origin", "main"]);
        c
    });
    let pending = bot.wait_pending();
    let id = pending["id"].as_str().expect("id").to_string();
    let msg = peer.wait_event("alice", &room, "review message", WAIT, |e| {
        is_request_message(e, &id)
    });
    let root = event_id(&msg);

    let reminder = peer.wait_event("alice", &room, "the reminder in the thread", WAIT, |e| {
        is_in_thread(e, &root)
            && content(e)["body"]
                .as_str()
                .is_some_and(|b| b.contains("Still waiting for a reviewer"))
    });
    assert_eq!(
        content(&reminder)["m.mentions"],
        json!({ "user_ids": [ALICE] }),
        "the reminder notifies the reviewers and nobody else"
    );

    let posted = peer.wait_event("carol", &pager, "the post in the pager room", WAIT, |e| {
        is_request_message(e, &id)
    });
    let c = content(&posted);
    assert_eq!(c["m.mentions"], json!({ "user_ids": [CAROL] }), "{c}");
    let body = c["body"].as_str().unwrap_or_default();
    assert!(body.contains("Escalated"), "{body}");
    assert!(body.contains("git push --force origin main"), "{body}");

    // The requester hears it was escalated, in a direct room the bot opened.
    let dm = eventually(WAIT, "the bot's invitation to a direct room", || {
        peer.accept_invites("dave").into_iter().next()
    });
    peer.wait_event(
        "dave",
        &dm,
        "the escalation in the direct room",
        WAIT,
        |e| {
            content(e)["body"]
                .as_str()
                .is_some_and(|b| b.contains("posted to the on-call reviewers"))
        },
    );
    assert!(agent.running(), "nothing runs before approval");

    // The on-call person approves on the pager room's copy.
    let copy = event_id(&posted);
    peer.react("carol", &pager, &copy, "✅\u{fe0f}");
    let out = agent.finish(WAIT);
    let err = text(&out.stderr);
    assert!(out.status.success(), "the approved push runs: {err}");
    assert!(
        err.contains(&format!("approved by matrix:{CAROL}")),
        "{err}"
    );
    assert_eq!(ws.origin_head(), ws.local_head(), "the force push happened");

    peer.wait_event(
        "carol",
        &pager,
        "the pager copy edited to the outcome",
        WAIT,
        |e| {
            is_edit_of(e, &copy)
                && content(e)["m.new_content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains("Approved by"))
        },
    );
    let told = peer.wait_event("dave", &dm, "the outcome in the direct room", WAIT, |e| {
        content(e)["body"]
            .as_str()
            .is_some_and(|b| b.contains("Approved by"))
    });
    let told = content(&told)["body"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(told.contains(CAROL), "who decided: {told}");
    assert!(told.contains(&id), "the request on the web queue: {told}");
}

/// The recovery key printed on standard error (once) when the bot created
/// its secret storage.
fn recovery_key_in(log: &str) -> Option<String> {
    let mut lines = log
        .lines()
        .skip_while(|l| !l.contains("recovery key, shown this once"));
    lines
        .find(|l| l.starts_with("    ") && !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

/// The bot creates secret storage at its first start and prints the
/// recovery key once (not again after a restart, never in a log line);
/// a bot on a new data directory given that key takes the same
/// cross-signing identity and signs its new device with it, so clients
/// that trust the bot keep trusting it.
#[test]
fn a_new_device_given_the_recovery_key_keeps_the_bots_cross_signing_identity() {
    let py = need_synapse!();
    let mut w = world(&py, true, &[]);
    let bot_user = "@holdpoint:localhost";
    let log = w.bot.log();
    let key = recovery_key_in(&log)
        .unwrap_or_else(|| panic!("the first start prints a recovery key: {log}"));
    assert!(key.split(' ').count() >= 8, "a recovery key: {key}");
    let logged: Vec<&str> = log.lines().filter(|l| l.contains(&key)).collect();
    assert_eq!(
        logged.len(),
        1,
        "printed once, in the banner only: {logged:?}"
    );
    let (master, devices) = w.peer.cross_signing("alice", bot_user);
    assert_eq!(master.len(), 1, "one master key: {master:?}");
    assert!(
        devices.iter().all(|(_, signed)| *signed),
        "the device is cross-signed: {devices:?}"
    );

    w.bot.restart();
    eventually(Duration::from_secs(90), "the bot ready again", || {
        (w.bot.log().matches("Matrix: ready as").count() >= 2).then_some(())
    });
    assert_eq!(
        w.bot.log().matches("recovery key, shown this once").count(),
        1,
        "not printed again after a restart"
    );
    w.bot.kill();

    // A new data directory: a new device, given the key.
    let hs_url = w.hs.url();
    let fresh = BotOptions::new()
        .env("HOLDPOINT_MATRIX_HOMESERVER", hs_url)
        .env("HOLDPOINT_MATRIX_USER_ID", bot_user)
        .env("HOLDPOINT_MATRIX_PASSWORD", BOT_PASSWORD)
        .env("HOLDPOINT_MATRIX_ROOM", w.room.clone())
        .env("HOLDPOINT_MATRIX_REVIEWERS", ALICE)
        .env("HOLDPOINT_MATRIX_RECOVERY_KEY", key.clone())
        .start();
    fresh.wait_log("Matrix: ready as", Duration::from_secs(90));
    let flog = fresh.log();
    assert!(flog.contains("restored from secret storage"), "{flog}");
    assert!(
        !flog.contains("shown this once"),
        "no new secret storage: {flog}"
    );
    assert!(!flog.contains(&key), "the key is never logged: {flog}");
    let (master_after, devices_after) = w.peer.cross_signing("alice", bot_user);
    assert_eq!(master_after, master, "the same identity on the new device");
    assert_eq!(devices_after.len(), 2, "{devices_after:?}");
    assert!(
        devices_after.iter().all(|(_, signed)| *signed),
        "the new device is signed by the same identity: {devices_after:?}"
    );
}

/// Two replicas on one database, each with its own data directory: only
/// the one holding the device's lease logs in and posts; when it is killed
/// the other takes over within the lease and carries on.
#[test]
fn only_one_replica_uses_the_matrix_device_and_another_takes_over_when_it_dies() {
    let py = need_synapse!();
    let hs = Synapse::start(&py);
    let peer = hs.peer();
    let bot_user = peer.register("holdpoint", BOT_PASSWORD);
    peer.user("alice", "alice-pw");
    let room = peer.create_room("alice", false, &[&bot_user], json!({}));
    let shared = TempDir::new("replicas");
    let url = format!("sqlite://{}?mode=rwc", shared.join("shared.db").display());
    let replica = || {
        BotOptions::new()
            .database(Database::Shared(url.clone()))
            .env("HOLDPOINT_MATRIX_HOMESERVER", hs.url())
            .env("HOLDPOINT_MATRIX_USER_ID", bot_user.clone())
            .env("HOLDPOINT_MATRIX_PASSWORD", BOT_PASSWORD)
            .env("HOLDPOINT_MATRIX_ROOM", room.clone())
            .env("HOLDPOINT_MATRIX_REVIEWERS", ALICE)
            .env("HOLDPOINT_MATRIX_DEVICE_LEASE", "3s")
            .start()
    };
    let mut a = replica();
    a.wait_log("Matrix: ready as", Duration::from_secs(90));
    let token = a.token.clone();
    assert!(!token.is_empty(), "the first replica registered the runner");
    let b = replica();
    b.wait_log("another replica uses the device", WAIT);
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        !b.log().contains("Matrix: ready as"),
        "the second replica never logs in while the first holds the device"
    );

    a.kill();
    b.wait_log("Matrix: ready as", Duration::from_secs(90));
    let mut runner = Runner::connect_as(&b, &token);
    let req = force_push(None);
    runner.submit(&req);
    let msg = peer.wait_event(
        "alice",
        &room,
        "the review message from the second replica",
        WAIT,
        |e| is_request_message(e, &req.id),
    );
    peer.react("alice", &room, &event_id(&msg), "✅");
    let d = runner.decision(WAIT).expect("the decision");
    assert_eq!(d.status, Status::Approved);
    assert_eq!(d.decided_by, format!("matrix:{ALICE}"));
}

/// A request is posted to the room its route names; while the homeserver
/// cannot be reached the request stays pending on the web queue and the
/// failure is counted, and once it is back the message is posted and the
/// decision counts. Nothing is approved because Matrix failed.
#[test]
fn a_routed_request_waits_on_the_web_queue_while_the_homeserver_is_down_and_is_posted_when_it_is_back()
 {
    let py = need_synapse!();
    let mut hs = Synapse::start(&py);
    let peer = hs.peer();
    let bot_user = peer.register("holdpoint", BOT_PASSWORD);
    peer.user("alice", "alice-pw");
    let room = peer.create_room("alice", false, &[&bot_user], json!({}));
    let prod = peer.create_room("alice", false, &[&bot_user], json!({}));
    let bot = BotOptions::new()
        .env("HOLDPOINT_MATRIX_HOMESERVER", hs.url())
        .env("HOLDPOINT_MATRIX_USER_ID", bot_user)
        .env("HOLDPOINT_MATRIX_PASSWORD", BOT_PASSWORD)
        .env("HOLDPOINT_MATRIX_ROOM", room.clone())
        .env("HOLDPOINT_MATRIX_REVIEWERS", ALICE)
        .config(&format!(
            "[[matrix.routes]]\nrunner = \"prod-*\"\nroom = \"{prod}\"\n"
        ))
        .start();
    bot.wait_log("Matrix: ready as", Duration::from_secs(90));
    let prod_token = bot.add_runner("prod-db-1");

    // Routed: the prod runner's request goes to the prod room.
    let mut runner = Runner::connect_as(&bot, &prod_token);
    let first = force_push(None);
    runner.submit(&first);
    peer.wait_event("alice", &prod, "the routed message", WAIT, |e| {
        is_request_message(e, &first.id)
    });
    assert!(
        !peer
            .events("alice", &room)
            .iter()
            .any(|e| is_request_message(e, &first.id)),
        "not in the main room"
    );

    // The homeserver goes away.
    hs.stop();
    let second = force_push(None);
    runner.submit(&second);
    eventually(
        Duration::from_secs(120),
        "a counted failure to post",
        || {
            bot.metrics()
                .lines()
                .any(|l| {
                    l.starts_with("holdpoint_matrix_failures_total{kind=\"post\"}")
                        && !l.ends_with(" 0")
                })
                .then_some(())
        },
    );
    let cookie = bot.web_session();
    let (_, list) = bot.web_get(&cookie, "/api/requests");
    let waiting: Vec<&str> = list["pending"]
        .as_array()
        .map(|p| p.iter().filter_map(|r| r["id"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        waiting.contains(&second.id.as_str()),
        "pending on the web queue: {list}"
    );
    assert!(
        runner.decision(Duration::from_secs(2)).is_none(),
        "nothing was decided"
    );

    // Back: the message is posted (retried with backoff) and counts.
    hs.resume();
    let msg = peer.wait_event(
        "alice",
        &prod,
        "the message posted once the homeserver is back",
        Duration::from_secs(120),
        |e| is_request_message(e, &second.id),
    );
    peer.react("alice", &prod, &event_id(&msg), "❌");
    let d = runner.decision(WAIT).expect("the decision");
    assert_eq!(
        (d.request_id.as_str(), d.status),
        (second.id.as_str(), Status::Denied)
    );
}

/// The homeserver limits the bot to one message a second: five requests
/// submitted at once are all posted, spaced out by the homeserver's
/// `M_LIMIT_EXCEEDED` answers (retried after `retry_after_ms`), and none
/// is decided by it.
#[test]
fn a_rate_limited_bot_posts_every_request_in_turn_and_decides_nothing() {
    let py = need_synapse!();
    let w = world(&py, false, &[]);
    w.peer.admin("root", "root-pw");
    w.peer.rate_limit("root", "@holdpoint:localhost", 1, 1);
    let mut runner = Runner::connect(&w.bot);
    let reqs: Vec<_> = (0..5).map(|_| force_push(None)).collect();
    let started = std::time::Instant::now();
    for r in &reqs {
        runner.submit(r);
    }
    for r in &reqs {
        w.request_message("alice", &r.id);
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "five messages at one a second after a burst of one take at least 3 s; took {took:?}"
    );
    assert!(
        runner.decision(Duration::from_secs(1)).is_none(),
        "nothing was decided"
    );
    let pending = w.bot.requests();
    let n = pending["pending"].as_array().map_or(0, Vec::len);
    assert_eq!(n, 5, "all still wait for a reviewer: {pending}");
}

/// With `verified_devices_only` in an encrypted room, a reaction (whose
/// relation travels in clear) and a reply from a device its owner never
/// cross-signed are answered and not counted: the runner still waits.
#[test]
fn verified_devices_only_refuses_reactions_and_unverified_replies_in_an_encrypted_room() {
    let py = need_synapse!();
    let w = world(
        &py,
        true,
        &[("HOLDPOINT_MATRIX_VERIFIED_DEVICES_ONLY", "true")],
    );
    let mut runner = Runner::connect(&w.bot);
    let req = force_push(None);
    runner.submit(&req);
    let root = event_id(&w.request_message("alice", &req.id));
    w.peer.react("alice", &w.room, &root, "✅");
    w.thread_answer(&root, "the refusal of the reaction", |b| {
        b.contains("a reaction's relation is not encrypted")
    });
    w.peer.reply("alice", &w.room, &root, "approve");
    w.thread_answer(&root, "the refusal of the unverified reply", |b| {
        b.contains("a device your identity has not signed")
    });
    assert!(
        runner.decision(Duration::from_secs(2)).is_none(),
        "neither counted"
    );
    let pending = w.bot.requests();
    assert_eq!(pending["pending"][0]["id"], req.id.as_str(), "{pending}");
}

/// The digest asked for from the CLI reaches an encrypted Matrix room: the
/// report as an HTML message and each chart as an encrypted `m.image` with
/// its size and a caption that says what it shows.
#[test]
fn the_digest_reaches_an_encrypted_matrix_room_with_its_charts_as_encrypted_images() {
    let py = need_synapse!();
    let hs = Synapse::start(&py);
    let peer = hs.peer();
    let bot_user = peer.register("holdpoint", BOT_PASSWORD);
    peer.user("alice", "alice-pw");
    let room = peer.create_room("alice", true, &[&bot_user], json!({}));
    let bot = BotOptions::new()
        .env("HOLDPOINT_MATRIX_HOMESERVER", hs.url())
        .env("HOLDPOINT_MATRIX_USER_ID", bot_user)
        .env("HOLDPOINT_MATRIX_PASSWORD", BOT_PASSWORD)
        .env("HOLDPOINT_MATRIX_ROOM", room.clone())
        .env("HOLDPOINT_MATRIX_REVIEWERS", ALICE)
        .env("HOLDPOINT_DIGEST_SCHEDULE", "@yearly")
        .config(&format!("[digest]\nmatrix_rooms = [\"{room}\"]\n"))
        .start();
    bot.wait_log("Matrix: ready as", Duration::from_secs(90));
    let out = bot.cli(&["digest", "--since", "1h", "--send"]);
    assert!(out.contains("asked the running bot"), "{out}");
    let report = peer.wait_event("alice", &room, "the digest message", WAIT, |e| {
        content(e)["body"]
            .as_str()
            .is_some_and(|b| b.starts_with("holdpoint digest"))
    });
    assert!(report["encrypted"].as_bool().unwrap_or(false), "{report}");
    let html = content(&report)["formatted_body"]
        .as_str()
        .unwrap_or_default();
    assert!(html.contains("<h2>Audit chain</h2>"), "{html}");
    for name in ["requests-per-day.png", "time-to-decision.png"] {
        let image = peer.wait_event("alice", &room, name, WAIT, |e| {
            content(e)["msgtype"] == "m.image" && content(e)["filename"] == name
        });
        assert!(image["encrypted"].as_bool().unwrap_or(false), "{image}");
        let c = content(&image);
        assert_eq!(
            (c["info"]["w"].as_u64(), c["info"]["h"].as_u64()),
            (Some(960), Some(540)),
            "{c}"
        );
        assert_eq!(c["info"]["mimetype"], "image/png", "{c}");
        assert!(
            c["file"]["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("mxc://")),
            "the file itself is encrypted: {c}"
        );
        assert!(
            c["body"].as_str().is_some_and(|b| !b.is_empty()),
            "a caption: {c}"
        );
    }
}

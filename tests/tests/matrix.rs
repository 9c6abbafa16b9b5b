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
    _hs: Synapse,
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
        _hs: hs,
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
    peer.wait_event("dave", &dm, "the escalation in the direct room", WAIT, |e| {
        content(e)["body"]
            .as_str()
            .is_some_and(|b| b.contains("posted to the on-call reviewers"))
    });
    assert!(agent.running(), "nothing runs before approval");

    // The on-call person approves on the pager room's copy.
    let copy = event_id(&posted);
    peer.react("carol", &pager, &copy, "✅\u{fe0f}");
    let out = agent.finish(WAIT);
    let err = text(&out.stderr);
    assert!(out.status.success(), "the approved push runs: {err}");
    assert!(err.contains(&format!("approved by matrix:{CAROL}")), "{err}");
    assert_eq!(ws.origin_head(), ws.local_head(), "the force push happened");

    peer.wait_event("carol", &pager, "the pager copy edited to the outcome", WAIT, |e| {
        is_edit_of(e, &copy)
            && content(e)["m.new_content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains("Approved by"))
    });
    let told = peer.wait_event("dave", &dm, "the outcome in the direct room", WAIT, |e| {
        content(e)["body"]
            .as_str()
            .is_some_and(|b| b.contains("Approved by"))
    });
    let told = content(&told)["body"].as_str().unwrap_or_default().to_string();
    assert!(told.contains(CAROL), "who decided: {told}");
    assert!(told.contains(&id), "the request on the web queue: {told}");
}

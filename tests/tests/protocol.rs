//! The runner websocket under bad input: the bot answers every malformed,
//! oversized, out-of-order or unauthenticated frame with a clear refusal,
//! keeps serving, and never changes a request because of one.

use holdpoint_shared::protocol::{
    AuditEvent, BotMessage, PROTOCOL_VERSION, ReviewRequest, RunnerMessage, close,
};
use holdpoint_shared::{Decision, Risk};
use holdpoint_testkit::raw::{closed, connect, hello, recv, send};
use holdpoint_testkit::tungstenite::{self, Message};
use holdpoint_testkit::*;

fn request(id: &str) -> ReviewRequest {
    review("git push --force origin main")
        .id(id)
        .host("test-host")
        .build()
}

#[test]
fn connections_without_a_valid_token_are_refused_before_the_websocket_opens() {
    let Some(bot) = Bot::on(Backend::Sqlite, &[]) else {
        return;
    };
    for token in [None, Some("hpr_nope"), Some("not-even-the-format")] {
        match connect(&bot, token) {
            Err(tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 401, "{token:?}");
                let body = resp.body().clone().map(|b| text(&b)).unwrap_or_default();
                assert!(!body.is_empty(), "the refusal says why");
            }
            other => panic!("{token:?} was not refused: {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn malformed_frames_close_with_a_reason_and_the_bot_keeps_serving() {
    let Some(bot) = Bot::on(Backend::Sqlite, &[]) else {
        return;
    };
    let token = bot.token.clone();

    // A version this bot does not speak.
    let mut ws = connect(&bot, Some(&token)).expect("connect");
    ws.send(Message::Text(
        r#"{"type":"hello","protocol":99,"runner_version":"9","host":"h"}"#.into(),
    ))
    .expect("send");
    let (code, why) = closed(&mut ws);
    assert_eq!(code, close::UNSUPPORTED_VERSION);
    assert!(why.contains("unsupported protocol version 99"), "{why}");

    // Anything before hello.
    let mut ws = connect(&bot, Some(&token)).expect("connect");
    send(&mut ws, &RunnerMessage::Ping { nonce: 1 });
    assert_eq!(closed(&mut ws).0, close::OUT_OF_ORDER);

    // Not JSON; an unknown type; an unknown field; a binary frame.
    for frame in [
        Message::Text("{not json".into()),
        Message::Text(r#"{"type":"launch_missiles"}"#.into()),
        Message::Text(r#"{"type":"ping","nonce":1,"admin":true}"#.into()),
        Message::Binary(vec![0u8, 1, 2].into()),
    ] {
        let mut ws = connect(&bot, Some(&token)).expect("connect");
        hello(&mut ws);
        ws.send(frame.clone()).expect("send");
        let (code, why) = closed(&mut ws);
        assert_eq!(code, close::BAD_MESSAGE, "{frame:?}: {why}");
        assert!(!why.is_empty());
    }

    // Larger than the frame limit.
    let mut ws = connect(&bot, Some(&token)).expect("connect");
    hello(&mut ws);
    let big = format!(
        r#"{{"type":"ping","nonce":1,"pad":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let _ = ws.send(Message::Text(big.into()));
    match ws.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), close::TOO_LARGE),
        Ok(other) => panic!("expected a close, got {other:?}"),
        Err(_) => {} // the bot may drop the connection mid-frame: also a refusal
    }

    // Hello twice.
    let mut ws = connect(&bot, Some(&token)).expect("connect");
    hello(&mut ws);
    send(
        &mut ws,
        &RunnerMessage::Hello {
            protocol: PROTOCOL_VERSION,
            runner_version: "t".into(),
            host: "h".into(),
        },
    );
    assert_eq!(closed(&mut ws).0, close::OUT_OF_ORDER);

    // Still serving, and nothing was stored.
    assert_eq!(http_get(bot.port, "/healthz").map(|x| x.0), Some(200));
    let mut ws = connect(&bot, Some(&token)).expect("connect");
    hello(&mut ws);
    send(&mut ws, &RunnerMessage::Ping { nonce: 7 });
    assert_eq!(recv(&mut ws), BotMessage::Pong { nonce: 7 });
    assert_eq!(bot.requests()["pending"].as_array().map(Vec::len), Some(0));
    let (_, metrics) = http_get(bot.port, "/metrics").expect("metrics");
    let bad: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("holdpoint_bad_frames_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the bad frame counter");
    assert!(bad >= 7, "bad frames are counted: {bad}");
}

#[test]
fn invalid_submissions_are_rejected_and_resubmissions_are_idempotent() {
    let Some(bot) = Bot::on(Backend::Sqlite, &[]) else {
        return;
    };
    let mut ws = connect(&bot, Some(&bot.token)).expect("connect");
    hello(&mut ws);

    // Ids are the runner's to choose, but they must be 32 hex digits.
    let mut bad = request("../../etc/passwd");
    bad.command_hash = random_hex(32);
    send(
        &mut ws,
        &RunnerMessage::Submit {
            request: Box::new(bad),
        },
    );
    match recv(&mut ws) {
        BotMessage::Rejected { reason, .. } => {
            assert!(reason.contains("32 lowercase hex"), "{reason}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // An allowed verdict is not something to review.
    let mut allowed = request(&random_hex(16));
    allowed.verdict.decision = Decision::Allow;
    send(
        &mut ws,
        &RunnerMessage::Submit {
            request: Box::new(allowed),
        },
    );
    assert!(matches!(recv(&mut ws), BotMessage::Rejected { .. }));
    // An oversized command.
    let mut huge = request(&random_hex(16));
    huge.command = "x".repeat(300 * 1024);
    send(
        &mut ws,
        &RunnerMessage::Submit {
            request: Box::new(huge),
        },
    );
    match ws.read() {
        Ok(Message::Text(t)) => assert!(matches!(
            BotMessage::decode(&t),
            Ok(BotMessage::Rejected { .. })
        )),
        Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), close::TOO_LARGE),
        other => panic!("{other:?}"),
    }

    let mut ws = connect(&bot, Some(&bot.token)).expect("connect");
    hello(&mut ws);
    let req = request(&random_hex(16));
    send(
        &mut ws,
        &RunnerMessage::Submit {
            request: Box::new(req.clone()),
        },
    );
    let first = match recv(&mut ws) {
        BotMessage::Pending { expires_at, .. } => expires_at,
        other => panic!("expected pending, got {other:?}"),
    };
    // The same request again (a reconnecting runner) is the same request.
    send(
        &mut ws,
        &RunnerMessage::Submit {
            request: Box::new(req.clone()),
        },
    );
    match recv(&mut ws) {
        BotMessage::Pending { expires_at, .. } => assert_eq!(expires_at, first),
        other => panic!("expected pending, got {other:?}"),
    }
    // The same id with another command is refused.
    let mut forged = req.clone();
    forged.command_hash = random_hex(32);
    send(
        &mut ws,
        &RunnerMessage::Submit {
            request: Box::new(forged),
        },
    );
    assert!(matches!(recv(&mut ws), BotMessage::Rejected { .. }));
    assert_eq!(bot.requests()["pending"].as_array().map(Vec::len), Some(1));

    // The decision carries the submitted hash back.
    assert!(
        bot.run(&["deny", &req.id, "--reason", "no"])
            .status
            .success()
    );
    match recv(&mut ws) {
        BotMessage::Decision(d) => {
            assert_eq!(d.command_hash, req.command_hash);
            assert_eq!(d.reason.as_deref(), Some("no"));
        }
        other => panic!("expected the decision, got {other:?}"),
    }
}

#[test]
fn audit_events_are_stored_once_however_often_they_are_sent() {
    let Some(bot) = Bot::on(Backend::Sqlite, &[]) else {
        return;
    };
    let mut ws = connect(&bot, Some(&bot.token)).expect("connect");
    hello(&mut ws);
    let event = |id: String| AuditEvent {
        id,
        at: 1,
        command: "ls".into(),
        decision: Decision::Allow,
        risk: Risk::Low,
        rules: vec!["fs.read".into()],
        host: "h".into(),
        cwd: "/".into(),
        agent: None,
        front_end: "exec".into(),
        action: "ran".into(),
        request_id: None,
    };
    let a = event(random_hex(16));
    let b = event(random_hex(16));
    for batch in [
        vec![a.clone(), b.clone()],
        vec![a.clone()],
        vec![b.clone(), a.clone(), a.clone()],
    ] {
        send(
            &mut ws,
            &RunnerMessage::Audit {
                events: batch.clone(),
            },
        );
        match recv(&mut ws) {
            BotMessage::AuditAck { ids } => {
                assert_eq!(ids, batch.iter().map(|e| e.id.clone()).collect::<Vec<_>>())
            }
            other => panic!("expected an ack, got {other:?}"),
        }
    }
    let rows = bot.audit();
    assert_eq!(rows.iter().filter(|r| r["kind"] == "verdict").count(), 2);
    assert!(bot.run(&["audit", "verify"]).status.success());
}

#[test]
fn a_runner_cannot_write_someone_elses_record_into_the_audit_log() {
    let Some(bot) = Bot::on(Backend::Sqlite, &[]) else {
        return;
    };
    // Runner A submits a request; runner B will try to speak for it.
    let mut a = connect(&bot, Some(&bot.token)).expect("connect a");
    hello(&mut a);
    let held = request(&random_hex(16));
    send(
        &mut a,
        &RunnerMessage::Submit {
            request: Box::new(held.clone()),
        },
    );
    assert!(matches!(recv(&mut a), BotMessage::Pending { .. }));
    let other = bot.add_runner("other");

    let event = |action: &str, rules: &[&str], request_id: Option<String>| AuditEvent {
        id: random_hex(16),
        at: 1,
        command: "ls".into(),
        decision: Decision::Allow,
        risk: Risk::Low,
        rules: rules.iter().map(|r| r.to_string()).collect(),
        host: "h".into(),
        cwd: "/".into(),
        agent: None,
        front_end: "exec".into(),
        action: action.into(),
        request_id,
    };
    let before = bot.audit().len();
    for forged in [
        event("approved by web:alice", &["fs.read"], None),
        event("ran", &["approved by web:alice"], None),
        event("ran", &["fs.read"], Some(held.id.clone())),
        event("submitted", &["git.push.force"], Some(held.id.clone())),
    ] {
        let mut b = connect(&bot, Some(&other)).expect("connect b");
        hello(&mut b);
        send(
            &mut b,
            &RunnerMessage::Audit {
                events: vec![forged.clone()],
            },
        );
        let (code, why) = closed(&mut b);
        assert_eq!(code, close::BAD_MESSAGE, "{forged:?}: {why}");
        assert!(!why.is_empty());
    }
    assert_eq!(bot.audit().len(), before, "none of it was stored");

    // Its own record, with a clock far ahead: stored, at the bot's time.
    let mut b = connect(&bot, Some(&other)).expect("connect b");
    hello(&mut b);
    let mut own = event("ran", &["fs.read"], None);
    own.at = i64::MAX / 2;
    send(
        &mut b,
        &RunnerMessage::Audit {
            events: vec![own.clone()],
        },
    );
    assert!(matches!(recv(&mut b), BotMessage::AuditAck { .. }));
    let rows = bot.audit();
    let row = rows
        .iter()
        .find(|r| r["event_id"] == own.id.as_str())
        .expect("stored");
    let at = row["at"].as_str().expect("at");
    assert!(
        at.starts_with("20"),
        "the bot's time, not the runner's: {at}"
    );
    assert!(bot.run(&["audit", "verify"]).status.success());
}

fn submit(
    ws: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    req: &ReviewRequest,
) -> BotMessage {
    send(
        ws,
        &RunnerMessage::Submit {
            request: Box::new(req.clone()),
        },
    );
    recv(ws)
}

#[test]
fn a_runner_at_its_limits_cannot_crowd_out_another_runners_request() {
    let Some(bot) = Bot::on(
        Backend::Sqlite,
        &[
            ("HOLDPOINT_LIMIT_PENDING_PER_RUNNER", "3"),
            ("HOLDPOINT_LIMIT_CONNECTIONS_PER_RUNNER", "2"),
        ],
    ) else {
        return;
    };
    // The flooding runner: at most three pending requests...
    let mut flood = connect(&bot, Some(&bot.token)).expect("connect");
    hello(&mut flood);
    for _ in 0..3 {
        assert!(matches!(
            submit(&mut flood, &request(&random_hex(16))),
            BotMessage::Pending { .. }
        ));
    }
    match submit(&mut flood, &request(&random_hex(16))) {
        BotMessage::Rejected { reason, .. } => {
            assert!(
                reason.contains("already has 3 requests waiting"),
                "{reason}"
            )
        }
        other => panic!("the fourth pending request must be refused: {other:?}"),
    }
    // ...and at most two connections.
    let mut second = connect(&bot, Some(&bot.token)).expect("second connection");
    hello(&mut second);
    match connect(&bot, Some(&bot.token)) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 429),
        other => panic!(
            "a third connection must be refused: {:?}",
            other.map(|_| ())
        ),
    }

    // Another runner is not affected: its request is listed, approved and
    // relayed.
    let other = bot.add_runner("other");
    let mut ws = connect(&bot, Some(&other)).expect("connect other");
    hello(&mut ws);
    let theirs = request(&random_hex(16));
    assert!(matches!(
        submit(&mut ws, &theirs),
        BotMessage::Pending { .. }
    ));
    let listed = bot.requests();
    assert!(
        listed.to_string().contains(&theirs.id),
        "the other runner's request is on the queue"
    );
    bot.cli(&["approve", &theirs.id]);
    match recv(&mut ws) {
        BotMessage::Decision(d) => {
            assert_eq!(d.request_id, theirs.id);
            assert_eq!(d.status, holdpoint_shared::protocol::Status::Approved);
        }
        other => panic!("expected the decision, got {other:?}"),
    }
    let m = bot.metrics();
    assert!(
        m.contains("holdpoint_runner_limit_refusals_total{limit=\"pending\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("holdpoint_runner_limit_refusals_total{limit=\"connections\"} 1"),
        "{m}"
    );
}

#[test]
fn a_runner_submitting_too_fast_is_told_to_slow_down() {
    let Some(bot) = Bot::on(
        Backend::Sqlite,
        &[("HOLDPOINT_LIMIT_SUBMISSIONS_PER_SECOND", "1")],
    ) else {
        return;
    };
    let mut ws = connect(&bot, Some(&bot.token)).expect("connect");
    hello(&mut ws);
    // A burst of twice the rate, then refusals.
    let answers: Vec<BotMessage> = (0..4)
        .map(|_| submit(&mut ws, &request(&random_hex(16))))
        .collect();
    let pending = answers
        .iter()
        .filter(|a| matches!(a, BotMessage::Pending { .. }))
        .count();
    assert!((2..=3).contains(&pending), "{answers:?}");
    assert!(answers.iter().any(|a| matches!(
        a,
        BotMessage::Rejected { reason, .. } if reason.contains("more than 1 requests a second")
    )));
}

/// One runner fills the queue with long commands; another runner's request
/// still shows on the web queue, listings stay small, and the whole command
/// is there on demand.
fn a_flooding_runner_cannot_push_another_runners_request_off_the_queue(backend: Backend) {
    let Some(bot) = Bot::on(
        backend,
        &[
            ("HOLDPOINT_LIMIT_PENDING_PER_RUNNER", "1000"),
            ("HOLDPOINT_LIMIT_SUBMISSIONS_PER_SECOND", "100000"),
        ],
    ) else {
        return;
    };
    let mut flood = connect(&bot, Some(&bot.token)).expect("connect");
    hello(&mut flood);
    // 120 KiB of command each: a listing of all of them would be 30 MiB.
    let long = format!("git push --force origin main # {}", "x".repeat(120 * 1024));
    let mut flooded = Vec::new();
    for _ in 0..250 {
        let req = review(&long).id(&random_hex(16)).host("flood").build();
        assert!(matches!(
            submit(&mut flood, &req),
            BotMessage::Pending { .. }
        ));
        flooded.push(req);
    }
    let other = bot.add_runner("other");
    let mut ws = connect(&bot, Some(&other)).expect("connect other");
    hello(&mut ws);
    let theirs = request(&random_hex(16));
    assert!(matches!(
        submit(&mut ws, &theirs),
        BotMessage::Pending { .. }
    ));

    let cookie = bot.web_session();
    let (status, queue) = bot.web_get(&cookie, "/api/requests");
    assert_eq!(status, 200, "{queue}");
    let pending = queue["pending"].as_array().expect("pending");
    assert!(
        pending.iter().any(|r| r["id"] == theirs.id.as_str()),
        "the other runner's request is on the queue"
    );
    assert_eq!(queue["pending_total"], 251);
    let flood_row = queue["runners"]
        .as_array()
        .expect("runners")
        .iter()
        .find(|q| q["runner"] == "local")
        .expect("the flooding runner's count");
    assert_eq!(flood_row["pending"], 250);
    assert_eq!(flood_row["shown"], 100);
    // Its newest are the ones shown.
    let newest = &flooded.last().expect("flooded").id;
    assert!(pending.iter().any(|r| r["id"] == newest.as_str()));
    assert!(!pending.iter().any(|r| r["id"] == flooded[0].id.as_str()));
    // Commands are cut in the listing...
    let cut = pending
        .iter()
        .find(|r| r["id"] == newest.as_str())
        .expect("newest");
    assert_eq!(cut["command_truncated"], true);
    assert_eq!(cut["command_chars"], long.chars().count());
    let body = queue.to_string();
    assert!(body.len() < 2 * 1024 * 1024, "{} bytes", body.len());
    // ...whole on demand...
    let (status, whole) = bot.web_get(&cookie, &format!("/api/requests/{newest}"));
    assert_eq!(status, 200);
    assert_eq!(whole["command"], long.as_str());
    // ...and the rest of the flood is a page away, newest first.
    let next = queue_page(&bot, &cookie, "local", None);
    assert_eq!(next.0.len(), 100);
    assert_eq!(next.0[0], *newest);
    let second = queue_page(&bot, &cookie, "local", next.1.as_deref());
    let third = queue_page(&bot, &cookie, "local", second.1.as_deref());
    let mut all: Vec<String> = [next.0, second.0, third.0].concat();
    assert_eq!(all.len(), 250);
    assert!(third.1.is_none(), "the last page says there is no next");
    all.reverse();
    let want: Vec<String> = flooded.iter().map(|r| r.id.clone()).collect();
    assert_eq!(all, want, "every request once, in order");
    // The CLI finds it by a short prefix whatever the flood.
    bot.cli(&["approve", &theirs.id[..8]]);
    match recv(&mut ws) {
        BotMessage::Decision(d) => {
            assert_eq!(d.request_id, theirs.id);
            assert_eq!(d.status, holdpoint_shared::protocol::Status::Approved);
        }
        other => panic!("expected the decision, got {other:?}"),
    }
}

/// One page of a runner's queue: its ids and the cursor of the next page.
fn queue_page(
    bot: &Bot,
    cookie: &str,
    runner: &str,
    before: Option<&str>,
) -> (Vec<String>, Option<String>) {
    let path = match before {
        Some(b) => format!("/api/requests?runner={runner}&before={b}"),
        None => format!("/api/requests?runner={runner}"),
    };
    let (status, page) = bot.web_get(cookie, &path);
    assert_eq!(status, 200, "{page}");
    let ids = page["pending"]
        .as_array()
        .expect("pending")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    (ids, page["next"].as_str().map(str::to_string))
}

mod sqlite {
    #[test]
    fn a_flooding_runner_cannot_push_another_runners_request_off_the_queue() {
        super::a_flooding_runner_cannot_push_another_runners_request_off_the_queue(
            holdpoint_testkit::Backend::Sqlite,
        )
    }
}

mod postgres {
    #[test]
    fn a_flooding_runner_cannot_push_another_runners_request_off_the_queue() {
        super::a_flooding_runner_cannot_push_another_runners_request_off_the_queue(
            holdpoint_testkit::Backend::Postgres,
        )
    }
}

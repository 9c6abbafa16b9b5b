//! The request lifecycle and the audit chain, in process, on a real SQLite
//! file: first decision wins under contention, deadlines hold, the requester
//! cannot approve their own request, a tampered audit row is found, a
//! transition whose audit row cannot be written neither happens nor reaches
//! the runner, and a decision made by another process reaches the runner
//! through the change feed.

use holdpoint_bot::config::{Config, Expiry};
use holdpoint_bot::core::{Clock, ManualClock, Outbound, RunnerId};
use holdpoint_bot::{Bot, Decided, Intent, Refusal, Reviewer, Submitted};
use holdpoint_shared::protocol::{BotMessage, ReviewRequest, Status};
use holdpoint_testkit::{random_hex, review};
use sea_orm::ConnectionTrait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A runner identity for the core's tests: a stable made-up id per name
/// (the websocket door gets real ones from the runners table).
fn runner(name: &str) -> RunnerId {
    let id = name
        .bytes()
        .fold(1_000_000i64, |h, b| (h * 31 + i64::from(b)) % 1_000_000_007);
    RunnerId::new(id, name)
}

async fn bot(expiry: Duration) -> (Arc<Bot>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("holdpoint-lifecycle-{}", random_hex(6)));
    let config = config_in(&dir, expiry);
    let bot = Bot::open(config).await.expect("database");
    (Arc::new(bot), dir)
}

fn url_in(dir: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("t.db").display())
}

/// The database file itself, as someone with access to it (not the bot)
/// sees it.
async fn raw(dir: &std::path::Path) -> sea_orm::DatabaseConnection {
    sea_orm::Database::connect(url_in(dir))
        .await
        .expect("raw connection")
}

fn config_in(dir: &std::path::Path, expiry: Duration) -> Config {
    config_with(dir, expiry, "")
}

/// The configuration, with more TOML after `[expiry]`.
fn config_with(dir: &std::path::Path, expiry: Duration, more: &str) -> Config {
    let url = url_in(dir);
    std::fs::create_dir_all(dir).expect("dir");
    let file = dir.join("bot.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\ndatabase_url = {:?}\n[expiry]\ndefault = \"{}ms\"\n{more}",
            dir.display().to_string(),
            url,
            expiry.as_millis()
        ),
    )
    .expect("config");
    let config = Config::load(Some(&file)).expect("config loads");
    assert_eq!(config.expiry, Expiry::uniform(expiry));
    config
}

fn request(requested_by: Option<&str>) -> ReviewRequest {
    review("git push --force origin main")
        .agent("claude-code")
        .requested_by(requested_by)
        .build()
}

fn reviewer(id: &str) -> Reviewer {
    Reviewer::parse(id).expect("a reviewer")
}

/// Approves or denies, as the doors do.
async fn decide(
    bot: &Bot,
    id: &str,
    approve: bool,
    who: &Reviewer,
    reason: Option<String>,
    hash: Option<&str>,
) -> Result<Decided, holdpoint_bot::core::LifecycleError> {
    let intent = if approve {
        Intent::Approve { reason }
    } else {
        Intent::Deny { reason }
    };
    bot.decide(who, id, hash, intent).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_decisions_have_exactly_one_winner() {
    let (bot, dir) = bot(Duration::from_secs(600)).await;
    let req = request(None);
    assert!(matches!(
        bot.submit(&runner("local"), &req).await.expect("submit"),
        Submitted::Pending { .. }
    ));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (bot, id) = (bot.clone(), req.id.clone());
        tasks.push(tokio::spawn(async move {
            decide(
                &bot,
                &id,
                i % 2 == 0,
                &reviewer(&format!("web:r{i}")),
                None,
                None,
            )
            .await
            .expect("decide")
        }));
    }
    let mut won = Vec::new();
    let mut already = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            Decided::Won(d) => won.push(d),
            Decided::Already(d) => already.push(d),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one decision wins");
    assert_eq!(already.len(), 19);
    assert!(
        already
            .iter()
            .all(|d| d.decided_by == won[0].decided_by && d.status == won[0].status),
        "every loser is told who won"
    );
    let stored = bot.get(&req.id).await.expect("get").expect("stored");
    assert_eq!(stored.status, won[0].status);
    // One decision event in the audit log, and the chain holds.
    let v = bot.verify_audit().await.expect("verify");
    assert!(v.broken.is_none());
    assert_eq!(v.rows, 2, "submitted + one decision");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_decision_after_the_deadline_does_not_count() {
    let (bot, dir) = bot(Duration::from_millis(200)).await;
    let req = request(None);
    bot.submit(&runner("local"), &req).await.expect("submit");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The sweep has not run (no server here): the decision itself notices.
    match decide(&bot, &req.id, true, &reviewer("web:late"), None, None)
        .await
        .expect("decide")
    {
        Decided::Already(d) => {
            assert_eq!(d.status, Status::Expired);
            assert_eq!(d.decided_by, "holdpoint");
        }
        other => panic!("a late approval must not win: {other:?}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_requester_cannot_approve_their_own_request_but_can_deny_it() {
    let (bot, dir) = bot(Duration::from_secs(600)).await;
    let req = request(Some("slack:U0AGENT"));
    bot.submit(&runner("local"), &req).await.expect("submit");
    match decide(&bot, &req.id, true, &reviewer("slack:U0AGENT"), None, None)
        .await
        .expect("decide")
    {
        Decided::Refused(why) => assert_eq!(why, Refusal::OwnRequest),
        other => panic!("self-approval must be refused: {other:?}"),
    }
    assert_eq!(
        bot.get(&req.id).await.expect("get").expect("row").status,
        Status::Pending
    );
    assert!(matches!(
        decide(
            &bot,
            &req.id,
            false,
            &reviewer("slack:U0AGENT"),
            Some("changed my mind".into()),
            None
        )
        .await
        .expect("decide"),
        Decided::Won(_)
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_decision_for_another_command_hash_is_refused() {
    let (bot, dir) = bot(Duration::from_secs(600)).await;
    let req = request(None);
    bot.submit(&runner("local"), &req).await.expect("submit");
    let other_hash = random_hex(32);
    assert!(matches!(
        decide(
            &bot,
            &req.id,
            true,
            &reviewer("web:a"),
            None,
            Some(&other_hash)
        )
        .await
        .expect("decide"),
        Decided::Refused(_)
    ));
    assert!(matches!(
        decide(
            &bot,
            &req.id,
            true,
            &reviewer("web:a"),
            None,
            Some(&req.command_hash)
        )
        .await
        .expect("decide"),
        Decided::Won(_)
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_database_refuses_changes_to_the_audit_log_and_verify_finds_tampering() {
    let (bot, dir) = bot(Duration::from_secs(600)).await;
    for _ in 0..3 {
        let req = request(None);
        bot.submit(&runner("local"), &req).await.expect("submit");
        decide(
            &bot,
            &req.id,
            false,
            &reviewer("web:a"),
            Some("no".into()),
            None,
        )
        .await
        .expect("decide");
    }
    assert!(bot.verify_audit().await.expect("verify").broken.is_none());

    // Append-only: the database itself refuses.
    let db = raw(&dir).await;
    let err = db
        .execute_unprepared("UPDATE audit_log SET body = '{}' WHERE seq = 2")
        .await
        .expect_err("an update must be refused");
    assert!(err.to_string().contains("append-only"), "{err}");
    assert!(
        db.execute_unprepared("DELETE FROM audit_log WHERE seq = 2")
            .await
            .is_err()
    );

    // Someone with the file and no scruples drops the trigger and edits a
    // row: verify names the row.
    db.execute_unprepared("DROP TRIGGER audit_log_no_update")
        .await
        .expect("drop trigger");
    db.execute_unprepared(
        "UPDATE audit_log SET body = replace(body, '\"no\"', '\"yes\"') WHERE seq = 4",
    )
    .await
    .expect("tamper");
    let v = bot.verify_audit().await.expect("verify");
    assert_eq!(v.broken.map(|b| b.0), Some(4), "the tampered row is found");
    let _ = std::fs::remove_dir_all(dir);
}

/// A runner connection, as the websocket door registers one: what the core
/// sends it arrives on the receiver.
fn runner_connection(
    bot: &Bot,
    runner: &RunnerId,
) -> (
    holdpoint_bot::core::ConnId,
    mpsc::UnboundedReceiver<Outbound>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        bot.connect(runner, tx).expect("under the connection limit"),
        rx,
    )
}

fn decision_sent(rx: &mut mpsc::UnboundedReceiver<Outbound>) -> Option<Status> {
    match rx.try_recv() {
        Ok(Outbound::Send(BotMessage::Decision(d))) => Some(d.status),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(_) => None,
    }
}

#[tokio::test]
async fn a_decision_whose_audit_row_cannot_be_written_neither_happens_nor_reaches_the_runner() {
    let (bot, dir) = bot(Duration::from_secs(600)).await;
    let (conn, mut rx) = runner_connection(&bot, &runner("local"));
    let req = request(None);
    bot.submit_on(conn, &runner("local"), &req)
        .await
        .expect("submit");
    let rows_before = bot.audit_rows().await.expect("rows");

    // The audit log refuses every new row, as a full disk or a broken
    // database would, at the moment the decision is being recorded.
    let db = raw(&dir).await;
    db.execute_unprepared(
        "CREATE TRIGGER audit_log_fails BEFORE INSERT ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'the audit log cannot be written'); END",
    )
    .await
    .expect("fault");
    let err = decide(&bot, &req.id, true, &reviewer("web:a"), None, None)
        .await
        .expect_err("an approval without its audit row must fail");
    assert!(
        err.to_string().contains("audit log cannot be written"),
        "{err}"
    );
    assert_eq!(decision_sent(&mut rx), None, "nothing was relayed");
    let stored = bot.get(&req.id).await.expect("get").expect("row");
    assert_eq!(stored.status, Status::Pending, "the approval was not kept");
    assert_eq!(bot.audit_rows().await.expect("rows"), rows_before);
    assert!(
        bot.changes_since(0)
            .await
            .expect("feed")
            .iter()
            .all(|c| c.status == Status::Pending),
        "no change row for a transition that did not happen"
    );

    // The fault clears: the same approval now commits, with its row, and
    // only then reaches the runner.
    db.execute_unprepared("DROP TRIGGER audit_log_fails")
        .await
        .expect("clear fault");
    assert!(matches!(
        decide(&bot, &req.id, true, &reviewer("web:a"), None, None)
            .await
            .expect("decide"),
        Decided::Won(_)
    ));
    assert_eq!(decision_sent(&mut rx), Some(Status::Approved));
    let v = bot.verify_audit().await.expect("verify");
    assert!(v.broken.is_none());
    assert_eq!(v.rows, rows_before + 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_made_by_another_process_reaches_the_waiting_runner_through_the_feed() {
    let (server, dir) = bot(Duration::from_secs(600)).await;
    tokio::spawn(server.clone().run_feed());
    let mut feed = server.subscribe();
    let (conn, mut rx) = runner_connection(&server, &runner("local"));
    let req = request(None);
    server
        .submit_on(conn, &runner("local"), &req)
        .await
        .expect("submit");

    // The CLI: another Bot on the same database, which no runner talks to.
    let cli = Bot::open(config_in(&dir, Duration::from_secs(600)))
        .await
        .expect("second process");
    assert!(matches!(
        decide(
            &cli,
            &req.id,
            false,
            &reviewer("cli:root"),
            Some("no".into()),
            None
        )
        .await
        .expect("decide"),
        Decided::Won(_)
    ));
    let mut seen = Vec::new();
    while seen.last().map(|c: &holdpoint_bot::Change| c.status) != Some(Status::Denied) {
        let c = tokio::time::timeout(Duration::from_secs(10), feed.next(&server))
            .await
            .expect("the change arrives")
            .expect("feed");
        seen.push(c);
    }
    assert!(seen.iter().all(|c| c.request_id == req.id));
    assert!(seen.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
    // The reader relays before it broadcasts.
    assert_eq!(decision_sent(&mut rx), Some(Status::Denied));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_resumes_from_its_place_in_the_feed() {
    let dir = std::env::temp_dir().join(format!("holdpoint-lifecycle-{}", random_hex(6)));
    // One runner submits far faster than the default limits allow.
    let config = config_with(
        &dir,
        Duration::from_secs(600),
        "[limits]\npending_per_runner = 5000\nsubmissions_per_second = 100000\n",
    );
    let bot = Arc::new(Bot::open(config).await.expect("database"));
    tokio::spawn(bot.clone().run_feed());
    // Let the reader find the head before subscribing.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut feed = bot.subscribe();
    let start = feed.position();
    // More changes than the broadcast holds, none read meanwhile.
    let mut ids = Vec::new();
    for _ in 0..1100 {
        let req = request(None);
        bot.submit(&runner("local"), &req).await.expect("submit");
        ids.push(req.id);
    }
    let mut got = Vec::new();
    while got.len() < ids.len() {
        let c = tokio::time::timeout(Duration::from_secs(30), feed.next(&bot))
            .await
            .expect("changes arrive")
            .expect("feed");
        got.push(c);
    }
    assert!(got[0].seq > start);
    assert!(
        got.windows(2).all(|w| w[0].seq < w[1].seq),
        "in order, no repeats"
    );
    let got_ids: Vec<&str> = got.iter().map(|c| c.request_id.as_str()).collect();
    let want: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(got_ids, want, "every change, none skipped");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn deadlines_follow_the_core_clock() {
    let dir = std::env::temp_dir().join(format!("holdpoint-lifecycle-{}", random_hex(6)));
    let clock = Arc::new(ManualClock::starting_at(1_800_000_000_000));
    let bot = Bot::open_with_clock(config_in(&dir, Duration::from_secs(600)), clock.clone())
        .await
        .expect("bot");
    let req = request(None);
    match bot.submit(&runner("local"), &req).await.expect("submit") {
        Submitted::Pending { expires_at } => {
            assert_eq!(expires_at, clock.now_ms() + 600_000);
        }
        other => panic!("{other:?}"),
    }
    clock.advance(599_999);
    assert_eq!(bot.expire_due().await.expect("sweep"), 0);
    clock.advance(1);
    assert_eq!(bot.expire_due().await.expect("sweep"), 1);
    let d = bot
        .get(&req.id)
        .await
        .expect("get")
        .and_then(|r| r.decision())
        .expect("decided");
    assert_eq!(d.status, Status::Expired);
    assert_eq!(d.decided_at, clock.now_ms());
    assert!(
        d.reason.as_deref().is_some_and(|r| r.contains("10m 00s")),
        "{:?}",
        d.reason
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_bot_that_dies_after_recording_a_decision_loses_neither_the_decision_nor_its_audit_row() {
    let (first, dir) = bot(Duration::from_secs(600)).await;
    let (conn, mut rx) = runner_connection(&first, &runner("local"));
    let req = request(None);
    first
        .submit_on(conn, &runner("local"), &req)
        .await
        .expect("submit");

    // The decision commits in a process that dies before anything relays
    // it (here: one the runner is not connected to, stopped at once).
    let dying = Bot::open(config_in(&dir, Duration::from_secs(600)))
        .await
        .expect("second process");
    assert!(matches!(
        decide(&dying, &req.id, true, &reviewer("web:a"), None, None)
            .await
            .expect("decide"),
        Decided::Won(_)
    ));
    drop(dying);
    drop(first);
    assert_eq!(
        decision_sent(&mut rx),
        None,
        "nothing reached the runner yet"
    );

    // The bot comes back; the runner reconnects and submits the same id.
    let again = Bot::open(config_in(&dir, Duration::from_secs(600)))
        .await
        .expect("restart");
    let (conn, _rx) = runner_connection(&again, &runner("local"));
    match again
        .submit_on(conn, &runner("local"), &req)
        .await
        .expect("resubmit")
    {
        Submitted::Decided(d) => {
            assert_eq!(d.status, Status::Approved);
            assert_eq!(d.command_hash, req.command_hash);
        }
        other => panic!("the recorded approval must be the answer: {other:?}"),
    }
    let v = again.verify_audit().await.expect("verify");
    assert!(v.broken.is_none());
    assert_eq!(v.rows, 2, "submitted + approved, both kept");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn another_runner_cannot_take_over_or_clear_a_wait() {
    let (bot, dir) = bot(Duration::from_secs(600)).await;
    let (a, mut a_rx) = runner_connection(&bot, &runner("runner-a"));
    let (b, mut b_rx) = runner_connection(&bot, &runner("runner-b"));
    let req = request(None);
    bot.submit_on(a, &runner("runner-a"), &req)
        .await
        .expect("submit");

    // Runner B saw the id in a review link: it acknowledges it, then
    // submits it as its own, with its own hash and with A's.
    bot.acknowledged(b, &runner("runner-b"), &req.id)
        .await
        .expect("an ack is never an error");
    let mut forged = req.clone();
    forged.command_hash = random_hex(32);
    assert!(
        bot.submit_on(b, &runner("runner-b"), &forged)
            .await
            .is_err()
    );
    assert!(bot.submit_on(b, &runner("runner-b"), &req).await.is_err());

    assert!(matches!(
        decide(&bot, &req.id, true, &reviewer("web:a"), None, None)
            .await
            .expect("decide"),
        Decided::Won(_)
    ));
    assert_eq!(
        decision_sent(&mut a_rx),
        Some(Status::Approved),
        "A still hears it"
    );
    assert_eq!(decision_sent(&mut b_rx), None, "B hears nothing");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn revoking_a_runner_cancels_its_pending_requests_so_none_can_be_approved() {
    let (bot, dir) = bot(Duration::from_secs(600)).await;
    bot.add_runner("ci-7").await.expect("add");
    let ci7 = bot
        .runner_named("ci-7")
        .await
        .expect("runners")
        .expect("registered");
    let (conn, mut rx) = runner_connection(&bot, &ci7);
    let held = request(None);
    bot.submit_on(conn, &ci7, &held).await.expect("submit");
    let other = request(None);
    bot.submit(&runner("local"), &other)
        .await
        .expect("another runner's");

    bot.revoke_runner("ci-7").await.expect("revoke");
    let d = bot
        .get(&held.id)
        .await
        .expect("get")
        .and_then(|r| r.decision())
        .expect("decided");
    assert_eq!(d.status, Status::Cancelled);
    assert_eq!(d.reason.as_deref(), Some("the runner's token was revoked"));
    assert_eq!(decision_sent(&mut rx), Some(Status::Cancelled));
    assert!(matches!(
        decide(&bot, &held.id, true, &reviewer("web:a"), None, None)
            .await
            .expect("decide"),
        Decided::Already(_)
    ));
    // Only that runner's requests.
    let still = bot.get(&other.id).await.expect("get").expect("row");
    assert_eq!(still.status, Status::Pending);
    assert!(!bot.runner_active(&ci7).await.expect("check"));
    // And the revoked identity cannot submit again.
    let late = request(None);
    assert!(
        matches!(
            bot.submit(&ci7, &late).await,
            Err(holdpoint_bot::core::LifecycleError::Revoked)
        ),
        "a revoked runner's submission is refused in its own transaction"
    );
    assert!(bot.get(&late.id).await.expect("get").is_none());

    // The name given again is a new identity: it owns nothing of the old
    // one's, and the old one stays revoked.
    bot.add_runner("ci-7").await.expect("add again");
    let again = bot
        .runner_named("ci-7")
        .await
        .expect("runners")
        .expect("registered");
    assert_ne!(again.id, ci7.id);
    assert!(!bot.runner_active(&ci7).await.expect("check"));
    assert!(bot.runner_active(&again).await.expect("check"));
    assert!(
        matches!(
            bot.submit(&again, &held).await,
            Err(holdpoint_bot::core::LifecycleError::Conflict(_))
        ),
        "the old identity's decision is not the new one's to learn"
    );
    assert_eq!(
        bot.foreign_requests(&again, std::slice::from_ref(&held.id))
            .await
            .expect("check"),
        vec![held.id.clone()],
        "nor its record to write into"
    );
    assert!(matches!(
        bot.cancel(&again, &other.id).await.expect("cancel"),
        Decided::Refused(Refusal::OtherRunner)
    ));
    let names: Vec<(String, bool)> = bot
        .runners()
        .await
        .expect("list")
        .into_iter()
        .map(|r| (r.name, r.revoked_at.is_some()))
        .collect();
    assert_eq!(
        names,
        vec![("ci-7".to_string(), true), ("ci-7".to_string(), false)]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_runner_bound_to_a_requester_cannot_choose_or_omit_whom_it_works_for() {
    let dir = std::env::temp_dir().join(format!("holdpoint-lifecycle-{}", random_hex(6)));
    let config = config_with(
        &dir,
        Duration::from_secs(600),
        "[runners.ci-7]\nrequester = \"slack:U0AGENT\"\n",
    );
    let bot = Bot::open(config).await.expect("bot");

    // Omitted: the request is the bound person's, so they cannot approve it.
    let silent = request(None);
    bot.submit(&runner("ci-7"), &silent).await.expect("submit");
    let stored = bot.get(&silent.id).await.expect("get").expect("row");
    assert_eq!(
        stored.request.requested_by.as_deref(),
        Some("slack:U0AGENT")
    );
    match decide(
        &bot,
        &silent.id,
        true,
        &reviewer("slack:U0AGENT"),
        None,
        None,
    )
    .await
    .expect("decide")
    {
        Decided::Refused(why) => assert_eq!(why, Refusal::OwnRequest),
        other => panic!("self-approval must be refused: {other:?}"),
    }
    // Another person claimed: refused, nothing stored.
    let lying = request(Some("slack:U0SOMEONE"));
    let err = bot
        .submit(&runner("ci-7"), &lying)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("works for slack:U0AGENT"), "{err}");
    assert!(bot.get(&lying.id).await.expect("get").is_none());
    // The bound person, said out loud: fine.
    bot.submit(&runner("ci-7"), &request(Some("slack:U0AGENT")))
        .await
        .expect("the binding itself is accepted");

    // An unbound runner's claim stands as it is; without one, nobody is
    // the requester and any reviewer may approve (the documented policy
    // for unbound runners).
    let unbound = request(None);
    bot.submit(&runner("local"), &unbound)
        .await
        .expect("submit");
    assert!(matches!(
        decide(
            &bot,
            &unbound.id,
            true,
            &reviewer("slack:U0AGENT"),
            None,
            None
        )
        .await
        .expect("decide"),
        Decided::Won(_)
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_requester_binding_that_names_nobody_is_a_config_error() {
    let dir = std::env::temp_dir().join(format!("holdpoint-lifecycle-{}", random_hex(6)));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bot.toml");
    std::fs::write(&file, "[runners.ci-7]\nrequester = \"alice\"\n").expect("write");
    let err = Config::load(Some(&file)).expect_err("refused");
    assert!(err.to_string().contains("runners.ci-7.requester"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_trusted_proxy_that_is_not_a_network_is_a_config_error() {
    let dir = std::env::temp_dir().join(format!("holdpoint-lifecycle-{}", random_hex(6)));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bot.toml");
    std::fs::write(
        &file,
        "trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/40\"]\n",
    )
    .expect("write");
    let err = Config::load(Some(&file)).expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("trusted_proxies") && text.contains("10.0.0.0/40"),
        "{text}"
    );
    std::fs::write(&file, "trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n").expect("write");
    let config = Config::load(Some(&file)).expect("loads");
    assert!(!config.trusted_proxies.is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

/// A transition the core can make on a pending request.
#[derive(Debug, Clone, Copy)]
enum Move {
    Approve,
    Deny,
    Expire,
    Cancel,
}

impl Move {
    fn status(self) -> Status {
        match self {
            Move::Approve => Status::Approved,
            Move::Deny => Status::Denied,
            Move::Expire => Status::Expired,
            Move::Cancel => Status::Cancelled,
        }
    }

    /// Makes it; `Ok(true)` when the request moved.
    async fn make(self, bot: &Bot, clock: &ManualClock, id: &str) -> Result<bool, String> {
        let moved = |d: Decided| matches!(d, Decided::Won(_));
        match self {
            Move::Approve => decide(bot, id, true, &reviewer("web:a"), None, None)
                .await
                .map(moved)
                .map_err(|e| e.to_string()),
            Move::Deny => decide(bot, id, false, &reviewer("web:a"), None, None)
                .await
                .map(moved)
                .map_err(|e| e.to_string()),
            Move::Expire => {
                clock.advance(601_000);
                bot.expire_due()
                    .await
                    .map(|n| n == 1)
                    .map_err(|e| e.to_string())
            }
            Move::Cancel => bot
                .cancel(&runner("local"), id)
                .await
                .map(moved)
                .map_err(|e| e.to_string()),
        }
    }
}

/// Every transition (a reviewer's approval or denial, the deadline's
/// expiry, the runner's cancellation) commits its request row, its audit
/// row and its change row together or not at all: with either row refused,
/// the request stays pending, nothing is relayed and no row is left
/// behind; once the fault clears the same transition commits and only then
/// reaches the runner.
#[tokio::test]
async fn no_transition_happens_or_is_relayed_without_its_audit_and_change_rows() {
    for table in ["audit_log", "changes"] {
        for mv in [Move::Approve, Move::Deny, Move::Expire, Move::Cancel] {
            let dir = std::env::temp_dir().join(format!("holdpoint-lifecycle-{}", random_hex(6)));
            let clock = Arc::new(ManualClock::starting_at(1_800_000_000_000));
            let bot =
                Bot::open_with_clock(config_in(&dir, Duration::from_secs(600)), clock.clone())
                    .await
                    .expect("bot");
            let (conn, mut rx) = runner_connection(&bot, &runner("local"));
            let req = request(None);
            bot.submit_on(conn, &runner("local"), &req)
                .await
                .expect("submit");
            let rows_before = bot.audit_rows().await.expect("rows");
            let changes_before = bot.changes_since(0).await.expect("feed").len();
            let db = raw(&dir).await;
            db.execute_unprepared(&format!(
                "CREATE TRIGGER fault BEFORE INSERT ON {table} \
                 BEGIN SELECT RAISE(ABORT, 'the {table} table cannot be written'); END"
            ))
            .await
            .expect("fault");
            let what = format!("{mv:?} with {table} refused");
            let attempt = mv.make(&bot, &clock, &req.id).await;
            assert!(
                attempt
                    .as_ref()
                    .is_err_and(|e| e.contains("cannot be written")),
                "{what}: {attempt:?}"
            );
            assert_eq!(decision_sent(&mut rx), None, "{what}: nothing relayed");
            let stored = bot.get(&req.id).await.expect("get").expect("row");
            assert_eq!(stored.status, Status::Pending, "{what}: not kept");
            assert_eq!(bot.audit_rows().await.expect("rows"), rows_before, "{what}");
            assert_eq!(
                bot.changes_since(0).await.expect("feed").len(),
                changes_before,
                "{what}: no change row"
            );

            db.execute_unprepared("DROP TRIGGER fault")
                .await
                .expect("clear fault");
            assert_eq!(
                mv.make(&bot, &clock, &req.id).await,
                Ok(true),
                "{what}: retried"
            );
            let stored = bot.get(&req.id).await.expect("get").expect("row");
            assert_eq!(stored.status, mv.status(), "{what}");
            if !matches!(mv, Move::Cancel) {
                // A cancelling runner asked for it; it is not told again.
                assert_eq!(
                    decision_sent(&mut rx),
                    Some(mv.status()),
                    "{what}: relayed after"
                );
            }
            let v = bot.verify_audit().await.expect("verify");
            assert!(v.broken.is_none(), "{what}");
            assert_eq!(v.rows, rows_before + 1, "{what}");
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A bot whose runners may keep `pending` requests waiting and submit
/// without a rate limit.
async fn bot_with_limit(pending: u32) -> (Arc<Bot>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("holdpoint-lifecycle-{}", random_hex(6)));
    let config = config_with(
        &dir,
        Duration::from_secs(600),
        &format!("[limits]\npending_per_runner = {pending}\nsubmissions_per_second = 100000\n"),
    );
    (Arc::new(Bot::open(config).await.expect("database")), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_submissions_from_one_runner_stops_exactly_at_its_pending_limit() {
    let (bot, dir) = bot_with_limit(10).await;
    // Submitted at once, so the core's writer commits many of them in one
    // transaction: each must still see the ones before it.
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let bot = bot.clone();
        tasks.push(tokio::spawn(async move {
            bot.submit(&runner("busy"), &request(None)).await
        }));
    }
    let (mut pending, mut refused) = (0, 0);
    for t in tasks {
        match t.await.expect("task") {
            Ok(Submitted::Pending { .. }) => pending += 1,
            Err(holdpoint_bot::core::LifecycleError::Limit(_)) => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((pending, refused), (10, 50));
    assert_eq!(bot.pending_count_of("busy").await.expect("count"), 10);
    // Another runner is not held by this one's limit.
    assert!(matches!(
        bot.submit(&runner("quiet"), &request(None)).await,
        Ok(Submitted::Pending { .. })
    ));
    let v = bot.verify_audit().await.expect("verify");
    assert_eq!(v.broken, None);
    assert_eq!(
        v.rows, 11,
        "one audit row per stored request, none for a refused one"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_concurrent_submissions_and_decisions_all_commit_and_keep_the_chain() {
    let (bot, dir) = bot_with_limit(5000).await;
    let mut feed = bot.subscribe();
    tokio::spawn(bot.clone().run_feed());
    let reqs: Vec<ReviewRequest> = (0..300).map(|_| request(None)).collect();
    let mut tasks = Vec::new();
    for (i, req) in reqs.iter().cloned().enumerate() {
        let bot = bot.clone();
        tasks.push(tokio::spawn(async move {
            bot.submit(&runner(&format!("r{}", i % 7)), &req).await
        }));
    }
    for t in tasks {
        assert!(matches!(
            t.await.expect("task"),
            Ok(Submitted::Pending { .. })
        ));
    }
    let mut tasks = Vec::new();
    for (i, req) in reqs.iter().enumerate() {
        let (bot, id) = (bot.clone(), req.id.clone());
        tasks.push(tokio::spawn(async move {
            decide(&bot, &id, i % 3 != 0, &reviewer("web:alice"), None, None).await
        }));
    }
    for t in tasks {
        assert!(matches!(t.await.expect("task"), Ok(Decided::Won(_))));
    }
    for req in &reqs {
        let stored = bot.get(&req.id).await.expect("get").expect("stored");
        assert!(matches!(stored.status, Status::Approved | Status::Denied));
    }
    let v = bot.verify_audit().await.expect("verify");
    assert_eq!(v.broken, None);
    assert_eq!(v.rows, 600, "a pending and a decision row for each request");
    // Every transition is in the feed once, in commit order.
    let mut seen = std::collections::HashMap::<String, Vec<Status>>::new();
    let mut last = feed.position();
    for _ in 0..600 {
        let c = tokio::time::timeout(Duration::from_secs(30), feed.next(&bot))
            .await
            .expect("changes arrive")
            .expect("feed");
        assert!(c.seq > last, "in order");
        last = c.seq;
        seen.entry(c.request_id).or_default().push(c.status);
    }
    assert_eq!(seen.len(), 300);
    assert!(
        seen.values()
            .all(|s| s.len() == 2 && s[0] == Status::Pending && s[1].is_final()),
        "each request pending, then decided"
    );
    let _ = std::fs::remove_dir_all(dir);
}

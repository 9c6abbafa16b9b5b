//! The request lifecycle and the audit chain, in process, on a real SQLite
//! file: first decision wins under contention, deadlines hold, the requester
//! cannot approve their own request, and a tampered audit row is found.

use holdpoint_bot::config::{Config, Expiry};
use holdpoint_bot::{Bot, Decided, Reviewer, Submitted, audit, db};
use holdpoint_shared::protocol::{ReviewRequest, Status};
use holdpoint_shared::{Context, Policy};
use sea_orm::ConnectionTrait;
use std::sync::Arc;
use std::time::Duration;

fn hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("random");
    hex::encode(b)
}

async fn bot(expiry: Duration) -> (Arc<Bot>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("holdpoint-lifecycle-{}", hex(6)));
    let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
    let db = db::open_and_migrate(&url).await.expect("database");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bot.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\ndatabase_url = {:?}\n[expiry]\ndefault = \"{}ms\"\n",
            dir.display().to_string(),
            url,
            expiry.as_millis()
        ),
    )
    .expect("config");
    let config = Config::load(Some(&file)).expect("config loads");
    assert_eq!(config.expiry, Expiry::uniform(expiry));
    (Arc::new(Bot::new(db, config)), dir)
}

fn request(requested_by: Option<&str>) -> ReviewRequest {
    ReviewRequest {
        id: hex(16),
        command: "git push --force origin main".into(),
        command_hash: hex(32),
        verdict: Policy::builtin()
            .expect("policy")
            .classify("git push --force origin main", &Context::fixed()),
        annotations: vec![],
        host: "ci-7".into(),
        cwd: "/srv/app".into(),
        agent: Some("claude-code".into()),
        session: None,
        front_end: "sh".into(),
        requested_by: requested_by.map(str::to_string),
    }
}

fn reviewer(id: &str) -> Reviewer {
    Reviewer { id: id.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_decisions_have_exactly_one_winner() {
    let (bot, dir) = bot(Duration::from_secs(600)).await;
    let req = request(None);
    assert!(matches!(
        bot.submit("local", &req).await.expect("submit"),
        Submitted::Pending { .. }
    ));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (bot, id) = (bot.clone(), req.id.clone());
        tasks.push(tokio::spawn(async move {
            bot.decide(&id, i % 2 == 0, &reviewer(&format!("web:r{i}")), None, None)
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
    let v = audit::verify(&bot.db).await.expect("verify");
    assert!(v.broken.is_none());
    assert_eq!(v.rows, 2, "submitted + one decision");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_decision_after_the_deadline_does_not_count() {
    let (bot, dir) = bot(Duration::from_millis(200)).await;
    let req = request(None);
    bot.submit("local", &req).await.expect("submit");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The sweep has not run (no server here): the decision itself notices.
    match bot
        .decide(&req.id, true, &reviewer("web:late"), None, None)
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
    bot.submit("local", &req).await.expect("submit");
    match bot
        .decide(&req.id, true, &reviewer("slack:U0AGENT"), None, None)
        .await
        .expect("decide")
    {
        Decided::Refused(why) => assert!(why.contains("someone else"), "{why}"),
        other => panic!("self-approval must be refused: {other:?}"),
    }
    assert_eq!(
        bot.get(&req.id).await.expect("get").expect("row").status,
        Status::Pending
    );
    assert!(matches!(
        bot.decide(
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
    bot.submit("local", &req).await.expect("submit");
    let other_hash = hex(32);
    assert!(matches!(
        bot.decide(&req.id, true, &reviewer("web:a"), None, Some(&other_hash))
            .await
            .expect("decide"),
        Decided::Refused(_)
    ));
    assert!(matches!(
        bot.decide(
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
        bot.submit("local", &req).await.expect("submit");
        bot.decide(&req.id, false, &reviewer("web:a"), Some("no".into()), None)
            .await
            .expect("decide");
    }
    assert!(
        audit::verify(&bot.db)
            .await
            .expect("verify")
            .broken
            .is_none()
    );

    // Append-only: the database itself refuses.
    let err = bot
        .db
        .execute_unprepared("UPDATE audit_log SET body = '{}' WHERE seq = 2")
        .await
        .expect_err("an update must be refused");
    assert!(err.to_string().contains("append-only"), "{err}");
    assert!(
        bot.db
            .execute_unprepared("DELETE FROM audit_log WHERE seq = 2")
            .await
            .is_err()
    );

    // Someone with the file and no scruples drops the trigger and edits a
    // row: verify names the row.
    bot.db
        .execute_unprepared("DROP TRIGGER audit_log_no_update")
        .await
        .expect("drop trigger");
    bot.db
        .execute_unprepared(
            "UPDATE audit_log SET body = replace(body, '\"no\"', '\"yes\"') WHERE seq = 4",
        )
        .await
        .expect("tamper");
    let v = audit::verify(&bot.db).await.expect("verify");
    assert_eq!(v.broken.map(|b| b.0), Some(4), "the tampered row is found");
    let _ = std::fs::remove_dir_all(dir);
}

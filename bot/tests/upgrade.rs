//! Upgrading a database made by an older bot keeps every runner, request and
//! audit row, and gives each request the identity of the runner that
//! submitted it. Run on SQLite and on PostgreSQL.

use holdpoint_bot::Bot;
use holdpoint_bot::config::Config;
use holdpoint_bot::core::{Decided, Refusal};
use holdpoint_migrations::{Migrator, MigratorTrait};
use holdpoint_testkit::{PgDatabase, TempDir, random_hex, review};
use sea_orm::{ConnectionTrait, Database};

/// The state an older bot left: runner `ci-7` (revoked) and `local`, one
/// request each.
fn old_rows() -> Vec<String> {
    let verdict =
        serde_json::to_string(&review("git push --force").build().verdict).expect("verdict");
    let row = |id: &str, runner: &str, hash: char, status: &str, created: i64| {
        format!(
            "INSERT INTO requests (id, runner, command, command_hash, risk, verdict, \
             annotations, host, cwd, agent, session, front_end, requested_by, status, \
             created_at, expires_at, decided_at, decided_by, reason, relayed_at) VALUES \
             ('{id}', '{runner}', 'git push --force', '{}', 'high', '{verdict}', '[]', 'h', \
             '/w', NULL, NULL, 'exec', NULL, '{status}', {created}, 9999999999999, NULL, NULL, \
             NULL, NULL)",
            hash.to_string().repeat(64)
        )
    };
    vec![
        "INSERT INTO runners (name, token_hash, created_at, revoked_at, last_seen_at) \
         VALUES ('ci-7', 'aa', 1000, 2000, NULL)"
            .into(),
        "INSERT INTO runners (name, token_hash, created_at, revoked_at, last_seen_at) \
         VALUES ('local', 'bb', 1500, NULL, 1600)"
            .into(),
        row(
            "11111111111111111111111111111111",
            "ci-7",
            'c',
            "cancelled",
            1200,
        ),
        row(
            "22222222222222222222222222222222",
            "local",
            'd',
            "pending",
            1700,
        ),
    ]
}

async fn upgrades_keep_runners_and_requests(url: &str, dir: &TempDir) {
    let db = Database::connect(url).await.expect("connect");
    // The schema of the release before runner identities.
    Migrator::up(&db, Some(4)).await.expect("old migrations");
    for sql in old_rows() {
        db.execute_unprepared(&sql).await.expect("old rows");
    }
    db.close().await.expect("close");

    let file = dir.path().join("bot.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\ndatabase_url = {url:?}\n",
            dir.path().display().to_string()
        ),
    )
    .expect("config");
    let bot = Bot::open(Config::load(Some(&file)).expect("config"))
        .await
        .expect("upgrade");

    let runners: Vec<(i64, String, bool)> = bot
        .runners()
        .await
        .expect("runners")
        .into_iter()
        .map(|r| (r.id, r.name, r.revoked_at.is_some()))
        .collect();
    assert_eq!(
        runners,
        vec![(1, "ci-7".into(), true), (2, "local".into(), false)]
    );
    let local = bot
        .runner_named("local")
        .await
        .expect("find")
        .expect("local");
    assert_eq!(local.id, 2);
    // The old request is local's: it may cancel it, ci-7's new identity
    // may not touch ci-7's old one.
    bot.add_runner("ci-7").await.expect("the name given again");
    let ci7 = bot.runner_named("ci-7").await.expect("find").expect("ci-7");
    assert!(ci7.id > 2, "a new identity");
    assert_eq!(
        bot.foreign_requests(&ci7, &["11111111111111111111111111111111".into()])
            .await
            .expect("check"),
        vec!["11111111111111111111111111111111".to_string()]
    );
    assert!(matches!(
        bot.cancel(&ci7, "22222222222222222222222222222222")
            .await
            .expect("cancel"),
        Decided::Refused(Refusal::OtherRunner)
    ));
    assert!(matches!(
        bot.cancel(&local, "22222222222222222222222222222222")
            .await
            .expect("cancel"),
        Decided::Won(_)
    ));
    // Two runners may not hold one name at once.
    assert!(bot.add_runner("local").await.is_err());
    let v = bot.verify_audit().await.expect("verify");
    assert!(v.broken.is_none());
}

#[tokio::test]
async fn a_sqlite_database_from_the_release_before_identities_upgrades() {
    let dir = TempDir::new("holdpoint-upgrade");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    upgrades_keep_runners_and_requests(&url, &dir).await;
}

#[tokio::test]
async fn a_postgres_database_from_the_release_before_identities_upgrades() {
    let Some(pg) = PgDatabase::create() else {
        return;
    };
    let dir = TempDir::new(&format!("holdpoint-upgrade-{}", random_hex(4)));
    upgrades_keep_runners_and_requests(&pg.url(), &dir).await;
}

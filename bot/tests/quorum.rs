//! Quorum in the core, in process: a request whose risk needs two
//! approvals is approved only by the second distinct person; a second
//! approval by the same person, also from another of their declared
//! identities, does not count; the requester's never does, under any of
//! their identities; any deny ends it; every vote is an audit event.

use holdpoint_bot::config::Config;
use holdpoint_bot::core::RunnerId;
use holdpoint_bot::{Bot, Decided, Intent, Refusal, Reviewer};
use holdpoint_shared::protocol::{ReviewRequest, Status};
use holdpoint_testkit::{TempDir, review};

const QUORUM: &str = r#"
[quorum]
high = 2

[people.alice]
ids = ["slack:U0ALICE01", "web:alice"]

[people.dev]
ids = ["slack:U0DEV0001", "web:dev"]
"#;

fn runner() -> RunnerId {
    RunnerId::new(4242, "local")
}

async fn bot(dir: &TempDir) -> Bot {
    bot_with(dir, QUORUM).await
}

/// A bot on `dir`'s database with configuration `toml`.
async fn bot_with(dir: &TempDir, toml: &str) -> Bot {
    let file = dir.join("bot.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\ndatabase_url = {:?}\n{toml}",
            dir.path().display().to_string(),
            format!("sqlite://{}?mode=rwc", dir.join("t.db").display())
        ),
    )
    .expect("config");
    Bot::open(Config::load(Some(&file)).expect("config"))
        .await
        .expect("bot")
}

/// A force push (high risk) that `slack:U0DEV0001` asked for.
fn force_push() -> ReviewRequest {
    review("git push --force origin main")
        .requested_by(Some("slack:U0DEV0001"))
        .build()
}

async fn approve(bot: &Bot, id: &str, who: &str) -> Decided {
    bot.decide(
        &Reviewer::parse(who).expect("reviewer"),
        id,
        None,
        Intent::Approve { reason: None },
    )
    .await
    .expect("decide")
}

async fn voted_in_audit(bot: &Bot, id: &str) -> Vec<String> {
    let mut out = Vec::new();
    bot.export_audit(0, holdpoint_bot::core::ExportFormat::Json, &mut out)
        .await
        .expect("export");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out).expect("json");
    rows.iter()
        .filter(|r| r["kind"] == "request.voted" && r["request_id"] == id)
        .filter_map(|r| r["event"]["by"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_two_approval_request_is_approved_only_by_the_second_distinct_person() {
    let dir = TempDir::new("quorum");
    let bot = bot(&dir).await;
    let req = force_push();
    bot.submit(&runner(), &req).await.expect("submit");

    assert_eq!(
        approve(&bot, &req.id, "slack:U0ALICE01").await,
        Decided::Voted {
            approvals: 1,
            required: 2,
            missing: vec![],
        }
    );
    let r = bot.get(&req.id).await.expect("get").expect("stored");
    assert_eq!(r.status, Status::Pending);
    assert_eq!(r.votes, vec!["slack:U0ALICE01".to_string()]);
    assert_eq!(r.quorum.approvals, 2);

    // The same person again, from Slack and from the web: not counted.
    for again in ["slack:U0ALICE01", "web:alice"] {
        assert_eq!(
            approve(&bot, &req.id, again).await,
            Decided::Refused(Refusal::AlreadyVoted),
            "{again}"
        );
    }
    // The requester, under either identity: never counted.
    for own in ["slack:U0DEV0001", "web:dev"] {
        assert_eq!(
            approve(&bot, &req.id, own).await,
            Decided::Refused(Refusal::OwnRequest),
            "{own}"
        );
    }
    assert_eq!(
        bot.get(&req.id).await.expect("get").expect("stored").status,
        Status::Pending
    );

    match approve(&bot, &req.id, "web:bob").await {
        Decided::Won(d) => {
            assert_eq!(d.status, Status::Approved);
            assert_eq!(d.decided_by, "web:bob");
            let reason = d.reason.unwrap_or_default();
            assert!(
                reason.contains("2 of 2 approvals") && reason.contains("slack:U0ALICE01"),
                "{reason}"
            );
        }
        other => panic!("the second person approves: {other:?}"),
    }
    assert_eq!(
        voted_in_audit(&bot, &req.id).await,
        vec!["slack:U0ALICE01".to_string(), "web:bob".to_string()]
    );
}

#[tokio::test]
async fn a_deny_after_one_approval_denies_it() {
    let dir = TempDir::new("quorum");
    let bot = bot(&dir).await;
    let req = force_push();
    bot.submit(&runner(), &req).await.expect("submit");
    assert!(matches!(
        approve(&bot, &req.id, "web:alice").await,
        Decided::Voted { approvals: 1, .. }
    ));
    let denied = bot
        .decide(
            &Reviewer::parse("web:bob").expect("reviewer"),
            &req.id,
            None,
            Intent::Deny {
                reason: Some("not on a Friday".into()),
            },
        )
        .await
        .expect("decide");
    match denied {
        Decided::Won(d) => assert_eq!(d.status, Status::Denied),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        approve(&bot, &req.id, "web:carol").await,
        Decided::Already(_)
    ));
}

#[test]
fn an_identity_declared_for_two_people_or_a_zero_quorum_is_a_config_error() {
    let dir = TempDir::new("quorum");
    let file = dir.join("bot.toml");
    for (toml, key) in [
        (
            "[[quorum.rules]]\nname = \"x\"\napprovals = 2\nfrom = { nobody = 1 }\n",
            "quorum.rules[0].from.nobody",
        ),
        (
            "[groups.sre]\nmembers = [\"web:a\"]\n[[quorum.rules]]\nname = \"x\"\napprovals = 1\nfrom = { sre = 2 }\n",
            "quorum.rules[0].approvals",
        ),
        (
            "[[quorum.rules]]\nname = \"x\"\nrunner = \"prod-*\"\n",
            "quorum.rules[0].approvals",
        ),
        ("[groups.sre]\nmembers = [\"zed\"]\n", "groups.sre.members"),
        (
            "[people.a]\nids = [\"web:x\"]\n[people.b]\nids = [\"web:x\"]\n",
            "people.b.ids",
        ),
        ("[quorum]\ncritical = 0\n", "quorum.critical"),
        ("[people.a]\nids = [\"mail:x\"]\n", "people.a.ids"),
    ] {
        std::fs::write(&file, toml).expect("config");
        let err = Config::load(Some(&file)).expect_err(toml).to_string();
        assert!(err.contains(key), "{toml}: {err}");
    }
}

/// One from sre and one from security, on the `prod-*` runners only.
const GROUPS: &str = r#"
[people.alice]
ids = ["slack:U0ALICE01", "web:alice"]

[groups.sre]
members = ["alice", "web:sam"]

[groups.security]
members = ["web:sec"]

[[quorum.rules]]
name = "prod needs sre and security"
runner = "prod-*"
from = { sre = 1, security = 1 }
"#;

#[tokio::test]
async fn one_from_sre_and_one_from_security_approve_a_prod_request_and_a_second_sre_cannot_stand_in()
 {
    let dir = TempDir::new("quorum");
    let bot = bot_with(&dir, GROUPS).await;
    let prod = RunnerId::new(4243, "prod-db-1");
    let req = force_push();
    bot.submit(&prod, &req).await.expect("submit");
    let r = bot.get(&req.id).await.expect("get").expect("stored");
    assert_eq!(
        r.quorum.approvals, 2,
        "from's total when approvals is left out"
    );
    assert_eq!(
        r.missing,
        vec![("security".to_string(), 1), ("sre".to_string(), 1)]
    );

    // Someone in neither group: both remaining approvals are reserved.
    assert_eq!(
        approve(&bot, &req.id, "web:bob").await,
        Decided::Refused(Refusal::GroupsNeeded(vec![
            ("security".to_string(), 1),
            ("sre".to_string(), 1)
        ]))
    );
    // alice, an sre member through her declared person, counts.
    assert_eq!(
        approve(&bot, &req.id, "web:alice").await,
        Decided::Voted {
            approvals: 1,
            required: 2,
            missing: vec![("security".to_string(), 1)],
        }
    );
    // A second sre member cannot stand in for security.
    assert_eq!(
        approve(&bot, &req.id, "web:sam").await,
        Decided::Refused(Refusal::GroupsNeeded(vec![("security".to_string(), 1)]))
    );
    assert_eq!(
        bot.get(&req.id).await.expect("get").expect("stored").status,
        Status::Pending
    );
    match approve(&bot, &req.id, "web:sec").await {
        Decided::Won(d) => assert_eq!(d.status, Status::Approved),
        other => panic!("security's approval completes it: {other:?}"),
    }
    assert_eq!(
        voted_in_audit(&bot, &req.id).await,
        vec!["web:alice".to_string(), "web:sec".to_string()]
    );

    // The same command from another runner: the rule does not apply.
    let other = force_push();
    bot.submit(&runner(), &other).await.expect("submit");
    match approve(&bot, &other.id, "web:bob").await {
        Decided::Won(d) => assert_eq!(d.status, Status::Approved),
        other => panic!("one approval outside prod: {other:?}"),
    }
}

#[tokio::test]
async fn a_waiting_request_keeps_the_quorum_it_was_submitted_with_after_the_config_changes() {
    let dir = TempDir::new("quorum");
    let req = force_push();
    {
        let bot = bot(&dir).await;
        bot.submit(&runner(), &req).await.expect("submit");
    }
    // The bot restarts with a configuration that asks for one approval.
    let bot = bot_with(&dir, "").await;
    assert_eq!(
        approve(&bot, &req.id, "web:bob").await,
        Decided::Voted {
            approvals: 1,
            required: 2,
            missing: vec![],
        },
        "the bar it was submitted with holds"
    );
    match approve(&bot, &req.id, "web:carol").await {
        Decided::Won(d) => assert_eq!(d.status, Status::Approved),
        other => panic!("the second approval completes it: {other:?}"),
    }
    // A new request follows the new configuration.
    let next = force_push();
    bot.submit(&runner(), &next).await.expect("submit");
    assert!(matches!(
        approve(&bot, &next.id, "web:bob").await,
        Decided::Won(_)
    ));
}

//! End to end: the audit digest from the real `holdpoint-bot` on the local
//! Slack server, whose every payload is checked by Slack's own SDK. A
//! digest asked for from the CLI is sent by the running bot and says what
//! happened; two replicas on one database send one digest per period; a
//! digest due while every replica was down is sent once, late, when one
//! is back.

use holdpoint_testkit::fixtures::force_push;
use holdpoint_testkit::slack::*;
use holdpoint_testkit::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const DIGEST: &str = "C0DIGEST1";

/// The `ts` the local Slack server gave the message `post`.
fn post_ts(fake: &FakeSlack, post: &Value) -> Value {
    fake.calls()
        .into_iter()
        .find(|c| c["method"] == "chat.postMessage" && c["at"] == post["at"])
        .map(|c| c["ts"].clone())
        .unwrap_or(Value::Null)
}

/// The digest posts the bot made, by title (which names the period).
fn digests(fake: &FakeSlack) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for c in fake.calls_of("chat.postMessage") {
        if c["body"]["channel"] == DIGEST {
            let title = c["body"]["text"].as_str().unwrap_or_default().to_string();
            out.entry(title).or_default().push(c);
        }
    }
    out
}

#[test]
fn a_digest_asked_for_from_the_cli_is_posted_to_slack_and_says_what_happened() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    let bot = bot_options(&fake, Mode::Http)
        .env("HOLDPOINT_DIGEST_SCHEDULE", "@yearly")
        .config(&format!("[digest]\nslack_channels = [\"{DIGEST}\"]\n"))
        .start();
    let mut runner = Runner::connect(&bot);
    let approved = force_push(None);
    runner.submit(&approved);
    fake.posted(&approved.id);
    bot.cli(&["approve", &approved.id]);
    let denied = review("rm -rf /srv/data <b>@channel</b>").build();
    runner.submit(&denied);
    fake.posted(&denied.id);
    bot.cli(&["deny", &denied.id, "--reason", "<!channel> not today"]);

    // What the CLI prints and what Slack gets are the same report.
    let json: Value =
        serde_json::from_str(&bot.cli(&["digest", "--since", "1h", "--format", "json"]))
            .expect("digest --format json");
    assert_eq!(json["current"]["approved"], 1, "{json}");
    assert_eq!(json["current"]["denied"], 1, "{json}");
    assert_eq!(json["chain"]["broken"], Value::Null, "{json}");

    let out = bot.cli(&["digest", "--since", "1h", "--send"]);
    assert!(out.contains("asked the running bot"), "{out}");
    let post = fake.wait_for("the digest in its channel", Duration::from_secs(30), |c| {
        c["method"] == "chat.postMessage" && c["body"]["channel"] == DIGEST
    });
    // `calls()` above already failed the test on any payload slack_sdk
    // refused; here, what it says.
    let blocks = post["body"]["blocks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(blocks[0]["type"], "header", "{post}");
    let mut texts = Vec::new();
    mrkdwn_texts(&post["body"], &mut texts);
    let all = texts.join("\n");
    for shown in [
        "approved: 1 (+1)",
        "denied: 1 (+1)",
        "Denied commands",
        "intact",
    ] {
        assert!(all.contains(shown), "{shown:?} in {all}");
    }
    assert!(
        !all.contains("<!channel>") && !all.contains("<b>"),
        "runner and reviewer text is escaped: {all}"
    );
    assert!(
        all.contains(&format!("/#{}", denied.id)),
        "linked to the web queue: {all}"
    );
    // The charts, in the digest's thread, through the external upload
    // flow; the bytes are PNGs of the size announced.
    let complete = fake.wait_for(
        "files.completeUploadExternal",
        Duration::from_secs(30),
        |c| c["method"] == "files.completeUploadExternal",
    );
    assert_eq!(complete["body"]["channel_id"], DIGEST, "{complete}");
    assert_eq!(
        complete["body"]["thread_ts"],
        post_ts(&fake, &post),
        "{complete}"
    );
    let files = complete["body"]["files"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(files.len(), 2, "two charts: {complete}");
    for f in &files {
        let id = f["id"].as_str().unwrap_or_default();
        let (announced, bytes) = fake.file(id).expect("the uploaded file");
        assert_eq!(
            announced["length"].as_u64(),
            Some(bytes.len() as u64),
            "{announced}"
        );
        assert!(
            announced["alt_txt"].as_str().is_some_and(|a| !a.is_empty()),
            "a text alternative: {announced}"
        );
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let reader = decoder.read_info().expect("a PNG");
        let info = reader.info();
        assert_eq!((info.width, info.height), (960, 540), "{}", f["title"]);
    }
    let next = bot.cli(&["digest", "next"]);
    assert!(
        next.contains("next digest: ") && next.contains("@yearly"),
        "{next}"
    );
}

#[test]
fn two_replicas_send_one_digest_per_period_and_one_missed_while_down_once_late() {
    let py = need_python!();
    let fake = FakeSlack::start(&py);
    let dir = TempDir::new("digest");
    let url = format!("sqlite://{}?mode=rwc", dir.join("shared.db").display());
    let replica = || {
        bot_options(&fake, Mode::Http)
            .database(Database::Shared(url.clone()))
            // Every ten seconds (a seconds field first).
            .env("HOLDPOINT_DIGEST_SCHEDULE", "*/10 * * * * *")
            .config(&format!(
                "[digest]\nperiod = \"1h\"\nslack_channels = [\"{DIGEST}\"]\n"
            ))
            .start()
    };
    let mut a = replica();
    let mut b = replica();
    eventually(Duration::from_secs(60), "three digests", || {
        (digests(&fake).len() >= 3).then_some(())
    });
    for (title, posts) in digests(&fake) {
        assert_eq!(posts.len(), 1, "one post for {title}, from two replicas");
    }
    a.kill();
    b.kill();
    let before = digests(&fake).len();
    // At least one due time passes with no bot running.
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(
        digests(&fake).len(),
        before,
        "nothing is sent while every replica is down"
    );
    let _back = replica();
    let late = fake.wait_for("the late digest", Duration::from_secs(30), |c| {
        c["body"]["channel"] == DIGEST && c["body"].to_string().contains("Sent late")
    });
    let title = late["body"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    std::thread::sleep(Duration::from_secs(6));
    let after = digests(&fake);
    assert_eq!(after[&title].len(), 1, "the missed digest goes out once");
    let late_posts = after
        .values()
        .flatten()
        .filter(|c| c["body"].to_string().contains("Sent late"))
        .count();
    assert_eq!(late_posts, 1, "only the last missed one, once");
}

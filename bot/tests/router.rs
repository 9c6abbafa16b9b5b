//! The bot's HTTP router in process, without a socket: the web API's
//! guards and decisions, and Slack's signed interactions endpoint, each
//! ending in what the waiting runner receives (or does not).

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use holdpoint_bot::Bot;
use holdpoint_bot::config::Config;
use holdpoint_bot::core::{ConnId, Outbound, RunnerId};
use holdpoint_shared::protocol::{BotMessage, ReviewRequest, Status};
use holdpoint_testkit::slack::{CHANNEL, REVIEWER, SECRET, STRANGER, click, form_encode, sign};
use holdpoint_testkit::{now, random_hex, review};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tower::ServiceExt;

struct Fixture {
    bot: Arc<Bot>,
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A runner identity for the core's tests: a stable made-up id per name
/// (the websocket door gets real ones from the runners table).
fn runner(name: &str) -> RunnerId {
    let id = name
        .bytes()
        .fold(1_000_000i64, |h, b| (h * 31 + i64::from(b)) % 1_000_000_007);
    RunnerId::new(id, name)
}

async fn fixture(extra_toml: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("holdpoint-router-{}", random_hex(6)));
    std::fs::create_dir_all(&dir).expect("dir");
    let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
    let file = dir.join("bot.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\ndatabase_url = {url:?}\npublic_url = \"http://bot.test\"\n{extra_toml}",
            dir.display().to_string()
        ),
    )
    .expect("config");
    let config = Config::load(Some(&file)).expect("config loads");
    let bot = Arc::new(Bot::open(config).await.expect("bot"));
    Fixture { bot, dir }
}

fn request(requested_by: Option<&str>) -> ReviewRequest {
    review("git push --force origin main")
        .agent("claude-code")
        .requested_by(requested_by)
        .build()
}

/// A runner connection waiting for `req`.
async fn waiting(bot: &Bot, req: &ReviewRequest) -> (ConnId, mpsc::UnboundedReceiver<Outbound>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let conn = bot
        .connect(&runner("local"), tx)
        .expect("under the connection limit");
    bot.submit_on(conn, &runner("local"), req)
        .await
        .expect("submit");
    (conn, rx)
}

/// What the runner received. A decision is relayed before the HTTP answer
/// leaves, so nothing arriving at once means nothing was relayed.
async fn relayed(rx: &mut mpsc::UnboundedReceiver<Outbound>) -> Option<Status> {
    match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
        Ok(Some(Outbound::Send(BotMessage::Decision(d)))) => Some(d.status),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(_) => None,
    }
}

struct Answer {
    status: StatusCode,
    body: Value,
}

async fn call(bot: &Arc<Bot>, req: Request<Body>) -> Answer {
    call_on(holdpoint_bot::server::router(bot.clone()), req).await
}

async fn call_on(app: axum::Router, req: Request<Body>) -> Answer {
    let res = app.oneshot(req).await.expect("the router answers");
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer { status, body }
}

fn page_post(path: &str, cookie: Option<&str>, body: &Value) -> Request<Body> {
    let mut b = Request::post(path)
        .header(header::HOST, "bot.test")
        .header(header::ORIGIN, "http://bot.test")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-holdpoint", "1");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, format!("holdpoint_session={c}"));
    }
    b.body(Body::from(body.to_string())).expect("request")
}

#[tokio::test]
async fn web_api_guards_hold_in_process() {
    let f = fixture("").await;
    let req = request(None);
    let (_conn, mut rx) = waiting(&f.bot, &req).await;
    let body = json!({"command_hash": req.command_hash});
    let path = format!("/api/requests/{}/approve", req.id);

    // No session: not logged in.
    let a = call(
        &f.bot,
        Request::get("/api/requests")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call(&f.bot, page_post(&path, None, &body)).await.status,
        StatusCode::UNAUTHORIZED
    );

    let cookie = f.bot.start_session("alice").await.expect("session");
    // A request the page did not make: another origin, no marker header,
    // a form body.
    let mut cross = page_post(&path, Some(&cookie), &body);
    cross
        .headers_mut()
        .insert(header::ORIGIN, "http://evil.test".parse().expect("header"));
    assert_eq!(call(&f.bot, cross).await.status, StatusCode::FORBIDDEN);
    let mut unmarked = page_post(&path, Some(&cookie), &body);
    unmarked.headers_mut().remove("x-holdpoint");
    assert_eq!(call(&f.bot, unmarked).await.status, StatusCode::FORBIDDEN);
    let mut form = page_post(&path, Some(&cookie), &body);
    form.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/x-www-form-urlencoded".parse().expect("header"),
    );
    assert_eq!(call(&f.bot, form).await.status, StatusCode::FORBIDDEN);
    // Another command than the one shown.
    let a = call(
        &f.bot,
        page_post(
            &path,
            Some(&cookie),
            &json!({"command_hash": random_hex(32)}),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(
        a.body["refused"]
            .as_str()
            .is_some_and(|s| s.contains("changed"))
    );
    // Nothing of that decided anything or reached the runner.
    assert_eq!(relayed(&mut rx).await, None);
    let stored = f.bot.get(&req.id).await.expect("get").expect("row");
    assert_eq!(stored.status, Status::Pending);
}

#[tokio::test]
async fn web_approval_reaches_the_waiting_runner_once() {
    let f = fixture("").await;
    let req = request(None);
    let (_conn, mut rx) = waiting(&f.bot, &req).await;
    let cookie = f.bot.start_session("alice").await.expect("session");
    let a = call(
        &f.bot,
        Request::get("/api/requests")
            .header(header::COOKIE, format!("holdpoint_session={cookie}"))
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["reviewer"], "web:alice");
    assert_eq!(a.body["pending"][0]["id"], req.id.as_str());

    let path = format!("/api/requests/{}/approve", req.id);
    let body = json!({"command_hash": req.command_hash, "reason": "looked at it"});
    let a = call(&f.bot, page_post(&path, Some(&cookie), &body)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["status"], "approved");
    assert_eq!(a.body["decided_by"], "web:alice");
    assert_eq!(relayed(&mut rx).await, Some(Status::Approved));

    // A second click is told who was first.
    let deny = format!("/api/requests/{}/deny", req.id);
    let a = call(&f.bot, page_post(&deny, Some(&cookie), &body)).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(a.body["already"], "approved");
    assert_eq!(relayed(&mut rx).await, None, "one decision, relayed once");
}

#[tokio::test]
async fn web_requester_cannot_approve_their_own_command() {
    let f = fixture("").await;
    let req = request(Some("web:alice"));
    let (_conn, mut rx) = waiting(&f.bot, &req).await;
    let cookie = f.bot.start_session("alice").await.expect("session");
    let path = format!("/api/requests/{}/approve", req.id);
    let a = call(
        &f.bot,
        page_post(
            &path,
            Some(&cookie),
            &json!({"command_hash": req.command_hash}),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(
        a.body["refused"]
            .as_str()
            .is_some_and(|s| s.contains("someone else must approve")),
        "{}",
        a.body
    );
    assert_eq!(relayed(&mut rx).await, None);
    // Denying their own request is allowed.
    let deny = format!("/api/requests/{}/deny", req.id);
    let a = call(
        &f.bot,
        page_post(
            &deny,
            Some(&cookie),
            &json!({"command_hash": req.command_hash}),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(relayed(&mut rx).await, Some(Status::Denied));
}

/// Slack in HTTP mode, its Web API on a port nothing listens on: posting
/// and answering fail (and are only logged), clicks still arrive.
async fn with_slack() -> (Fixture, axum::Router) {
    let dead_api = format!("http://127.0.0.1:{}/api", holdpoint_testkit::free_port());
    let f = fixture(&format!(
        "[slack]\nbot_token = \"xoxb-test\"\nsigning_secret = {SECRET:?}\napi_url = {dead_api:?}\nchannel = {CHANNEL:?}\nreviewers = [{REVIEWER:?}]\n"
    ))
    .await;
    let slack = holdpoint_bot::slack::start(&f.bot)
        .expect("Slack starts")
        .expect("Slack is configured");
    let app =
        holdpoint_bot::server::router(f.bot.clone()).merge(holdpoint_bot::slack::router(slack));
    (f, app)
}

fn signed(payload: &Value, secret: &str, ts: i64) -> Request<Body> {
    let body = format!("payload={}", form_encode(&payload.to_string()));
    Request::post("/slack/interactions")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("X-Slack-Request-Timestamp", ts.to_string())
        .header("X-Slack-Signature", sign(secret, ts, &body))
        .body(Body::from(body))
        .expect("request")
}

/// Waits (the handler answers Slack first and decides after) for the
/// runner to hear a decision.
async fn relayed_within(
    rx: &mut mpsc::UnboundedReceiver<Outbound>,
    wait: Duration,
) -> Option<Status> {
    match tokio::time::timeout(wait, rx.recv()).await {
        Ok(Some(Outbound::Send(BotMessage::Decision(d)))) => Some(d.status),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_click_by_a_reviewer_approves_and_reaches_the_runner() {
    let (f, app) = with_slack().await;
    let req = request(None);
    let (_conn, mut rx) = waiting(&f.bot, &req).await;
    let value = format!("{}:{}", req.id, req.command_hash);
    let a = call_on(
        app.clone(),
        signed(
            &click(REVIEWER, "hp_approve", &value, CHANNEL),
            SECRET,
            now(),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        relayed_within(&mut rx, Duration::from_secs(10)).await,
        Some(Status::Approved)
    );
    let stored = f.bot.get(&req.id).await.expect("get").expect("row");
    assert_eq!(
        stored.decided_by.as_deref(),
        Some(format!("slack:{REVIEWER}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_forged_stale_replayed_or_strangers_clicks_decide_nothing() {
    let (f, app) = with_slack().await;
    let req = request(None);
    let (_conn, mut rx) = waiting(&f.bot, &req).await;
    let value = format!("{}:{}", req.id, req.command_hash);
    let approve = click(REVIEWER, "hp_approve", &value, CHANNEL);

    let forged = call_on(app.clone(), signed(&approve, "not-the-secret", now())).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    let stale = call_on(app.clone(), signed(&approve, SECRET, now() - 600)).await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED);
    let stranger = call_on(
        app.clone(),
        signed(
            &click(STRANGER, "hp_approve", &value, CHANNEL),
            SECRET,
            now(),
        ),
    )
    .await;
    assert_eq!(
        stranger.status,
        StatusCode::OK,
        "acknowledged, then not counted"
    );
    // Another command than the one shown, by a reviewer.
    let other = format!("{}:{}", req.id, random_hex(32));
    let changed = call_on(
        app.clone(),
        signed(
            &click(REVIEWER, "hp_approve", &other, CHANNEL),
            SECRET,
            now(),
        ),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(relayed_within(&mut rx, Duration::from_secs(1)).await, None);
    let stored = f.bot.get(&req.id).await.expect("get").expect("row");
    assert_eq!(stored.status, Status::Pending);

    // The genuine click counts once; the same signed request again is a
    // replay.
    let genuine = signed(&approve, SECRET, now());
    let replay = Request::post("/slack/interactions")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(
            "X-Slack-Request-Timestamp",
            genuine.headers()["X-Slack-Request-Timestamp"].clone(),
        )
        .header(
            "X-Slack-Signature",
            genuine.headers()["X-Slack-Signature"].clone(),
        )
        .body(Body::from(format!(
            "payload={}",
            form_encode(&approve.to_string())
        )))
        .expect("request");
    assert_eq!(call_on(app.clone(), genuine).await.status, StatusCode::OK);
    assert_eq!(
        call_on(app.clone(), replay).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        relayed_within(&mut rx, Duration::from_secs(10)).await,
        Some(Status::Approved)
    );
}

//! The bot's HTTP router in process, without a socket: the web API's
//! guards and decisions, and Slack's signed interactions endpoint, each
//! ending in what the waiting runner receives.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use holdpoint_bot::Bot;
use holdpoint_bot::config::Config;
use holdpoint_bot::core::{ConnId, Outbound};
use holdpoint_shared::protocol::{BotMessage, ReviewRequest, Status};
use holdpoint_shared::{Context, Policy};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tower::ServiceExt;

fn hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("random");
    hex::encode(b)
}

struct Fixture {
    bot: Arc<Bot>,
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn fixture(extra_toml: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("holdpoint-router-{}", hex(6)));
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

/// A runner connection waiting for `req`.
async fn waiting(bot: &Bot, req: &ReviewRequest) -> (ConnId, mpsc::UnboundedReceiver<Outbound>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let conn = bot.connect("local", tx);
    bot.submit_on(conn, "local", req).await.expect("submit");
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
    let res = holdpoint_bot::server::router(bot.clone())
        .oneshot(req)
        .await
        .expect("the router answers");
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
        page_post(&path, Some(&cookie), &json!({"command_hash": hex(32)})),
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

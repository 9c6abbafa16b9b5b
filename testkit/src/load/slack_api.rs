//! An in-process stand-in for the Slack Web API on loopback: HTTP/1.1 with
//! keep-alive, every method answered at once with a minimal valid body. It
//! records the calls per method and when each request's message (the one
//! with its buttons) was posted. It validates nothing (see [`super`]).

use super::http::{header, read_body, read_headers};
use crate::slack::REVIEWER;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the fake Web API saw.
#[derive(Default)]
pub struct ApiState {
    /// Requests whose message (with its buttons) was posted, and when the
    /// `chat.postMessage` arrived.
    pub posted: Mutex<HashMap<String, Instant>>,
    /// Calls per Web API method.
    pub calls: Mutex<BTreeMap<String, u64>>,
    /// Calls without a bot token, or that could not be read.
    pub refused: AtomicU64,
    ts: AtomicU64,
    changed: tokio::sync::Notify,
}

/// The stand-in, serving on a runtime's tasks until dropped.
pub struct FakeWebApi {
    pub addr: SocketAddr,
    pub state: Arc<ApiState>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FakeWebApi {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FakeWebApi {
    /// Listens on a free loopback port.
    pub async fn start() -> std::io::Result<FakeWebApi> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ApiState::default());
        let accept = tokio::spawn({
            let state = state.clone();
            async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            tokio::spawn(fake_slack_connection(stream, state.clone()));
                        }
                        // Out of descriptors, say: try again shortly.
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            }
        });
        Ok(FakeWebApi {
            addr,
            state,
            accept,
        })
    }

    /// The URL to give the bot as `HOLDPOINT_SLACK_API_URL`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    pub fn posted_at(&self, id: &str) -> Option<Instant> {
        self.state
            .posted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
    }

    /// When the message of `id` was posted, waiting up to `within`.
    pub async fn wait_posted(&self, id: &str, within: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.state.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(at) = self.posted_at(id) {
                return Some(at);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.posted_at(id);
            }
        }
    }

    /// Calls per method so far.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.state
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn calls_of(&self, method: &str) -> u64 {
        self.calls().get(method).copied().unwrap_or(0)
    }
}

struct HttpRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    close: bool,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Serves one connection until the bot closes it (or asks to).
async fn fake_slack_connection(stream: TcpStream, state: Arc<ApiState>) {
    let mut conn = BufReader::new(stream);
    loop {
        let req = match read_http_request(&mut conn).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(_) => {
                state.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let (status, body) = fake_slack_answer(&req, &state);
        let mut wire = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if req.close { "Connection: close\r\n" } else { "" }
        )
        .into_bytes();
        wire.extend_from_slice(body.as_bytes());
        if conn.get_mut().write_all(&wire).await.is_err() || req.close {
            return;
        }
    }
}

/// One HTTP/1.1 request; `None` when the connection ends between requests.
async fn read_http_request(
    conn: &mut BufReader<TcpStream>,
) -> std::io::Result<Option<HttpRequest>> {
    const MAX_BODY: usize = 16 << 20;
    let mut line = String::new();
    // Empty lines before a request line are allowed.
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), version) = (parts.next(), parts.next(), parts.next()) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad request line {line:?}"),
        ));
    };
    let (method, target) = (method.to_string(), target.to_string());
    let http10 = version == Some("HTTP/1.0");
    let headers = read_headers(conn).await?;
    let connection = header(&headers, "connection").unwrap_or_default();
    let close = connection.contains("close") || (http10 && !connection.contains("keep-alive"));
    if header(&headers, "expect").is_some_and(|v| v.contains("100-continue")) {
        conn.get_mut()
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await?;
    }
    let body = read_body(conn, &headers, MAX_BODY)
        .await?
        .unwrap_or_default();
    Ok(Some(HttpRequest {
        method,
        target,
        headers,
        body,
        close,
    }))
}

fn form_object(bytes: &[u8]) -> serde_json::Value {
    serde_json::Value::Object(
        form_urlencoded::parse(bytes)
            .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
            .collect(),
    )
}

/// The ids of the requests whose buttons (`ID:HASH` values) are in `v`.
fn button_requests(v: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            if let Some(Value::String(s)) = m.get("value")
                && let Some((id, hash)) = s.split_once(':')
                && id.len() == 32
                && hash.len() == 64
                && id
                    .bytes()
                    .chain(hash.bytes())
                    .all(|b| b.is_ascii_hexdigit())
            {
                out.push(id.to_string());
            }
            for x in m.values() {
                button_requests(x, out);
            }
        }
        Value::Array(a) => {
            for x in a {
                button_requests(x, out);
            }
        }
        _ => {}
    }
}

/// The status line and JSON body for one Web API call.
fn fake_slack_answer(req: &HttpRequest, state: &ApiState) -> (&'static str, String) {
    use serde_json::{Value, json};
    let (path, query) = req
        .target
        .split_once('?')
        .unwrap_or((req.target.as_str(), ""));
    let Some(method) = path.strip_prefix("/api/") else {
        state.refused.fetch_add(1, Ordering::Relaxed);
        return (
            "404 Not Found",
            json!({"ok": false, "error": "unknown_path"}).to_string(),
        );
    };
    *state
        .calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(method.to_string())
        .or_default() += 1;
    let params = if req.method == "GET" {
        form_object(query.as_bytes())
    } else if req
        .header("content-type")
        .is_some_and(|t| t.contains("json"))
    {
        serde_json::from_slice(&req.body).unwrap_or(Value::Null)
    } else {
        form_object(&req.body)
    };
    if !req
        .header("authorization")
        .is_some_and(|a| a.starts_with("Bearer xoxb-"))
    {
        state.refused.fetch_add(1, Ordering::Relaxed);
        return (
            "200 OK",
            json!({"ok": false, "error": "not_authed"}).to_string(),
        );
    }
    let field = |k: &str| params.get(k).and_then(Value::as_str).unwrap_or("");
    let answer = match method {
        "chat.postMessage" => {
            let n = state.ts.fetch_add(1, Ordering::Relaxed) + 1;
            let ts = format!("{}.000100", 1_700_000_000 + n);
            if params.get("thread_ts").is_none() {
                let mut ids = Vec::new();
                button_requests(&params, &mut ids);
                if !ids.is_empty() {
                    let now = Instant::now();
                    let mut posted = state.posted.lock().unwrap_or_else(|e| e.into_inner());
                    for id in ids {
                        posted.entry(id).or_insert(now);
                    }
                    drop(posted);
                    state.changed.notify_waiters();
                }
            }
            json!({"ok": true, "channel": field("channel"), "ts": ts, "message": {"ts": ts}})
        }
        "chat.update" => json!({"ok": true, "channel": field("channel"), "ts": field("ts")}),
        "chat.postEphemeral" => json!({"ok": true, "message_ts": "1700000000.000001"}),
        "views.open" => json!({"ok": true, "view": {"id": "V0BENCH"}}),
        "usergroups.users.list" => json!({"ok": true, "users": [REVIEWER]}),
        "users.info" => {
            json!({"ok": true, "user": {"id": field("user"), "name": "bench-reviewer"}})
        }
        "auth.test" => json!({
            "ok": true, "url": "https://bench.slack.invalid/", "team": "bench",
            "user": "holdpoint", "team_id": "T0BENCH", "user_id": "U0BOT", "bot_id": "B0BENCH"
        }),
        _ => json!({"ok": true}),
    };
    ("200 OK", answer.to_string())
}

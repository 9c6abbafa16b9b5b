//! The web review queue, end to end: the real `holdpoint-bot` binary, a
//! runner on its websocket, plain HTTP for the API's guards, and headless
//! Chromium (driven by `bot/tests/web/queue.mjs` with playwright-core) for
//! what a reviewer sees and does.
//!
//! The browser test needs `node`, `/usr/bin/chromium` and
//! `bot/tests/web/node_modules` (it runs `npm ci` when that is missing);
//! without them it prints `skipped: …` and passes, unless
//! `HOLDPOINT_REQUIRE_BROWSER=1` makes that a failure.

use holdpoint_shared::annotation::{Annotation, Fact, Item, Severity};
use holdpoint_shared::protocol::{
    BotMessage, DecisionMessage, PROTOCOL_VERSION, ReviewRequest, RunnerMessage, Status, WS_PATH,
};
use holdpoint_shared::{Context, Decision, Hit, Policy, Risk, Verdict};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const BOT: &str = env!("CARGO_BIN_EXE_holdpoint-bot");

/// The policy the page must show, byte for byte.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

// ------------------------------------------------------------------ setup

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "holdpoint-{tag}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The environment of every bot process: its own data directory, nothing
/// from the machine's configuration.
fn bot_env(data: &Path, port: u16) -> Vec<(String, String)> {
    vec![
        ("HOLDPOINT_LISTEN".into(), format!("127.0.0.1:{port}")),
        ("HOLDPOINT_DATA_DIR".into(), data.display().to_string()),
        (
            "XDG_CONFIG_HOME".into(),
            data.join("config").display().to_string(),
        ),
        (
            "XDG_DATA_HOME".into(),
            data.join("share").display().to_string(),
        ),
        ("HOLDPOINT_LOG".into(), "warn".into()),
        ("USER".into(), "tester".into()),
    ]
}

fn bot_command(data: &Path, port: u16) -> Command {
    let mut c = Command::new(BOT);
    for (k, _) in std::env::vars() {
        if k.starts_with("HOLDPOINT_") {
            c.env_remove(k);
        }
    }
    c.envs(bot_env(data, port));
    c
}

/// A running `holdpoint-bot serve`.
struct Bot {
    child: Child,
    port: u16,
    base: String,
    /// The login link it printed.
    login: String,
    log: Arc<Mutex<String>>,
    data: TempDir,
}

impl Bot {
    fn start(tag: &str) -> Bot {
        let mut last_log = String::new();
        // The port is free when picked but another process may take it
        // before the bot binds it: try again with another.
        for _ in 0..3 {
            let data = TempDir::new(tag);
            let port = free_port();
            let mut child = bot_command(&data.0, port)
                .arg("serve")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start holdpoint-bot");
            let stderr = child.stderr.take().unwrap();
            let log = Arc::new(Mutex::new(String::new()));
            let (tx, rx) = mpsc::channel();
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("/login?token=") {
                        let _ = tx.send(line.trim().to_string());
                    }
                    let mut l = sink.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(login) => {
                    return Bot {
                        child,
                        port,
                        base: format!("http://127.0.0.1:{port}"),
                        login,
                        log,
                        data,
                    };
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_log = log.lock().unwrap().clone();
                    if !last_log.contains("cannot listen") {
                        break;
                    }
                }
            }
        }
        panic!("holdpoint-bot printed no login link; it said:\n{last_log}");
    }

    /// Runs a CLI command against the same data directory.
    fn cli(&self, args: &[&str]) -> String {
        let out = bot_command(&self.data.0, self.port)
            .args(args)
            .output()
            .expect("run holdpoint-bot");
        assert!(
            out.status.success(),
            "holdpoint-bot {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn runner_token(&self) -> String {
        let env = std::fs::read_to_string(self.data.0.join("runner-local.env")).unwrap();
        env.lines()
            .find_map(|l| l.trim().strip_prefix("export HOLDPOINT_TOKEN="))
            .expect("a token in runner-local.env")
            .trim()
            .to_string()
    }

    /// The path and query of the login link.
    fn login_path(&self) -> String {
        self.login
            .strip_prefix(&self.base)
            .expect("the link starts with the base URL")
            .to_string()
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- holdpoint-bot log ---\n{}", self.log.lock().unwrap());
        }
    }
}

// ------------------------------------------------------------- the runner

/// A runner connected to the bot's websocket.
struct Runner {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    /// Messages read while waiting for something else.
    stash: Vec<BotMessage>,
}

impl Runner {
    fn connect(bot: &Bot) -> Runner {
        use tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://127.0.0.1:{}{WS_PATH}", bot.port)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", bot.runner_token()).parse().unwrap(),
        );
        let (ws, _) = tungstenite::connect(req).expect("connect the runner websocket");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        }
        let mut r = Runner {
            ws,
            stash: Vec::new(),
        };
        r.send(&RunnerMessage::Hello {
            protocol: PROTOCOL_VERSION,
            runner_version: "test".into(),
            host: "ci-host".into(),
        });
        match r.recv() {
            BotMessage::Welcome { runner, .. } => assert_eq!(runner, "local"),
            other => panic!("expected welcome, got {other:?}"),
        }
        r
    }

    fn send(&mut self, m: &RunnerMessage) {
        self.ws.send(Message::Text(m.encode().into())).unwrap();
    }

    fn recv(&mut self) -> BotMessage {
        loop {
            match self.ws.read().expect("read from the bot") {
                Message::Text(t) => match BotMessage::decode(&t).unwrap() {
                    BotMessage::Ping { nonce } => self.send(&RunnerMessage::Pong { nonce }),
                    m => return m,
                },
                Message::Close(c) => panic!("the bot closed the runner's websocket: {c:?}"),
                _ => {}
            }
        }
    }

    /// Submits and waits until the bot says it is pending.
    fn submit(&mut self, req: &ReviewRequest) {
        self.send(&RunnerMessage::Submit {
            request: Box::new(req.clone()),
        });
        loop {
            match self.recv() {
                BotMessage::Pending { request_id, .. } if request_id == req.id => return,
                BotMessage::Rejected { request_id, reason } if request_id == req.id => {
                    panic!("the bot rejected {request_id}: {reason}")
                }
                other => self.stash.push(other),
            }
        }
    }

    /// Waits for the decision on `id`.
    fn decision(&mut self, id: &str) -> DecisionMessage {
        let found = self
            .stash
            .iter()
            .position(|m| matches!(m, BotMessage::Decision(d) if d.request_id == id));
        if let Some(i) = found
            && let BotMessage::Decision(d) = self.stash.remove(i)
        {
            return d;
        }
        loop {
            match self.recv() {
                BotMessage::Decision(d) if d.request_id == id => {
                    self.send(&RunnerMessage::Ack {
                        request_id: d.request_id.clone(),
                    });
                    return d;
                }
                other => self.stash.push(other),
            }
        }
    }
}

fn fresh_id() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!(
        "{:016x}{:016x}",
        nanos,
        N.fetch_add(1, Ordering::SeqCst) ^ (u64::from(std::process::id()) << 32)
    )
}

fn request(command: &str, verdict: Verdict, annotations: Vec<Annotation>) -> ReviewRequest {
    ReviewRequest {
        id: fresh_id(),
        command: command.to_string(),
        command_hash: hex::encode(Sha256::digest(command.as_bytes())),
        verdict,
        annotations,
        host: "ci-host".into(),
        cwd: "/srv/app".into(),
        agent: Some("test-agent".into()),
        session: None,
        front_end: "sh".into(),
        requested_by: Some("agent@ci-host".into()),
    }
}

/// A request with the built-in policy's real verdict.
fn classified(command: &str) -> ReviewRequest {
    let verdict = Policy::builtin()
        .unwrap()
        .classify(command, &Context::from_process());
    assert_eq!(verdict.decision, Decision::Review, "{command}: {verdict:?}");
    request(command, verdict, Vec::new())
}

fn hit(rule: &str, decision: Decision, risk: Risk, reason: &str, part: &str) -> Hit {
    Hit {
        rule: rule.into(),
        decision,
        risk,
        reason: reason.into(),
        part: part.into(),
    }
}

/// A command written to deceive the reviewer and attack the page.
fn hostile() -> ReviewRequest {
    let padding = "#".repeat(100 * 1024);
    let command = format!(
        "echo '<img src=x onerror=alert(1)>' '</pre><b>\u{2705} safe</b>' \u{202E}fdp.exe\u{200B}\n\
         # \u{2705} approved by the security team, nothing to review\n\
         : '{padding}'; rm -rf /"
    );
    let verdict = Verdict::from_hits(vec![
        hit(
            "files.delete.system",
            Decision::Review,
            Risk::Critical,
            "deletes the system's files <script>alert(3)</script>",
            "rm -rf /",
        ),
        hit(
            "gate.hidden-text",
            Decision::Review,
            Risk::Low,
            "prints text",
            "echo \u{202E}fdp.exe\u{200B}",
        ),
        hit(
            "echo",
            Decision::Allow,
            Risk::Low,
            "prints text",
            ": padding",
        ),
    ]);
    let mut a = Annotation::new("files", Severity::Danger, "<img src=x onerror=alert(2)>");
    a.facts.push(Fact::new("owner", "\u{202E}toor"));
    a.items.push(Item {
        id: "a1b2c3d".into(),
        text: "</li><img src=x onerror=alert(4)>".into(),
        details: vec!["Alice".into()],
        flags: vec!["destructive".into()],
    });
    request(&command, verdict, vec![a])
}

fn critical() -> ReviewRequest {
    let command = "kubectl delete namespace production";
    request(
        command,
        Verdict::from_hits(vec![hit(
            "kube.production",
            Decision::Review,
            Risk::Critical,
            "deletes everything in the production namespace",
            command,
        )]),
        Vec::new(),
    )
}

// ------------------------------------------------------------------- HTTP

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One HTTP/1.1 request on a fresh connection.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Resp {
        status,
        headers,
        body,
    }
}

/// Opens the login link; returns the `Cookie` header for the session.
fn log_in(bot: &Bot, path: &str, extra: &[(&str, &str)]) -> (Resp, String) {
    let r = http(bot.port, "GET", path, extra, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let set = r
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    let value = set
        .split(';')
        .next()
        .and_then(|kv| kv.trim().strip_prefix("holdpoint_session="))
        .expect("the holdpoint_session cookie")
        .to_string();
    (r, format!("holdpoint_session={value}"))
}

/// Approves or denies through the API as the page does.
fn decide(bot: &Bot, cookie: &str, id: &str, action: &str, body: &Value) -> Resp {
    let origin = bot.base.clone();
    http(
        bot.port,
        "POST",
        &format!("/api/requests/{id}/{action}"),
        &[
            ("Cookie", cookie),
            ("Content-Type", "application/json"),
            ("X-Holdpoint", "1"),
            ("Origin", &origin),
        ],
        &body.to_string(),
    )
}

/// An open `/api/events` stream.
struct EventStream {
    s: TcpStream,
    seen: String,
}

impl EventStream {
    fn open(bot: &Bot, cookie: &str) -> EventStream {
        let mut s = TcpStream::connect(("127.0.0.1", bot.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        write!(
            s,
            "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n",
            bot.port
        )
        .unwrap();
        let mut e = EventStream {
            s,
            seen: String::new(),
        };
        e.wait_for("text/event-stream", Duration::from_secs(10));
        e
    }

    /// Reads until one of `needles` has arrived; returns how long that took.
    fn wait_for_any(&mut self, needles: &[&str], within: Duration) -> Duration {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            if let Some((i, n)) = needles
                .iter()
                .filter_map(|n| self.seen.find(n).map(|i| (i, n.len())))
                .min()
            {
                self.seen.drain(..i + n);
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "none of {needles:?} within {within:?}; the stream said:\n{}",
                self.seen
            );
            match self.s.read(&mut buf) {
                Ok(0) => panic!("the event stream ended:\n{}", self.seen),
                Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("reading the event stream: {e}"),
            }
        }
    }

    /// Reads until `needle` has arrived; returns how long that took.
    fn wait_for(&mut self, needle: &str, within: Duration) -> Duration {
        self.wait_for_any(&[needle], within)
    }
}

// ------------------------------------------------------------------ tests

/// Everything the browser does not need to prove: sessions, the CSRF
/// guards, first-decision-wins over the API, the headers, and the event
/// stream (including decisions made by another process).
#[test]
fn api_guards_sessions_decisions_and_events() {
    let bot = Bot::start("web-api");
    let mut runner = Runner::connect(&bot);
    let first = classified("git push --force origin main");
    runner.submit(&first);

    // Without a session: a page that says how to log in, 401 from the API.
    let r = http(bot.port, "GET", "/", &[], "");
    assert_eq!(r.status, 401);
    assert!(r.body.contains("holdpoint-bot login-link"), "{}", r.body);
    assert_eq!(r.header("content-security-policy"), Some(CSP));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = http(bot.port, "GET", "/api/requests", &[], "");
    assert_eq!(r.status, 401);
    assert!(r.header("content-type").unwrap().contains("json"));
    assert!(r.json()["error"].is_string());
    let r = http(bot.port, "GET", "/api/events", &[], "");
    assert_eq!(r.status, 401);

    // The page's files need no session and carry the same headers.
    let r = http(bot.port, "GET", "/assets/app.js", &[], "");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(r.header("content-security-policy"), Some(CSP));
    assert!(r.body.contains("textContent"));
    let r = http(bot.port, "GET", "/assets/app.css", &[], "");
    assert!(r.header("content-type").unwrap().starts_with("text/css"));

    // Login links: malformed, unknown, then the real one, once.
    let r = http(bot.port, "GET", "/login?token=../../x", &[], "");
    assert_eq!(r.status, 400);
    let r = http(
        bot.port,
        "GET",
        &format!("/login?token={}", "0".repeat(40)),
        &[],
        "",
    );
    assert_eq!(r.status, 403);
    assert!(r.body.contains("not valid"));
    let (r, cookie) = log_in(&bot, &bot.login_path(), &[]);
    let set = r.header("set-cookie").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attr), "{attr} missing from {set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain http cannot keep a Secure cookie: {set}"
    );
    assert!(r.body.contains("url=/"), "{}", r.body);
    let again = http(bot.port, "GET", &bot.login_path(), &[], "");
    assert_eq!(again.status, 410);
    assert!(again.body.contains("already used"), "{}", again.body);
    assert!(again.body.contains("holdpoint-bot login-link"));
    assert!(again.header("set-cookie").is_none());

    // A second reviewer, behind a TLS-terminating proxy.
    let link = bot.cli(&["login-link", "--name", "alice"]);
    let path = link.trim().strip_prefix(&bot.base).unwrap().to_string();
    let (r, alice) = log_in(&bot, &path, &[("X-Forwarded-Proto", "https")]);
    assert!(r.header("set-cookie").unwrap().contains("; Secure"));

    // The queue.
    let r = http(bot.port, "GET", "/", &[("Cookie", &cookie)], "");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("/assets/app.js") && !r.body.contains(&first.command));
    let r = http(bot.port, "GET", "/api/requests", &[("Cookie", &cookie)], "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    assert_eq!(v["reviewer"], "web:local");
    assert!(v["now"].as_i64().unwrap() > 0);
    assert!(v["recent"].as_array().unwrap().is_empty());
    let pending = v["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["id"], first.id.as_str());
    assert_eq!(pending[0]["command"], first.command.as_str());
    assert_eq!(pending[0]["command_hash"], first.command_hash.as_str());
    assert_eq!(pending[0]["runner"], "local");

    // Requests the page did not make are refused before anything else.
    let body = json!({ "command_hash": first.command_hash, "reason": null });
    let path = format!("/api/requests/{}/approve", first.id);
    let refused = [
        vec![
            ("Cookie", cookie.as_str()),
            ("Content-Type", "application/json"),
        ],
        vec![
            ("Cookie", cookie.as_str()),
            ("Content-Type", "text/plain"),
            ("X-Holdpoint", "1"),
        ],
        vec![
            ("Cookie", cookie.as_str()),
            ("Content-Type", "application/json"),
            ("X-Holdpoint", "1"),
            ("Origin", "http://evil.example"),
        ],
        vec![
            ("Cookie", cookie.as_str()),
            ("Content-Type", "application/json"),
            ("X-Holdpoint", "1"),
            ("Origin", "null"),
        ],
        vec![
            ("Cookie", cookie.as_str()),
            ("Content-Type", "application/json"),
            ("X-Holdpoint", "1"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
    ];
    for headers in &refused {
        let r = http(bot.port, "POST", &path, headers, &body.to_string());
        assert_eq!(r.status, 403, "{headers:?}: {}", r.body);
    }
    let r = http(
        bot.port,
        "POST",
        &path,
        &[("Content-Type", "application/json"), ("X-Holdpoint", "1")],
        &body.to_string(),
    );
    assert_eq!(r.status, 401);
    let r = decide(&bot, &cookie, &first.id, "approve", &json!({ "reason": 1 }));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = decide(
        &bot,
        &cookie,
        &first.id,
        "approve",
        &json!({ "command_hash": "a".repeat(64) }),
    );
    assert_eq!(r.status, 403);
    assert!(r.json()["refused"].as_str().unwrap().contains("changed"));
    let r = decide(&bot, &cookie, &fresh_id(), "approve", &body);
    assert_eq!(r.status, 404);

    // The first decision wins; the second is told who decided.
    let r = decide(
        &bot,
        &cookie,
        &first.id,
        "approve",
        &json!({ "command_hash": first.command_hash, "reason": "checked the branch" }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["status"], "approved");
    assert_eq!(v["decided_by"], "web:local");
    let r = decide(
        &bot,
        &alice,
        &first.id,
        "deny",
        &json!({ "command_hash": first.command_hash, "reason": "no" }),
    );
    assert_eq!(r.status, 409);
    let v = r.json();
    assert_eq!(v["already"], "approved");
    assert_eq!(v["decided_by"], "web:local");
    assert_eq!(v["reason"], "checked the branch");
    let d = runner.decision(&first.id);
    assert_eq!(d.status, Status::Approved);
    assert_eq!(d.decided_by, "web:local");
    assert_eq!(d.reason.as_deref(), Some("checked the branch"));

    // Events: a submission here, then a decision made by another process.
    let mut events = EventStream::open(&bot, &alice);
    let second = critical();
    runner.submit(&second);
    events.wait_for(
        &format!("event: submitted\ndata: {}", second.id),
        Duration::from_secs(5),
    );
    bot.cli(&["deny", &second.id, "--reason", "not today"]);
    // The runner waits on this bot, so the sweep relays the CLI's decision
    // and announces it (`decided`); without a waiting runner the stream's
    // own poll of the database notices (`changed`). Either tells the page.
    let decided = format!("event: decided\ndata: {}", second.id);
    let took = events.wait_for_any(&[&decided, "event: changed"], Duration::from_secs(8));
    eprintln!("a decision made by the CLI reached the event stream in {took:?}");
    let d = runner.decision(&second.id);
    assert_eq!(
        (d.status, d.decided_by.as_str(), d.reason.as_deref()),
        (Status::Denied, "cli:tester", Some("not today"))
    );
    let v = http(bot.port, "GET", "/api/requests", &[("Cookie", &alice)], "").json();
    assert!(v["pending"].as_array().unwrap().is_empty());
    assert_eq!(v["recent"][0]["id"], second.id.as_str());
    assert_eq!(v["recent"][0]["status"], "denied");

    // Logging out ends the session.
    let r = http(
        bot.port,
        "POST",
        "/api/logout",
        &[
            ("Cookie", &alice),
            ("Content-Type", "application/json"),
            ("X-Holdpoint", "1"),
        ],
        "{}",
    );
    assert_eq!(r.status, 200);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = http(bot.port, "GET", "/api/requests", &[("Cookie", &alice)], "");
    assert_eq!(r.status, 401);
    let r = http(bot.port, "GET", "/api/requests", &[("Cookie", &cookie)], "");
    assert_eq!(r.status, 200);
}

/// Why the browser test cannot run here, if it cannot.
fn browser_missing(dir: &Path) -> Option<String> {
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => return Some("`node` is not installed".into()),
    }
    if !Path::new("/usr/bin/chromium").exists() {
        return Some("/usr/bin/chromium is not installed (apt-get install chromium)".into());
    }
    if !dir.join("node_modules/playwright-core").is_dir() {
        let npm = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .stdout(Stdio::null())
            .status();
        if !matches!(npm, Ok(s) if s.success())
            || !dir.join("node_modules/playwright-core").is_dir()
        {
            return Some(format!(
                "{}/node_modules is missing and `npm ci` failed",
                dir.display()
            ));
        }
    }
    None
}

fn answer(stdin: &mut ChildStdin, line: &str) {
    stdin.write_all(line.as_bytes()).unwrap();
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
}

/// What a reviewer sees and does, in a real browser: the login link works
/// once; requests show their rules; a hostile command renders as text, with
/// its hidden characters visible and the rule part in sight, and runs no
/// script; a new request appears live; approving and denying reach the
/// runner; a decision made by the CLI removes the card without a reload.
#[test]
fn web_queue_in_headless_chromium() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    if let Some(why) = browser_missing(&dir) {
        assert!(
            std::env::var_os("HOLDPOINT_REQUIRE_BROWSER").is_none(),
            "HOLDPOINT_REQUIRE_BROWSER is set but {why}"
        );
        eprintln!("skipped: web_queue_in_headless_chromium: {why}");
        return;
    }
    let started = Instant::now();
    let bot = Bot::start("web-browser");
    let mut runner = Runner::connect(&bot);
    let normal = classified("git push --force origin main");
    assert_ne!(normal.risk(), Risk::Critical);
    let hostile = hostile();
    let foreign = classified("git reset --hard HEAD~3");
    let critical = critical();
    for r in [&normal, &hostile, &foreign, &critical] {
        runner.submit(r);
    }
    let deny_reason = "not today: <b>no</b> \u{202E}";
    let config = json!({
        "base": bot.base,
        "login": bot.login,
        "chromium": "/usr/bin/chromium",
        "botBin": BOT,
        "botEnv": bot_env(&bot.data.0, bot.port)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect::<serde_json::Map<_, _>>(),
        "userDataDir": bot.data.0.join("chromium").display().to_string(),
        "csp": CSP,
        "denyReason": deny_reason,
        "normal": {
            "id": normal.id,
            "rules": normal.verdict.deciding_rules(),
            "reasons": normal.verdict.deciding_reasons(),
        },
        "hostile": {
            "id": hostile.id,
            "chars": hostile.command.chars().count(),
            "lines": hostile.command.lines().count(),
            "part": "rm -rf /",
        },
        "foreign": { "id": foreign.id },
        "critical": { "id": critical.id },
    });
    let config_path = bot.data.0.join("browser.json");
    std::fs::write(&config_path, config.to_string()).unwrap();

    let mut node = Command::new("node")
        .arg(dir.join("queue.mjs"))
        .arg(&config_path)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node");
    let mut stdin = node.stdin.take().unwrap();
    let stdout = node.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut result = None;
    let mut late = None;
    while result.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(e) => {
                let _ = node.kill();
                panic!("the browser script stopped answering ({e:?})");
            }
        };
        if line == "HOLDPOINT NEED late" {
            let r = classified("git clean -fdx");
            runner.submit(&r);
            answer(&mut stdin, &format!("late {}", r.id));
            late = Some(r);
        } else if let Some(json) = line.strip_prefix("HOLDPOINT RESULT ") {
            result = Some(serde_json::from_str::<Value>(json).unwrap());
        } else {
            eprintln!("[node] {line}");
        }
    }
    drop(stdin);
    let status = node.wait().unwrap();
    let result = result.unwrap();
    assert!(status.success(), "the browser script failed: {result}");
    assert_eq!(result["ok"], true, "{result}");
    assert!(late.is_some(), "the script never asked for a late request");

    // What the reviewer did in the browser reached the runner.
    let d = runner.decision(&hostile.id);
    assert_eq!(
        (d.status, d.decided_by.as_str(), d.reason.as_deref()),
        (Status::Denied, "web:local", Some(deny_reason))
    );
    assert_eq!(d.command_hash, hostile.command_hash);
    let d = runner.decision(&normal.id);
    assert_eq!(
        (d.status, d.decided_by.as_str()),
        (Status::Approved, "web:local")
    );
    let d = runner.decision(&critical.id);
    assert_eq!(
        (d.status, d.decided_by.as_str()),
        (Status::Approved, "web:local")
    );
    let d = runner.decision(&foreign.id);
    assert_eq!(
        (d.status, d.decided_by.as_str()),
        (Status::Approved, "cli:tester")
    );
    eprintln!(
        "browser test: {result} (whole test {:?})",
        started.elapsed()
    );
}

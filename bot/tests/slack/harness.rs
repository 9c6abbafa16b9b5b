//! Test harness: the fake Slack server (Python, validating every payload
//! with slack_sdk), the real holdpoint-bot binary, a simulated runner on the
//! websocket, and signed interaction requests.

#![allow(dead_code)]

use holdpoint_shared::annotation::Annotation;
use holdpoint_shared::protocol::{BotMessage, PROTOCOL_VERSION, ReviewRequest, RunnerMessage};
use holdpoint_shared::{Decision, Hit, Risk, Verdict};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const REVIEWER: &str = "U0REVIEW1";
pub const GROUP: &str = "S0ONCALL1";
pub const GROUPIE: &str = "U0ONCALL7";
pub const STRANGER: &str = "U0STRANGE";
pub const CHANNEL: &str = "C0HOLDPT1";
/// Pinned versions; `.ci/run` installs the same.
pub const PIP_PACKAGES: [&str; 2] = ["slack-sdk==3.48.0", "websockets==17.4"];

fn target_dir() -> PathBuf {
    // …/target/debug/holdpoint-bot
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_holdpoint-bot"));
    bin.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// The Python of a virtual environment with slack_sdk and websockets, made
/// on first use; `Err` says why there is none.
pub fn python() -> Result<PathBuf, String> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = std::env::var_os("HOLDPOINT_SLACK_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| target_dir().join("slack-venv"));
        let py = venv.join("bin").join("python");
        let ok = |py: &Path| {
            Command::new(py)
                .args(["-c", "import slack_sdk, websockets"])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if ok(&py) {
            return Ok(py);
        }
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .output()
            .map_err(|e| format!("python3 is not available: {e}"))?;
        if !made.status.success() {
            return Err(format!(
                "python3 -m venv failed: {}",
                String::from_utf8_lossy(&made.stderr)
            ));
        }
        let pip = Command::new(&py)
            .args(["-m", "pip", "install", "-q"])
            .args(PIP_PACKAGES)
            .output()
            .map_err(|e| format!("pip failed: {e}"))?;
        if !pip.status.success() || !ok(&py) {
            return Err(format!(
                "pip install {} failed: {}",
                PIP_PACKAGES.join(" "),
                String::from_utf8_lossy(&pip.stderr)
            ));
        }
        Ok(py)
    })
    .clone()
}

/// Runs a test body only when the fake Slack can run.
macro_rules! need_python {
    () => {
        match harness::python() {
            Ok(p) => p,
            Err(why) => {
                eprintln!("skipped: {why}");
                return;
            }
        }
    };
}
pub(crate) use need_python;

/// A small HTTP/1.1 client: (status, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// The fake Slack server.
pub struct FakeSlack {
    child: Child,
    _stdin: ChildStdin,
    pub port: u16,
}

impl FakeSlack {
    pub fn start(py: &Path) -> FakeSlack {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slack/fake_slack.py");
        let mut child = Command::new(py)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the fake Slack server");
        let stdin = child.stdin.take().expect("stdin");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("READY line");
        let port = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the fake Slack server said {line:?}"));
        FakeSlack {
            child,
            _stdin: stdin,
            port,
        }
    }

    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.port)
    }

    pub fn control(&self, path: &str, body: Value) -> Value {
        let (_, text) = http(
            self.port,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .expect("fake Slack control call");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Every call recorded so far. Panics if any payload failed slack_sdk's
    /// validation.
    pub fn calls(&self) -> Vec<Value> {
        let (_, text) = http(self.port, "GET", "/_calls", &[], b"").expect("fake Slack calls");
        let calls: Vec<Value> = serde_json::from_str(&text).expect("calls JSON");
        for c in &calls {
            let errors = c["errors"].as_array().cloned().unwrap_or_default();
            assert!(
                errors.is_empty(),
                "slack_sdk refused the bot's {} payload: {errors:#?}\n{}",
                c["method"],
                serde_json::to_string_pretty(&c["body"]).unwrap_or_default()
            );
        }
        calls
    }

    pub fn calls_of(&self, method: &str) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter(|c| c["method"] == method)
            .collect()
    }

    /// Waits until a call matches.
    pub fn wait_for(&self, what: &str, within: Duration, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(c) = self.calls().into_iter().find(|c| f(c)) {
                return c;
            }
            if Instant::now() > deadline {
                panic!(
                    "no {what} within {within:?}; calls: {}",
                    serde_json::to_string_pretty(&self.calls()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The request message posted for `id`.
    pub fn posted(&self, id: &str) -> Value {
        self.wait_for(
            "chat.postMessage for the request",
            Duration::from_secs(20),
            |c| {
                c["method"] == "chat.postMessage"
                    && c["body"]["thread_ts"].is_null()
                    && c["body"].to_string().contains(id)
            },
        )
    }
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static N: AtomicU32 = AtomicU32::new(0);

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running holdpoint-bot.
pub struct BotProc {
    pub dir: PathBuf,
    pub port: u16,
    /// The `local` runner's token; empty when the database already had
    /// runners (a second replica on a shared database).
    pub token: String,
    /// The environment it runs with (the CLI gets the same).
    env: Vec<(String, String)>,
    child: Child,
    log: Arc<Mutex<String>>,
}

pub enum Mode {
    Http,
    Socket,
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "holdpoint-slack-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Writes a bot configuration file in a fresh directory; returns its path.
pub fn config_file(toml: &str) -> PathBuf {
    let path = temp_dir().join("bot.toml");
    std::fs::write(&path, toml).expect("write the config file");
    path
}

impl BotProc {
    pub fn start(fake: &FakeSlack, mode: Mode, extra: &[(&str, &str)]) -> BotProc {
        BotProc::start_on(fake, mode, extra, None)
    }

    /// Starts a bot on `database_url` (default: SQLite in its own directory).
    pub fn start_on(
        fake: &FakeSlack,
        mode: Mode,
        extra: &[(&str, &str)],
        database_url: Option<&str>,
    ) -> BotProc {
        let dir = temp_dir();
        let port = free_port();
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            ("HOME".into(), dir.display().to_string()),
            ("USER".into(), "reviewer".into()),
            ("HOLDPOINT_DATA_DIR".into(), dir.display().to_string()),
            ("HOLDPOINT_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("HOLDPOINT_LOG".into(), "info,holdpoint_bot=debug".into()),
            ("HOLDPOINT_SLACK_BOT_TOKEN".into(), "xoxb-test-token".into()),
            ("HOLDPOINT_SLACK_API_URL".into(), fake.api_url()),
            ("HOLDPOINT_SLACK_CHANNEL".into(), CHANNEL.into()),
            (
                "HOLDPOINT_SLACK_REVIEWERS".into(),
                format!("{REVIEWER},{GROUP}"),
            ),
        ];
        match mode {
            Mode::Http => env.push(("HOLDPOINT_SLACK_SIGNING_SECRET".into(), SECRET.into())),
            Mode::Socket => {
                env.push(("HOLDPOINT_SLACK_APP_TOKEN".into(), "xapp-test-token".into()))
            }
        }
        if let Some(url) = database_url {
            env.push(("HOLDPOINT_DATABASE_URL".into(), url.into()));
        }
        for (k, v) in extra {
            env.push((k.to_string(), v.to_string()));
        }
        let log = Arc::new(Mutex::new(String::new()));
        let child = spawn_bot(&env, &log, port);
        let token = std::fs::read_to_string(dir.join("runner-local.env"))
            .ok()
            .and_then(|env| {
                env.lines()
                    .find_map(|l| l.strip_prefix("export HOLDPOINT_TOKEN="))
                    .map(str::to_string)
            })
            .unwrap_or_default();
        assert!(
            database_url.is_some() || !token.is_empty(),
            "a fresh bot writes runner-local.env with a token"
        );
        BotProc {
            dir,
            port,
            token,
            env,
            child,
            log,
        }
    }

    /// Kills the bot at once (SIGKILL: no shutdown code runs) and starts it
    /// again with the same settings, data directory and database.
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(mut s) = self.log.lock() {
            s.push_str("----- killed; restarting -----\n");
        }
        self.child = spawn_bot(&self.env, &self.log, self.port);
    }

    /// Runs `holdpoint-bot ARGS` with this bot's settings; (success, stdout,
    /// stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_holdpoint-bot"))
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run holdpoint-bot");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// Registers a runner named `name`; returns its token.
    pub fn add_runner(&self, name: &str) -> String {
        let (ok, out, err) = self.cli(&["runner", "add", name]);
        assert!(ok, "runner add {name} failed: {err}");
        out.trim().to_string()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        http(self.port, "GET", "/metrics", &[], b"")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// Posts an interaction, signed with `secret` at `ts`.
    pub fn interact_signed(&self, payload: &Value, secret: &str, ts: i64) -> (u16, String) {
        let body = format!("payload={}", form_encode(&payload.to_string()));
        let sig = sign(secret, ts, &body);
        self.post_interaction(&body, &sig, ts)
    }

    pub fn post_interaction(&self, body: &str, sig: &str, ts: i64) -> (u16, String) {
        http(
            self.port,
            "POST",
            "/slack/interactions",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("X-Slack-Signature", sig),
                ("X-Slack-Request-Timestamp", &ts.to_string()),
            ],
            body.as_bytes(),
        )
        .expect("POST /slack/interactions")
    }

    /// A correctly signed interaction, now.
    pub fn interact(&self, payload: &Value) -> (u16, String) {
        self.interact_signed(payload, SECRET, now())
    }
}

impl Drop for BotProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `holdpoint-bot serve` with exactly `env`, copies its stderr into
/// `log`, and waits until it answers on `port`.
fn spawn_bot(env: &[(String, String)], log: &Arc<Mutex<String>>, port: u16) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdpoint-bot"))
        .arg("serve")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start holdpoint-bot");
    let err = child.stderr.take().expect("stderr");
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if let Ok(mut s) = sink.lock() {
                s.push_str(&line);
                s.push('\n');
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, "GET", "/healthz", &[], b"").is_none_or(|(c, _)| c != 200) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the bot exited ({status}):\n{}",
                log.lock().map(|s| s.clone()).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the bot did not start:\n{}",
            log.lock().map(|s| s.clone()).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// A fresh PostgreSQL database on 127.0.0.1:5432 (or
/// `HOLDPOINT_E2E_POSTGRES_URL`), dropped again on drop. `None` (with a
/// message) when no server is reachable, unless
/// `HOLDPOINT_E2E_POSTGRES=required`, which turns that into a failure.
pub struct PgDatabase {
    base: String,
    name: String,
}

impl PgDatabase {
    pub fn create() -> Option<PgDatabase> {
        let base = std::env::var("HOLDPOINT_E2E_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let name = format!("holdpoint_slack_{}", random_hex(6));
        let out = Command::new("psql")
            .args([
                &format!("{base}/postgres"),
                "-qAtc",
                &format!("CREATE DATABASE {name}"),
            ])
            .output();
        let required = std::env::var("HOLDPOINT_E2E_POSTGRES").is_ok_and(|v| v == "required");
        match out {
            Ok(o) if o.status.success() => Some(PgDatabase { base, name }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => format!("psql: {e}"),
                };
                assert!(
                    !required,
                    "PostgreSQL is required here (HOLDPOINT_E2E_POSTGRES=required) but unreachable: {why}"
                );
                eprintln!("PostgreSQL is unreachable ({why}); skipping the PostgreSQL variant");
                None
            }
        }
    }

    pub fn url(&self) -> String {
        format!("{}/{}", self.base, self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &format!("{}/postgres", self.base),
                "-qAtc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// HMAC-SHA256, by the book (RFC 2104).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

pub fn sign(secret: &str, ts: i64, body: &str) -> String {
    format!(
        "v0={}",
        hex::encode(hmac_sha256(
            secret.as_bytes(),
            format!("v0:{ts}:{body}").as_bytes()
        ))
    )
}

pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("random");
    hex::encode(b)
}

/// A review request.
pub fn request(
    command: &str,
    rule: &str,
    risk: Risk,
    part: &str,
    requested_by: Option<&str>,
) -> ReviewRequest {
    ReviewRequest {
        id: random_hex(16),
        command: command.into(),
        command_hash: random_hex(32),
        verdict: Verdict::from_hits(vec![Hit {
            rule: rule.into(),
            decision: Decision::Review,
            risk,
            reason: format!("{rule} needs a human"),
            part: part.into(),
        }]),
        annotations: Vec::<Annotation>::new(),
        host: "build-7".into(),
        cwd: "/srv/app".into(),
        agent: Some("claude-code".into()),
        session: None,
        front_end: "exec".into(),
        requested_by: requested_by.map(str::to_string),
    }
}

pub fn force_push(requested_by: Option<&str>) -> ReviewRequest {
    request(
        "git push origin main --force",
        "git.push.force",
        Risk::High,
        "git push origin main --force",
        requested_by,
    )
}

/// A simulated runner on the websocket.
pub struct Runner {
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
}

impl Runner {
    pub fn connect(bot: &BotProc) -> Runner {
        Runner::connect_as(bot, &bot.token)
    }

    /// Connects with the token of another registered runner.
    pub fn connect_as(bot: &BotProc, token: &str) -> Runner {
        use tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://127.0.0.1:{}/v1/runners/ws", bot.port)
            .into_client_request()
            .expect("ws request");
        req.headers_mut().insert(
            "Authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        let (ws, _) = tungstenite::connect(req).expect("connect to the bot");
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        }
        let mut r = Runner { ws };
        r.send(&RunnerMessage::Hello {
            protocol: PROTOCOL_VERSION,
            runner_version: "test".into(),
            host: "build-7".into(),
        });
        match r.recv(Duration::from_secs(10)) {
            Some(BotMessage::Welcome { .. }) => r,
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    pub fn send(&mut self, m: &RunnerMessage) {
        self.ws
            .send(tungstenite::Message::text(m.encode()))
            .expect("send to the bot");
    }

    /// The next message within `within`, skipping pings.
    pub fn recv(&mut self, within: Duration) -> Option<BotMessage> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(tungstenite::Message::Text(t)) => match BotMessage::decode(&t) {
                    Ok(BotMessage::Ping { nonce }) => self.send(&RunnerMessage::Pong { nonce }),
                    Ok(m) => return Some(m),
                    Err(e) => panic!("bad frame from the bot: {e}"),
                },
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("websocket error: {e}"),
            }
        }
        None
    }

    /// Submits and waits for `pending`.
    pub fn submit(&mut self, req: &ReviewRequest) {
        self.send(&RunnerMessage::Submit {
            request: Box::new(req.clone()),
        });
        match self.recv(Duration::from_secs(10)) {
            Some(BotMessage::Pending { .. }) => {}
            other => panic!("expected pending, got {other:?}"),
        }
    }

    /// The decision, if one arrives within `within`; acknowledges it.
    pub fn decision(
        &mut self,
        within: Duration,
    ) -> Option<holdpoint_shared::protocol::DecisionMessage> {
        match self.recv(within) {
            Some(BotMessage::Decision(d)) => {
                self.send(&RunnerMessage::Ack {
                    request_id: d.request_id.clone(),
                });
                Some(d)
            }
            None => None,
            Some(other) => panic!("expected a decision, got {other:?}"),
        }
    }
}

/// The button value and channel of a posted request message.
pub fn button(posted: &Value, action_id: &str) -> (String, String) {
    let blocks = posted["body"]["blocks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for b in blocks {
        for e in b["elements"].as_array().cloned().unwrap_or_default() {
            if e["action_id"] == action_id {
                return (
                    e["value"].as_str().unwrap_or_default().to_string(),
                    posted["body"]["channel"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        }
    }
    panic!("no {action_id} button in {posted}");
}

/// A `block_actions` payload, as Slack sends it.
pub fn click(user: &str, action_id: &str, value: &str, channel: &str) -> Value {
    json!({
        "type": "block_actions",
        "user": {"id": user, "username": "someone", "team_id": "T0TEAM"},
        "api_app_id": "A0APP",
        "token": "legacy",
        "container": {"type": "message", "message_ts": "1700000001.000100", "channel_id": channel, "is_ephemeral": false},
        "trigger_id": format!("{}.{}", now(), random_hex(8)),
        "team": {"id": "T0TEAM", "domain": "example"},
        "channel": {"id": channel, "name": "holdpoint"},
        "response_url": "https://hooks.slack.invalid/actions/x",
        "actions": [{
            "action_id": action_id,
            "block_id": "hp_actions",
            "text": {"type": "plain_text", "text": "x"},
            "value": value,
            "type": "button",
            "action_ts": "1700000002.000200"
        }]
    })
}

/// A `view_submission` of the deny modal.
pub fn deny_submission(user: &str, view: &Value, reason: &str) -> Value {
    json!({
        "type": "view_submission",
        "user": {"id": user, "username": "someone", "team_id": "T0TEAM"},
        "trigger_id": format!("{}.{}", now(), random_hex(8)),
        "view": {
            "id": "V1",
            "type": "modal",
            "callback_id": view["callback_id"],
            "private_metadata": view["private_metadata"],
            "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}}
        }
    })
}

/// The texts of every mrkdwn object and the top-level text in a payload.
pub fn mrkdwn_texts(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if m.get("type") == Some(&json!("mrkdwn"))
                && let Some(t) = m.get("text").and_then(Value::as_str)
            {
                out.push(t.to_string());
            }
            for x in m.values() {
                mrkdwn_texts(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| mrkdwn_texts(x, out)),
        _ => {}
    }
}

/// Every string in a payload.
pub fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        _ => {}
    }
}

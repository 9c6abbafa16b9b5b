//! Slack around the real bot: the local Slack server
//! (`bot/tests/slack/fake_slack.py`, which validates every payload the bot
//! sends with Slack's own `slack_sdk`), a bot configured for it, signed
//! interaction requests (the kit's one HMAC-SHA256), and the payloads Slack
//! sends.

use crate::bins::target_dir;
use crate::bot::{Bot, BotOptions, Database};
use crate::http::try_http;
use crate::util::{now, random_hex};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const REVIEWER: &str = "U0REVIEW1";
pub const GROUP: &str = "S0ONCALL1";
pub const GROUPIE: &str = "U0ONCALL7";
pub const STRANGER: &str = "U0STRANGE";
pub const CHANNEL: &str = "C0HOLDPT1";

/// The folder of the local Slack server and its pinned requirements (the
/// ones `.ci/run` installs).
pub fn server_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bot/tests/slack")
}

/// The Python of a virtual environment with slack_sdk and websockets:
/// `HOLDPOINT_SLACK_VENV`, else `target/slack-venv`, made on first use;
/// `Err` says why there is none.
pub fn python() -> Result<PathBuf, String> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = std::env::var_os("HOLDPOINT_SLACK_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let t = target_dir();
                t.parent().unwrap_or(&t).join("slack-venv")
            });
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
        let requirements = server_dir().join("requirements.txt");
        let pip = Command::new(&py)
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(&requirements)
            .output()
            .map_err(|e| format!("pip failed: {e}"))?;
        if !pip.status.success() || !ok(&py) {
            return Err(format!(
                "pip install -r {} failed: {}",
                requirements.display(),
                String::from_utf8_lossy(&pip.stderr)
            ));
        }
        Ok(py)
    })
    .clone()
}

/// The Python for the local Slack server, or (printing why) return from
/// the test: it is skipped where no Python with slack_sdk can be had.
#[macro_export]
macro_rules! need_python {
    () => {
        match $crate::slack::python() {
            Ok(p) => p,
            Err(why) => {
                eprintln!("skipped: {why}");
                return;
            }
        }
    };
}

/// The local Slack server: Web API and Socket Mode on loopback.
pub struct FakeSlack {
    child: Child,
    _stdin: ChildStdin,
    pub port: u16,
}

impl FakeSlack {
    pub fn start(py: &Path) -> FakeSlack {
        let mut child = Command::new(py)
            .arg(server_dir().join("fake_slack.py"))
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

    /// A control call (`/_fail`, `/_groups`, `/_delay`, `/_socket/…`).
    pub fn control(&self, path: &str, body: Value) -> Value {
        let r = try_http(
            self.port,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.to_string(),
        )
        .expect("fake Slack control call");
        serde_json::from_str(&r.body).unwrap_or(Value::Null)
    }

    /// Every call recorded so far. Panics if any payload failed slack_sdk's
    /// validation.
    pub fn calls(&self) -> Vec<Value> {
        let r = try_http(self.port, "GET", "/_calls", &[], b"").expect("fake Slack calls");
        let calls: Vec<Value> = serde_json::from_str(&r.body).expect("calls JSON");
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

    /// A file uploaded through the external upload flow: what
    /// `files.getUploadURLExternal` announced, and the bytes.
    pub fn file(&self, id: &str) -> Option<(Value, Vec<u8>)> {
        let r = try_http(self.port, "GET", &format!("/_files/{id}"), &[], b"").ok()?;
        if r.status != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&r.body).ok()?;
        let hex = v["hex"].as_str()?;
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        Some((v, bytes))
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

/// How the bot hears from Slack.
pub enum Mode {
    /// Signed `POST /slack/interactions`.
    Http,
    /// Socket Mode, through the local server's websocket.
    Socket,
}

/// The environment of a bot that talks to `api_url` as Slack, with
/// [`REVIEWER`] and [`GROUP`] as its reviewers in [`CHANNEL`].
pub fn bot_env(api_url: &str, mode: Mode) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("HOLDPOINT_SLACK_BOT_TOKEN", "xoxb-test-token".to_string()),
        ("HOLDPOINT_SLACK_API_URL", api_url.to_string()),
        ("HOLDPOINT_SLACK_CHANNEL", CHANNEL.to_string()),
        ("HOLDPOINT_SLACK_REVIEWERS", format!("{REVIEWER},{GROUP}")),
    ];
    match mode {
        Mode::Http => env.push(("HOLDPOINT_SLACK_SIGNING_SECRET", SECRET.to_string())),
        Mode::Socket => env.push(("HOLDPOINT_SLACK_APP_TOKEN", "xapp-test-token".to_string())),
    }
    env
}

/// How to start a bot with Slack at `fake`: its own SQLite database, logs
/// at debug level, [`bot_env`]; add to it and `start()`.
pub fn bot_options(fake: &FakeSlack, mode: Mode) -> BotOptions {
    let mut o = BotOptions::new().log("info,holdpoint_bot=debug");
    for (k, v) in bot_env(&fake.api_url(), mode) {
        o = o.env(k, v);
    }
    o
}

/// A bot on its own SQLite database, with Slack at `fake`.
pub fn start_bot(fake: &FakeSlack, mode: Mode, extra: &[(&str, &str)]) -> Bot {
    start_bot_on(fake, mode, extra, None)
}

/// A bot on `database_url` (another replica's), or on its own SQLite
/// database, with Slack at `fake`.
pub fn start_bot_on(
    fake: &FakeSlack,
    mode: Mode,
    extra: &[(&str, &str)],
    database_url: Option<&str>,
) -> Bot {
    let mut o = bot_options(fake, mode);
    if let Some(url) = database_url {
        o = o.database(Database::Shared(url.to_string()));
    }
    o.envs(extra).start()
}

impl Bot {
    /// Posts an interaction, signed with `secret` at `ts`.
    pub fn interact_signed(&self, payload: &Value, secret: &str, ts: i64) -> (u16, String) {
        let body = format!("payload={}", form_encode(&payload.to_string()));
        let sig = sign(secret, ts, &body);
        self.post_interaction(&body, &sig, ts)
    }

    /// Posts `body` to `/slack/interactions` with this signature.
    pub fn post_interaction(&self, body: &str, sig: &str, ts: i64) -> (u16, String) {
        let r = try_http(
            self.port,
            "POST",
            "/slack/interactions",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("X-Slack-Signature", sig),
                ("X-Slack-Request-Timestamp", &ts.to_string()),
            ],
            body,
        )
        .expect("POST /slack/interactions");
        (r.status, r.body)
    }

    /// A correctly signed interaction, now.
    pub fn interact(&self, payload: &Value) -> (u16, String) {
        self.interact_signed(payload, SECRET, now())
    }
}

/// Percent-encodes everything but unreserved characters, as Slack does.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
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

/// Slack's request signature: `v0=` hex(HMAC-SHA256(secret, `v0:TS:BODY`)).
pub fn sign(secret: &str, ts: i64, body: &str) -> String {
    format!(
        "v0={}",
        hex::encode(hmac_sha256(
            secret.as_bytes(),
            format!("v0:{ts}:{body}").as_bytes()
        ))
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2, and Slack's own documented example.
    #[test]
    fn hmac_matches_the_published_vectors() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            sign(SECRET, 1531420618, body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
        // A key longer than a block is hashed first (RFC 4231, case 6).
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}

//! The local PagerDuty and Opsgenie receivers (`bot/tests/pager/fake_pager.py`):
//! one loopback server for both APIs that checks every body against the
//! documented fields, enums and limits and records each event.

use crate::http::try_http;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The routing key the receiver expects: 32 letters and digits, as an
/// Events API v2 integration key is.
pub const ROUTING_KEY: &str = "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY00";
/// The Opsgenie API key the receiver expects.
pub const GENIE_KEY: &str = "eb243592-faa2-4ba2-a551-1afdf565c889";

fn server() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bot/tests/pager/fake_pager.py")
}

/// The running receiver.
pub struct FakePager {
    child: Child,
    _stdin: ChildStdin,
    pub port: u16,
}

impl FakePager {
    /// Starts it with `py` (any Python 3; it needs only the standard library).
    pub fn start(py: &Path) -> FakePager {
        let mut child = Command::new(py)
            .arg(server())
            .args([ROUTING_KEY, GENIE_KEY])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the local pager receivers");
        let stdin = child.stdin.take().expect("stdin");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("READY line");
        let port = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the pager receivers said {line:?}"));
        FakePager {
            child,
            _stdin: stdin,
            port,
        }
    }

    /// The bot's environment for both pagers here.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HOLDPOINT_PAGERDUTY_ROUTING_KEY", ROUTING_KEY.to_string()),
            (
                "HOLDPOINT_PAGERDUTY_URL",
                format!("http://127.0.0.1:{}/v2/enqueue", self.port),
            ),
            ("HOLDPOINT_OPSGENIE_API_KEY", GENIE_KEY.to_string()),
            (
                "HOLDPOINT_OPSGENIE_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
        ]
    }

    /// Answers the next `count` calls whose path starts with `path`
    /// (`/v2/enqueue`, `/v2/alerts`) with `status` (and `Retry-After`).
    pub fn fail_next(&self, path: &str, status: u16, count: u32, retry_after: Option<u64>) {
        let body =
            json!({ "path": path, "status": status, "count": count, "retry_after": retry_after });
        try_http(
            self.port,
            "POST",
            "/_fail",
            &[("Content-Type", "application/json")],
            body.to_string(),
        )
        .expect("pager receiver control call");
    }

    /// Every event so far. Panics if any body broke the documented schema.
    pub fn events(&self) -> Vec<Value> {
        let r = try_http(self.port, "GET", "/_events", &[], b"").expect("pager events");
        let events: Vec<Value> = serde_json::from_str(&r.body).expect("events JSON");
        for e in &events {
            let v = e["violations"].as_array().cloned().unwrap_or_default();
            assert!(
                v.is_empty(),
                "the bot's {} {} body breaks the documented schema: {v:#?}\n{}",
                e["api"],
                e["action"],
                serde_json::to_string_pretty(&e["body"]).unwrap_or_default()
            );
        }
        events
    }

    /// The accepted events of `api` (`pagerduty`, `opsgenie`) and `action`
    /// (`trigger`, `resolve`, `create`, `close`, `refused_by_test`).
    pub fn of(&self, api: &str, action: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["api"] == api && e["action"] == action)
            .collect()
    }

    /// Waits until an event matches.
    pub fn wait_for(&self, what: &str, within: Duration, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| f(e)) {
                return e;
            }
            if Instant::now() > deadline {
                panic!(
                    "no {what} within {within:?}; events: {}",
                    serde_json::to_string_pretty(&self.events()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for FakePager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

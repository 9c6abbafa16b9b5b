//! Matrix around the real bot: a real Synapse on loopback (SQLite,
//! registration by shared secret, rate limits raised) and the reviewers
//! played by real matrix-nio clients with encryption
//! (`bot/tests/matrix/peer.py`), driven by JSON lines.
//!
//! Both come from one virtual environment: `HOLDPOINT_MATRIX_VENV`, else
//! `target/matrix-venv` (which `.ci/run` makes). Without it the tests skip
//! and say why, unless `HOLDPOINT_REQUIRE_MATRIX=1`, which makes its
//! absence a failure.

use crate::bins::target_dir;
use crate::http::try_http;
use crate::util::{TempDir, free_port, random_hex};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The server name of the test homeserver.
pub const SERVER: &str = "localhost";

/// The folder of the Python peer and its pinned requirements.
pub fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bot/tests/matrix")
}

/// The venv's Python with synapse and nio, or why there is none.
pub fn python() -> Result<PathBuf, String> {
    let venv = std::env::var_os("HOLDPOINT_MATRIX_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let t = target_dir();
            t.parent().unwrap_or(&t).join("matrix-venv")
        });
    let py = venv.join("bin").join("python");
    let ok = Command::new(&py)
        .args(["-c", "import synapse, nio, vodozemac"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Ok(py);
    }
    let why = format!(
        "no virtual environment with matrix-synapse and matrix-nio[e2e] at {} (set HOLDPOINT_MATRIX_VENV; pip install -r {})",
        venv.display(),
        peer_dir().join("requirements.txt").display()
    );
    if std::env::var("HOLDPOINT_REQUIRE_MATRIX").is_ok_and(|v| v == "1") {
        panic!("HOLDPOINT_REQUIRE_MATRIX=1 but {why}");
    }
    Err(why)
}

/// The venv's Python, or returns from the test after saying why it skipped.
#[macro_export]
macro_rules! need_synapse {
    () => {
        match $crate::matrix::python() {
            Ok(p) => p,
            Err(why) => {
                eprintln!("skipped: {why}");
                return;
            }
        }
    };
}

/// A Synapse homeserver on loopback, stopped (by its pid) when dropped.
pub struct Synapse {
    child: Child,
    pub port: u16,
    pub secret: String,
    dir: TempDir,
    py: PathBuf,
}

impl Synapse {
    pub fn start(py: &Path) -> Synapse {
        let dir = TempDir::new("synapse");
        let port = free_port();
        let secret = random_hex(16);
        let d = dir.path().display().to_string();
        let unlimited = "{per_second: 10000, burst_count: 10000}";
        let config = format!(
            r#"server_name: "{SERVER}"
pid_file: "{d}/homeserver.pid"
listeners:
  - port: {port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: "{d}/homeserver.db"
media_store_path: "{d}/media"
signing_key_path: "{d}/signing.key"
report_stats: false
registration_shared_secret: "{secret}"
enable_registration: false
trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
presence:
  enabled: false
bcrypt_rounds: 4
rc_message: {unlimited}
rc_registration: {unlimited}
rc_login:
  address: {unlimited}
  account: {unlimited}
  failed_attempts: {unlimited}
rc_joins:
  local: {unlimited}
  remote: {unlimited}
rc_invites:
  per_room: {unlimited}
  per_user: {unlimited}
  per_issuer: {unlimited}
rc_room_creation: {unlimited}
rc_key_requests: {unlimited}
rc_admin_redaction: {unlimited}
rc_3pid_validation: {unlimited}
rc_delayed_event_mgmt: {unlimited}
"#
        );
        let cfg = dir.file("homeserver.yaml", &config);
        let keys = Command::new(py)
            .args(["-m", "synapse.app.homeserver", "--generate-keys", "-c"])
            .arg(&cfg)
            .output()
            .expect("run synapse --generate-keys");
        assert!(
            keys.status.success(),
            "synapse --generate-keys: {}",
            String::from_utf8_lossy(&keys.stderr)
        );
        let child = Synapse::spawn(py, &dir);
        let mut s = Synapse {
            child,
            port,
            secret,
            dir,
            py: py.to_path_buf(),
        };
        s.wait_ready();
        s
    }

    fn spawn(py: &Path, dir: &TempDir) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("synapse.log"))
            .expect("synapse log");
        Command::new(py)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(dir.join("homeserver.yaml"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start synapse")
    }

    /// Stops the homeserver (SIGKILL): clients find nothing listening.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again after [`Synapse::stop`], with the same port, users,
    /// rooms and events.
    pub fn resume(&mut self) {
        self.child = Synapse::spawn(&self.py, &self.dir);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let port = self.port;
        let s = self;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = try_http(port, "GET", "/_matrix/client/versions", &[], b"")
                && r.status == 200
            {
                break;
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("synapse exited ({st}): {}", s.log());
            }
            assert!(
                Instant::now() < deadline,
                "synapse did not answer within a minute: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("synapse.log")).unwrap_or_default()
    }

    /// Starts a peer with its own nio store.
    pub fn peer(&self) -> Peer {
        Peer::start(&self.py, self)
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// matrix-nio clients (one per user) in one Python process.
pub struct Peer {
    child: Child,
    io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    _store: TempDir,
}

impl Peer {
    fn start(py: &Path, hs: &Synapse) -> Peer {
        let store = TempDir::new("nio");
        let mut child = Command::new(py)
            .arg(peer_dir().join("peer.py"))
            .arg(hs.url())
            .arg(&hs.secret)
            .arg(store.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the nio peer");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Peer {
            child,
            io: Mutex::new((stdin, stdout)),
            _store: store,
        }
    }

    /// One command; panics with the peer's reason when it failed.
    pub fn call(&self, cmd: Value) -> Value {
        let v = self.try_call(cmd.clone());
        assert_eq!(v["ok"], true, "peer command {cmd} failed: {v}");
        v
    }

    pub fn try_call(&self, cmd: Value) -> Value {
        let mut io = match self.io.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (stdin, stdout) = &mut *io;
        writeln!(stdin, "{cmd}").expect("write to the peer");
        stdin.flush().expect("flush the peer");
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the peer");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("the peer said {line:?}"))
    }

    /// Registers `user` and logs them in with a new device.
    pub fn user(&self, user: &str, password: &str) -> String {
        self.call(json!({"op": "register", "user": user, "password": password}));
        self.call(json!({"op": "login", "user": user, "password": password}))["user_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Registers `user` as a server admin and logs them in.
    pub fn admin(&self, user: &str, password: &str) -> String {
        self.call(json!({"op": "register", "user": user, "password": password, "admin": true}));
        self.call(json!({"op": "login", "user": user, "password": password}))["user_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Limits `user` to `per_second` messages a second after a burst of
    /// `burst` (Synapse's admin API, as admin `who`): more answer 429
    /// `M_LIMIT_EXCEEDED` with `retry_after_ms`.
    pub fn rate_limit(&self, who: &str, user: &str, per_second: u32, burst: u32) {
        self.call(json!({
            "op": "rate_limit", "who": who, "user": user,
            "per_second": per_second, "burst": burst,
        }));
    }

    /// Registers `user` without logging in (the bot logs itself in).
    pub fn register(&self, user: &str, password: &str) -> String {
        self.call(json!({"op": "register", "user": user, "password": password}))["user_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn create_room(&self, who: &str, encrypted: bool, invite: &[&str], power: Value) -> String {
        self.call(json!({
            "op": "create_room", "who": who, "encrypted": encrypted,
            "invite": invite, "power": power,
        }))["room_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn join(&self, who: &str, room: &str) {
        self.call(json!({"op": "join", "who": who, "room": room}));
    }

    pub fn react(&self, who: &str, room: &str, event_id: &str, key: &str) -> String {
        self.call(
            json!({"op": "react", "who": who, "room": room, "event_id": event_id, "key": key}),
        )["event_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn reply(&self, who: &str, room: &str, root: &str, body: &str) -> String {
        self.call(json!({"op": "reply", "who": who, "room": room, "root": root, "body": body}))
            ["event_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Joins every room `who` is invited to (a direct message the bot
    /// opened); returns their ids.
    pub fn accept_invites(&self, who: &str) -> Vec<String> {
        self.call(json!({"op": "accept_invites", "who": who}))["rooms"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `user`'s cross-signing master key as the homeserver publishes it
    /// (asked by `who`), and each of their devices with whether the
    /// self-signing key signed it.
    pub fn cross_signing(&self, who: &str, user: &str) -> (Vec<String>, Vec<(String, bool)>) {
        let out = self.call(json!({"op": "cross_signing", "who": who, "user": user}));
        let master = out["master"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let devices = out["devices"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(d, signed)| (d.clone(), signed.as_bool().unwrap_or(false)))
                    .collect()
            })
            .unwrap_or_default();
        (master, devices)
    }

    /// Every event `who` received in `room`, as received.
    pub fn events(&self, who: &str, room: &str) -> Vec<Value> {
        self.call(json!({"op": "events", "who": who, "room": room}))["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `who` received an event in `room` that `f` accepts.
    pub fn wait_event(
        &self,
        who: &str,
        room: &str,
        what: &str,
        within: Duration,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let evs = self.events(who, room);
            if let Some(e) = evs.iter().find(|e| f(e)) {
                return e.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "{who} received no {what} within {within:?}; events: {}",
                    serde_json::to_string_pretty(&evs).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The content of an event as received (decrypted when it was encrypted).
pub fn content(e: &Value) -> &Value {
    &e["source"]["content"]
}

/// Whether `e` is the review message of request `id` (not an edit, not a
/// thread reply).
pub fn is_request_message(e: &Value, id: &str) -> bool {
    let c = content(e);
    c["msgtype"] == "m.text"
        && c.get("m.new_content").is_none()
        && c["m.relates_to"].is_null()
        && c["body"].as_str().is_some_and(|b| b.contains(id))
}

/// Whether `e` edits `event_id`.
/// In an encrypted room the relation travels outside the ciphertext, and
/// the decrypted content the peer keeps may lack it: then the relation the
/// peer saw in clear text (`relates_to`) counts.
pub fn is_edit_of(e: &Value, event_id: &str) -> bool {
    content(e).get("m.new_content").is_some() && relation(e)["event_id"] == event_id
}

/// Whether `e` is a message in the thread of `root`.
pub fn is_in_thread(e: &Value, root: &str) -> bool {
    let r = relation(e);
    r["rel_type"] == "m.thread" && r["event_id"] == root
}

fn relation(e: &Value) -> &Value {
    let inner = &content(e)["m.relates_to"];
    if inner.is_null() {
        &e["relates_to"]
    } else {
        inner
    }
}

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
use holdpoint_shared::protocol::{ReviewRequest, Status};
use holdpoint_shared::{Context, Decision, Policy, Risk, Verdict};
use holdpoint_testkit::fixtures::hit;
use holdpoint_testkit::{Bot, BotOptions, Response, Runner, http, random_hex, review};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BOT: &str = env!("CARGO_BIN_EXE_holdpoint-bot");

/// The policy the page must show, byte for byte.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

// ------------------------------------------------------------------ setup

/// How long a runner waits for a decision the test is about to cause.
const DECIDED_WITHIN: Duration = Duration::from_secs(30);

/// A bot on its own SQLite database; decisions made with its CLI are by
/// `cli:tester`.
fn start_bot() -> Bot {
    BotOptions::new()
        .bin(BOT)
        .user("tester")
        .log("warn")
        .start()
}

/// The bot's runner `local` on its websocket.
fn connect_runner(bot: &Bot) -> Runner {
    let runner = Runner::connect(bot);
    assert_eq!(runner.name(), "local");
    runner
}

fn request(command: &str, verdict: Verdict, annotations: Vec<Annotation>) -> ReviewRequest {
    review(command)
        .hash_of_command()
        .verdict(verdict)
        .annotations(annotations)
        .host("ci-host")
        .agent("test-agent")
        .front_end("sh")
        .requested_by(Some("agent@ci-host"))
        .build()
}

/// A request with the built-in policy's real verdict.
fn classified(command: &str) -> ReviewRequest {
    let verdict = Policy::builtin()
        .unwrap()
        .classify(command, &Context::from_process());
    assert_eq!(verdict.decision, Decision::Review, "{command}: {verdict:?}");
    request(command, verdict, Vec::new())
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

/// Approves or denies through the API as the page does.
fn decide(bot: &Bot, cookie: &str, id: &str, action: &str, body: &Value) -> Response {
    let origin = bot.url();
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
        body.to_string(),
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
    let bot = start_bot();
    let mut runner = connect_runner(&bot);
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
    // A chat's link previewer fetches the link first: the page only says
    // whom it logs in as, and the link still works for the person.
    let preview = http(bot.port, "GET", &bot.login_path(), &[], "");
    assert_eq!(preview.status, 200);
    assert!(preview.body.contains("web:local"), "{}", preview.body);
    assert!(
        preview
            .body
            .contains("<form method=\"post\" action=\"/login\">")
    );
    assert!(preview.header("set-cookie").is_none());
    // Only a same-site press of the button uses it: a cross-site form and
    // a bare POST are refused and leave it unused.
    let token = bot
        .login_path()
        .split_once("token=")
        .map(|(_, t)| t.to_string())
        .unwrap();
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    for extra in [
        vec![("Origin", "https://evil.example")],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![],
    ] {
        let mut h = form.to_vec();
        h.extend(extra.iter().copied());
        let r = http(bot.port, "POST", "/login", &h, format!("token={token}"));
        assert_eq!(r.status, 403, "{extra:?}: {}", r.body);
        assert!(r.header("set-cookie").is_none());
    }
    let (r, cookie) = bot.log_in(&bot.login_path(), &[]);
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
    let origin = bot.url();
    let mut h = form.to_vec();
    h.push(("Origin", origin.as_str()));
    let twice = http(bot.port, "POST", "/login", &h, format!("token={token}"));
    assert_eq!(
        twice.status, 410,
        "a used link logs nobody in: {}",
        twice.body
    );
    assert!(again.body.contains("already used"), "{}", again.body);
    assert!(again.body.contains("holdpoint-bot login-link"));
    assert!(again.header("set-cookie").is_none());

    // A second reviewer, behind a TLS-terminating proxy.
    let link = bot.cli(&["login-link", "--name", "alice"]);
    let path = link.trim().strip_prefix(&bot.url()).unwrap().to_string();
    let (r, alice) = bot.log_in(&path, &[("X-Forwarded-Proto", "https")]);
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
        let r = http(bot.port, "POST", &path, headers, body.to_string());
        assert_eq!(r.status, 403, "{headers:?}: {}", r.body);
    }
    let r = http(
        bot.port,
        "POST",
        &path,
        &[("Content-Type", "application/json"), ("X-Holdpoint", "1")],
        body.to_string(),
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
    let r = decide(&bot, &cookie, &random_hex(16), "approve", &body);
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
    let d = runner.decision_for(&first.id, DECIDED_WITHIN);
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
    let d = runner.decision_for(&second.id, DECIDED_WITHIN);
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

    // Logging in again rotates the session: the browser's old one ends.
    let link = bot.cli(&["login-link"]);
    let path = link.trim().strip_prefix(&bot.url()).unwrap().to_string();
    let (_, rotated) = bot.log_in(&path, &[("Cookie", &cookie)]);
    assert_ne!(rotated, cookie);
    let r = http(bot.port, "GET", "/api/requests", &[("Cookie", &cookie)], "");
    assert_eq!(r.status, 401, "the session from before the login ended");
    let r = http(
        bot.port,
        "GET",
        "/api/requests",
        &[("Cookie", &rotated)],
        "",
    );
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
    let bot = start_bot();
    let mut runner = connect_runner(&bot);
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
        "base": bot.url(),
        "login": bot.login_link(),
        "chromium": "/usr/bin/chromium",
        "botBin": BOT,
        "botEnv": bot
            .env()
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<serde_json::Map<_, _>>(),
        "userDataDir": bot.dir().join("chromium").display().to_string(),
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
    let config_path = bot.dir().join("browser.json");
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
            // Asked for by the reviewer the page logs in as.
            let mut r = classified("git clean -fdx");
            r.requested_by = Some("web:local".into());
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
    let Some(late) = late else {
        panic!("the script never asked for a late request");
    };
    // The requester's own request: their click was refused, the CLI's
    // denial reached the runner.
    let d = runner.decision_for(&late.id, DECIDED_WITHIN);
    assert_eq!(
        (d.status, d.decided_by.as_str(), d.reason.as_deref()),
        (Status::Denied, "cli:tester", Some("not on a Friday"))
    );

    // What the reviewer did in the browser reached the runner.
    let d = runner.decision_for(&hostile.id, DECIDED_WITHIN);
    assert_eq!(
        (d.status, d.decided_by.as_str(), d.reason.as_deref()),
        (Status::Denied, "web:local", Some(deny_reason))
    );
    assert_eq!(d.command_hash, hostile.command_hash);
    let d = runner.decision_for(&normal.id, DECIDED_WITHIN);
    assert_eq!(
        (d.status, d.decided_by.as_str()),
        (Status::Approved, "web:local")
    );
    let d = runner.decision_for(&critical.id, DECIDED_WITHIN);
    assert_eq!(
        (d.status, d.decided_by.as_str()),
        (Status::Approved, "web:local")
    );
    let d = runner.decision_for(&foreign.id, DECIDED_WITHIN);
    assert_eq!(
        (d.status, d.decided_by.as_str()),
        (Status::Approved, "cli:tester")
    );
    eprintln!(
        "browser test: {result} (whole test {:?})",
        started.elapsed()
    );
}

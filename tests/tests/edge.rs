//! The bot's network edge under hostile clients: failed tokens are
//! throttled per address while a real runner keeps working, slow and silent
//! clients are dropped within `limits.client_timeout`, oversized heads and
//! bodies are refused, the runner will not send its token in clear text to
//! another machine, and the bot serves TLS from files that a SIGHUP
//! reloads, verified by the runner with a custom CA.

use holdpoint_shared::protocol::{BotMessage, close};
use holdpoint_testkit::raw::{closed, connect, hello, recv, send};
use holdpoint_testkit::*;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const FORCE_PUSH: &str = "git push --force origin main";

fn upgrade_with(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Authorization", format!("Bearer {token}")),
        ("Upgrade", "websocket".into()),
        ("Connection", "Upgrade, close".into()),
        ("Sec-WebSocket-Version", "13".into()),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==".into()),
    ]
}

#[test]
fn a_token_brute_force_is_throttled_while_the_real_runner_keeps_working() {
    let Some(bot) = Bot::on(Backend::Sqlite, &[]) else {
        return;
    };
    let attacker: IpAddr = "127.0.0.2".parse().expect("ip");
    let mut statuses = Vec::new();
    for _ in 0..14 {
        let h = upgrade_with(&format!("hpr_{}", random_hex(20)));
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = try_http_from(attacker, bot.port, "GET", "/v1/runners/ws", &h, "").expect("http");
        assert!(!r.body.contains("hpr_"), "no token echoed: {}", r.body);
        statuses.push(r.status);
    }
    assert_eq!(&statuses[..10], &[401; 10], "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    // Login links from that address are throttled too.
    let r = try_http_from(
        attacker,
        bot.port,
        "GET",
        &format!("/login?token={}", "0".repeat(40)),
        &[],
        "",
    )
    .expect("http");
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());

    // The real runner, from its own address, is not affected.
    let mut ws = connect(&bot, Some(&bot.token)).expect("the runner connects");
    hello(&mut ws);
    let req = review(FORCE_PUSH).id(&random_hex(16)).build();
    send(
        &mut ws,
        &holdpoint_shared::protocol::RunnerMessage::Submit {
            request: Box::new(req.clone()),
        },
    );
    assert!(matches!(recv(&mut ws), BotMessage::Pending { .. }));
    bot.cli(&["approve", &req.id]);
    assert!(matches!(recv(&mut ws), BotMessage::Decision(_)));
    let m = bot.metrics();
    let throttled: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("holdpoint_auth_throttled_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the metric");
    assert!(throttled >= 5, "{m}");
}

/// Status codes of `n` upgrades with made-up tokens from `from`, each
/// with `extra` headers.
fn bad_tokens_from(bot: &Bot, from: IpAddr, extra: &[(&str, &str)], n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| {
            let h = upgrade_with(&format!("hpr_{}", random_hex(20)));
            let mut h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            h.extend_from_slice(extra);
            try_http_from(from, bot.port, "GET", "/v1/runners/ws", &h, "")
                .expect("http")
                .status
        })
        .collect()
}

#[test]
fn behind_a_trusted_proxy_failed_tokens_are_throttled_per_forwarded_client() {
    let Some(bot) = Bot::on(
        Backend::Sqlite,
        &[("HOLDPOINT_TRUSTED_PROXIES", "127.0.0.3/32")],
    ) else {
        return;
    };
    let proxy: IpAddr = "127.0.0.3".parse().expect("ip");
    let outsider: IpAddr = "127.0.0.4".parse().expect("ip");
    // Someone who is not the proxy names the real runner's address: the
    // header is not believed, and the outsider is throttled as itself.
    let statuses = bad_tokens_from(&bot, outsider, &[("X-Forwarded-For", "198.51.100.2")], 12);
    assert_eq!(statuses[11], 429, "{statuses:?}");
    // An attacker behind the proxy is throttled by its forwarded address,
    // even when it writes a forged address of its own in front.
    let statuses = bad_tokens_from(
        &bot,
        proxy,
        &[("X-Forwarded-For", "198.51.100.2, 198.51.100.1")],
        12,
    );
    assert_eq!(&statuses[..10], &[401; 10], "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    // The real runner behind the same proxy, at 198.51.100.2, still gets in.
    let h = upgrade_with(&bot.token);
    let mut h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    h.push(("X-Forwarded-For", "198.51.100.2"));
    let r = try_http_from(proxy, bot.port, "GET", "/v1/runners/ws", &h, "").expect("http");
    assert_eq!(r.status, 101, "the real runner is let in: {}", r.body);
}

#[test]
fn slow_and_silent_clients_are_dropped_within_the_client_timeout() {
    let Some(bot) = Bot::on(Backend::Sqlite, &[("HOLDPOINT_LIMIT_CLIENT_TIMEOUT", "2s")]) else {
        return;
    };
    // Slowloris: a request head that never ends, one header a second.
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", bot.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let mut dropped = false;
    for i in 0..20 {
        if s.write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
            .is_err()
        {
            dropped = true;
            break;
        }
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => {
                dropped = true;
                break;
            }
            Ok(_) => {
                // hyper may answer 408 before closing.
                dropped = true;
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(800)),
        }
    }
    let took = started.elapsed();
    assert!(dropped, "a slow request head is dropped");
    assert!(took < Duration::from_secs(8), "dropped after {took:?}");

    // A websocket that never says hello.
    let mut ws = connect(&bot, Some(&bot.token)).expect("connect");
    let started = Instant::now();
    let (code, why) = closed(&mut ws);
    assert_eq!(code, close::IDLE, "{why}");
    assert!(started.elapsed() < Duration::from_secs(8));
    // The bot keeps serving.
    assert_eq!(http(bot.port, "GET", "/healthz", &[], "").status, 200);
}

#[test]
fn oversized_heads_and_bodies_are_refused() {
    let Some(bot) = Bot::on(Backend::Sqlite, &[]) else {
        return;
    };
    let huge = "a".repeat(200 * 1024);
    let r = http(bot.port, "GET", "/healthz", &[("X-Huge", &huge)], "");
    assert_eq!(r.status, 431);
    let cookie = bot.web_session();
    let origin = bot.url();
    let body = vec![b'{'; 3 * 1024 * 1024];
    let r = http(
        bot.port,
        "POST",
        &format!("/api/requests/{}/approve", random_hex(16)),
        &[
            ("Cookie", &cookie),
            ("Origin", &origin),
            ("Content-Type", "application/json"),
            ("X-Holdpoint", "1"),
        ],
        body,
    );
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(http(bot.port, "GET", "/healthz", &[], "").status, 200);
}

#[test]
fn the_runner_will_not_send_its_token_unencrypted_to_another_machine() {
    let dir = TempDir::new("holdpoint-plain");
    let (shell, ran) = recorder(dir.path());
    let spool = TempDir::new("spool");
    let out = runner(
        "http://192.0.2.10:8470",
        "hpr_not-sent",
        dir.path(),
        spool.path(),
    )
    .env("HOLDPOINT_REAL_SHELL", &shell)
    .args(["sh", "-c", FORCE_PUSH])
    .output()
    .expect("run holdpoint");
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("unencrypted"), "{err}");
    assert!(err.contains("HOLDPOINT_ALLOW_INSECURE_HTTP"), "{err}");
    assert!(!ran.exists(), "nothing ran");
}

/// `openssl`, run with arguments (never through a shell).
fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A CA and a certificate for `localhost` signed by it, in `dir`:
/// `NAME-ca.pem`, `NAME-cert.pem`, `NAME-key.pem`.
fn certificates(dir: &Path, name: &str) -> Option<()> {
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    let key = format!("{name}-key.pem");
    let csr = format!("{name}.csr");
    let cert = format!("{name}-cert.pem");
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .ok()?;
    let ok = openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "2",
            "-subj",
            &format!("/CN=holdpoint test CA {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    ) && openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=localhost",
        ],
    ) && openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
    ok.then_some(())
}

#[test]
fn the_bot_serves_tls_from_files_and_the_runner_verifies_it_with_a_custom_ca() {
    let certs = TempDir::new("holdpoint-tls");
    if certificates(certs.path(), "one").is_none() || certificates(certs.path(), "two").is_none() {
        assert!(
            std::env::var_os("HOLDPOINT_E2E_POSTGRES").is_none(),
            "openssl is needed to make test certificates"
        );
        eprintln!("skipped: no openssl to make test certificates");
        return;
    }
    let live_cert = certs.path().join("live-cert.pem");
    let live_key = certs.path().join("live-key.pem");
    std::fs::copy(certs.path().join("one-cert.pem"), &live_cert).expect("copy");
    std::fs::copy(certs.path().join("one-key.pem"), &live_key).expect("copy");
    let bot = BotOptions::new()
        .env("HOLDPOINT_TLS_CERT", live_cert.display().to_string())
        .env("HOLDPOINT_TLS_KEY", live_key.display().to_string())
        .start();
    assert!(bot.url().starts_with("https://localhost:"));

    let run = |ca: Option<&str>| {
        let ws = Workspace::new();
        let spool = TempDir::new("spool");
        let mut c = runner(&bot.url(), &bot.token, &ws.repo(), spool.path());
        if let Some(ca) = ca {
            c.env("HOLDPOINT_CA_FILE", certs.path().join(ca));
        }
        c.args(["sh", "-c", FORCE_PUSH]);
        (Agent::spawn(c), ws)
    };

    // Without the CA the certificate is not trusted: refused, nothing runs.
    let (agent, ws) = run(None);
    let before = ws.origin_head();
    let out = agent.finish(Duration::from_secs(20));
    assert!(!out.status.success());
    assert_eq!(ws.origin_head(), before, "nothing ran");

    // With it: held, approved over TLS, run.
    let (agent, ws) = run(Some("one-ca.pem"));
    let id = bot.wait_pending()["id"].as_str().expect("id").to_string();
    bot.cli(&["approve", &id]);
    let out = agent.finish(Duration::from_secs(20));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(ws.origin_head(), ws.local_head(), "the approved push ran");

    // A renewed certificate from another CA, and SIGHUP: new connections
    // get the new one.
    std::fs::copy(certs.path().join("two-cert.pem"), &live_cert).expect("copy");
    std::fs::copy(certs.path().join("two-key.pem"), &live_key).expect("copy");
    bot.signal("HUP");
    bot.wait_log("reloaded the TLS certificate", Duration::from_secs(5));
    let (agent, ws) = run(Some("one-ca.pem"));
    let before = ws.origin_head();
    let out = agent.finish(Duration::from_secs(20));
    assert!(
        !out.status.success(),
        "the old CA no longer vouches for the bot"
    );
    assert_eq!(ws.origin_head(), before);
    let (agent, ws) = run(Some("two-ca.pem"));
    let id = bot.wait_pending()["id"].as_str().expect("id").to_string();
    bot.cli(&["approve", &id]);
    let out = agent.finish(Duration::from_secs(20));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(ws.origin_head(), ws.local_head());
}

//! The runner's side of the conversation with `holdpoint-bot`: a blocking
//! websocket client that submits one request and waits for its decision,
//! reconnecting (and re-submitting the same request id) when the connection
//! drops, and the connection the spool uses to send audit events.
//!
//! Only an approval whose request id and command hash match what this
//! process submitted lets a command run. A bot that cannot be reached in
//! time, a refused token, a rejected submission and a decision for another
//! command all end in a refusal.

use anyhow::{Context as _, Result, anyhow, bail};
use holdpoint_shared::protocol::{
    BotMessage, DecisionMessage, PROTOCOL_VERSION, ReviewRequest, RunnerMessage, WS_PATH, close,
    now_ms,
};
use std::io::ErrorKind;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// How long to keep trying to reach the bot before refusing, unless
/// `HOLDPOINT_CONNECT_TIMEOUT` says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a waiting runner says it is alive.
const PING_EVERY: Duration = Duration::from_secs(20);

/// A connection that has received nothing for this long is presumed dead.
const DEAD_AFTER: Duration = Duration::from_secs(65);

/// How the runner reaches the bot.
#[derive(Debug, Clone)]
pub struct BotConfig {
    /// `http(s)://host:port` or `ws(s)://host:port`, without the path.
    pub url: String,
    pub token: String,
    pub connect_timeout: Duration,
    /// Extra certificate authorities (PEM) for `https://`, beside the
    /// system's.
    pub ca_file: Option<std::path::PathBuf>,
}

fn env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// The runner's config file: `url` and `token` (or `token_file`).
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunnerFile {
    url: Option<String>,
    token: Option<String>,
    token_file: Option<std::path::PathBuf>,
    connect_timeout_secs: Option<u64>,
    ca_file: Option<std::path::PathBuf>,
    allow_insecure_http: Option<bool>,
}

/// Whether `host` (as a URL writes it) is this machine.
fn loopback(host: &str) -> bool {
    let h = host.trim_matches(['[', ']']);
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses a URL that would send the token in clear text to another
/// machine, unless the operator said the network is trusted.
fn check_transport(url: &str, allow_insecure: bool) -> Result<()> {
    let lower = url.to_ascii_lowercase();
    let plain = lower.starts_with("http://") || lower.starts_with("ws://");
    if !plain || allow_insecure {
        return Ok(());
    }
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    let host = if authority.starts_with('[') {
        authority
            .split_once(']')
            .map(|(h, _)| h)
            .unwrap_or(authority)
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    if loopback(host) {
        return Ok(());
    }
    bail!(
        "HOLDPOINT_URL={url:?} would send the runner's token unencrypted to another machine: \
         use https://, or set HOLDPOINT_ALLOW_INSECURE_HTTP=1 (allow_insecure_http = true) \
         if that network is trusted"
    )
}

fn runner_file() -> Result<RunnerFile> {
    let path = env("HOLDPOINT_RUNNER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let base = env("XDG_CONFIG_HOME")
                .map(std::path::PathBuf::from)
                .or_else(|| env("HOME").map(|h| std::path::PathBuf::from(h).join(".config")))?;
            let p = base.join("holdpoint").join("runner.toml");
            p.is_file().then_some(p)
        });
    let Some(path) = path else {
        return Ok(RunnerFile::default());
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the runner config {}", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("the runner config {} is not valid", path.display()))
}

impl BotConfig {
    /// `HOLDPOINT_URL` and `HOLDPOINT_TOKEN`, else the runner config file.
    /// `Ok(None)`: no bot is configured. `Err`: one is, but badly.
    pub fn load() -> Result<Option<BotConfig>> {
        let file = runner_file()?;
        let Some(url) = env("HOLDPOINT_URL").or(file.url) else {
            return Ok(None);
        };
        let token = match env("HOLDPOINT_TOKEN").or(file.token) {
            Some(t) => t,
            None => match file.token_file {
                Some(p) => std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read the token file {}", p.display()))?
                    .trim()
                    .to_string(),
                None => bail!(
                    "HOLDPOINT_URL is set but no token is: set HOLDPOINT_TOKEN (from `holdpoint-bot runner add NAME`)"
                ),
            },
        };
        let connect_timeout = match env("HOLDPOINT_CONNECT_TIMEOUT") {
            Some(v) => Duration::from_secs_f64(
                v.trim()
                    .trim_end_matches('s')
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s < 86400.0)
                    .ok_or_else(|| {
                        anyhow!("HOLDPOINT_CONNECT_TIMEOUT={v:?} is not a number of seconds")
                    })?,
            ),
            None => file
                .connect_timeout_secs
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        };
        let allow_insecure = match env("HOLDPOINT_ALLOW_INSECURE_HTTP") {
            Some(v) => matches!(v.trim(), "1" | "true" | "yes"),
            None => file.allow_insecure_http.unwrap_or(false),
        };
        let url = url.trim().trim_end_matches('/').to_string();
        check_transport(&url, allow_insecure)?;
        Ok(Some(BotConfig {
            url,
            token: token.trim().to_string(),
            connect_timeout,
            ca_file: env("HOLDPOINT_CA_FILE")
                .map(std::path::PathBuf::from)
                .or(file.ca_file),
        }))
    }

    /// The websocket URL.
    pub fn ws_url(&self) -> Result<String> {
        let u = &self.url;
        let rest = if let Some(r) = u.strip_prefix("http://") {
            format!("ws://{r}")
        } else if let Some(r) = u.strip_prefix("https://") {
            format!("wss://{r}")
        } else if u.starts_with("ws://") || u.starts_with("wss://") {
            u.clone()
        } else {
            bail!("HOLDPOINT_URL={u:?} must start with http://, https://, ws:// or wss://");
        };
        Ok(format!("{rest}{WS_PATH}"))
    }
}

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// Why a connection attempt failed.
#[derive(Debug)]
pub enum ConnectError {
    /// Worth retrying: the bot is down, restarting, or the network blipped.
    Transient(String),
    /// Retrying will not help: the token is refused, the protocol differs.
    Permanent(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Transient(s) | ConnectError::Permanent(s) => f.write_str(s),
        }
    }
}

/// An open, greeted connection.
pub struct Connection {
    socket: Socket,
    tcp: TcpStream,
    last_heard: Instant,
    last_ping: Instant,
    nonce: u64,
    /// The runner's name, as the bot's welcome said.
    runner: String,
}

fn install_crypto() {
    // One process-wide provider; a second install attempt just fails.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The TLS client: the system's certificate authorities (Mozilla's list
/// when the system has none) and those of `ca_file`.
fn tls_connector(cfg: &BotConfig) -> Result<tungstenite::Connector, ConnectError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(system.certs);
    if added == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = &cfg.ca_file {
        let bad = |e: String| {
            ConnectError::Permanent(format!("cannot read the CA file {}: {e}", path.display()))
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("it holds no certificate".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| bad(e.to_string()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ConnectError::Permanent(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tungstenite::Connector::Rustls(std::sync::Arc::new(config)))
}

fn close_reason(frame: Option<&tungstenite::protocol::CloseFrame>) -> (u16, String) {
    match frame {
        Some(f) => (u16::from(f.code), f.reason.to_string()),
        None => (1005, "no reason given".into()),
    }
}

fn classify_close(code: u16, why: String) -> ConnectError {
    match code {
        close::REVOKED | close::UNSUPPORTED_VERSION | close::BAD_MESSAGE | close::OUT_OF_ORDER => {
            ConnectError::Permanent(format!("the bot closed the connection: {why}"))
        }
        _ => ConnectError::Transient(format!("the bot closed the connection ({code}): {why}")),
    }
}

impl Connection {
    /// Connects, authenticates and says hello, all before `deadline`.
    pub fn open(cfg: &BotConfig, deadline: Instant) -> Result<Connection, ConnectError> {
        let url = cfg
            .ws_url()
            .map_err(|e| ConnectError::Permanent(e.to_string()))?;
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ConnectError::Permanent(format!("bad bot URL {url}: {e}")))?;
        let auth = HeaderValue::from_str(&format!("Bearer {}", cfg.token)).map_err(|_| {
            ConnectError::Permanent("the token has characters a header cannot hold".into())
        })?;
        request.headers_mut().insert("authorization", auth);
        let host = request.uri().host().unwrap_or_default().to_string();
        let tls = request.uri().scheme_str() == Some("wss");
        let port = request
            .uri()
            .port_u16()
            .unwrap_or(if tls { 443 } else { 80 });
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConnectError::Transient("out of time".into()));
        }
        let addrs: Vec<_> = (host.trim_matches(['[', ']']), port)
            .to_socket_addrs()
            .map_err(|e| ConnectError::Transient(format!("cannot resolve {host}: {e}")))?
            .collect();
        let mut last = String::from("no address");
        let mut tcp = None;
        for a in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match TcpStream::connect_timeout(&a, left) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("cannot connect to {a}: {e}"),
            }
        }
        let tcp = tcp.ok_or(ConnectError::Transient(last))?;
        let io = |e: std::io::Error| ConnectError::Transient(e.to_string());
        tcp.set_nodelay(true).map_err(io)?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        tcp.set_read_timeout(Some(left)).map_err(io)?;
        tcp.set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(io)?;
        let handle = tcp.try_clone().map_err(io)?;
        let connector = if tls {
            install_crypto();
            Some(tls_connector(cfg)?)
        } else {
            None
        };
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(holdpoint_shared::protocol::MAX_FRAME_BYTES);
        config.max_frame_size = Some(holdpoint_shared::protocol::MAX_FRAME_BYTES);
        let (socket, _) = tungstenite::client_tls_with_config(
            request,
            tcp,
            Some(config),
            connector,
        )
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp)) => {
                let status = resp.status();
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).trim().to_string())
                    .unwrap_or_default();
                let text = format!("the bot answered {status}: {body}");
                if status.as_u16() == 401 || status.as_u16() == 403 || status.as_u16() == 404 {
                    ConnectError::Permanent(text)
                } else {
                    ConnectError::Transient(text)
                }
            }
            other => ConnectError::Transient(format!("websocket handshake failed: {other}")),
        })?;
        let mut conn = Connection {
            socket,
            tcp: handle,
            last_heard: Instant::now(),
            last_ping: Instant::now(),
            nonce: 0,
            runner: String::new(),
        };
        conn.send(&RunnerMessage::Hello {
            protocol: PROTOCOL_VERSION,
            runner_version: env!("CARGO_PKG_VERSION").to_string(),
            host: crate::gate::hostname(),
        })?;
        match conn.recv_until(deadline)? {
            Some(BotMessage::Welcome { runner, .. }) => conn.runner = runner,
            Some(other) => {
                return Err(ConnectError::Permanent(format!(
                    "the bot answered hello with {other:?}"
                )));
            }
            None => return Err(ConnectError::Transient("no welcome in time".into())),
        }
        let _ = conn.tcp.set_read_timeout(Some(Duration::from_millis(250)));
        Ok(conn)
    }

    /// The name this runner is registered under, as the bot's welcome said.
    pub fn runner(&self) -> &str {
        &self.runner
    }

    /// Sends one message.
    pub fn send(&mut self, m: &RunnerMessage) -> Result<(), ConnectError> {
        self.socket
            .send(Message::Text(m.encode().into()))
            .map_err(|e| ConnectError::Transient(format!("cannot send to the bot: {e}")))
    }

    /// Waits for the next bot message until `deadline`, sending keep-alive
    /// pings as needed. `Ok(None)`: the deadline passed.
    pub fn recv_until(&mut self, deadline: Instant) -> Result<Option<BotMessage>, ConnectError> {
        loop {
            if Instant::now() >= deadline {
                return Ok(None);
            }
            if self.last_heard.elapsed() > DEAD_AFTER {
                return Err(ConnectError::Transient("the bot stopped answering".into()));
            }
            if self.last_ping.elapsed() > PING_EVERY {
                self.last_ping = Instant::now();
                self.nonce += 1;
                let nonce = self.nonce;
                self.send(&RunnerMessage::Ping { nonce })?;
            }
            match self.socket.read() {
                Ok(Message::Text(t)) => {
                    self.last_heard = Instant::now();
                    match BotMessage::decode(&t) {
                        Ok(BotMessage::Ping { nonce }) => {
                            self.send(&RunnerMessage::Pong { nonce })?;
                        }
                        Ok(BotMessage::Pong { .. }) => {}
                        Ok(m) => return Ok(Some(m)),
                        Err(e) => {
                            return Err(ConnectError::Permanent(format!(
                                "the bot sent a message this runner cannot read ({e}); upgrade the runner"
                            )));
                        }
                    }
                }
                Ok(Message::Close(frame)) => {
                    let (code, why) = close_reason(frame.as_ref());
                    return Err(classify_close(code, why));
                }
                Ok(_) => self.last_heard = Instant::now(),
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => {
                    return Err(ConnectError::Transient(format!(
                        "lost the connection to the bot: {e}"
                    )));
                }
            }
        }
    }

    /// Closes politely.
    pub fn close(mut self) {
        let _ = self.socket.close(None);
        let _ = self.socket.flush();
    }
}

/// How waiting went, for the messages shown to the agent.
pub enum Progress<'a> {
    /// The bot stored the request; it expires in `left`.
    Waiting {
        left: Duration,
        review_url: Option<&'a str>,
    },
    /// The connection dropped; trying again.
    Reconnecting { why: &'a str },
    /// Still waiting, `left` to go.
    StillWaiting { left: Duration },
}

/// The end of a wait.
#[derive(Debug)]
pub enum Answer {
    /// The bot's decision for exactly this request and command.
    Decided(DecisionMessage),
    /// The bot refused the request or the runner; the reason says why.
    Rejected(String),
    /// The bot could not be reached (or stopped answering) in time.
    Unreachable(String),
    /// The agent was interrupted (SIGINT, SIGTERM, SIGHUP) while waiting;
    /// the request was cancelled if the bot had it.
    Interrupted,
    /// [`ask_until`] only: the bot holds the request, still pending, and the
    /// caller's own time ran out first. The request stays open on the bot.
    StillPending,
}

/// Set when the process is asked to stop while it waits.
fn interrupt_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        // If a handler cannot be installed, the default action (exit)
        // still ends the wait without running anything.
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    flag
}

/// Cancels the request on an open connection and waits briefly for the
/// bot to confirm.
fn cancel(conn: &mut Connection, req: &ReviewRequest) {
    if conn
        .send(&RunnerMessage::Cancel {
            request_id: req.id.clone(),
        })
        .is_ok()
    {
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(Some(m)) = conn.recv_until(deadline) {
            if matches!(&m, BotMessage::Decision(d) if d.request_id == req.id)
                || matches!(&m, BotMessage::Rejected { request_id, .. } if *request_id == req.id)
            {
                break;
            }
        }
    }
}

/// Submits `req` and waits for its decision.
pub fn ask(cfg: &BotConfig, req: &ReviewRequest, progress: impl FnMut(Progress)) -> Answer {
    ask_until(cfg, req, None, progress)
}

/// [`ask`], but never past `until`: when the bot holds the request and no
/// decision has come by then, the connection is closed without cancelling
/// and the answer is [`Answer::StillPending`]. A request the bot never
/// confirmed is [`Answer::Unreachable`]. Re-submitting the same request
/// later (same id, same hash) picks up its decision.
pub fn ask_until(
    cfg: &BotConfig,
    req: &ReviewRequest,
    until: Option<Instant>,
    mut progress: impl FnMut(Progress),
) -> Answer {
    let interrupted = interrupt_flag();
    let stop = || interrupted.load(std::sync::atomic::Ordering::SeqCst);
    let start = Instant::now();
    let cap = |d: Instant| until.map_or(d, |u| d.min(u));
    // Until the bot has the request, the connect timeout bounds the wait;
    // after that, the request's own deadline does.
    let mut deadline = cap(start + cfg.connect_timeout);
    let mut stored = false;
    let mut backoff = Duration::from_millis(100);
    let mut last_error = String::new();
    let mut last_reminder = Instant::now();
    loop {
        if Instant::now() >= deadline {
            if stored && until.is_some_and(|u| Instant::now() >= u) {
                return Answer::StillPending;
            }
            return Answer::Unreachable(if stored {
                format!(
                    "the request's deadline passed while the bot could not be reached ({last_error})"
                )
            } else {
                format!(
                    "could not reach the bot at {} within {}s ({last_error})",
                    cfg.url,
                    cfg.connect_timeout.as_secs_f64()
                )
            });
        }
        let attempt = Connection::open(cfg, deadline).and_then(|mut conn| {
            conn.send(&RunnerMessage::Submit {
                request: Box::new(req.clone()),
            })?;
            Ok(conn)
        });
        let mut conn = match attempt {
            Ok(c) => c,
            Err(ConnectError::Permanent(why)) => return Answer::Rejected(why),
            Err(ConnectError::Transient(why)) => {
                if stored && last_error.is_empty() {
                    progress(Progress::Reconnecting { why: &why });
                }
                last_error = why;
                let until = Instant::now()
                    + backoff.min(deadline.saturating_duration_since(Instant::now()));
                while Instant::now() < until {
                    if stop() {
                        return Answer::Interrupted;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                backoff = (backoff * 2).min(Duration::from_secs(3));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        loop {
            if stop() {
                cancel(&mut conn, req);
                conn.close();
                return Answer::Interrupted;
            }
            if last_reminder.elapsed() >= Duration::from_secs(60) && stored {
                last_reminder = Instant::now();
                progress(Progress::StillWaiting {
                    left: deadline.saturating_duration_since(Instant::now()),
                });
            }
            let wait_until = (Instant::now() + Duration::from_millis(250)).min(deadline);
            match conn.recv_until(wait_until) {
                Ok(None) => {
                    if Instant::now() >= deadline {
                        conn.close();
                        if stored && until.is_some_and(|u| Instant::now() >= u) {
                            return Answer::StillPending;
                        }
                        break;
                    }
                }
                Ok(Some(BotMessage::Pending {
                    request_id,
                    expires_at,
                    server_time,
                    review_url,
                })) if request_id == req.id => {
                    let left = Duration::from_millis((expires_at - server_time).max(0) as u64);
                    // A few seconds' grace past the deadline for the bot's own
                    // expiry message to arrive.
                    deadline = cap(Instant::now() + left + Duration::from_secs(5));
                    if !stored {
                        progress(Progress::Waiting {
                            left,
                            review_url: review_url.as_deref(),
                        });
                    }
                    stored = true;
                    last_error.clear();
                }
                Ok(Some(BotMessage::Decision(d))) if d.request_id == req.id => {
                    let _ = conn.send(&RunnerMessage::Ack {
                        request_id: d.request_id.clone(),
                    });
                    conn.close();
                    if d.command_hash != req.command_hash {
                        return Answer::Rejected(
                            "the bot's decision is for a different command than this one".into(),
                        );
                    }
                    return Answer::Decided(d);
                }
                Ok(Some(BotMessage::Rejected { request_id, reason })) if request_id == req.id => {
                    conn.close();
                    return Answer::Rejected(format!("the bot refused the request: {reason}"));
                }
                Ok(Some(_)) => {}
                Err(ConnectError::Permanent(why)) => return Answer::Rejected(why),
                Err(ConnectError::Transient(why)) => {
                    if stored {
                        progress(Progress::Reconnecting { why: &why });
                    }
                    last_error = why;
                    break;
                }
            }
        }
    }
}

/// Milliseconds now, for events.
pub fn now() -> i64 {
    now_ms()
}

#[cfg(test)]
mod tests {
    use super::check_transport;

    #[test]
    fn a_token_goes_in_clear_text_only_to_this_machine_unless_allowed() {
        for ok in [
            "https://bot.example.com",
            "wss://bot.example.com:8443",
            "http://127.0.0.1:8470",
            "http://127.8.9.10:8470",
            "ws://localhost:8470",
            "http://LOCALHOST",
            "http://[::1]:8470",
        ] {
            assert!(check_transport(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "http://bot.example.com:8470",
            "ws://10.0.0.5:8470",
            "http://[2001:db8::1]:8470",
            "http://localhost.evil.example",
            "http://127.0.0.1@evil.example",
        ] {
            let err = check_transport(bad, false).expect_err(bad).to_string();
            assert!(err.contains("HOLDPOINT_ALLOW_INSECURE_HTTP"), "{err}");
            assert!(
                check_transport(bad, true).is_ok(),
                "allowed when said: {bad}"
            );
        }
    }
}

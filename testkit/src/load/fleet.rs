//! Runners on the bot's websocket, one task each on one runtime: enough of
//! them to measure the bot's memory per connection, and quick enough to
//! time a decision's relay to the microsecond. Each connects, says hello,
//! pings every [`PING_EVERY`], acknowledges every decision and counts what
//! it did not expect.

use super::http::Http;
use futures_util::{SinkExt, StreamExt, stream};
use holdpoint_shared::protocol::{
    AuditEvent, BotMessage, DecisionMessage, PROTOCOL_VERSION, ReviewRequest, RunnerMessage,
    WS_PATH,
};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// Runners send a ping this often (the bot closes after 90 silent seconds).
pub const PING_EVERY: Duration = Duration::from_secs(20);

pub type Ws = WebSocketStream<TcpStream>;

/// What a runner saw of one decision.
pub struct Got {
    /// When the decision frame was read (before the ack was sent).
    pub at: Instant,
    pub decision: DecisionMessage,
}

enum Cmd {
    Submit {
        request: Box<ReviewRequest>,
        pending: oneshot::Sender<Result<Instant, String>>,
        decided: oneshot::Sender<Got>,
    },
    /// A batch of spooled audit events, answered by the ids the bot acked.
    Audit {
        events: Vec<AuditEvent>,
        acked: oneshot::Sender<Vec<String>>,
    },
}

/// Counters every runner task updates.
#[derive(Default)]
pub struct Shared {
    /// Decisions a runner received twice.
    pub duplicates: AtomicU64,
    /// Frames no runner expected.
    pub unexpected: AtomicU64,
    /// Connections the bot closed.
    pub closed_by_bot: AtomicU64,
    /// Why the first of them was closed.
    pub close_reason: Mutex<Option<String>>,
}

/// One runner's task, and how to talk to it.
pub struct Runner {
    tx: mpsc::UnboundedSender<Cmd>,
    task: tokio::task::JoinHandle<()>,
}

/// Connects, says hello and waits for the welcome.
pub async fn connect(addr: SocketAddr, token: &str, host: &str) -> Result<Ws> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut req = format!("ws://{addr}{WS_PATH}").into_client_request()?;
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse()?);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = client_async_with_config(req, tcp, Some(config)).await?;
    let hello = RunnerMessage::Hello {
        protocol: PROTOCOL_VERSION,
        runner_version: "relay-bench".into(),
        host: host.to_string(),
    };
    ws.send(Message::text(hello.encode())).await?;
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .map_err(|_| "no welcome within 10 s")?;
    match first {
        Some(Ok(Message::Text(t))) => match BotMessage::decode(&t)? {
            BotMessage::Welcome { protocol, .. } if protocol == PROTOCOL_VERSION => Ok(ws),
            other => Err(format!("expected welcome, got {other:?}").into()),
        },
        Some(Ok(Message::Close(f))) => Err(format!("closed instead of welcome: {f:?}").into()),
        Some(Ok(other)) => Err(format!("expected welcome, got {other:?}").into()),
        Some(Err(e)) => Err(e.into()),
        None => Err("closed before welcome".into()),
    }
}

/// Starts the task of a connected runner.
pub fn spawn_runner(ws: Ws, shared: Arc<Shared>) -> Runner {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(runner_task(ws, rx, shared));
    Runner { tx, task }
}

type Waiting = HashMap<
    String,
    (
        Option<oneshot::Sender<Result<Instant, String>>>,
        Option<oneshot::Sender<Got>>,
    ),
>;

async fn runner_task(mut ws: Ws, mut rx: mpsc::UnboundedReceiver<Cmd>, shared: Arc<Shared>) {
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut nonce = 0u64;
    let mut waiting: Waiting = HashMap::new();
    let mut decided: HashSet<String> = HashSet::new();
    // Audit batches sent, by their first event's id.
    let mut audits: HashMap<String, oneshot::Sender<Vec<String>>> = HashMap::new();
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Cmd::Submit { request, pending, decided }) => {
                    let id = request.id.clone();
                    let frame = RunnerMessage::Submit { request }.encode();
                    if let Err(e) = ws.send(Message::text(frame)).await {
                        let _ = pending.send(Err(format!("cannot send: {e}")));
                        return;
                    }
                    waiting.insert(id, (Some(pending), Some(decided)));
                }
                Some(Cmd::Audit { events, acked }) => {
                    let Some(first) = events.first().map(|e| e.id.clone()) else {
                        let _ = acked.send(Vec::new());
                        continue;
                    };
                    let frame = RunnerMessage::Audit { events }.encode();
                    if ws.send(Message::text(frame)).await.is_err() {
                        return;
                    }
                    audits.insert(first, acked);
                }
                None => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    return;
                }
            },
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(f))) => {
                        shared.closed_by_bot.fetch_add(1, Ordering::Relaxed);
                        let mut g = shared.close_reason.lock().unwrap_or_else(|e| e.into_inner());
                        if g.is_none() {
                            *g = Some(format!("{f:?}"));
                        }
                        return;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        shared.closed_by_bot.fetch_add(1, Ordering::Relaxed);
                        let mut g = shared.close_reason.lock().unwrap_or_else(|e| e.into_inner());
                        if g.is_none() {
                            *g = Some(format!("error: {e}"));
                        }
                        return;
                    }
                    None => {
                        shared.closed_by_bot.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                let at = Instant::now();
                match BotMessage::decode(&text) {
                    Ok(BotMessage::Pending { request_id, .. }) => {
                        if let Some((p, _)) = waiting.get_mut(&request_id)
                            && let Some(p) = p.take()
                        {
                            let _ = p.send(Ok(at));
                        }
                    }
                    Ok(BotMessage::Decision(d)) => {
                        if !decided.insert(d.request_id.clone()) {
                            shared.duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                        let ack = RunnerMessage::Ack { request_id: d.request_id.clone() };
                        if ws.send(Message::text(ack.encode())).await.is_err() {
                            return;
                        }
                        if let Some((p, dtx)) = waiting.remove(&d.request_id) {
                            if let Some(p) = p {
                                // A decision without a pending first (a
                                // re-submission): pending is implied.
                                let _ = p.send(Ok(at));
                            }
                            if let Some(dtx) = dtx {
                                let _ = dtx.send(Got { at, decision: d });
                            }
                        }
                    }
                    Ok(BotMessage::Rejected { request_id, reason }) => {
                        if let Some((Some(p), _)) = waiting.remove(&request_id) {
                            let _ = p.send(Err(format!("rejected: {reason}")));
                        }
                    }
                    Ok(BotMessage::Ping { nonce }) => {
                        let pong = RunnerMessage::Pong { nonce };
                        if ws.send(Message::text(pong.encode())).await.is_err() {
                            return;
                        }
                    }
                    Ok(BotMessage::Pong { .. }) => {}
                    Ok(BotMessage::AuditAck { ids }) => {
                        match ids.first().and_then(|id| audits.remove(id)) {
                            Some(acked) => {
                                let _ = acked.send(ids);
                            }
                            None => {
                                shared.unexpected.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Ok(_) | Err(_) => {
                        shared.unexpected.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ = pings.tick() => {
                nonce += 1;
                if ws.send(Message::text(RunnerMessage::Ping { nonce }.encode())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Submits a request on a runner; returns when it is pending, with the
/// receiver of its decision.
pub async fn submit(
    runner: &Runner,
    request: ReviewRequest,
) -> Result<(Instant, oneshot::Receiver<Got>)> {
    let (ptx, prx) = oneshot::channel();
    let (dtx, drx) = oneshot::channel();
    runner
        .tx
        .send(Cmd::Submit {
            request: Box::new(request),
            pending: ptx,
            decided: dtx,
        })
        .map_err(|_| "the runner's connection is gone")?;
    let at = tokio::time::timeout(Duration::from_secs(30), prx)
        .await
        .map_err(|_| "no pending within 30 s")?
        .map_err(|_| "the runner's connection closed before pending")??;
    Ok((at, drx))
}

/// Sends a batch of audit events, as a runner flushing its spool does;
/// returns the ids the bot acknowledged (stored, or stored before).
pub async fn send_audit(runner: &Runner, events: Vec<AuditEvent>) -> Result<Vec<String>> {
    let (tx, rx) = oneshot::channel();
    runner
        .tx
        .send(Cmd::Audit { events, acked: tx })
        .map_err(|_| "the runner's connection is gone")?;
    Ok(tokio::time::timeout(Duration::from_secs(30), rx)
        .await
        .map_err(|_| "no audit ack within 30 s")?
        .map_err(|_| "the runner's connection closed before the ack")?)
}

/// Connects `count` runners (64 handshakes at a time), spreading them over
/// the tokens. Stops early at the first failures and says why.
pub async fn connect_many(
    addr: SocketAddr,
    tokens: &[String],
    first: usize,
    count: usize,
    shared: &Arc<Shared>,
) -> (Vec<Runner>, Vec<String>) {
    let results: Vec<Result<Ws>> = stream::iter(first..first + count)
        .map(|i| {
            let token = tokens[i % tokens.len()].clone();
            async move { connect(addr, &token, &format!("bench-{i}")).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut runners = Vec::with_capacity(count);
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(ws) => runners.push(spawn_runner(ws, shared.clone())),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (runners, errors)
}

/// Closes the runners' connections and waits for their tasks.
pub async fn close_runners(runners: Vec<Runner>) {
    let tasks: Vec<_> = runners
        .into_iter()
        .map(|r| {
            drop(r.tx);
            r.task
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// The bot's own count of open runner connections, from /metrics.
pub async fn connected(addr: SocketAddr) -> Option<u64> {
    let r = Http::new(addr)
        .send("GET", "/metrics", &[], b"")
        .await
        .ok()?;
    String::from_utf8_lossy(&r.body)
        .lines()
        .find_map(|l| l.strip_prefix("holdpoint_runners_connected "))
        .and_then(|v| v.trim().parse().ok())
}

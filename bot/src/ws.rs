//! The runner websocket at `/v1/runners/ws`: authentication, the hello
//! exchange, then one loop per connection that reads runner messages and
//! writes what the hub queues for it.
//!
//! A frame that is not a valid message closes the connection with a code and
//! a reason (see [`holdpoint_shared::protocol::close`]); it never takes the
//! bot down and never changes a request.

use crate::core::{
    Auth, Bot, ConnId, Decided, LifecycleError, NewEvent, Outbound, Refusal, RunnerId, Submitted,
};
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use holdpoint_shared::protocol::{
    self, BotMessage, MAX_AUDIT_BATCH, MAX_FRAME_BYTES, PROTOCOL_VERSION, RunnerMessage, close,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A connection that sends nothing for this long is closed. Runners send a
/// `ping` every 20 seconds.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The upgrade handler: the token is checked before the websocket exists.
pub async fn upgrade(
    State(bot): State<Arc<Bot>>,
    peer: crate::listener::Peer,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // An address that keeps failing is answered before its token is
    // looked at; a runner elsewhere is not affected.
    if let Some(res) = peer.throttled(&bot) {
        return res;
    }
    let Some(token) = bearer(&headers) else {
        peer.failed(&bot);
        bot.metrics().auth_failure();
        return (
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer TOKEN`: make one with `holdpoint-bot runner add NAME`\n",
        )
            .into_response();
    };
    let runner = match bot.authenticate(token).await {
        Ok(Auth::Runner(name)) => name,
        Ok(Auth::Revoked(name)) => {
            peer.failed(&bot);
            bot.metrics().auth_failure();
            tracing::warn!(runner = name, "refused a revoked token");
            return (
                StatusCode::UNAUTHORIZED,
                "this runner's token was revoked\n",
            )
                .into_response();
        }
        Ok(Auth::Unknown) => {
            peer.failed(&bot);
            bot.metrics().auth_failure();
            tracing::warn!("refused an unknown runner token");
            return (StatusCode::UNAUTHORIZED, "unknown runner token\n").into_response();
        }
        Err(e) => {
            tracing::error!("cannot check a runner token: {e}");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the bot cannot reach its database\n",
            )
                .into_response();
        }
    };
    let cap = bot.config().limits.connections_per_runner as usize;
    if bot.connections_of(&runner) >= cap {
        bot.metrics().limit_refused("connections");
        if refusal_logged(&runner.name) {
            tracing::warn!(runner = %runner, "refused a connection: the runner has {cap} open");
        }
        return (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "this runner already has {cap} connections open (limits.connections_per_runner)\n"
            ),
        )
            .into_response();
    }
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .on_upgrade(move |socket| session(bot, runner, socket))
}

/// A close reason fits in 123 bytes.
fn reason(text: &str) -> String {
    let mut end = text.len().min(123);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

async fn close_with(socket: &mut WebSocket, code: u16, why: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason(why).into(),
        })))
        .await;
}

async fn send(socket: &mut WebSocket, m: &BotMessage) -> bool {
    socket.send(Message::Text(m.encode().into())).await.is_ok()
}

/// What the read side decided.
enum Step {
    Continue,
    Close(u16, String),
}

async fn session(bot: Arc<Bot>, runner: RunnerId, mut socket: WebSocket) {
    // Hello first.
    // A connection that never says hello is dropped (`limits.client_timeout`).
    let hello_timeout = bot.config().limits.client_timeout;
    let first = match tokio::time::timeout(hello_timeout, socket.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => t,
        Ok(Some(Ok(_))) => {
            bot.metrics().bad_frame();
            return close_with(
                &mut socket,
                close::OUT_OF_ORDER,
                "expected a hello text frame",
            )
            .await;
        }
        Ok(_) => return,
        Err(_) => {
            let why = format!(
                "no hello within {}",
                crate::time::human_duration(hello_timeout.as_millis() as i64)
            );
            return close_with(&mut socket, close::IDLE, &why).await;
        }
    };
    match RunnerMessage::decode(&first) {
        Ok(RunnerMessage::Hello { protocol: v, .. }) if v == PROTOCOL_VERSION => {}
        Ok(RunnerMessage::Hello { protocol: v, .. }) => {
            bot.metrics().bad_frame();
            let why = format!(
                "unsupported protocol version {v}; this bot speaks {PROTOCOL_VERSION}: upgrade the older side"
            );
            return close_with(&mut socket, close::UNSUPPORTED_VERSION, &why).await;
        }
        Ok(_) => {
            bot.metrics().bad_frame();
            return close_with(
                &mut socket,
                close::OUT_OF_ORDER,
                "the first message must be hello",
            )
            .await;
        }
        Err(e) => {
            bot.metrics().bad_frame();
            return close_with(&mut socket, close::BAD_MESSAGE, &e.to_string()).await;
        }
    }
    // Counted before it is welcomed, so concurrent handshakes cannot pass
    // the limit together.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let Some(conn) = bot.connect(&runner, tx) else {
        let cap = bot.config().limits.connections_per_runner;
        return close_with(
            &mut socket,
            close::TOO_MANY_CONNECTIONS,
            &format!("this runner already has {cap} connections open"),
        )
        .await;
    };
    let welcome = BotMessage::Welcome {
        protocol: PROTOCOL_VERSION,
        runner: runner.name.clone(),
        bot_version: env!("CARGO_PKG_VERSION").to_string(),
        server_time: bot.now_ms(),
    };
    if !send(&mut socket, &welcome).await {
        bot.disconnect(conn);
        return;
    }
    if let Err(e) = bot.seen(&runner).await {
        tracing::warn!("cannot record that runner {runner} connected: {e}");
    }

    tracing::debug!(runner = %runner, conn = %conn, "runner connected");
    // Only what the runner sends keeps the connection alive.
    let mut idle_deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
    loop {
        tokio::select! {
            incoming = tokio::time::timeout_at(idle_deadline, socket.recv()) => {
                idle_deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
                let step = match incoming {
                    Err(_) => Step::Close(close::IDLE, "nothing received for 90 seconds".into()),
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        let text = e.to_string();
                        if text.contains("too long") || text.contains("Space limit") || text.contains("size") {
                            bot.metrics().bad_frame();
                            Step::Close(close::TOO_LARGE, format!("frame larger than {MAX_FRAME_BYTES} bytes"))
                        } else {
                            break;
                        }
                    }
                    Ok(Some(Ok(Message::Text(t)))) => handle(&bot, &runner, conn, &mut socket, &t).await,
                    Ok(Some(Ok(Message::Binary(_)))) => {
                        bot.metrics().bad_frame();
                        Step::Close(close::BAD_MESSAGE, "binary frames are not part of the protocol".into())
                    }
                    Ok(Some(Ok(Message::Close(_)))) => break,
                    Ok(Some(Ok(_))) => Step::Continue,
                };
                if let Step::Close(code, why) = step {
                    close_with(&mut socket, code, &why).await;
                    break;
                }
            }
            out = rx.recv() => match out {
                Some(Outbound::Send(m)) => {
                    if !send(&mut socket, &m).await {
                        break;
                    }
                }
                Some(Outbound::Close(code, why)) => {
                    close_with(&mut socket, code, &why).await;
                    break;
                }
                None => break,
            }
        }
    }
    bot.disconnect(conn);
    tracing::debug!(runner = %runner, conn = %conn, "runner disconnected");
}

async fn handle(
    bot: &Bot,
    runner: &RunnerId,
    conn: ConnId,
    socket: &mut WebSocket,
    text: &str,
) -> Step {
    let msg = match RunnerMessage::decode(text) {
        Ok(m) => m,
        Err(e) => {
            bot.metrics().bad_frame();
            return Step::Close(close::BAD_MESSAGE, e.to_string());
        }
    };
    let reply = match msg {
        RunnerMessage::Hello { .. } => {
            bot.metrics().bad_frame();
            return Step::Close(close::OUT_OF_ORDER, "hello was already said".into());
        }
        RunnerMessage::Ping { nonce } => BotMessage::Pong { nonce },
        RunnerMessage::Pong { .. } => return Step::Continue,
        RunnerMessage::Submit { request } => {
            // Whether the runner is still active is checked in the
            // submission's own transaction (`LifecycleError::Revoked`).
            match bot.submit_on(conn, runner, &request).await {
                Ok(Submitted::Pending { expires_at }) => BotMessage::Pending {
                    request_id: request.id.clone(),
                    expires_at,
                    server_time: bot.now_ms(),
                    review_url: Some(format!("{}/#{}", bot.config().base_url(), request.id)),
                },
                Ok(Submitted::Decided(d)) => BotMessage::Decision(d),
                Err(LifecycleError::Revoked) => {
                    return Step::Close(close::REVOKED, "this runner's token was revoked".into());
                }
                Err(e) => {
                    if refusal_logged(&runner.name) {
                        tracing::warn!(runner = %runner, request = request.id, "refused a submission: {e}");
                    }
                    BotMessage::Rejected {
                        request_id: request.id.clone(),
                        reason: e.to_string(),
                    }
                }
            }
        }
        RunnerMessage::Cancel { request_id } => match bot.cancel(runner, &request_id).await {
            Ok(Decided::Won(d) | Decided::Already(d)) => BotMessage::Decision(d),
            Ok(Decided::Refused(why)) => BotMessage::Rejected {
                request_id,
                reason: refusal(&why).into(),
            },
            Ok(Decided::NotFound) => BotMessage::Rejected {
                request_id,
                reason: "no such request".into(),
            },
            // A cancellation is never a vote.
            Ok(Decided::Voted { .. }) => BotMessage::Rejected {
                request_id,
                reason: "a runner cannot decide".into(),
            },
            Err(e) => BotMessage::Rejected {
                request_id,
                reason: e.to_string(),
            },
        },
        RunnerMessage::Ack { request_id } => {
            if let Err(e) = bot.acknowledged(conn, runner, &request_id).await {
                tracing::warn!(runner = %runner, request = request_id, "cannot record an ack: {e}");
            }
            return Step::Continue;
        }
        RunnerMessage::Audit { events } => {
            // A revoked runner's record is refused at once, not after the
            // sweep closes its connection.
            match bot.runner_active(runner).await {
                Ok(true) => {}
                Ok(false) => {
                    return Step::Close(close::REVOKED, "this runner's token was revoked".into());
                }
                // No ack: the runner keeps the events and sends them again.
                Err(e) => {
                    tracing::error!(
                        runner = %runner,
                        "cannot check the runner before storing its audit events: {e}"
                    );
                    return Step::Continue;
                }
            }
            if events.len() > MAX_AUDIT_BATCH {
                bot.metrics().bad_frame();
                return Step::Close(
                    close::BAD_MESSAGE,
                    format!("more than {MAX_AUDIT_BATCH} audit events in one batch"),
                );
            }
            if let Some(bad) = events.iter().find(|e| !protocol::is_hex(&e.id, 32)) {
                bot.metrics().bad_frame();
                return Step::Close(
                    close::BAD_MESSAGE,
                    format!("audit event id {:?} is not 32 hex digits", reason(&bad.id)),
                );
            }
            if let Err(why) = audit_events_check(&events) {
                bot.metrics().bad_frame();
                return Step::Close(close::BAD_MESSAGE, why);
            }
            let named: Vec<String> = events.iter().filter_map(|e| e.request_id.clone()).collect();
            match bot.foreign_requests(runner, &named).await {
                Ok(foreign) if foreign.is_empty() => {}
                Ok(foreign) => {
                    bot.metrics().bad_frame();
                    tracing::warn!(
                        runner = %runner,
                        request = foreign[0],
                        "refused audit events that name another runner's request"
                    );
                    return Step::Close(
                        close::BAD_MESSAGE,
                        "an audit event names a request this runner did not submit".into(),
                    );
                }
                Err(e) => {
                    tracing::error!(runner = %runner, "cannot check the requests audit events name: {e}");
                    return Step::Continue;
                }
            }
            // The runner's clock says when; a time ahead of the bot's is
            // not believed (the event keeps what the runner said).
            let latest = bot.now_ms().saturating_add(MAX_CLOCK_AHEAD_MS);
            let rows: Vec<NewEvent> = events
                .iter()
                .map(|e| NewEvent {
                    // Stored under the runner identity: event ids are
                    // unique per runner, and the record says which
                    // registration sent it.
                    event_id: format!("{}:{}", runner.id, e.id),
                    at: e.at.min(latest),
                    kind: "verdict".into(),
                    runner: Some(runner.name.clone()),
                    request_id: e.request_id.clone(),
                    body: serde_json::to_value(e).unwrap_or_default(),
                })
                .collect();
            match bot.audit(&rows).await {
                Ok(fresh) => {
                    for (e, new) in events.iter().zip(fresh) {
                        if new {
                            bot.metrics().command(e.decision);
                        }
                    }
                    BotMessage::AuditAck {
                        ids: events.into_iter().map(|e| e.id).collect(),
                    }
                }
                Err(e) => {
                    // No ack: the runner keeps the events and sends them again.
                    tracing::error!(runner = %runner, "cannot store audit events: {e}");
                    return Step::Continue;
                }
            }
        }
    };
    if send(socket, &reply).await {
        Step::Continue
    } else {
        Step::Close(close::GOING_AWAY, "write failed".into())
    }
}

/// Whether to log a refusal for `runner` now: at most one line per runner
/// every ten seconds, so a flooding runner cannot flood the log too.
fn refusal_logged(runner: &str) -> bool {
    use std::sync::{Mutex, OnceLock};
    static LAST: OnceLock<Mutex<std::collections::HashMap<String, std::time::Instant>>> =
        OnceLock::new();
    let mut last = match LAST.get_or_init(Default::default).lock() {
        Ok(l) => l,
        Err(p) => p.into_inner(),
    };
    if last.len() > 10_000 {
        last.clear();
    }
    let now = std::time::Instant::now();
    match last.get(runner) {
        Some(at) if now.duration_since(*at) < Duration::from_secs(10) => false,
        _ => {
            last.insert(runner.to_string(), now);
            true
        }
    }
}

/// How far ahead of the bot's clock a runner's event time may be.
const MAX_CLOCK_AHEAD_MS: i64 = 5 * 60 * 1000;

/// What a runner records of itself: one of the runner's actions, rule ids
/// that look like rule ids, a request id that looks like one. Anything else
/// is not a runner's record (free text such as `approved by web:alice`).
fn audit_events_check(events: &[holdpoint_shared::protocol::AuditEvent]) -> Result<(), String> {
    const ACTIONS: [&str; 3] = ["ran", "refused", "submitted"];
    let rule_id = |r: &str| {
        !r.is_empty()
            && r.len() <= 128
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
    };
    for e in events {
        if !ACTIONS.contains(&e.action.as_str()) {
            return Err(format!(
                "audit event {}: action {:?} is not one of ran, refused, submitted",
                e.id,
                reason(&e.action)
            ));
        }
        if let Some(bad) = e.rules.iter().find(|r| !rule_id(r)) {
            return Err(format!(
                "audit event {}: {:?} is not a rule id",
                e.id,
                reason(bad)
            ));
        }
        match (&e.request_id, e.action.as_str()) {
            (Some(id), "submitted") if protocol::is_hex(id, 32) => {}
            (None, "ran" | "refused") => {}
            _ => {
                return Err(format!(
                    "audit event {}: a request id belongs to `submitted` events only, as 32 hex digits",
                    e.id
                ));
            }
        }
    }
    Ok(())
}

/// A refusal as a runner reads it in a `rejected` frame.
fn refusal(r: &Refusal) -> &'static str {
    match r {
        Refusal::OtherRunner => "another runner submitted this request",
        Refusal::OwnRequest => "the requester cannot approve their own request",
        Refusal::CommandChanged => "the command hash does not match",
        Refusal::NotAReviewer
        | Refusal::DirectoryUnavailable
        | Refusal::AlreadyVoted
        | Refusal::GroupsNeeded(_) => "a runner cannot decide",
    }
}

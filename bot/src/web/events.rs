//! `GET /api/events`: server-sent events telling the page to re-read the
//! queue. An event carries no request data, only a request id (or nothing);
//! the page always re-reads `/api/requests`, which stays the one source of
//! what it shows.
//!
//! Events: `submitted` and `decided` (data: the request id), for every
//! change on the core's feed, wherever it was made (this process, the CLI,
//! another replica); `changed` when the feed could not be read and the
//! page should look again.

use super::api::require_session;
use super::auth;
use crate::core::Session;
use crate::core::{Bot, Change, FeedError};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use holdpoint_shared::protocol::is_hex;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// A keep-alive comment this often, so proxies keep the stream open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How often a stream checks that its session is still valid; a logged-out
/// browser stops getting events.
const SESSION_CHECK: Duration = Duration::from_secs(30);

/// At most this many open streams; more get 503 (the page still polls).
const MAX_STREAMS: usize = 256;

static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// Counts an open stream for as long as it lives.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        let prev = OPEN_STREAMS.fetch_add(1, Ordering::SeqCst);
        if prev >= MAX_STREAMS {
            OPEN_STREAMS.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The events a task queues, as a stream.
struct Events(mpsc::Receiver<Event>);

impl futures_core::Stream for Events {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|e| e.map(Ok))
    }
}

fn named(c: &Change) -> Event {
    let name = if c.status.is_final() {
        "decided"
    } else {
        "submitted"
    };
    if is_hex(&c.request_id, 32) {
        Event::default().event(name).data(c.request_id.as_str())
    } else {
        Event::default().event("changed").data("")
    }
}

async fn run(bot: Arc<Bot>, session: Session, tx: mpsc::Sender<Event>, _slot: Slot) {
    let mut feed = bot.subscribe();
    let mut check = tokio::time::interval(SESSION_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.tick().await;
    let left = Duration::from_millis(
        u64::try_from(session.expires_at.saturating_sub(bot.now_ms())).unwrap_or(0),
    );
    let session_ends = tokio::time::sleep(left);
    tokio::pin!(session_ends);
    loop {
        let event = tokio::select! {
            _ = tx.closed() => break,
            _ = &mut session_ends => break,
            change = feed.next(&bot) => match change {
                Ok(c) => named(&c),
                Err(FeedError::Closed) => break,
                Err(FeedError::Db(e)) => {
                    tracing::warn!("event stream: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Event::default().event("changed").data("")
                }
            },
            _ = check.tick() => {
                if !matches!(auth::still_valid(&bot, &session).await, Ok(true)) {
                    break;
                }
                continue;
            }
        };
        if tx.send(event).await.is_err() {
            break;
        }
    }
}

/// `GET /api/events`.
pub async fn stream(State(bot): State<Arc<Bot>>, headers: HeaderMap) -> Response {
    let session = match require_session(&bot, &headers).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let Some(slot) = Slot::take() else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "error": "too many open event streams" })),
        )
            .into_response();
    };
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(run(bot, session, tx, slot));
    let mut res = Sse::new(Events(rx))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

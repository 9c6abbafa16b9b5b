//! `GET /api/events`: server-sent events telling the page to re-read the
//! queue. An event carries no request data, only a request id (or nothing);
//! the page always re-reads `/api/requests`, which stays the one source of
//! what it shows.
//!
//! Events: `submitted` and `decided` (data: the request id) for changes
//! this process made; `changed` when the broadcast lagged or when a change
//! made elsewhere (the CLI, another replica) shows up in the database,
//! which this stream checks every [`FOREIGN_POLL`]: the lifecycle
//! announces only what this process did.

use super::api::require_session;
use super::auth::{self, Session};
use crate::entity::request;
use crate::state::{Bot, Change};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use holdpoint_shared::protocol::{Status, is_hex};
use sea_orm::{ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// A keep-alive comment this often, so proxies keep the stream open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How often a stream looks for changes made by other processes.
pub const FOREIGN_POLL: Duration = Duration::from_secs(2);

/// How often (in foreign polls) a stream checks that its session is still
/// valid; a logged-out browser stops getting events.
const SESSION_CHECK_EVERY: u32 = 15;

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

/// The most pending ids a stream compares; more than this many pending
/// requests and a change beyond them shows only on the page's own poll.
const MAX_WATCHED: u64 = 5000;

/// The ids of the pending requests, as the database has them. Every
/// submission adds one and every decision removes one, wherever it was
/// made, so comparing this set with what the broadcast announced finds the
/// changes other processes made.
async fn pending_ids(bot: &Bot) -> Result<BTreeSet<String>, DbErr> {
    Ok(request::Entity::find()
        .filter(request::Column::Status.eq(Status::Pending.as_str()))
        .order_by_asc(request::Column::CreatedAt)
        .select_only()
        .column(request::Column::Id)
        .limit(MAX_WATCHED)
        .into_tuple::<String>()
        .all(&bot.db)
        .await?
        .into_iter()
        .collect())
}

fn named(name: &'static str, id: &str) -> Event {
    if is_hex(id, 32) {
        Event::default().event(name).data(id)
    } else {
        Event::default().event("changed").data("")
    }
}

async fn run(bot: Arc<Bot>, session: Session, tx: mpsc::Sender<Event>, _slot: Slot) {
    let mut changes = bot.subscribe();
    let mut poll = tokio::time::interval(FOREIGN_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The pending set as this stream expects it: read once, then kept up to
    // date from the broadcast. A difference on a poll is someone else's
    // change (or a broadcast not yet received: one extra re-read).
    let mut expected = pending_ids(&bot).await.ok();
    let mut ticks: u32 = 0;
    let left = Duration::from_millis(
        u64::try_from(session.expires_at.saturating_sub(crate::time::now_ms())).unwrap_or(0),
    );
    let session_ends = tokio::time::sleep(left);
    tokio::pin!(session_ends);
    loop {
        let event = tokio::select! {
            _ = tx.closed() => break,
            _ = &mut session_ends => break,
            change = changes.recv() => match change {
                Ok(Change::Submitted(id)) => {
                    let e = named("submitted", &id);
                    if let Some(set) = &mut expected {
                        set.insert(id);
                    }
                    e
                }
                Ok(Change::Decided(id)) => {
                    let e = named("decided", &id);
                    if let Some(set) = &mut expected {
                        set.remove(&id);
                    }
                    e
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    expected = pending_ids(&bot).await.ok();
                    Event::default().event("changed").data("")
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = poll.tick() => {
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(SESSION_CHECK_EVERY)
                    && !matches!(auth::still_valid(&bot, &session).await, Ok(true))
                {
                    break;
                }
                let Ok(now) = pending_ids(&bot).await else { continue };
                if expected.as_ref() == Some(&now) {
                    continue;
                }
                expected = Some(now);
                Event::default().event("changed").data("")
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

//! The HTTP server: routes, the change feed's reader, the background sweep
//! (expiry, revocations), start-up and graceful shutdown.

use crate::core::Bot;
use anyhow::{Context as _, Result};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use holdpoint_shared::protocol::{WS_PATH, close};
use std::sync::Arc;
use std::time::Duration;

/// How often the sweep runs.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// Every route the bot serves.
pub fn router(bot: Arc<Bot>) -> Router {
    Router::new()
        .route(WS_PATH, get(crate::ws::upgrade))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::web::router())
        .with_state(bot)
}

async fn readyz(State(bot): State<Arc<Bot>>) -> impl IntoResponse {
    match bot.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the database is unreachable: {e}\n"),
        ),
    }
}

async fn metrics(State(bot): State<Arc<Bot>>, headers: axum::http::HeaderMap) -> Response {
    if let Some(token) = &bot.config().metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|g| token.matches(g)) {
            bot.metrics().metrics_refused();
            return (
                axum::http::StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    "Bearer realm=\"holdpoint metrics\"",
                )],
                "/metrics needs `Authorization: Bearer TOKEN` (the bot's metrics_token)\n",
            )
                .into_response();
        }
    }
    // The pending count comes from the database: other replicas and the CLI
    // change it too. A failure shows as -1 rather than a stale number.
    let pending = match bot.pending_count().await {
        Ok(n) => n as i64,
        Err(_) => -1,
    };
    let body = bot
        .metrics()
        .render(pending.max(0) as u64, bot.connections());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The background sweep: expiry, revocations, old feed rows. Failures are
/// logged (at most once a minute) and retried on the next tick; none of
/// them lets a command run. Decisions made by other processes come through
/// the change feed ([`Bot::run_feed`]), not from here.
pub async fn sweep(bot: Arc<Bot>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = std::time::Instant::now() - Duration::from_secs(120);
    loop {
        tick.tick().await;
        let errors = bot.sweep_once().await;
        if !errors.is_empty() && last_error.elapsed() > Duration::from_secs(60) {
            last_error = std::time::Instant::now();
            tracing::error!("sweep failed: {}", errors.join("; "));
        }
    }
}

/// Serves until SIGINT or SIGTERM.
pub async fn serve(bot: Arc<Bot>) -> Result<()> {
    let tls = match &bot.config().tls {
        Some(files) => Some(Arc::new(
            crate::listener::Tls::load(files).context("cannot serve TLS")?,
        )),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(bot.config().listen)
        .await
        .with_context(|| format!("cannot listen on {}", bot.config().listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        "holdpoint-bot {} listening on {}://{addr} (database: {})",
        env!("CARGO_PKG_VERSION"),
        if tls.is_some() { "https" } else { "http" },
        bot.config().database_display()
    );
    crate::welcome::print(&bot, addr).await?;
    let feed = tokio::spawn(bot.clone().run_feed());
    let sweeper = tokio::spawn(sweep(bot.clone()));
    let reloader = tls
        .clone()
        .map(|t| tokio::spawn(crate::listener::reload_on_hangup(t)));
    let mut app = router(bot.clone());
    let slack = crate::slack::start(&bot).context("cannot start Slack")?;
    if let Some(slack) = &slack {
        app = app.merge(crate::slack::router(slack.clone()));
    }
    // Matrix has no HTTP endpoint: it follows the homeserver's sync stream.
    let matrix = crate::matrix::start(&bot);
    crate::digest::start(&bot, crate::digest::Destinations { slack, matrix });
    // Pagers neither: they follow the feed and call out.
    let _pagers = crate::pager::start(&bot);
    let shutdown_bot = bot.clone();
    let timeout = bot.config().limits.client_timeout;
    let proxies = Arc::new(bot.config().trusted_proxies.clone());
    crate::listener::serve(listener, app, tls, timeout, proxies, async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        shutdown_bot.close_all(close::GOING_AWAY, "the bot is restarting");
    })
    .await;
    sweeper.abort();
    feed.abort();
    if let Some(r) = reloader {
        r.abort();
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

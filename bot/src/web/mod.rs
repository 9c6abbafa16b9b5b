//! The web review queue at `/`: where a reviewer sees what agents want to
//! run and approves or denies it, when no chat is configured.
//!
//! - [`auth`]: single-use login links (printed by the bot, `holdpoint-bot
//!   login-link`) that become a 12-hour session cookie.
//! - [`api`]: the JSON API the page uses (`/api/requests`, approve, deny),
//!   which goes through the request lifecycle like every other front door.
//! - [`events`]: server-sent events, so the page updates as requests arrive
//!   and are decided.
//! - [`pages`]: the page itself (one HTML file, one script, one stylesheet,
//!   all compiled into the binary) and the security headers on every answer.
//!
//! Everything shown here was written by a possibly prompt-injected agent.
//! The server never puts request data into HTML: it sends JSON, and the
//! script builds the page with `textContent` only, making invisible and
//! direction-changing characters visible. The page must never run anything
//! but its own script (the Content-Security-Policy forbids inline code and
//! every other origin), never decide without a session, and never decide
//! on a request other than the one the reviewer saw: a decision carries the
//! command hash the page showed, and a cross-site request cannot make one
//! (JSON content type, a custom header, the Origin checked, `SameSite=Strict`).

pub mod api;
pub mod auth;
pub mod events;
pub mod pages;

pub use crate::core::{LOGIN_LINK_TTL_MS, SESSION_TTL_MS};
pub use api::refusal;
pub use auth::{SESSION_COOKIE, login_link};

use crate::core::Bot;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use std::sync::Arc;

/// The largest request body the web routes read.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The web routes.
pub fn router() -> Router<Arc<Bot>> {
    Router::new()
        .route("/", get(pages::index))
        .route("/login", get(auth::login).post(auth::login_post))
        .route("/assets/app.js", get(pages::script))
        .route("/assets/app.css", get(pages::stylesheet))
        .route("/api/requests", get(api::list))
        .route("/api/requests/{id}", get(api::one))
        .route("/api/requests/{id}/approve", post(api::approve))
        .route("/api/requests/{id}/deny", post(api::deny))
        .route("/api/events", get(events::stream))
        .route("/api/logout", post(auth::logout))
        .route("/audit", get(pages::audit))
        .route("/assets/audit.js", get(pages::audit_script))
        .route("/api/audit", get(api::audit))
        .route("/api/digest", get(api::digest))
        .route("/api/digest/charts/{name}", get(api::digest_chart))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(pages::security_headers))
}

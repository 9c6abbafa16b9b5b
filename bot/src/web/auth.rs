//! Logging in to the web queue: a single-use link becomes a session cookie.
//!
//! Both are stored in `web_tokens` as the SHA-256 of their secret, so the
//! database never holds anything a browser could present. A login link is
//! consumed by one guarded update (`used_at IS NULL AND expires_at > now`),
//! so two browsers racing with the same link cannot both get a session.

use super::pages::{self, Html};
use crate::audit::NewEvent;
use crate::db::{random_hex, sha256_hex};
use crate::entity::web_token;
use crate::state::Bot;
use crate::time::now_ms;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use holdpoint_shared::protocol::is_hex;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set,
};
use serde_json::json;
use std::sync::Arc;

/// How long a login link stays valid.
pub const LOGIN_LINK_TTL_MS: i64 = 24 * 3600 * 1000;

/// How long a browser session lasts.
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "holdpoint_session";

const KIND_LOGIN: &str = "login";
const KIND_SESSION: &str = "session";

/// A login link secret: 20 random bytes as hex.
const LOGIN_SECRET_HEX: usize = 40;
/// A session secret: 32 random bytes as hex.
const SESSION_SECRET_HEX: usize = 64;

/// Makes a single-use login link for a reviewer called `name`.
pub async fn login_link(bot: &Bot, base: &str, name: &str) -> Result<String, DbErr> {
    let secret = new_login(&bot.db, name, now_ms() + LOGIN_LINK_TTL_MS).await?;
    Ok(format!("{base}/login?token={secret}"))
}

/// Stores a login link valid until `expires_at`; returns its secret.
async fn new_login(db: &DatabaseConnection, name: &str, expires_at: i64) -> Result<String, DbErr> {
    let secret = random_hex(LOGIN_SECRET_HEX / 2);
    web_token::ActiveModel {
        token_hash: Set(sha256_hex(secret.as_bytes())),
        kind: Set(KIND_LOGIN.into()),
        name: Set(name.to_string()),
        created_at: Set(now_ms()),
        expires_at: Set(expires_at),
        used_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok(secret)
}

/// A browser that logged in.
#[derive(Debug, Clone)]
pub struct Session {
    /// The reviewer's name, copied from the login link.
    pub name: String,
    /// The hash of the cookie's secret (the row's key).
    pub token_hash: String,
    pub expires_at: i64,
}

impl Session {
    /// The identity decisions made in this browser carry.
    pub fn reviewer(&self) -> crate::lifecycle::Reviewer {
        crate::lifecycle::Reviewer {
            id: format!("web:{}", self.name),
        }
    }
}

/// The value of the session cookie, if the browser sent one that could be
/// a session secret.
fn session_secret(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| is_hex(v, SESSION_SECRET_HEX))
}

/// The session this request belongs to, if it has a valid one.
pub async fn session(bot: &Bot, headers: &HeaderMap) -> Result<Option<Session>, DbErr> {
    let Some(secret) = session_secret(headers) else {
        return Ok(None);
    };
    let hash = sha256_hex(secret.as_bytes());
    let row = web_token::Entity::find_by_id(hash.clone())
        .filter(web_token::Column::Kind.eq(KIND_SESSION))
        .filter(web_token::Column::ExpiresAt.gt(now_ms()))
        .one(&bot.db)
        .await?;
    Ok(row.map(|r| Session {
        name: r.name,
        token_hash: hash,
        expires_at: r.expires_at,
    }))
}

/// Whether the session is still valid (not logged out, not expired).
pub async fn still_valid(bot: &Bot, s: &Session) -> Result<bool, DbErr> {
    Ok(web_token::Entity::find_by_id(s.token_hash.clone())
        .filter(web_token::Column::Kind.eq(KIND_SESSION))
        .filter(web_token::Column::ExpiresAt.gt(now_ms()))
        .one(&bot.db)
        .await?
        .is_some())
}

/// Whether the browser reached the bot over https (directly or through a
/// proxy that says so), so the cookie can be marked `Secure`.
fn over_https(bot: &Bot, headers: &HeaderMap) -> bool {
    let public = bot
        .config
        .public_url
        .as_deref()
        .is_some_and(|u| u.to_ascii_lowercase().starts_with("https://"));
    let forwarded = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    public || forwarded
}

fn cookie(value: &str, max_age_s: i64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}{secure}"
    ))
    .ok()
}

/// What became of a login link.
enum Consumed {
    /// This request consumed it; the reviewer's name.
    Now(String),
    Used,
    Expired,
    Unknown,
}

async fn consume(db: &DatabaseConnection, secret: &str) -> Result<Consumed, DbErr> {
    let hash = sha256_hex(secret.as_bytes());
    let now = now_ms();
    let won = web_token::Entity::update_many()
        .col_expr(web_token::Column::UsedAt, Expr::value(now))
        .filter(web_token::Column::TokenHash.eq(hash.clone()))
        .filter(web_token::Column::Kind.eq(KIND_LOGIN))
        .filter(web_token::Column::UsedAt.is_null())
        .filter(web_token::Column::ExpiresAt.gt(now))
        .exec(db)
        .await?
        .rows_affected
        == 1;
    let row = web_token::Entity::find_by_id(hash)
        .filter(web_token::Column::Kind.eq(KIND_LOGIN))
        .one(db)
        .await?;
    Ok(match row {
        None => Consumed::Unknown,
        Some(r) if won => Consumed::Now(r.name),
        Some(r) if r.used_at.is_some() => Consumed::Used,
        Some(r) if r.expires_at <= now => Consumed::Expired,
        // Not won, yet neither used nor expired: cannot happen, but it is
        // not a login either.
        Some(_) => Consumed::Used,
    })
}

fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v)
}

const ANOTHER_LINK: &str =
    "Run `holdpoint-bot login-link` on the bot's machine for a new link (each link works once).";

/// `GET /login?token=…`: consumes the link and starts a session.
pub async fn login(
    State(bot): State<Arc<Bot>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(secret) = query_token(query.as_deref()).filter(|t| is_hex(t, LOGIN_SECRET_HEX)) else {
        return pages::message(
            StatusCode::BAD_REQUEST,
            "This login link is not valid",
            &["The link is incomplete or mistyped.", ANOTHER_LINK],
        );
    };
    let name = match consume(&bot.db, secret).await {
        Ok(Consumed::Now(name)) => name,
        Ok(Consumed::Used) => {
            return pages::message(
                StatusCode::GONE,
                "This login link was already used",
                &[
                    "A login link works once. If it was not you who used it, tell whoever runs the bot.",
                    ANOTHER_LINK,
                ],
            );
        }
        Ok(Consumed::Expired) => {
            return pages::message(
                StatusCode::GONE,
                "This login link has expired",
                &["A login link is valid for 24 hours.", ANOTHER_LINK],
            );
        }
        Ok(Consumed::Unknown) => {
            return pages::message(
                StatusCode::FORBIDDEN,
                "This login link is not valid",
                &[
                    "The bot does not know this link (or it expired long ago).",
                    ANOTHER_LINK,
                ],
            );
        }
        Err(e) => return unavailable(e),
    };
    let session_secret = random_hex(SESSION_SECRET_HEX / 2);
    let now = now_ms();
    let stored = web_token::ActiveModel {
        token_hash: Set(sha256_hex(session_secret.as_bytes())),
        kind: Set(KIND_SESSION.into()),
        name: Set(name.clone()),
        created_at: Set(now),
        expires_at: Set(now + SESSION_TTL_MS),
        used_at: Set(None),
    }
    .insert(&bot.db)
    .await;
    if let Err(e) = stored {
        return unavailable(e);
    }
    // Forget links and sessions that can no longer be used.
    if let Err(e) = web_token::Entity::delete_many()
        .filter(web_token::Column::ExpiresAt.lt(now))
        .exec(&bot.db)
        .await
    {
        tracing::warn!("cannot delete expired web tokens: {e}");
    }
    if let Err(e) = bot
        .audit(&[NewEvent::now(
            "web.login",
            None,
            None,
            json!({ "reviewer": format!("web:{name}") }),
        )])
        .await
    {
        tracing::warn!("cannot audit a web login: {e}");
    }
    let Some(set_cookie) = cookie(
        &session_secret,
        SESSION_TTL_MS / 1000,
        over_https(&bot, &headers),
    ) else {
        return pages::message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Cannot log in",
            &["The session cookie could not be made.", ANOTHER_LINK],
        );
    };
    // A page that moves on to `/` by itself rather than a 303: when the link
    // was opened from another site (a chat's web app), the browser would not
    // send the SameSite=Strict cookie on the redirect it follows, and the
    // reviewer would land on the logged-out page with the link spent. A
    // refresh started by this page is same-site.
    let mut res = pages::html(StatusCode::OK, Html::LoggedIn);
    res.headers_mut().insert(header::SET_COOKIE, set_cookie);
    res
}

/// `POST /api/logout`: ends this browser's session.
pub async fn logout(State(bot): State<Arc<Bot>>, headers: HeaderMap) -> Response {
    if let Err(why) = super::api::same_origin_json(&bot, &headers) {
        return super::api::forbidden(why);
    }
    match session(&bot, &headers).await {
        Ok(Some(s)) => {
            let ended = web_token::Entity::update_many()
                .col_expr(web_token::Column::ExpiresAt, Expr::value(now_ms()))
                .filter(web_token::Column::TokenHash.eq(s.token_hash))
                .exec(&bot.db)
                .await;
            if let Err(e) = ended {
                return unavailable(e);
            }
        }
        Ok(None) => {}
        Err(e) => return unavailable(e),
    }
    let mut res = axum::Json(json!({ "status": "logged out" })).into_response();
    if let Some(c) = cookie("", 0, over_https(&bot, &headers)) {
        res.headers_mut().insert(header::SET_COOKIE, c);
    }
    res
}

fn unavailable(e: DbErr) -> Response {
    tracing::error!("web login: database error: {e}");
    pages::message(
        StatusCode::SERVICE_UNAVAILABLE,
        "The bot cannot reach its database",
        &["Try again in a moment."],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let secret = "a".repeat(SESSION_SECRET_HEX);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {SESSION_COOKIE}={secret}; y=2")).unwrap(),
        );
        assert_eq!(session_secret(&h), Some(secret.as_str()));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("holdpoint_session=../../etc"),
        );
        assert_eq!(session_secret(&h), None);
    }

    async fn database() -> (std::path::PathBuf, DatabaseConnection) {
        let dir = std::env::temp_dir().join(format!(
            "holdpoint-web-auth-{}-{}",
            std::process::id(),
            random_hex(6)
        ));
        let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
        let db = crate::db::open_and_migrate(&url).await.unwrap();
        (dir, db)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_login_link_works_once_and_not_after_it_expires() {
        let (dir, db) = database().await;
        let secret = new_login(&db, "alice", now_ms() + 60_000).await.unwrap();
        assert!(matches!(consume(&db, &secret).await.unwrap(), Consumed::Now(n) if n == "alice"));
        assert!(matches!(
            consume(&db, &secret).await.unwrap(),
            Consumed::Used
        ));

        let old = new_login(&db, "bob", now_ms() - 1).await.unwrap();
        assert!(matches!(
            consume(&db, &old).await.unwrap(),
            Consumed::Expired
        ));
        assert!(matches!(
            consume(&db, &"0".repeat(LOGIN_SECRET_HEX)).await.unwrap(),
            Consumed::Unknown
        ));

        // Racing browsers: exactly one gets a session.
        let secret = new_login(&db, "carol", now_ms() + 60_000).await.unwrap();
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let (db, secret) = (db.clone(), secret.clone());
                tokio::spawn(async move { consume(&db, &secret).await })
            })
            .collect();
        let mut won = 0;
        for r in racers {
            if let Ok(Ok(Consumed::Now(_))) = r.await {
                won += 1;
            }
        }
        assert_eq!(won, 1);
        drop(db);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_token_is_read_from_the_query() {
        assert_eq!(query_token(Some("a=1&token=abc")), Some("abc"));
        assert_eq!(query_token(Some("tokens=abc")), None);
        assert_eq!(query_token(None), None);
    }
}

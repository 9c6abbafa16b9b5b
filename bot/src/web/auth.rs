//! Logging in to the web queue: a single-use link becomes a session cookie.
//! The links and sessions themselves live in the core
//! (`core/sessions.rs`); this module is their HTTP side.

use super::pages::{self, Html};
use crate::core::{
    Bot, DbErr, LOGIN_SECRET_HEX, LoginUse, SESSION_SECRET_HEX, SESSION_TTL_MS, Session,
};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use holdpoint_shared::protocol::is_hex;
use serde_json::json;
use std::sync::Arc;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "holdpoint_session";

/// Makes a single-use login link for a reviewer called `name`.
pub async fn login_link(bot: &Bot, base: &str, name: &str) -> Result<String, DbErr> {
    let secret = bot.new_login_link(name).await?;
    Ok(format!("{base}/login?token={secret}"))
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
    bot.session(secret).await
}

/// Whether the session is still valid (not logged out, not expired).
pub async fn still_valid(bot: &Bot, s: &Session) -> Result<bool, DbErr> {
    bot.session_valid(s).await
}

/// Whether the browser reached the bot over https (directly or through a
/// proxy that says so), so the cookie can be marked `Secure`.
fn over_https(bot: &Bot, headers: &HeaderMap) -> bool {
    let public = bot
        .config()
        .public_url
        .as_deref()
        .is_some_and(|u| u.to_ascii_lowercase().starts_with("https://"));
    let forwarded = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    bot.config().tls.is_some() || public || forwarded
}

fn cookie(value: &str, max_age_s: i64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}{secure}"
    ))
    .ok()
}

/// The `token` of a query string or a form body.
fn form_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v)
}

const ANOTHER_LINK: &str =
    "Run `holdpoint-bot login-link` on the bot's machine for a new link (each link works once).";

/// Why a login link cannot be used, as a page.
fn spent(state: &LoginUse) -> Option<Response> {
    match state {
        LoginUse::Now(_) => None,
        LoginUse::Used => Some(pages::message(
            StatusCode::GONE,
            "This login link was already used",
            &[
                "A login link works once. If it was not you who used it, tell whoever runs the bot.",
                ANOTHER_LINK,
            ],
        )),
        LoginUse::Expired => Some(pages::message(
            StatusCode::GONE,
            "This login link has expired",
            &["A login link is valid for 24 hours.", ANOTHER_LINK],
        )),
        LoginUse::Unknown => Some(pages::message(
            StatusCode::FORBIDDEN,
            "This login link is not valid",
            &[
                "The bot does not know this link (or it expired long ago).",
                ANOTHER_LINK,
            ],
        )),
    }
}

fn not_a_link() -> Response {
    pages::message(
        StatusCode::BAD_REQUEST,
        "This login link is not valid",
        &["The link is incomplete or mistyped.", ANOTHER_LINK],
    )
}

/// `GET /login?token=…`: says whom the link logs in as, with a button that
/// uses it. Only looks: link previewers and prefetching browsers fetch
/// links before the person does, and must not spend them.
pub async fn login(
    State(bot): State<Arc<Bot>>,
    peer: crate::listener::Peer,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(res) = peer.throttled(&bot) {
        return res;
    }
    let Some(secret) = form_token(query.as_deref()).filter(|t| is_hex(t, LOGIN_SECRET_HEX)) else {
        peer.failed(&bot);
        return not_a_link();
    };
    match bot.login_link_state(secret).await {
        Ok(LoginUse::Now(name)) => pages::login_form(&name, secret),
        Ok(LoginUse::Unknown) => {
            peer.failed(&bot);
            spent(&LoginUse::Unknown).unwrap_or_else(not_a_link)
        }
        Ok(other) => spent(&other).unwrap_or_else(not_a_link),
        Err(e) => unavailable(e),
    }
}

/// `POST /login` with `token=…` (the login page's button): uses the link
/// and starts a new session, ending any session this browser had.
pub async fn login_post(
    State(bot): State<Arc<Bot>>,
    peer: crate::listener::Peer,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(res) = peer.throttled(&bot) {
        return res;
    }
    // A cross-site form must not log the browser in to someone's session.
    // Browsers say where a form came from in Sec-Fetch-Site; under this
    // site's no-referrer policy their Origin header is `null`, so Origin
    // is only looked at when Sec-Fetch-Site is missing.
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let same = match site {
        Some(site) => site == "same-origin",
        None => {
            headers.contains_key(header::ORIGIN) && super::api::same_site(&bot, &headers).is_ok()
        }
    };
    if !same {
        return pages::message(
            StatusCode::FORBIDDEN,
            "Log in from the login page",
            &[
                "The login button must be pressed on the bot's own page.",
                ANOTHER_LINK,
            ],
        );
    }
    let body = String::from_utf8_lossy(&body);
    let Some(secret) = form_token(Some(&body)).filter(|t| is_hex(t, LOGIN_SECRET_HEX)) else {
        peer.failed(&bot);
        return not_a_link();
    };
    let name = match bot.use_login_link(secret).await {
        Ok(LoginUse::Now(name)) => name,
        Ok(LoginUse::Unknown) => {
            peer.failed(&bot);
            return spent(&LoginUse::Unknown).unwrap_or_else(not_a_link);
        }
        Ok(other) => return spent(&other).unwrap_or_else(not_a_link),
        Err(e) => return unavailable(e),
    };
    // The session rotates: whatever session the browser held ends here.
    match session(&bot, &headers).await {
        Ok(Some(old)) => {
            if let Err(e) = bot.end_session(&old).await {
                return unavailable(e);
            }
        }
        Ok(None) => {}
        Err(e) => return unavailable(e),
    }
    let session_secret = match bot.start_session(&name).await {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
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
    // A page that moves on to `/` by itself rather than a 303, so the
    // SameSite=Strict cookie goes with the next request even when the link
    // was opened from another site.
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
            if let Err(e) = bot.end_session(&s).await {
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

    #[test]
    fn the_token_is_read_from_the_query() {
        assert_eq!(form_token(Some("a=1&token=abc")), Some("abc"));
        assert_eq!(form_token(Some("tokens=abc")), None);
        assert_eq!(form_token(None), None);
    }
}

//! The page and its two files, compiled into the binary, and the headers
//! every web answer carries.
//!
//! No request data is ever put into HTML here: the queue page is a fixed
//! file that fetches JSON; the few other pages are fixed text, except the
//! login page, which holds the reviewer's name (escaped) and the link's
//! own secret (checked to be hex digits).

use super::auth;
use crate::core::Bot;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The Content-Security-Policy of every web answer: the page's own script
/// and stylesheet, requests to the bot itself, nothing else.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("../../assets/index.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const APP_CSS: &str = include_str!("../../assets/app.css");
const AUDIT_HTML: &str = include_str!("../../assets/audit.html");
const AUDIT_JS: &str = include_str!("../../assets/audit.js");

/// Adds the security headers; answers that set no cache policy are not
/// stored.
pub async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// The fixed pages.
pub enum Html {
    /// The queue (the script fills it in).
    Queue,
    /// The audit view (its script fills it in).
    Audit,
    /// Logged in; moves on to the queue.
    LoggedIn,
    /// No session: how to get a login link.
    LoginNeeded,
}

/// A fixed page.
pub fn html(status: StatusCode, which: Html) -> Response {
    let body = match which {
        Html::Queue => INDEX_HTML.to_string(),
        Html::Audit => AUDIT_HTML.to_string(),
        Html::LoggedIn => document(
            "Logged in",
            r#"<meta http-equiv="refresh" content="0; url=/">"#,
            "<h1>Logged in</h1>\n<p><a href=\"/\">Continue to the review queue</a>.</p>",
        ),
        Html::LoginNeeded => document(
            "Log in",
            "",
            "<h1>holdpoint review queue</h1>\n\
             <p>You are not logged in (or your session ended: sessions last 12 hours).</p>\n\
             <p>Open the login link the bot printed when it started, or make a new one on the \
             bot's machine:</p>\n\
             <pre class=\"shell\">holdpoint-bot login-link</pre>\n\
             <p>Each link works once. Add <code>--name alice</code> to have your decisions \
             recorded as <code>web:alice</code>.</p>",
        ),
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The page a login link opens: who it logs in as, and the button that
/// uses the link. `secret` must be hex digits (the caller checked).
pub fn login_form(name: &str, secret: &str) -> Response {
    let body = format!(
        "<h1>Log in to the holdpoint review queue</h1>\n\
         <p>This link logs you in as <code>web:{}</code>. It works once.</p>\n\
         <form method=\"post\" action=\"/login\">\n\
         <input type=\"hidden\" name=\"token\" value=\"{}\">\n\
         <button type=\"submit\" class=\"approve\">Log in</button>\n</form>\n\
         <p>Opening the link did not use it: link previews in chats and mail do not log \
         anyone in.</p>",
        escape(name),
        escape(secret)
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        document("Log in", "", &body),
    )
        .into_response()
}

/// A page with a title and paragraphs of fixed text (escaped all the same).
pub fn message(status: StatusCode, title: &str, paragraphs: &[&str]) -> Response {
    let mut body = format!("<h1>{}</h1>\n", escape(title));
    for p in paragraphs {
        body.push_str(&format!("<p>{}</p>\n", escape(p)));
    }
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        document(title, "", &body),
    )
        .into_response()
}

fn document(title: &str, head: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n{head}\n\
         <title>{} · holdpoint</title>\n<link rel=\"stylesheet\" href=\"/assets/app.css\">\n\
         </head>\n<body class=\"message\">\n<main>\n{body}\n</main>\n</body>\n</html>\n",
        escape(title)
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// `GET /`: the queue with a session, otherwise how to log in.
pub async fn index(State(bot): State<Arc<Bot>>, headers: HeaderMap) -> Response {
    page(&bot, &headers, Html::Queue).await
}

/// `GET /audit`: the audit view, for a logged-in reviewer.
pub async fn audit(State(bot): State<Arc<Bot>>, headers: HeaderMap) -> Response {
    page(&bot, &headers, Html::Audit).await
}

async fn page(bot: &Bot, headers: &HeaderMap, which: Html) -> Response {
    match auth::session(bot, headers).await {
        Ok(Some(_)) => html(StatusCode::OK, which),
        Ok(None) => html(StatusCode::UNAUTHORIZED, Html::LoginNeeded),
        Err(e) => {
            tracing::error!("web queue: database error: {e}");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                "The bot cannot reach its database",
                &["Try again in a moment."],
            )
        }
    }
}

/// A file of the page, revalidated by its hash so an upgraded bot never
/// serves a stale script.
fn asset(headers: &HeaderMap, content_type: &'static str, body: &'static str) -> Response {
    let etag = format!("\"{}\"", &crate::core::sha256_hex(body.as_bytes())[..32]);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let etag = HeaderValue::from_str(&etag).ok();
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Some(etag) = etag {
        h.insert(header::ETAG, etag);
    }
    res
}

/// `GET /assets/app.js`. Served without a session: it holds no data.
pub async fn script(headers: HeaderMap) -> Response {
    asset(&headers, "text/javascript; charset=utf-8", APP_JS)
}

/// `GET /assets/audit.js`.
pub async fn audit_script(headers: HeaderMap) -> Response {
    asset(&headers, "text/javascript; charset=utf-8", AUDIT_JS)
}

/// `GET /assets/app.css`.
pub async fn stylesheet(headers: HeaderMap) -> Response {
    asset(&headers, "text/css; charset=utf-8", APP_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_escaped() {
        assert_eq!(
            escape("<b a=\"x\">&'"),
            "&lt;b a=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn the_page_has_no_inline_code() {
        let lower = INDEX_HTML.to_ascii_lowercase();
        assert!(!lower.contains("<script>"), "an inline script");
        assert!(!lower.contains("style="), "an inline style");
        assert!(!lower.contains("<style"), "a style element");
        let handler = lower.split_whitespace().any(|w| {
            w.strip_prefix("on")
                .and_then(|rest| rest.split_once('='))
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase()))
        });
        assert!(!handler, "an event handler attribute");
        assert!(
            !APP_JS.contains("innerHTML") && !APP_JS.contains("outerHTML"),
            "the script must build the page with textContent"
        );
        assert!(!APP_JS.contains("insertAdjacentHTML") && !APP_JS.contains("document.write"));
    }
}

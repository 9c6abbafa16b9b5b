//! The JSON API of the web queue. Every route needs a session; the ones
//! that change something also need proof that the page made the request
//! (see [`same_origin_json`]).

use super::auth;
use crate::config::Requirement;
use crate::core::Session;
use crate::core::digest::{MAX_FOUND, Period, Search};
use crate::core::{Bot, Decided, Intent, LifecycleError, Refusal};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use holdpoint_shared::protocol::{DecisionMessage, is_hex};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// How many decided requests `GET /api/requests` returns.
pub const RECENT: u64 = 50;

/// The longest command a recent decision shows, in characters (the page
/// shows one line of it).
const RECENT_COMMAND_CHARS: usize = 500;

/// The longest command a pending entry of a listing carries, in
/// characters; the page fetches the whole request before it can be
/// approved.
pub const PENDING_COMMAND_CHARS: usize = 4096;

/// How many of one runner's pending requests a listing shows.
pub const PER_RUNNER: u64 = 100;

/// How many pending requests a listing shows in all.
pub const SHOWN: u64 = 1000;

fn error(status: StatusCode, why: &str) -> Response {
    (status, Json(json!({ "error": why }))).into_response()
}

/// 401 for a request without a valid session.
pub fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "not logged in: open a login link from `holdpoint-bot login-link`",
    )
}

/// 403 for a request the page did not make.
pub fn forbidden(why: &str) -> Response {
    error(StatusCode::FORBIDDEN, why)
}

fn database(e: impl std::fmt::Display) -> Response {
    tracing::error!("web api: {e}");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the bot cannot read its database; try again in a moment",
    )
}

/// The session, or the answer to give without one.
pub async fn require_session(bot: &Bot, headers: &HeaderMap) -> Result<Session, Response> {
    match auth::session(bot, headers).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(unauthorized()),
        Err(e) => Err(database(e)),
    }
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `scheme://host[:port]` → `host[:port]`, lowercased.
fn authority(origin: &str) -> Option<String> {
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))?;
    let host = rest.split('/').next().unwrap_or_default();
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Whether a state-changing request came from the page: a JSON body (which
/// a cross-site form cannot send), the `X-Holdpoint: 1` header (which a
/// cross-site request cannot set without a preflight the bot never
/// answers), and, when the browser says where it came from, this site.
pub fn same_origin_json(bot: &Bot, headers: &HeaderMap) -> Result<(), &'static str> {
    let json = header_str(headers, header::CONTENT_TYPE)
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err("the body must be JSON (Content-Type: application/json)");
    }
    if header_str(headers, "x-holdpoint").map(str::trim) != Some("1") {
        return Err("missing the X-Holdpoint: 1 header");
    }
    same_site(bot, headers)
}

/// Whether the browser says the request came from this site (when it says
/// where it came from at all).
pub fn same_site(bot: &Bot, headers: &HeaderMap) -> Result<(), &'static str> {
    if let Some(site) = header_str(headers, "sec-fetch-site")
        && !matches!(site.trim(), "same-origin" | "none")
    {
        return Err("cross-site requests are refused");
    }
    if let Some(origin) = header_str(headers, header::ORIGIN) {
        let Some(from) = authority(origin.trim()) else {
            return Err("the Origin header does not name this site");
        };
        let host = header_str(headers, header::HOST).map(|h| h.trim().to_ascii_lowercase());
        let public = bot.config().public_url.as_deref().and_then(authority);
        if host.as_deref() != Some(from.as_str()) && public.as_deref() != Some(from.as_str()) {
            return Err("the Origin header does not match this site");
        }
    }
    Ok(())
}

/// A request with its command cut to `max` characters: the entry says
/// `command_truncated` and `command_chars`, and the whole request is at
/// `GET /api/requests/{id}`.
fn listed(r: &crate::core::StoredRequest, max: usize) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    let chars = r.request.command.chars().count();
    if let Some(obj) = v.as_object_mut() {
        if chars > max {
            let cut: String = r.request.command.chars().take(max).collect();
            obj.insert("command".into(), Value::String(cut));
            obj.insert("command_truncated".into(), Value::Bool(true));
        }
        obj.insert("command_chars".into(), json!(chars));
    }
    v
}

/// Adds each pending request's escalation steps (action, due time, when
/// it fired) to its entry, as `escalation`, its pages and how they stand
/// as `pages`, and its votes.
async fn with_escalation(bot: &Bot, entries: &mut [Value]) -> Result<(), Response> {
    let ids: Vec<String> = entries
        .iter()
        .filter_map(|e| e.get("id").and_then(Value::as_str).map(str::to_string))
        .collect();
    let steps = bot.escalations_of(&ids).await.map_err(database)?;
    let votes = bot.votes_of(&ids).await.map_err(database)?;
    let pages = bot.pages_of(&ids).await.map_err(database)?;
    for e in entries.iter_mut() {
        let id = e
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let these = steps.get(&id).cloned().unwrap_or_default();
        let voted = votes.get(&id).cloned().unwrap_or_default();
        let quorum: Requirement = e
            .get("quorum")
            .and_then(|q| serde_json::from_value(q.clone()).ok())
            .unwrap_or_else(|| {
                // Unreadable: say the most a request can need.
                Requirement::of(u32::MAX)
            });
        let missing: Vec<Value> = quorum
            .missing(&bot.voter_groups(&voted))
            .into_iter()
            .map(|(g, n)| json!({"group": g, "approvals": n}))
            .collect();
        if let Some(obj) = e.as_object_mut() {
            obj.insert("escalation".into(), json!(these));
            obj.insert(
                "pages".into(),
                json!(pages.get(&id).cloned().unwrap_or_default()),
            );
            obj.insert("votes".into(), json!(voted));
            obj.insert("approvals_required".into(), json!(quorum.approvals));
            obj.insert("missing".into(), json!(missing));
        }
    }
    Ok(())
}

/// The query of `GET /api/requests`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this runner's pending requests, newest first, a page at a time.
    runner: Option<String>,
    /// The `next` of the previous page: `CREATED_AT-ID`.
    before: Option<String>,
}

fn cursor(r: &crate::core::StoredRequest) -> String {
    format!("{}-{}", r.created_at, r.request.id)
}

fn parse_cursor(c: &str) -> Option<(i64, &str)> {
    let (at, id) = c.split_once('-')?;
    let at: i64 = at.parse().ok()?;
    is_hex(id, 32).then_some((at, id))
}

/// `GET /api/requests`: the pending queue (each runner's newest
/// [`PER_RUNNER`], at most [`SHOWN`] in all, oldest first, commands cut to
/// [`PENDING_COMMAND_CHARS`]), how many each runner has pending, the latest
/// decisions, and the bot's clock. With `?runner=NAME`, that runner's
/// pending requests, newest first, a page at a time (`&before=` the last
/// page's `next`).
pub async fn list(
    State(bot): State<Arc<Bot>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let session = match require_session(&bot, &headers).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "the query may hold only `runner` and `before`",
        );
    };
    if let Some(runner) = query.runner.as_deref() {
        let before = match query.before.as_deref() {
            None => None,
            Some(c) => match parse_cursor(c) {
                Some(b) => Some(b),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "`before` must be the `next` of the previous page",
                    );
                }
            },
        };
        let page = match bot.pending_of(runner, before, PER_RUNNER).await {
            Ok(p) => p,
            Err(e) => return database(e),
        };
        let next = (page.len() as u64 == PER_RUNNER)
            .then(|| page.last().map(cursor))
            .flatten();
        let mut pending: Vec<Value> = page
            .iter()
            .map(|r| listed(r, PENDING_COMMAND_CHARS))
            .collect();
        if let Err(res) = with_escalation(&bot, &mut pending).await {
            return res;
        }
        return Json(json!({
            "runner": runner,
            "pending": pending,
            "next": next,
            "now": bot.now_ms(),
        }))
        .into_response();
    }
    let queue = match bot.pending_fair(PER_RUNNER, SHOWN).await {
        Ok(q) => q,
        Err(e) => return database(e),
    };
    let recent = match bot.recent(RECENT).await {
        Ok(r) => r,
        Err(e) => return database(e),
    };
    let mut pending: Vec<Value> = queue
        .requests
        .iter()
        .map(|r| listed(r, PENDING_COMMAND_CHARS))
        .collect();
    if let Err(res) = with_escalation(&bot, &mut pending).await {
        return res;
    }
    let recent: Vec<Value> = recent
        .iter()
        .map(|r| listed(r, RECENT_COMMAND_CHARS))
        .collect();
    Json(json!({
        "pending": pending,
        "pending_total": queue.total,
        "runners": queue.runners,
        "recent": recent,
        "now": bot.now_ms(),
        "reviewer": session.reviewer().to_string(),
    }))
    .into_response()
}

/// `GET /api/requests/{id}`: one request, whole.
pub async fn one(
    State(bot): State<Arc<Bot>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(res) = require_session(&bot, &headers).await {
        return res;
    }
    if !is_hex(&id, 32) {
        return error(StatusCode::NOT_FOUND, "no such request");
    }
    match bot.get(&id).await {
        Ok(Some(r)) => {
            let mut entry = [listed(&r, usize::MAX)];
            if let Err(res) = with_escalation(&bot, &mut entry).await {
                return res;
            }
            let [entry] = entry;
            Json(entry).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "no such request"),
        Err(e) => database(e),
    }
}

/// The body of approve and deny.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    /// Why; the agent sees it.
    #[serde(default)]
    reason: Option<String>,
    /// The command hash of the request the page showed.
    command_hash: String,
}

fn decision_json(d: &DecisionMessage) -> Value {
    json!({
        "status": d.status,
        "decided_by": d.decided_by,
        "decided_at": d.decided_at,
        "reason": d.reason,
    })
}

async fn decide(
    bot: Arc<Bot>,
    headers: HeaderMap,
    id: String,
    body: Bytes,
    approve: bool,
) -> Response {
    let session = match require_session(&bot, &headers).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    if let Err(why) = same_origin_json(&bot, &headers) {
        return forbidden(why);
    }
    if !is_hex(&id, 32) {
        return error(StatusCode::NOT_FOUND, "no such request");
    }
    let body: DecisionBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body must be {{\"reason\": …, \"command_hash\": …}}: {e}"),
            );
        }
    };
    if !is_hex(&body.command_hash, 64) {
        return error(
            StatusCode::BAD_REQUEST,
            "command_hash must be the 64 hex digits the page showed",
        );
    }
    let reviewer = session.reviewer();
    let intent = if approve {
        Intent::Approve {
            reason: body.reason,
        }
    } else {
        Intent::Deny {
            reason: body.reason,
        }
    };
    match bot
        .decide(&reviewer, &id, Some(&body.command_hash), intent)
        .await
    {
        Ok(Decided::Won(d)) => (StatusCode::OK, Json(decision_json(&d))).into_response(),
        Ok(Decided::Already(d)) => {
            let mut v = decision_json(&d);
            if let Some(obj) = v.as_object_mut()
                && let Some(status) = obj.remove("status")
            {
                obj.insert("already".into(), status);
            }
            (StatusCode::CONFLICT, Json(v)).into_response()
        }
        Ok(Decided::Voted {
            approvals,
            required,
            missing,
        }) => (
            StatusCode::ACCEPTED,
            Json(json!({ "voted": {
                "approvals": approvals,
                "required": required,
                "missing": missing.iter().map(|(g, n)| json!({"group": g, "approvals": n})).collect::<Vec<_>>(),
            } })),
        )
            .into_response(),
        Ok(Decided::Refused(why)) => (
            StatusCode::FORBIDDEN,
            Json(json!({ "refused": refusal(&why) })),
        )
            .into_response(),
        Ok(Decided::NotFound) => error(StatusCode::NOT_FOUND, "no such request"),
        Err(LifecycleError::Db(e)) => database(e),
        Err(e) => {
            tracing::error!(request = id, "web decision failed: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
        }
    }
}

/// A refusal as the page shows it.
pub fn refusal(r: &Refusal) -> String {
    let text = match r {
        Refusal::OwnRequest => "you asked for this command to run, so someone else must approve it",
        Refusal::CommandChanged => "the command changed since you saw it; look at it again",
        Refusal::NotAReviewer => "you are not one of the reviewers",
        Refusal::DirectoryUnavailable => {
            "the reviewer list could not be checked just now; nothing was decided"
        }
        Refusal::OtherRunner => "another runner submitted this request",
        Refusal::AlreadyVoted => "your approval is counted already; it waits for another reviewer",
        Refusal::GroupsNeeded(missing) => {
            return format!(
                "not counted: the approvals still needed must come from {}, and you are in none of those groups",
                crate::core::groups_needed(missing)
            );
        }
    };
    text.to_string()
}

/// `POST /api/requests/{id}/approve`.
pub async fn approve(
    State(bot): State<Arc<Bot>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    decide(bot, headers, id, body, true).await
}

/// `POST /api/requests/{id}/deny`.
pub async fn deny(
    State(bot): State<Arc<Bot>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    decide(bot, headers, id, body, false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_reduce_to_their_authority() {
        assert_eq!(
            authority("http://127.0.0.1:8470").as_deref(),
            Some("127.0.0.1:8470")
        );
        assert_eq!(
            authority("https://Review.Example.com").as_deref(),
            Some("review.example.com")
        );
        assert_eq!(authority("null"), None);
        assert_eq!(authority("http://"), None);
    }
}

/// The query of `GET /api/audit`: a [`Search`] with paging and a format.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    from: Option<i64>,
    until: Option<i64>,
    runner: Option<String>,
    agent: Option<String>,
    rule: Option<String>,
    outcome: Option<String>,
    reviewer: Option<String>,
    q: Option<String>,
    /// Only rows older than this `seq` (the `next` of the previous page).
    before: Option<i64>,
    /// Rows per page (default 50, at most 10,000 for an export).
    limit: Option<u64>,
    /// `json` (default) or `csv`: an export of what the filters show.
    format: Option<String>,
}

/// `GET /api/audit`: the audit log searched, newest first, a page at a
/// time; `format=csv` or `format=json` with a `limit` exports it as a file.
pub async fn audit(
    State(bot): State<Arc<Bot>>,
    Query(query): Query<AuditQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(res) = require_session(&bot, &headers).await {
        return res;
    }
    let limit = query.limit.unwrap_or(50);
    let search = Search {
        from: query.from,
        until: query.until,
        runner: query.runner,
        agent: query.agent,
        rule: query.rule,
        outcome: query.outcome,
        reviewer: query.reviewer,
        q: query.q,
    };
    let rows = match bot.search_audit(&search, query.before, limit).await {
        Ok(r) => r,
        Err(e) => return database(e),
    };
    let next = (rows.len() as u64 == limit.clamp(1, MAX_FOUND))
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    match query.format.as_deref() {
        None => Json(json!({ "rows": rows, "next": next })).into_response(),
        Some("json") => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"holdpoint-audit.json\"",
                ),
            ],
            serde_json::to_string_pretty(&rows).unwrap_or_default(),
        )
            .into_response(),
        Some("csv") => {
            let f = crate::core::audit_csv_field;
            let mut out = String::from(
                "seq,at,kind,runner,request_id,command,decision,rules,agent,decided_by,reason\n",
            );
            for r in &rows {
                let o = |v: &Option<String>| f(v.as_deref().unwrap_or(""));
                out.push_str(&format!(
                    "{},{},{},{},{},{},{},{},{},{},{}\n",
                    r.seq,
                    f(&crate::time::rfc3339(r.at)),
                    f(&r.kind),
                    o(&r.runner),
                    o(&r.request_id),
                    o(&r.command),
                    o(&r.decision),
                    f(&r.rules.join(" ")),
                    o(&r.agent),
                    o(&r.decided_by),
                    o(&r.reason),
                ));
            }
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"holdpoint-audit.csv\"",
                    ),
                ],
                out,
            )
                .into_response()
        }
        Some(_) => error(StatusCode::BAD_REQUEST, "format is json or csv"),
    }
}

/// The period of `GET /api/digest` (default: the last 7 days).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestQuery {
    from: Option<i64>,
    until: Option<i64>,
}

/// The digest of the period asked for (default: the last 7 days), for a
/// logged-in reviewer.
async fn digest_asked(
    bot: &Bot,
    headers: &HeaderMap,
    q: &DigestQuery,
) -> Result<(Period, crate::core::digest::Report), Response> {
    require_session(bot, headers).await?;
    let until = q.until.unwrap_or_else(|| bot.now_ms());
    let from = q.from.unwrap_or(until - 7 * 86_400_000);
    if until <= from {
        return Err(error(StatusCode::BAD_REQUEST, "until must come after from"));
    }
    let period = Period { from, until };
    let report = bot.digest(period).await.map_err(database)?;
    Ok((period, report))
}

/// `GET /api/digest?from=&until=`: the digest of any period, as JSON.
pub async fn digest(
    State(bot): State<Arc<Bot>>,
    Query(q): Query<DigestQuery>,
    headers: HeaderMap,
) -> Response {
    let (period, r) = match digest_asked(&bot, &headers, &q).await {
        Ok(d) => d,
        Err(res) => return res,
    };
    let mut v = serde_json::to_value(&r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("title".into(), crate::digest::title(period).into());
        o.insert(
            "charts".into(),
            crate::chart::charts(&r)
                .iter()
                .map(|c| json!({"name": c.name, "title": c.title, "alt": c.alt}))
                .collect::<Vec<_>>()
                .into(),
        );
    }
    Json(v).into_response()
}

/// `GET /api/digest/charts/{name}?from=&until=`: one of its charts, PNG.
pub async fn digest_chart(
    State(bot): State<Arc<Bot>>,
    Path(name): Path<String>,
    Query(q): Query<DigestQuery>,
    headers: HeaderMap,
) -> Response {
    let (_, report) = match digest_asked(&bot, &headers, &q).await {
        Ok(d) => d,
        Err(res) => return res,
    };
    match crate::chart::charts(&report)
        .into_iter()
        .find(|c| c.name == name)
    {
        Some(c) => ([(header::CONTENT_TYPE, "image/png")], c.png).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such chart"),
    }
}

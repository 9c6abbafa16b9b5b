//! The audit digest: the core's [`Report`] rendered for people (text,
//! Markdown, HTML, Slack blocks, a Matrix message) and for machines (JSON),
//! and the schedule that sends it.
//!
//! The schedule runs in every serving replica: each minute-or-so tick
//! finds the last due time of `[digest] schedule`; the replica that first
//! inserts its row in `digests` sends it, so one digest goes out per
//! period however many replicas run, and one due while every replica was
//! down goes out once, marked late, when one is back. `holdpoint-bot digest
//! --send` asks for one now by inserting an unclaimed row the running bot
//! picks up (the CLI never uses the Matrix device itself).
//!
//! Everything in a report that came from a runner (commands, rules,
//! agents, reasons) is untrusted: every renderer escapes it for its medium.

use crate::core::Bot;
use crate::core::digest::{Counts, Period, Report};
use crate::time::{human_duration, rfc3339};
use std::fmt::Write as _;

/// Output formats of `holdpoint-bot digest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Markdown,
    Json,
    Html,
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// `1,234 (+56)` against the period before.
fn vs(now: u64, before: u64) -> String {
    let d = now as i128 - before as i128;
    let sign = if d > 0 { "+" } else { "" };
    format!("{now} ({sign}{d})")
}

fn wait(ms: Option<i64>) -> String {
    ms.map(|m| human_duration(m.max(0)))
        .unwrap_or_else(|| "–".into())
}

/// Cuts `s` to `max` characters, one line.
fn short(s: &str, max: usize) -> String {
    let one: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    crate::view::cut(&holdpoint_shared::text::visible(&one, true), max)
}

/// The lines every human format shares: (heading, rows of label and value).
pub(crate) fn sections(
    r: &Report,
    link: &dyn Fn(&str) -> String,
) -> Vec<(String, Vec<(String, String)>)> {
    let c: &Counts = &r.current;
    let p: &Counts = &r.previous;
    let mut out = Vec::new();
    out.push((
        "Commands".to_string(),
        vec![
            ("seen".into(), vs(c.seen, p.seen)),
            (
                "allowed at once".into(),
                format!("{} ({})", vs(c.allowed, p.allowed), pct(c.allowed, c.seen)),
            ),
            (
                "held for review".into(),
                format!("{} ({})", vs(c.held, p.held), pct(c.held, c.seen)),
            ),
            ("refused by the policy".into(), vs(c.refused, p.refused)),
        ],
    ));
    out.push((
        "Held requests".to_string(),
        vec![
            ("approved".into(), vs(c.approved, p.approved)),
            ("denied".into(), vs(c.denied, p.denied)),
            ("expired (denied)".into(), vs(c.expired, p.expired)),
            ("cancelled".into(), vs(c.cancelled, p.cancelled)),
            (
                "time to decision".into(),
                format!(
                    "median {}, 90th percentile {} (before: {}, {})",
                    wait(c.decision_p50_ms),
                    wait(c.decision_p90_ms),
                    wait(p.decision_p50_ms),
                    wait(p.decision_p90_ms)
                ),
            ),
        ],
    ));
    let mut esc: Vec<(String, String)> = ["remind", "notify", "page"]
        .iter()
        .map(|a| {
            let n = |k: &Counts| k.escalations.get(*a).copied().unwrap_or(0);
            (format!("{a} steps"), vs(n(c), n(p)))
        })
        .collect();
    esc.push((
        "pages opened / refused".into(),
        format!("{} / {}", c.pages_sent, c.pages_failed),
    ));
    out.push(("Escalations".to_string(), esc));
    let list = |v: &[(String, u64)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(k, n)| (short(k, 80), n.to_string()))
            .collect()
    };
    out.push(("Top rules by hits".into(), list(&r.top_rules)));
    out.push(("Top rules by denials".into(), list(&r.top_denied_rules)));
    out.push(("Top agents".into(), list(&r.top_agents)));
    out.push(("Top runners".into(), list(&r.top_runners)));
    out.push((
        "Decisions per reviewer".into(),
        r.reviewers
            .iter()
            .map(|l| {
                (
                    short(&l.reviewer, 80),
                    format!("{} approved, {} denied", l.approved, l.denied),
                )
            })
            .collect(),
    ));
    out.push((
        "Slowest decisions".into(),
        r.slowest
            .iter()
            .map(|s| {
                (
                    short(&s.command, 80),
                    format!(
                        "{} after {} by {} · {}",
                        s.status,
                        human_duration(s.waited_ms.max(0)),
                        s.decided_by.as_deref().unwrap_or("?"),
                        link(&s.id)
                    ),
                )
            })
            .collect(),
    ));
    let mut denied: Vec<(String, String)> = r
        .denied
        .iter()
        .map(|d| {
            (
                short(&d.command, 120),
                format!(
                    "by {}{} · {}",
                    d.decided_by.as_deref().unwrap_or("?"),
                    d.reason
                        .as_deref()
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| format!(": {}", short(s, 200)))
                        .unwrap_or_default(),
                    link(&d.id)
                ),
            )
        })
        .collect();
    if r.denied_more > 0 {
        denied.push(("…".into(), format!("and {} more", r.denied_more)));
    }
    out.push(("Denied commands".into(), denied));
    out.push((
        "Approved again and again (allow-rule candidates)".into(),
        r.repeated
            .iter()
            .map(|x| (short(&x.command, 120), format!("{} approvals", x.approvals)))
            .collect(),
    ));
    out.push((
        "Audit chain".into(),
        vec![
            ("rows stored in the period".into(), r.chain.rows.to_string()),
            (
                "head".into(),
                format!(
                    "{} (row {})",
                    r.chain.head,
                    r.chain
                        .head_seq
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "none".into())
                ),
            ),
            (
                "verified over the period".into(),
                match &r.chain.broken {
                    None => "intact".into(),
                    Some((seq, why)) => format!("BROKEN at row {seq}: {why}"),
                },
            ),
        ],
    ));
    out
}

/// The title line: `holdpoint digest, 2026-11-23 to 2026-11-30`.
pub fn title(p: Period) -> String {
    format!(
        "holdpoint digest: {} to {}",
        rfc3339(p.from),
        rfc3339(p.until)
    )
}

/// A suggested policy rule for a command approved again and again, to
/// review and paste into `policy.toml`.
pub fn allow_rule(command: &str, n: u64) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    let program = words.first().copied().unwrap_or("");
    let sub = words
        .get(1)
        .filter(|w| !w.starts_with('-'))
        .map(|w| format!("\nsubcommand = [{}]", toml_str(w)))
        .unwrap_or_default();
    let id: String = command
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .take(4)
        .collect::<Vec<_>>()
        .join("-");
    format!(
        "# approved {n} times: review before pasting; a new allow rule cannot\n\
         # loosen a built-in review rule unless it takes that rule's id\n\
         [[rule]]\nid = {}\ndecision = \"allow\"\nrisk = \"low\"\nreason = \"approved {n} times in a week\"\n\
         program = [{}]{sub}\nexamples.match = [{}]\n",
        toml_str(&format!("team.allow.{id}")),
        toml_str(program),
        toml_str(command)
    )
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The report in `format`; links point at the web queue under `base`.
pub fn render(r: &Report, format: Format, base: &str) -> String {
    let base = base.trim_end_matches('/').to_string();
    let link = |id: &str| format!("{base}/#{id}");
    match format {
        Format::Json => {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("title".into(), title(r.period).into());
                o.insert(
                    "allow_rules".into(),
                    r.repeated
                        .iter()
                        .map(|x| allow_rule(&x.command, x.approvals))
                        .collect::<Vec<_>>()
                        .into(),
                );
            }
            serde_json::to_string_pretty(&v).unwrap_or_default()
        }
        Format::Text => {
            let mut s = format!("{}\n", title(r.period));
            for (h, rows) in sections(r, &link) {
                let _ = writeln!(s, "\n{h}");
                if rows.is_empty() {
                    s.push_str("  none\n");
                }
                for (k, v) in rows {
                    let _ = writeln!(s, "  {k}: {v}");
                }
            }
            for x in &r.repeated {
                let _ = write!(s, "\n{}", allow_rule(&x.command, x.approvals));
            }
            s
        }
        Format::Markdown => {
            let md = |s: &str| -> String {
                s.chars()
                    .flat_map(|c| match c {
                        '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' => {
                            vec!['\\', c]
                        }
                        c => vec![c],
                    })
                    .collect()
            };
            let mut s = format!("# {}\n", md(&title(r.period)));
            for (h, rows) in sections(r, &link) {
                let _ = writeln!(s, "\n## {}\n", md(&h));
                if rows.is_empty() {
                    s.push_str("none\n");
                    continue;
                }
                s.push_str("| | |\n|---|---|\n");
                for (k, v) in rows {
                    let _ = writeln!(s, "| {} | {} |", md(&k), md(&v));
                }
            }
            for x in &r.repeated {
                let _ = write!(
                    s,
                    "\n```toml\n{}```\n",
                    allow_rule(&x.command, x.approvals).replace("```", "'''")
                );
            }
            s
        }
        Format::Html => {
            let e = crate::matrix::render::escape;
            let mut s = format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title></head><body><h1>{}</h1>",
                e(&title(r.period)),
                e(&title(r.period))
            );
            s.push_str(&html_body(r, &link));
            s.push_str("</body></html>\n");
            s
        }
    }
}

/// The sections as HTML (every value escaped), for a page or a Matrix
/// message.
pub fn html_body(r: &Report, link: &dyn Fn(&str) -> String) -> String {
    let e = crate::matrix::render::escape;
    let mut s = String::new();
    for (h, rows) in sections(r, link) {
        let _ = write!(s, "<h2>{}</h2>", e(&h));
        if rows.is_empty() {
            s.push_str("<p>none</p>");
            continue;
        }
        s.push_str("<table>");
        for (k, v) in rows {
            let _ = write!(s, "<tr><td>{}</td><td>{}</td></tr>", e(&k), e(&v));
        }
        s.push_str("</table>");
    }
    for x in &r.repeated {
        let _ = write!(
            s,
            "<pre><code>{}</code></pre>",
            e(&allow_rule(&x.command, x.approvals))
        );
    }
    s
}

/// The period a digest due at `due` covers.
pub fn period_before(due: i64, length: std::time::Duration) -> Period {
    let len = i64::try_from(length.as_millis()).unwrap_or(i64::MAX);
    Period {
        from: due.saturating_sub(len),
        until: due,
    }
}

/// How often the schedule looks for a due digest.
pub const TICK: std::time::Duration = std::time::Duration::from_secs(5);

/// Where a digest goes: the chats configured for it.
pub struct Destinations {
    pub slack: Option<std::sync::Arc<crate::slack::Slack>>,
    pub matrix: Option<std::sync::Arc<crate::matrix::Matrix>>,
}

/// Starts the schedule's task, when `[digest]` is configured.
pub fn start(bot: &std::sync::Arc<Bot>, to: Destinations) {
    let Some(cfg) = bot.config().digest.clone() else {
        return;
    };
    let bot = bot.clone();
    tokio::spawn(async move {
        let me = crate::core::random_hex(8);
        // A digest due before this process started was missed while the
        // bot was down: it goes out once, marked late.
        let started = bot.now_ms();
        // The first start of a schedule sends nothing for the past.
        match bot.any_digest().await {
            Ok(false) => {
                if let Some(last) = cfg.last_at_or_before(bot.now_ms()) {
                    let _ = bot.claim_digest(last, "schedule-start").await;
                }
            }
            Ok(true) => {}
            Err(e) => tracing::error!("digest: cannot read the schedule's state: {e}"),
        }
        let mut tick = tokio::time::interval(TICK);
        loop {
            tick.tick().await;
            match bot.claim_asked_digest(&me).await {
                Ok(Some(period)) => {
                    let error = send(&bot, &cfg, &to, period, false).await.err();
                    if let Some(e) = &error {
                        tracing::error!("digest: {e}");
                    }
                    if let Err(e) = bot.digest_sent(period.until, false, error).await {
                        tracing::error!("digest: cannot record the digest asked for: {e}");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::error!("digest: cannot look for a digest asked for: {e}"),
            }
            let now = bot.now_ms();
            let Some(due) = cfg.last_at_or_before(now) else {
                continue;
            };
            match bot.claim_digest(due, &me).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::error!("digest: cannot claim the digest due {}: {e}", rfc3339(due));
                    continue;
                }
            }
            let late = due < started;
            let period = period_before(due, cfg.period);
            let error = send(&bot, &cfg, &to, period, late).await.err();
            if let Some(e) = &error {
                tracing::error!("digest: {e}");
            }
            if let Err(e) = bot.digest_sent(due, late, error).await {
                tracing::error!("digest: cannot record the digest due {}: {e}", rfc3339(due));
            }
        }
    });
}

/// Computes the digest of `period` and posts it everywhere it goes; the
/// first failure's reason, if any (the others are still tried).
pub async fn send(
    bot: &Bot,
    cfg: &crate::config::DigestConfig,
    to: &Destinations,
    period: Period,
    late: bool,
) -> Result<(), String> {
    let report = bot
        .digest(period)
        .await
        .map_err(|e| format!("cannot compute the digest: {e}"))?;
    let base = bot.config().base_url();
    let mut first_error = None;
    if let Some(slack) = &to.slack {
        for channel in &cfg.slack_channels {
            if let Err(e) = slack.post_digest(channel, &report, late, &base).await {
                bot.metrics().chat_failure("slack", "digest");
                first_error.get_or_insert(format!("Slack {channel}: {e}"));
            }
        }
    }
    if let Some(matrix) = &to.matrix {
        for room in &cfg.matrix_rooms {
            if let Err(e) = matrix.post_digest(room, &report, late, &base).await {
                bot.metrics().chat_failure("matrix", "digest");
                first_error.get_or_insert(format!("Matrix {room}: {e}"));
            }
        }
    }
    tracing::info!(
        "digest {} sent{}",
        title(period),
        if late { " (late)" } else { "" }
    );
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

//! The Block Kit messages, modals and texts the bot sends to Slack.
//!
//! Everything in a request was written by a possibly prompt-injected agent,
//! so this module must never let request text become Slack markup: untrusted
//! text goes only into `plain_text` objects and `rich_text` text elements
//! (which Slack never parses for mentions, links or formatting), or into
//! `mrkdwn` after [`escape`] (`&`, `<`, `>`). Invisible and direction-changing
//! characters are shown as `⟨U+202E⟩`. Every field is cut to fit Slack's
//! limits whatever the input, and when the command is shortened the parts
//! that triggered rules are shown on their own, so nothing dangerous hides
//! past the cut.

use crate::core::{Refusal, StoredRequest};
use crate::time::{human_duration, rfc3339};
use holdpoint_shared::annotation::{Annotation, Severity};
use holdpoint_shared::protocol::Status;
use holdpoint_shared::{Decision, Risk};
use serde_json::{Value, json};

/// Slack's limit for a header's text.
pub const HEADER_MAX: usize = 150;
/// Slack's limit for a section's text.
pub const SECTION_MAX: usize = 3000;
/// Slack's limit for one section field.
pub const FIELD_MAX: usize = 2000;
/// Slack's limit on blocks in a message.
pub const MAX_BLOCKS: usize = 50;
/// How much of a command the message shows, in characters (after
/// invisible characters were made visible).
pub const COMMAND_SHOWN: usize = 2400;
/// How much of one rule-triggering part is shown when the command is cut.
pub const PART_SHOWN: usize = 400;
/// The most annotations shown as their own blocks.
pub const MAX_ANNOTATIONS: usize = 12;
/// The most items of one annotation shown.
pub const MAX_ITEMS: usize = 15;

/// `action_id` of the Approve button.
pub const APPROVE: &str = "hp_approve";
/// `action_id` of the Deny button.
pub const DENY: &str = "hp_deny";
/// `callback_id` of the deny modal.
pub const DENY_VIEW: &str = "hp_deny";
/// `block_id` and `action_id` of the reason input in the deny modal.
pub const REASON: &str = "reason";

/// A message: the notification text and the blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Shown in notifications and where blocks cannot be; `mrkdwn`, escaped.
    pub text: String,
    pub blocks: Vec<Value>,
}

/// Escapes text for `mrkdwn`: `<!channel>`, `<@U…>` and `<url|label>` lose
/// their meaning, and invisible characters become visible.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in visible(s, false).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether `c` could hide text, reorder it or look like something else
/// than it is: controls, bidirectional formatting, zero-width and other
/// format characters, and whitespace other than the ASCII space.
pub fn is_suspicious(c: char) -> bool {
    if c == ' ' {
        return false;
    }
    let u = c as u32;
    c.is_control()
        || (c.is_whitespace() && !c.is_ascii())
        || matches!(
            u,
            0x00AD
                | 0x034F
                | 0x0600..=0x0605
                | 0x061C
                | 0x06DD
                | 0x070F
                | 0x0890..=0x0891
                | 0x08E2
                | 0x115F..=0x1160
                | 0x17B4..=0x17B5
                | 0x180B..=0x180F
                | 0x200B..=0x200F
                | 0x2028..=0x202F
                | 0x205F..=0x206F
                | 0x3164
                | 0xFE00..=0xFE0F
                | 0xFEFF
                | 0xFFA0
                | 0xFFF9..=0xFFFB
                | 0x110BD
                | 0x110CD
                | 0x13430..=0x1343F
                | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A
                | 0xE0000..=0xE0FFF
        )
}

/// Shows suspicious characters as `⟨U+XXXX⟩`. Newlines and tabs stay when
/// `multiline` (a code block shows them faithfully); otherwise they are
/// shown as `⟨U+000A⟩` too, so one-line fields stay on one line.
pub fn visible(s: &str, multiline: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if multiline && (c == '\n' || c == '\t') {
            out.push(c);
        } else if is_suspicious(c) {
            out.push_str(&format!("⟨U+{:04X}⟩", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Cuts `s` to at most `max` characters, ending with `…` when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Cuts the middle out of `s` when it is longer than `max` characters,
/// keeping the start and the end (where an appended `rm -rf /` would be).
/// Returns the text and how many characters were left out.
pub fn shorten_middle(s: &str, max: usize) -> (String, usize) {
    let total = s.chars().count();
    if total <= max {
        return (s.to_string(), 0);
    }
    let marker_room = 80;
    let keep = max.saturating_sub(marker_room);
    let head = keep * 2 / 3;
    let tail = keep - head;
    let hidden = total - head - tail;
    let mut out: String = s.chars().take(head).collect();
    out.push_str(&format!(
        "\n… ⟨{hidden} characters not shown here; full command on the web queue⟩ …\n"
    ));
    out.extend(s.chars().skip(total - tail));
    (out, hidden)
}

fn plain(text: &str) -> Value {
    json!({"type": "plain_text", "text": text, "emoji": false})
}

fn mrkdwn(text: &str) -> Value {
    json!({"type": "mrkdwn", "text": text, "verbatim": true})
}

/// A `plain_text` object whose text never exceeds `max` and is never empty.
fn plain_cut(text: &str, max: usize) -> Value {
    let t = cut(text, max);
    plain(if t.trim().is_empty() { "-" } else { &t })
}

fn risk_icon(r: Risk) -> &'static str {
    match r {
        Risk::Low => "🟢",
        Risk::Medium => "🟡",
        Risk::High => "🟠",
        Risk::Critical => "🔴",
    }
}

fn status_icon(s: Status) -> &'static str {
    match s {
        Status::Pending => "⏳",
        Status::Approved => "✅",
        Status::Denied => "⛔",
        Status::Expired => "⌛",
        Status::Cancelled => "✖",
    }
}

fn severity_icon(s: Severity) -> &'static str {
    match s {
        Severity::Info => "ℹ",
        Severity::Warning => "⚠",
        Severity::Danger => "🚨",
    }
}

/// The hits a reviewer must see: every one that reviews or denies, without
/// repeats.
fn blocking_hits(r: &StoredRequest) -> Vec<&holdpoint_shared::Hit> {
    let mut out: Vec<&holdpoint_shared::Hit> = Vec::new();
    for h in &r.request.verdict.hits {
        if h.decision >= Decision::Review
            && !out.iter().any(|o| o.rule == h.rule && o.part == h.part)
        {
            out.push(h);
        }
    }
    out
}

/// One line that says what the command does: the first part a rule fired
/// on, else the command's first line. Visible characters, uncut.
pub fn summary(r: &StoredRequest) -> String {
    let part = blocking_hits(r)
        .into_iter()
        .map(|h| h.part.trim())
        .find(|p| !p.is_empty());
    let text = match part {
        Some(p) => p.to_string(),
        None => r
            .request
            .command
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string(),
    };
    visible(&text, false)
}

/// How a decider is shown in `mrkdwn`: Slack users as mentions (their id
/// comes from Slack and is checked), everyone else escaped.
pub fn who(decided_by: &str) -> String {
    if let Some(id) = decided_by.strip_prefix("slack:")
        && is_slack_id(id)
    {
        return format!("<@{id}>");
    }
    let (ns, name) = decided_by.split_once(':').unwrap_or(("", decided_by));
    let shown = match ns {
        "web" => format!("{name} (web queue)"),
        "cli" => format!("{name} (command line)"),
        "runner" => format!("the agent on runner {name}"),
        _ => decided_by.to_string(),
    };
    escape(&shown)
}

/// Whether `s` looks like a Slack user, group or channel id.
pub fn is_slack_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Pending => "Pending",
        Status::Approved => "Approved",
        Status::Denied => "Denied",
        Status::Expired => "Expired",
        Status::Cancelled => "Cancelled",
    }
}

/// One line in `mrkdwn` that says how a request ended.
pub fn outcome_line(r: &StoredRequest) -> String {
    let took = human_duration(r.decided_at.unwrap_or(r.created_at) - r.created_at);
    let icon = status_icon(r.status);
    match r.status {
        Status::Pending => format!("{icon} *Waiting for a reviewer*"),
        Status::Expired => format!(
            "{icon} *Expired* after {took}: no reviewer decided in time, so the command was denied"
        ),
        Status::Cancelled => format!(
            "{icon} *Cancelled* by {} after {took}: the agent stopped waiting",
            who(r.decided_by.as_deref().unwrap_or("holdpoint"))
        ),
        s => format!(
            "{icon} *{}* by {} after {took}",
            status_word(s),
            who(r.decided_by.as_deref().unwrap_or("holdpoint"))
        ),
    }
}

/// A date Slack shows in the reader's time zone, with a UTC fallback.
fn slack_date(ms: i64) -> String {
    format!(
        "<!date^{}^{{date_short_pretty}} {{time_secs}}|{}>",
        ms.div_euclid(1000),
        rfc3339(ms)
    )
}

/// The link to the request on the web queue.
pub fn web_link(base_url: &str, id: &str) -> String {
    // The base URL comes from the configuration; `|` and `>` would end the
    // link early, so they are percent-encoded.
    let base = base_url
        .trim_end_matches('/')
        .replace('|', "%7C")
        .replace('>', "%3E")
        .replace('<', "%3C");
    format!("{base}/#{id}")
}

fn rich_preformatted(block_id: &str, text: &str) -> Value {
    json!({
        "type": "rich_text",
        "block_id": block_id,
        "elements": [{
            "type": "rich_text_preformatted",
            "elements": [{"type": "text", "text": if text.is_empty() { " " } else { text }}]
        }]
    })
}

/// An annotation as plain text: title, facts, items with their flags.
fn annotation_text(a: &Annotation) -> String {
    let one = |s: &str| visible(s, false);
    let mut s = format!(
        "{} {} · {}",
        severity_icon(a.severity),
        one(&a.probe),
        one(&a.title)
    );
    if let Some(e) = &a.error {
        s.push_str(&format!("\nprobe error: {}", one(e)));
    }
    for f in &a.facts {
        s.push_str(&format!("\n{}: {}", one(&f.label), one(&f.value)));
    }
    for i in a.items.iter().take(MAX_ITEMS) {
        let mut line = format!("\n• {}", one(&i.id));
        if !i.text.is_empty() {
            line.push_str(&format!(" {}", one(&i.text)));
        }
        if !i.details.is_empty() {
            let d: Vec<String> = i.details.iter().map(|d| one(d)).collect();
            line.push_str(&format!(" ({})", d.join(", ")));
        }
        if !i.flags.is_empty() {
            let f: Vec<String> = i.flags.iter().map(|f| one(f).to_uppercase()).collect();
            line.push_str(&format!(" ⚠ {}", f.join(", ")));
        }
        s.push_str(&line);
    }
    let more = a.items.len().saturating_sub(MAX_ITEMS);
    if more > 0 {
        s.push_str(&format!("\n… and {more} more"));
    }
    if a.truncated {
        s.push_str("\n… (the probe cut its list short: there is more than shown)");
    }
    s
}

/// The message for a request: the review message while it is pending, the
/// outcome (no buttons) once it is decided.
pub fn request_message(r: &StoredRequest, base_url: &str) -> Message {
    let id = &r.request.id;
    let risk = r.request.risk();
    let sum = summary(r);
    let pending = r.status == Status::Pending;
    let link = web_link(base_url, id);
    let mut blocks: Vec<Value> = Vec::new();

    // Header: the risk (or the outcome) and what the command does.
    let lead = if pending {
        format!(
            "{} {} risk · ",
            risk_icon(risk),
            risk.as_str().to_uppercase()
        )
    } else {
        format!(
            "{} {} · ",
            status_icon(r.status),
            status_word(r.status).to_uppercase()
        )
    };
    let room = HEADER_MAX.saturating_sub(lead.chars().count());
    blocks.push(json!({
        "type": "header",
        "block_id": "hp_header",
        "text": plain_cut(&format!("{lead}{}", cut(&sum, room)), HEADER_MAX),
    }));

    if !pending {
        blocks.push(json!({
            "type": "section",
            "block_id": "hp_outcome",
            "text": mrkdwn(&cut(&outcome_line(r), SECTION_MAX)),
        }));
        if let Some(reason) = r.reason.as_deref().filter(|s| !s.trim().is_empty()) {
            blocks.push(json!({
                "type": "section",
                "block_id": "hp_reason",
                "text": plain_cut(&format!("Reason: {}", visible(reason, true)), SECTION_MAX),
            }));
        }
    }

    // The command, exactly as the runner sent it (redacted there), in a
    // preformatted block that no character in it can close.
    let shown = visible(&r.request.command, true);
    let (command, hidden) = shorten_middle(&shown, COMMAND_SHOWN);
    blocks.push(rich_preformatted("hp_command", &command));
    if hidden > 0 {
        let total = shown.chars().count();
        blocks.push(json!({
            "type": "context",
            "block_id": "hp_cut",
            "elements": [mrkdwn(&format!(
                "⚠ Long command: {hidden} of {total} characters are not shown above. <{}|Read the full command on the web queue>. The parts the rules fired on:",
                escape(&link)
            ))],
        }));
        let mut parts: Vec<String> = Vec::new();
        for h in blocking_hits(r) {
            let (p, _) = shorten_middle(&visible(&h.part, true), PART_SHOWN);
            if !p.trim().is_empty() && !parts.contains(&p) {
                parts.push(p);
            }
            if parts.len() >= 10 {
                break;
            }
        }
        if parts.is_empty() {
            parts.push("(the rules named no single part: the whole command is held)".into());
        }
        blocks.push(rich_preformatted("hp_parts", &parts.join("\n")));
    }

    // Why it was held.
    let mut why = String::from("Why it was held:");
    let hits = blocking_hits(r);
    for (n, h) in hits.iter().enumerate() {
        let line = format!(
            "\n• {} [{} · {}]: {}",
            visible(&h.rule, false),
            h.decision,
            h.risk,
            visible(&h.reason, false)
        );
        if why.chars().count() + line.chars().count() > SECTION_MAX - 60 {
            why.push_str(&format!("\n… and {} more rules", hits.len() - n));
            break;
        }
        why.push_str(&line);
    }
    blocks.push(json!({
        "type": "section",
        "block_id": "hp_rules",
        "text": plain_cut(&why, SECTION_MAX),
    }));

    // Where and for whom.
    let field =
        |label: &str, value: &str| plain_cut(&format!("{label}\n{}", visible(value, false)), 300);
    let mut fields = vec![
        field("Runner", &r.runner),
        field("Host", &r.request.host),
        field("Directory", &r.request.cwd),
        field("Agent", r.request.agent.as_deref().unwrap_or("unknown")),
        field(
            "Requested by",
            r.request.requested_by.as_deref().unwrap_or("unknown"),
        ),
        field("Front end", &r.request.front_end),
    ];
    if let Some(s) = &r.request.session {
        fields.push(field("Session", s));
    }
    blocks.push(json!({
        "type": "section",
        "block_id": "hp_where",
        "fields": fields,
    }));

    // What the probes found.
    if !r.request.annotations.is_empty() {
        blocks.push(json!({"type": "divider", "block_id": "hp_divider"}));
    }
    for (n, a) in r
        .request
        .annotations
        .iter()
        .take(MAX_ANNOTATIONS)
        .enumerate()
    {
        blocks.push(json!({
            "type": "section",
            "block_id": format!("hp_annotation_{n}"),
            "text": plain_cut(&annotation_text(a), SECTION_MAX),
        }));
    }
    let more = r.request.annotations.len().saturating_sub(MAX_ANNOTATIONS);
    if more > 0 {
        blocks.push(json!({
            "type": "context",
            "block_id": "hp_more_annotations",
            "elements": [mrkdwn(&format!("{more} more findings on <{}|the web queue>", escape(&link)))],
        }));
    }

    // Identity and deadline.
    let deadline = if pending {
        format!(
            "expires {} (no answer is a denial)",
            slack_date(r.expires_at)
        )
    } else {
        format!("submitted {}", slack_date(r.created_at))
    };
    blocks.push(json!({
        "type": "context",
        "block_id": "hp_meta",
        "elements": [mrkdwn(&format!(
            "Request `{}` · {deadline} · <{}|web queue>",
            escape(id),
            escape(&link)
        ))],
    }));

    if pending {
        let value = format!("{id}:{}", r.request.command_hash);
        let mut approve = json!({
            "type": "button",
            "action_id": APPROVE,
            "text": plain("Approve"),
            "style": "primary",
            "value": value,
        });
        if risk == Risk::Critical {
            approve["confirm"] = json!({
                "title": plain("Approve a critical command?"),
                "text": plain_cut(&format!("It runs at once on {}: {}", visible(&r.request.host, false), sum), 300),
                "confirm": plain("Approve"),
                "deny": plain("Cancel"),
                "style": "danger",
            });
        }
        blocks.push(json!({
            "type": "actions",
            "block_id": "hp_actions",
            "elements": [
                approve,
                {
                    "type": "button",
                    "action_id": DENY,
                    "text": plain("Deny"),
                    "style": "danger",
                    "value": value,
                },
            ],
        }));
    }
    blocks.truncate(MAX_BLOCKS);

    let text = if pending {
        format!(
            "{} {} risk command waits for review: {}",
            risk_icon(risk),
            risk.as_str(),
            escape(&cut(&sum, 200))
        )
    } else {
        format!("{} {}", outcome_line(r), escape(&cut(&sum, 200)))
    };
    Message {
        text: cut(&text, SECTION_MAX),
        blocks,
    }
}

/// The reply posted in the message's thread once a request is decided.
pub fn thread_reply(r: &StoredRequest) -> String {
    let mut s = outcome_line(r);
    if let Some(reason) = r.reason.as_deref().filter(|s| !s.trim().is_empty()) {
        s.push_str(&format!("\n>{}", escape(&cut(reason, 2000))));
    }
    s
}

/// The modal that asks for a deny reason. `metadata` is carried back with
/// the submission.
pub fn deny_modal(r: &StoredRequest, metadata: &str) -> Value {
    json!({
        "type": "modal",
        "callback_id": DENY_VIEW,
        "private_metadata": metadata,
        "title": plain("Deny this command"),
        "submit": plain("Deny"),
        "close": plain("Cancel"),
        "blocks": [
            {
                "type": "section",
                "block_id": "hp_deny_what",
                "text": plain_cut(&format!("Deny: {}", summary(r)), SECTION_MAX),
            },
            {
                "type": "input",
                "block_id": REASON,
                "optional": true,
                "label": plain("Reason (the agent sees it)"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON,
                    "multiline": true,
                    "max_length": 2000,
                },
            },
        ],
    })
}

/// A short ephemeral answer to a click that did not decide.
/// What a Slack user is told when the core did not count their click.
pub fn refusal(r: &Refusal) -> String {
    match r {
        Refusal::NotAReviewer => "You are not one of holdpoint's reviewers, so this click was not counted. Ask an admin to add you to `reviewers`.".into(),
        Refusal::DirectoryUnavailable => "holdpoint could not check the reviewer groups with Slack just now; nothing was decided. Try again in a moment.".into(),
        Refusal::OwnRequest => "Refused: you asked for this command to run, so someone else must approve it.".into(),
        Refusal::CommandChanged => "Refused: the command changed since you saw it; look at it again.".into(),
        Refusal::OtherRunner => "Refused: another runner submitted this request.".into(),
    }
}

pub fn already_text(r: &StoredRequest) -> String {
    let when = r
        .decided_at
        .map(|ms| format!(" at {}", slack_date(ms)))
        .unwrap_or_default();
    format!(
        "This request was already decided: {}{when}.",
        outcome_line(r)
    )
}

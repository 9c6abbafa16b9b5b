//! The review view encoded as Block Kit, and the other texts the bot sends
//! to Slack.
//!
//! What is shown is the view's ([`crate::view`]); this module only decides
//! how Slack shows it. Everything in a request was written by a possibly
//! prompt-injected agent, so request text never becomes Slack markup: it
//! goes only into `plain_text` objects and `rich_text` text elements (which
//! Slack never parses for mentions, links or formatting), or into `mrkdwn`
//! after [`escape`] (`&`, `<`, `>`). Every field is cut to fit Slack's
//! limits whatever the input.

use crate::core::{Realm, Refusal, Reviewer, StoredRequest};
use crate::time::{human_duration, rfc3339};
use crate::view::{Action, Outcome, ReviewView, cut, risk_icon, status_icon, status_word};
use holdpoint_shared::protocol::Status;
use holdpoint_shared::text::visible;
use serde_json::{Value, json};

/// Slack's limit for a header's text.
pub const HEADER_MAX: usize = 150;
/// Slack's limit for a section's text.
pub const SECTION_MAX: usize = 3000;
/// Slack's limit for one section field.
pub const FIELD_MAX: usize = 2000;
/// Slack's limit on blocks in a message.
pub const MAX_BLOCKS: usize = 50;
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

/// How a decider is shown in `mrkdwn`: Slack users as mentions (their id
/// comes from Slack and is checked), everyone else escaped.
pub fn who(decided_by: &str) -> String {
    let Some(r) = Reviewer::parse(decided_by) else {
        return escape(decided_by);
    };
    let shown = match r.realm {
        Realm::Slack if is_slack_id(&r.id) => return format!("<@{}>", r.id),
        Realm::Web => format!("{} (web queue)", r.id),
        Realm::Cli => format!("{} (command line)", r.id),
        Realm::Runner => format!("the agent on runner {}", r.id),
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

/// One line in `mrkdwn` that says how a request ended (or that it waits).
pub fn outcome_line(outcome: Option<&Outcome>) -> String {
    let Some(o) = outcome else {
        return format!("{} *Waiting for a reviewer*", status_icon(Status::Pending));
    };
    let took = human_duration(o.took_ms);
    let icon = status_icon(o.status);
    match o.status {
        Status::Pending => format!("{icon} *Waiting for a reviewer*"),
        Status::Expired => format!(
            "{icon} *Expired* after {took}: no reviewer decided in time, so the command was denied"
        ),
        Status::Cancelled => format!(
            "{icon} *Cancelled* by {} after {took}: the agent stopped waiting",
            who(&o.decided_by)
        ),
        s => format!(
            "{icon} *{}* by {} after {took}",
            status_word(s),
            who(&o.decided_by)
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

/// A link for `mrkdwn`: `|` and `>` would end it early, so they are
/// percent-encoded (the base URL comes from the configuration).
fn link(url: &str) -> String {
    url.replace('|', "%7C")
        .replace('>', "%3E")
        .replace('<', "%3C")
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

/// The message for a request: the review message while it is pending, the
/// outcome (no buttons) once it is decided.
pub fn request_message(v: &ReviewView) -> Message {
    let id = &v.id;
    let sum = &v.summary;
    let pending = v.is_pending();
    let link = link(&v.link);
    let mut blocks: Vec<Value> = Vec::new();

    // Header: the risk (or the outcome) and what the command does.
    let lead = if pending {
        format!(
            "{} {} risk · ",
            risk_icon(v.risk),
            v.risk.as_str().to_uppercase()
        )
    } else {
        format!(
            "{} {} · ",
            status_icon(v.status),
            status_word(v.status).to_uppercase()
        )
    };
    let room = HEADER_MAX.saturating_sub(lead.chars().count());
    blocks.push(json!({
        "type": "header",
        "block_id": "hp_header",
        "text": plain_cut(&format!("{lead}{}", cut(sum, room)), HEADER_MAX),
    }));

    if let Some(o) = &v.outcome {
        blocks.push(json!({
            "type": "section",
            "block_id": "hp_outcome",
            "text": mrkdwn(&cut(&outcome_line(Some(o)), SECTION_MAX)),
        }));
        if let Some(reason) = o.reason.as_deref().filter(|s| !s.trim().is_empty()) {
            blocks.push(json!({
                "type": "section",
                "block_id": "hp_reason",
                "text": plain_cut(&format!("Reason: {}", visible(reason, true)), SECTION_MAX),
            }));
        }
    }

    // A request that needs several approvals says how many it has.
    if pending && v.counts_votes() {
        let line = format!("👥 {}", v.vote_line(who));
        blocks.push(json!({
            "type": "section",
            "block_id": "hp_votes",
            "text": mrkdwn(&cut(&line, SECTION_MAX)),
        }));
    }

    // The command, in a preformatted block that no character in it can
    // close.
    blocks.push(rich_preformatted("hp_command", &v.command));
    if v.command_hidden > 0 {
        blocks.push(json!({
            "type": "context",
            "block_id": "hp_cut",
            "elements": [mrkdwn(&format!(
                "⚠ Long command: {} of {} characters are not shown above. <{}|Read the full command on the web queue>. The parts the rules fired on:",
                v.command_hidden,
                v.command_total,
                escape(&link)
            ))],
        }));
        blocks.push(rich_preformatted("hp_parts", &v.parts.join("\n")));
    }

    // Why it was held.
    let mut why = String::from("Why it was held:");
    for (n, h) in v.hits.iter().enumerate() {
        let line = format!("\n• {} [{} · {}]: {}", h.rule, h.decision, h.risk, h.reason);
        if why.chars().count() + line.chars().count() > SECTION_MAX - 60 {
            why.push_str(&format!("\n… and {} more rules", v.hits.len() - n));
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
    let fields: Vec<Value> = v
        .fields
        .iter()
        .map(|(label, value)| plain_cut(&format!("{label}\n{value}"), 300))
        .collect();
    blocks.push(json!({
        "type": "section",
        "block_id": "hp_where",
        "fields": fields,
    }));

    // What the probes found.
    if !v.annotations.is_empty() {
        blocks.push(json!({"type": "divider", "block_id": "hp_divider"}));
    }
    for (n, a) in v.annotations.iter().enumerate() {
        blocks.push(json!({
            "type": "section",
            "block_id": format!("hp_annotation_{n}"),
            "text": plain_cut(a, SECTION_MAX),
        }));
    }
    if v.more_annotations > 0 {
        blocks.push(json!({
            "type": "context",
            "block_id": "hp_more_annotations",
            "elements": [mrkdwn(&format!("{} more findings on <{}|the web queue>", v.more_annotations, escape(&link)))],
        }));
    }

    // Identity and deadline.
    let deadline = if pending {
        format!(
            "expires {} (no answer is a denial)",
            slack_date(v.expires_at)
        )
    } else {
        format!("submitted {}", slack_date(v.created_at))
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

    if !v.actions.is_empty() {
        let value = format!("{id}:{}", v.command_hash);
        let elements: Vec<Value> = v
            .actions
            .iter()
            .map(|a| match a {
                Action::Approve { confirm } => {
                    let mut approve = json!({
                        "type": "button",
                        "action_id": APPROVE,
                        "text": plain("Approve"),
                        "style": "primary",
                        "value": value,
                    });
                    if let Some(question) = confirm {
                        approve["confirm"] = json!({
                            "title": plain("Approve a critical command?"),
                            "text": plain_cut(question, 300),
                            "confirm": plain("Approve"),
                            "deny": plain("Cancel"),
                            "style": "danger",
                        });
                    }
                    approve
                }
                Action::Deny => json!({
                    "type": "button",
                    "action_id": DENY,
                    "text": plain("Deny"),
                    "style": "danger",
                    "value": value,
                }),
            })
            .collect();
        blocks.push(json!({
            "type": "actions",
            "block_id": "hp_actions",
            "elements": elements,
        }));
    }
    blocks.truncate(MAX_BLOCKS);

    let text = if pending {
        format!(
            "{} {} risk command waits for review: {}",
            risk_icon(v.risk),
            v.risk.as_str(),
            escape(&cut(sum, 200))
        )
    } else {
        format!(
            "{} {}",
            outcome_line(v.outcome.as_ref()),
            escape(&cut(sum, 200))
        )
    };
    Message {
        text: cut(&text, SECTION_MAX),
        blocks,
    }
}

/// Slack ids as mentions: users `<@U…>`, user groups `<!subteam^S…>`.
/// Anything that is not a Slack id is left out (the config checks them).
pub fn mentions(ids: &[String]) -> String {
    ids.iter()
        .filter(|id| is_slack_id(id))
        .map(|id| {
            if id.starts_with('S') {
                format!("<!subteam^{id}>")
            } else {
                format!("<@{id}>")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The reminder an escalation step posts in the request's thread.
pub fn reminder(v: &ReviewView, reviewers: &[String]) -> String {
    let who = mentions(reviewers);
    let lead = if who.is_empty() {
        "⏰ Still waiting for a reviewer".to_string()
    } else {
        format!("⏰ {who}: still waiting for a reviewer")
    };
    cut(
        &format!(
            "{lead} · expires {} (no answer is a denial) · <{}|web queue>",
            slack_date(v.expires_at),
            escape(&link(&v.link))
        ),
        SECTION_MAX,
    )
}

/// The message an escalation step posts in the pager channel: the review
/// message, with its buttons, under a line that mentions the on-call
/// people.
pub fn pager_message(v: &ReviewView, oncall: &[String]) -> Message {
    let mut msg = request_message(v);
    let who = mentions(oncall);
    let since = slack_date(v.created_at);
    let line = if who.is_empty() {
        format!("🚨 *Escalated:* nobody has answered this request since {since}")
    } else {
        format!("🚨 {who} *Escalated:* nobody has answered this request since {since}")
    };
    let banner = json!({
        "type": "section",
        "block_id": "hp_escalated",
        "text": mrkdwn(&cut(&line, SECTION_MAX)),
    });
    let at = usize::from(!msg.blocks.is_empty());
    msg.blocks.insert(at, banner);
    while msg.blocks.len() > MAX_BLOCKS {
        // Keep the actions (last): drop what comes before them.
        let before_last = msg.blocks.len() - 2;
        msg.blocks.remove(before_last);
    }
    msg.text = cut(&format!("🚨 {who} {}", msg.text), SECTION_MAX);
    msg
}

/// The direct message that tells a requester how their request ended.
pub fn requester_outcome(v: &ReviewView) -> String {
    let mut s = format!(
        "Your agent's request: {}\n{}",
        escape(&cut(&v.summary, 300)),
        outcome_line(v.outcome.as_ref())
    );
    if let Some(reason) = v
        .outcome
        .as_ref()
        .and_then(|o| o.reason.as_deref())
        .filter(|s| !s.trim().is_empty())
    {
        s.push_str(&format!("\n>{}", escape(&cut(reason, 2000))));
    }
    s.push_str(&format!("\n<{}|web queue>", escape(&link(&v.link))));
    cut(&s, SECTION_MAX)
}

/// The direct message that tells a requester their request was escalated.
pub fn requester_escalated(v: &ReviewView) -> String {
    cut(
        &format!(
            "⏫ Nobody has answered your agent's request yet, so it was posted to the on-call reviewers: {}\nIt expires {} (no answer is a denial) · <{}|web queue>",
            escape(&cut(&v.summary, 300)),
            slack_date(v.expires_at),
            escape(&link(&v.link))
        ),
        SECTION_MAX,
    )
}

/// The reply posted in the message's thread once a request is decided.
pub fn thread_reply(v: &ReviewView) -> String {
    let mut s = outcome_line(v.outcome.as_ref());
    if let Some(reason) = v
        .outcome
        .as_ref()
        .and_then(|o| o.reason.as_deref())
        .filter(|s| !s.trim().is_empty())
    {
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
                "text": plain_cut(&format!("Deny: {}", crate::view::summary(r)), SECTION_MAX),
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

/// What a Slack user is told when the core did not count their click.
pub fn refusal(r: &Refusal) -> String {
    match r {
        Refusal::NotAReviewer => "You are not one of holdpoint's reviewers, so this click was not counted. Ask an admin to add you to `reviewers`.".into(),
        Refusal::DirectoryUnavailable => "holdpoint could not check the reviewer groups with Slack just now; nothing was decided. Try again in a moment.".into(),
        Refusal::OwnRequest => "Refused: you asked for this command to run, so someone else must approve it.".into(),
        Refusal::CommandChanged => "Refused: the command changed since you saw it; look at it again.".into(),
        Refusal::OtherRunner => "Refused: another runner submitted this request.".into(),
        Refusal::AlreadyVoted => "Your approval is counted already (perhaps from another of your accounts); it waits for another reviewer.".into(),
        Refusal::GroupsNeeded(missing) => format!("Not counted: the approvals still needed must come from {}, and you are in none of those groups.", crate::core::groups_needed(missing)),
    }
}

/// A short ephemeral answer to a click on a request already decided.
pub fn already_text(r: &StoredRequest) -> String {
    let when = r
        .decided_at
        .map(|ms| format!(" at {}", slack_date(ms)))
        .unwrap_or_default();
    let v = ReviewView::of(r, "");
    format!(
        "This request was already decided: {}{when}.",
        outcome_line(v.outcome.as_ref())
    )
}

/// The digest as a Slack message: a header, a section per part of it (cut
/// to Slack's limits), every runner-supplied text escaped.
pub fn digest_message(r: &crate::core::digest::Report, late: bool, base: &str) -> Message {
    let base = base.trim_end_matches('/');
    // A bare link: Slack links it, and it is escaped with the rest.
    let link = |id: &str| format!("{base}/#{id}");
    let title = crate::digest::title(r.period);
    let mut blocks = vec![json!({
        "type": "header",
        "text": plain_cut(&title, 150),
    })];
    if late {
        blocks.push(json!({
            "type": "context",
            "elements": [mrkdwn("Sent late: the bot was down when it was due.")],
        }));
    }
    for (heading, rows) in crate::digest::sections(r, &link) {
        let mut text = format!("*{}*", escape(&heading));
        if rows.is_empty() {
            text.push_str("\nnone");
        }
        for (k, v) in rows {
            text.push_str(&format!("\n• {}: {}", escape(&k), escape(&v)));
        }
        blocks.push(json!({"type": "section", "text": mrkdwn(&cut(&text, SECTION_MAX))}));
    }
    blocks.truncate(MAX_BLOCKS);
    Message {
        text: cut(&title, SECTION_MAX),
        blocks,
    }
}

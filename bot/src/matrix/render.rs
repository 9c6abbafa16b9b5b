//! The review view encoded as Matrix events, and the other texts the bot
//! sends to Matrix.
//!
//! What is shown is the view's ([`crate::view`]); this module only decides
//! how Matrix shows it. Everything in a request was written by a possibly
//! prompt-injected agent, so request text never becomes markup: in the HTML
//! `formatted_body` it is escaped (`&`, `<`, `>`, `"`, `'`), so it cannot
//! open a tag, a link or a pill (a mention is a link to matrix.to), and the
//! command sits in `<pre><code>` that no character in it can close. Every
//! message carries an explicit, empty `m.mentions`: clients and homeservers
//! then ignore the legacy body-based rules, so a command containing
//! `@room` or a user id notifies nobody. Hidden characters come visible
//! from the view (`⟨U+202E⟩`).

use crate::core::{Realm, Refusal, Reviewer};
use crate::time::{human_duration, rfc3339};
use crate::view::{Action, Outcome, ReviewView, cut, risk_icon, status_icon, status_word};
use holdpoint_shared::Risk;
use holdpoint_shared::protocol::Status;
use holdpoint_shared::text::visible;
use serde_json::{Value, json};

/// The reaction that approves (clients send it with or without U+FE0F).
pub const APPROVE_KEY: &str = "✅";
/// The reaction that denies.
pub const DENY_KEY: &str = "❌";

/// A message in both forms Matrix carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    /// The plain `body`.
    pub body: String,
    /// The `formatted_body` (`org.matrix.custom.html`).
    pub html: String,
}

/// Escapes text for HTML, element content and attribute values alike.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escaped, with hidden characters made visible and line breaks kept as
/// `<br>` (for text that is not already visible, such as a reason).
fn escape_lines(s: &str) -> String {
    escape(&visible(s, true)).replace('\n', "<br>")
}

/// How a decider is named: never as a pill, so naming them notifies nobody.
pub fn who(decided_by: &str) -> String {
    let Some(r) = Reviewer::parse(decided_by) else {
        return visible(decided_by, false);
    };
    let shown = match r.realm {
        Realm::Matrix => r.id.clone(),
        Realm::Slack => format!("{} (Slack)", r.id),
        Realm::Web => format!("{} (web queue)", r.id),
        Realm::Cli => format!("{} (command line)", r.id),
        Realm::Runner => format!("the agent on runner {}", r.id),
        Realm::System => return "holdpoint".into(),
    };
    visible(&shown, false)
}

/// One line (plain) that says how a request ended, or that it waits.
pub fn outcome_line(outcome: Option<&Outcome>) -> String {
    let Some(o) = outcome else {
        return format!("{} Waiting for a reviewer", status_icon(Status::Pending));
    };
    let took = human_duration(o.took_ms);
    let icon = status_icon(o.status);
    match o.status {
        Status::Pending => format!("{icon} Waiting for a reviewer"),
        Status::Expired => format!(
            "{icon} Expired after {took}: no reviewer decided in time, so the command was denied"
        ),
        Status::Cancelled => format!(
            "{icon} Cancelled by {} after {took}: the agent stopped waiting",
            who(&o.decided_by)
        ),
        s => format!(
            "{icon} {} by {} after {took}",
            status_word(s),
            who(&o.decided_by)
        ),
    }
}

/// The message for a request: the review message while it is pending, the
/// outcome once it ended.
pub fn request_text(v: &ReviewView) -> Text {
    let pending = v.is_pending();
    let mut body = String::new();
    let mut html = String::new();
    let sum = cut(&v.summary, 300);

    let lead = if pending {
        format!(
            "{} {} risk",
            risk_icon(v.risk),
            v.risk.as_str().to_uppercase()
        )
    } else {
        format!(
            "{} {}",
            status_icon(v.status),
            status_word(v.status).to_uppercase()
        )
    };
    body.push_str(&format!("{lead} · {sum}\n"));
    html.push_str(&format!("<h4>{} · {}</h4>", escape(&lead), escape(&sum)));

    if let Some(o) = &v.outcome {
        let line = outcome_line(Some(o));
        body.push_str(&format!("{line}\n"));
        html.push_str(&format!("<p><strong>{}</strong></p>", escape(&line)));
        if let Some(reason) = o.reason.as_deref().filter(|s| !s.trim().is_empty()) {
            let reason = cut(reason, 2000);
            body.push_str(&format!("Reason: {}\n", visible(&reason, true)));
            html.push_str(&format!("<p>Reason: {}</p>", escape_lines(&reason)));
        }
    }

    // A request that needs several approvals says how many it has.
    if pending && v.counts_votes() {
        let line = format!(
            "👥 {}",
            v.vote_line(|r| r.strip_prefix("matrix:").unwrap_or(r).to_string())
        );
        body.push_str(&format!("{}\n", visible(&line, true)));
        html.push_str(&format!("<p>{}</p>", escape(&line)));
    }

    body.push_str(&format!("\n{}\n", indent(&v.command)));
    html.push_str(&format!("<pre><code>{}</code></pre>", escape(&v.command)));
    if v.command_hidden > 0 {
        let note = format!(
            "⚠ Long command: {} of {} characters are not shown above; the full command is on the web queue. The parts the rules fired on:",
            v.command_hidden, v.command_total
        );
        body.push_str(&format!("\n{note}\n{}\n", indent(&v.parts.join("\n"))));
        html.push_str(&format!(
            "<p>{}</p><pre><code>{}</code></pre>",
            escape(&note),
            escape(&v.parts.join("\n"))
        ));
    }

    body.push_str("\nWhy it was held:\n");
    html.push_str("<p>Why it was held:</p><ul>");
    for h in &v.hits {
        let line = format!("{} [{} · {}]: {}", h.rule, h.decision, h.risk, h.reason);
        body.push_str(&format!("• {line}\n"));
        html.push_str(&format!(
            "<li><code>{}</code> [{} · {}]: {}</li>",
            escape(&h.rule),
            escape(&h.decision.to_string()),
            escape(h.risk.as_str()),
            escape(&h.reason)
        ));
    }
    html.push_str("</ul>");

    body.push('\n');
    html.push_str("<ul>");
    for (label, value) in &v.fields {
        let value = cut(value, 300);
        body.push_str(&format!("{label}: {value}\n"));
        html.push_str(&format!(
            "<li>{}: <code>{}</code></li>",
            escape(label),
            escape(&value)
        ));
    }
    html.push_str("</ul>");

    if !v.annotations.is_empty() {
        body.push_str("\nWhat holdpoint found:\n");
        html.push_str("<p>What holdpoint found:</p>");
        for a in &v.annotations {
            body.push_str(&format!("{a}\n"));
            html.push_str(&format!(
                "<blockquote>{}</blockquote>",
                escape(a).replace('\n', "<br>")
            ));
        }
        if v.more_annotations > 0 {
            let more = format!("{} more findings on the web queue", v.more_annotations);
            body.push_str(&format!("{more}\n"));
            html.push_str(&format!("<p>{}</p>", escape(&more)));
        }
    }

    let deadline = if pending {
        format!("expires {} (no answer is a denial)", rfc3339(v.expires_at))
    } else {
        format!("submitted {}", rfc3339(v.created_at))
    };
    body.push_str(&format!(
        "\nRequest {} · {deadline} · web queue: {}\n",
        v.id, v.link
    ));
    html.push_str(&format!(
        "<p>Request <code>{}</code> · {} · <a href=\"{}\">web queue</a></p>",
        escape(&v.id),
        escape(&deadline),
        escape(&v.link)
    ));

    if pending {
        let how = how_to_decide(v);
        body.push_str(&format!("\n{how}"));
        html.push_str(&format!("<p><em>{}</em></p>", escape(&how)));
    }
    Text {
        body: body.trim_end().to_string(),
        html,
    }
}

/// What a reviewer can do, in words.
fn how_to_decide(v: &ReviewView) -> String {
    let critical = v
        .actions
        .iter()
        .any(|a| matches!(a, Action::Approve { confirm: Some(_) }));
    if critical {
        format!(
            "Critical: approve by replying \"approve\" in this thread (a {APPROVE_KEY} reaction is not enough). React {DENY_KEY} or reply \"deny <reason>\" to deny."
        )
    } else {
        format!(
            "React {APPROVE_KEY} to approve or {DENY_KEY} to deny, or reply in this thread with \"approve\" or \"deny <reason>\"."
        )
    }
}

/// Indents every line, so the plain body shows the command as a block no
/// line of it can leave.
fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `m.room.message` content for `text`, notifying nobody.
pub fn message(text: &Text) -> Value {
    json!({
        "msgtype": "m.text",
        "body": text.body,
        "format": "org.matrix.custom.html",
        "formatted_body": text.html,
        "m.mentions": {},
    })
}

/// The content of the review message for `v`.
pub fn request_content(v: &ReviewView) -> Value {
    message(&request_text(v))
}

/// An `m.replace` edit of `event_id` to the view's current state.
pub fn edit_content(event_id: &str, v: &ReviewView) -> Value {
    let text = request_text(v);
    let new = message(&text);
    json!({
        "msgtype": "m.text",
        "body": format!("* {}", text.body),
        "format": "org.matrix.custom.html",
        "formatted_body": format!("* {}", text.html),
        "m.mentions": {},
        "m.new_content": new,
        "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
    })
}

/// A message in the thread of `root`.
pub fn thread_content(root: &str, text: &Text) -> Value {
    in_thread(root, message(text))
}

/// Message content `c`, placed in the thread of `root`.
pub fn in_thread(root: &str, mut c: Value) -> Value {
    c["m.relates_to"] = json!({
        "rel_type": "m.thread",
        "event_id": root,
        "is_falling_back": true,
        "m.in_reply_to": {"event_id": root},
    });
    c
}

/// Plain text as a [`Text`].
pub fn plain(s: &str) -> Text {
    Text {
        body: s.to_string(),
        html: escape(s).replace('\n', "<br>"),
    }
}

/// The thread reply once a request ended.
pub fn outcome_reply(v: &ReviewView) -> Text {
    with_reason(plain(&outcome_line(v.outcome.as_ref())), v)
}

/// `t` followed by the outcome's reason, when there is one.
fn with_reason(mut t: Text, v: &ReviewView) -> Text {
    if let Some(reason) = v
        .outcome
        .as_ref()
        .and_then(|o| o.reason.as_deref())
        .filter(|s| !s.trim().is_empty())
    {
        let reason = cut(reason, 2000);
        t.body
            .push_str(&format!("\nReason: {}", visible(&reason, true)));
        t.html
            .push_str(&format!("<br>Reason: {}", escape_lines(&reason)));
    }
    t
}

/// `text` led by mentions of `users` (full user ids from the bot's
/// configuration): their ids in the body, pills in the HTML, and exactly
/// them in `m.mentions`, so only they are notified.
pub fn mentioning(users: &[String], text: &Text) -> Value {
    let mut c = message(text);
    if users.is_empty() {
        return c;
    }
    let pills: Vec<String> = users
        .iter()
        .map(|u| format!("<a href=\"https://matrix.to/#/{0}\">{0}</a>", escape(u)))
        .collect();
    c["body"] = json!(format!("{}: {}", users.join(" "), text.body));
    c["formatted_body"] = json!(format!("{}: {}", pills.join(" "), text.html));
    c["m.mentions"] = json!({ "user_ids": users });
    c
}

/// The reminder an escalation step posts in the request's thread.
pub fn reminder(v: &ReviewView) -> Text {
    plain(&format!(
        "⏰ Still waiting for a reviewer: {} · expires {} (no answer is a denial) · web queue: {}",
        visible(&cut(&v.summary, 300), true),
        rfc3339(v.expires_at),
        v.link
    ))
}

/// The message an escalation step posts in the pager room: the review
/// message under a line that says it is escalated.
pub fn pager_text(v: &ReviewView) -> Text {
    let lead = format!(
        "🚨 Escalated: nobody has answered this request since {}",
        rfc3339(v.created_at)
    );
    let t = request_text(v);
    Text {
        body: format!("{lead}\n{}", t.body),
        html: format!("<p><strong>{}</strong></p>{}", escape(&lead), t.html),
    }
}

/// The direct message that tells a requester how their request ended.
pub fn requester_outcome(v: &ReviewView) -> Text {
    let mut t = with_reason(
        plain(&format!(
            "Your agent's request: {}\n{}",
            visible(&cut(&v.summary, 300), true),
            outcome_line(v.outcome.as_ref())
        )),
        v,
    );
    t.body.push_str(&format!("\nWeb queue: {}", v.link));
    t.html.push_str(&format!(
        "<br><a href=\"{}\">web queue</a>",
        escape(&v.link)
    ));
    t
}

/// The direct message that tells a requester their request was escalated.
pub fn requester_escalated(v: &ReviewView) -> Text {
    plain(&format!(
        "⏫ Nobody has answered your agent's request yet, so it was posted to the on-call reviewers: {}\nIt expires {} (no answer is a denial) · web queue: {}",
        visible(&cut(&v.summary, 300), true),
        rfc3339(v.expires_at),
        v.link
    ))
}

/// What a Matrix user is told when the core did not count their decision.
pub fn refusal(r: &Refusal) -> String {
    match r {
        Refusal::NotAReviewer => "Not counted: you are not one of holdpoint's reviewers. Ask an admin to add you to matrix.reviewers (or to give you the power level it asks for).".into(),
        Refusal::DirectoryUnavailable => "Not counted: holdpoint could not check your power level in the review room just now; nothing was decided. Try again in a moment.".into(),
        Refusal::OwnRequest => "Refused: you asked for this command to run, so someone else must approve it.".into(),
        Refusal::CommandChanged => "Refused: the command changed since you saw it; look at it again.".into(),
        Refusal::OtherRunner => "Refused: another runner submitted this request.".into(),
        Refusal::AlreadyVoted => "Not counted again: your approval is counted already (perhaps from another of your accounts); it waits for another reviewer.".into(),
        Refusal::GroupsNeeded(missing) => format!("Not counted: the approvals still needed must come from {}, and you are in none of those groups.", crate::core::groups_needed(missing)),
    }
}

/// The answer to a ✅ on a critical request.
pub fn confirm_needed(v: &ReviewView) -> String {
    let question = v
        .actions
        .iter()
        .find_map(|a| match a {
            Action::Approve { confirm } => confirm.clone(),
            _ => None,
        })
        .unwrap_or_default();
    format!(
        "This request is critical, so a reaction does not approve it. {question}\nTo approve it, reply \"approve\" in this thread."
    )
}

/// The answer when decisions must come from verified devices and this one
/// did not.
pub fn unverified(reaction: bool) -> String {
    if reaction {
        "Not counted: in this room holdpoint accepts decisions only from verified devices, and a reaction's relation is not encrypted, so it proves nothing. Reply \"approve\" or \"deny <reason>\" in this thread from a verified device.".into()
    } else {
        "Not counted: in this room holdpoint accepts decisions only from verified devices, and this message came from a device your identity has not signed (or the bot does not trust). Verify the device and reply again.".into()
    }
}

/// Whether a decision about `risk` needs a confirming reply.
pub fn needs_reply(risk: Risk) -> bool {
    risk == Risk::Critical
}

/// A reaction key as a decision: `Some(true)` approves, `Some(false)`
/// denies. Variation selectors and skin tones do not matter.
pub fn reaction_decision(key: &str) -> Option<bool> {
    let k: String = key.chars().filter(|c| *c != '\u{fe0f}').collect();
    match k.as_str() {
        "✅" | "✔" | "☑" => Some(true),
        "❌" | "✖" | "❎" => Some(false),
        _ => None,
    }
}

/// A reply's text as a decision: `approve`, or `deny` and its reason.
/// A rich-reply fallback (lines starting `> `) is skipped.
pub fn reply_decision(body: &str) -> Option<(bool, Option<String>)> {
    let text: String = body
        .lines()
        .skip_while(|l| l.starts_with("> ") || *l == ">")
        .collect::<Vec<_>>()
        .join("\n");
    let text = text.trim();
    let (word, rest) = match text.find(char::is_whitespace) {
        Some(i) => (&text[..i], text[i..].trim()),
        None => (text, ""),
    };
    match word.to_ascii_lowercase().as_str() {
        "approve" | "approved" => Some((true, None)),
        "deny" | "denied" => Some((false, (!rest.is_empty()).then(|| rest.to_string()))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_read_as_decisions() {
        assert_eq!(reply_decision("approve"), Some((true, None)));
        assert_eq!(reply_decision("  Approve \n"), Some((true, None)));
        assert_eq!(
            reply_decision("deny wrong branch, use a PR"),
            Some((false, Some("wrong branch, use a PR".into())))
        );
        assert_eq!(reply_decision("deny"), Some((false, None)));
        assert_eq!(
            reply_decision("> <@bot:x> the request\n\ndeny no"),
            Some((false, Some("no".into())))
        );
        assert_eq!(reply_decision("approved?? no idea"), None);
        assert_eq!(reply_decision("looks fine to me"), None);
        assert_eq!(reply_decision("denylist"), None);
    }

    #[test]
    fn reactions_read_as_decisions_with_or_without_the_variation_selector() {
        assert_eq!(reaction_decision("✅"), Some(true));
        assert_eq!(reaction_decision("✔\u{fe0f}"), Some(true));
        assert_eq!(reaction_decision("❌"), Some(false));
        assert_eq!(reaction_decision("👍"), None);
    }

    #[test]
    fn html_escapes_every_character_that_could_open_markup() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}

//! The neutral review view: what a reviewer must see about a request,
//! whatever the chat. Built once from a stored request; each adapter only
//! encodes it (Slack as Block Kit) and never decides what to show.
//!
//! Everything in a request was written by a possibly prompt-injected agent.
//! The view makes every hidden character visible (`⟨U+202E⟩`, from the one
//! table in `holdpoint_shared::text`) and, when a long command is cut in
//! the middle, keeps the parts the rules fired on apart, so nothing
//! dangerous hides past the cut. Escaping for a chat's markup is the
//! adapter's job.

use crate::core::{Reviewer, StoredRequest};
use holdpoint_shared::annotation::{Annotation, Severity};
use holdpoint_shared::protocol::Status;
use holdpoint_shared::text::visible;
use holdpoint_shared::{Decision, Hit, Risk};

/// How much of a command is shown, in characters (after hidden characters
/// were made visible).
pub const COMMAND_SHOWN: usize = 2400;
/// How much of one rule-triggering part is shown when the command is cut.
pub const PART_SHOWN: usize = 400;
/// The most rule-triggering parts shown when the command is cut.
pub const MAX_PARTS: usize = 10;
/// The most annotations shown.
pub const MAX_ANNOTATIONS: usize = 12;
/// The most items of one annotation shown.
pub const MAX_ITEMS: usize = 15;

/// One rule that holds the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HitLine {
    /// Visible text.
    pub rule: String,
    pub decision: Decision,
    pub risk: Risk,
    /// Visible text.
    pub reason: String,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    /// Who decided, as stored (`holdpoint` for expiry).
    pub decided_by: String,
    pub took_ms: i64,
    /// The reviewer's or the bot's reason, as given (raw: each adapter
    /// makes it visible in its own way).
    pub reason: Option<String>,
    pub decided_at: Option<i64>,
}

impl Outcome {
    /// Who decided, as a reviewer, when the stored text names one.
    pub fn decider(&self) -> Option<Reviewer> {
        Reviewer::parse(&self.decided_by)
    }
}

/// What a reviewer can do from the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Approve; `confirm` is the question to ask first (critical risk).
    Approve {
        confirm: Option<String>,
    },
    Deny,
}

/// What every chat shows for a request.
#[derive(Debug, Clone)]
pub struct ReviewView {
    pub id: String,
    pub command_hash: String,
    pub risk: Risk,
    pub status: Status,
    /// One line that says what the command does: the first part a rule
    /// fired on, else the command's first line. Visible, uncut.
    pub summary: String,
    /// The command, visible (newlines and tabs kept), cut in the middle to
    /// [`COMMAND_SHOWN`].
    pub command: String,
    /// Characters left out of `command`; 0 when it is whole.
    pub command_hidden: usize,
    /// The visible command's length in characters.
    pub command_total: usize,
    /// When the command is cut: the parts the rules fired on, each visible
    /// and cut to [`PART_SHOWN`].
    pub parts: Vec<String>,
    /// The rules that hold it (review or deny), without repeats.
    pub hits: Vec<HitLine>,
    /// Where and for whom: label and visible one-line value.
    pub fields: Vec<(&'static str, String)>,
    /// What the probes found, as plain visible text, at most
    /// [`MAX_ANNOTATIONS`].
    pub annotations: Vec<String>,
    /// Annotations not shown.
    pub more_annotations: usize,
    pub created_at: i64,
    pub expires_at: i64,
    /// Set once the request ended.
    pub outcome: Option<Outcome>,
    /// Empty once the request ended.
    pub actions: Vec<Action>,
    /// The request on the web queue.
    pub link: String,
    /// The approvals counted so far (reviewer text, as stored), when the
    /// request needs more than one.
    pub votes: Vec<String>,
    /// Approvals it needs; 1 for most.
    pub approvals_required: u32,
    /// By group, the approvals still needed from its members.
    pub missing: Vec<(String, u32)>,
}

impl ReviewView {
    /// Whether it counts votes: more than one approval, or some from a
    /// group.
    pub fn counts_votes(&self) -> bool {
        self.approvals_required > 1 || !self.missing.is_empty()
    }

    /// `1 of 2 approvals: alice` (with `who` naming each voter), and what
    /// the groups still need: `; still needs 1 from security`.
    pub fn vote_line(&self, who: impl Fn(&str) -> String) -> String {
        let voters: Vec<String> = self.votes.iter().map(|v| who(v)).collect();
        let mut line = format!(
            "{} of {} approvals",
            self.votes.len(),
            self.approvals_required
        );
        if !voters.is_empty() {
            line.push_str(": ");
            line.push_str(&voters.join(", "));
        }
        if !self.missing.is_empty() {
            line.push_str("; still needs ");
            line.push_str(&crate::core::groups_needed(&self.missing));
        }
        line
    }
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

/// The hits a reviewer must see: every one that reviews or denies, without
/// repeats.
fn blocking_hits(r: &StoredRequest) -> Vec<&Hit> {
    let mut out: Vec<&Hit> = Vec::new();
    for h in &r.request.verdict.hits {
        if h.decision >= Decision::Review
            && !out.iter().any(|o| o.rule == h.rule && o.part == h.part)
        {
            out.push(h);
        }
    }
    out
}

/// See [`ReviewView::summary`].
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

pub fn risk_icon(r: Risk) -> &'static str {
    match r {
        Risk::Low => "🟢",
        Risk::Medium => "🟡",
        Risk::High => "🟠",
        Risk::Critical => "🔴",
    }
}

pub fn status_icon(s: Status) -> &'static str {
    match s {
        Status::Pending => "⏳",
        Status::Approved => "✅",
        Status::Denied => "⛔",
        Status::Expired => "⌛",
        Status::Cancelled => "✖",
    }
}

pub fn status_word(s: Status) -> &'static str {
    match s {
        Status::Pending => "Pending",
        Status::Approved => "Approved",
        Status::Denied => "Denied",
        Status::Expired => "Expired",
        Status::Cancelled => "Cancelled",
    }
}

fn severity_icon(s: Severity) -> &'static str {
    match s {
        Severity::Info => "ℹ",
        Severity::Warning => "⚠",
        Severity::Danger => "🚨",
    }
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

impl ReviewView {
    /// The view of `r`, linking to the web queue at `base_url`.
    pub fn of(r: &StoredRequest, base_url: &str) -> ReviewView {
        let risk = r.request.risk();
        let summary = summary(r);
        let pending = r.status == Status::Pending;
        let shown = visible(&r.request.command, true);
        let (command, command_hidden) = shorten_middle(&shown, COMMAND_SHOWN);
        let hits_raw = blocking_hits(r);
        let mut parts: Vec<String> = Vec::new();
        if command_hidden > 0 {
            for h in &hits_raw {
                let (p, _) = shorten_middle(&visible(&h.part, true), PART_SHOWN);
                if !p.trim().is_empty() && !parts.contains(&p) {
                    parts.push(p);
                }
                if parts.len() >= MAX_PARTS {
                    break;
                }
            }
            if parts.is_empty() {
                parts.push("(the rules named no single part: the whole command is held)".into());
            }
        }
        let hits = hits_raw
            .iter()
            .map(|h| HitLine {
                rule: visible(&h.rule, false),
                decision: h.decision,
                risk: h.risk,
                reason: visible(&h.reason, false),
            })
            .collect();
        let one = |s: &str| visible(s, false);
        let mut fields = vec![
            ("Runner", one(&r.runner)),
            ("Host", one(&r.request.host)),
            ("Directory", one(&r.request.cwd)),
            (
                "Agent",
                one(r.request.agent.as_deref().unwrap_or("unknown")),
            ),
            (
                "Requested by",
                one(r.request.requested_by.as_deref().unwrap_or("unknown")),
            ),
            ("Front end", one(&r.request.front_end)),
        ];
        if let Some(s) = &r.request.session {
            fields.push(("Session", one(s)));
        }
        let annotations = r
            .request
            .annotations
            .iter()
            .take(MAX_ANNOTATIONS)
            .map(annotation_text)
            .collect();
        let outcome = (!pending).then(|| Outcome {
            status: r.status,
            decided_by: r
                .decided_by
                .clone()
                .unwrap_or_else(|| Reviewer::system().to_string()),
            took_ms: r.decided_at.unwrap_or(r.created_at) - r.created_at,
            reason: r.reason.clone(),
            decided_at: r.decided_at,
        });
        let actions = if pending {
            let confirm = (risk == Risk::Critical).then(|| {
                format!(
                    "It runs at once on {}: {}",
                    visible(&r.request.host, false),
                    summary
                )
            });
            vec![Action::Approve { confirm }, Action::Deny]
        } else {
            vec![]
        };
        ReviewView {
            id: r.request.id.clone(),
            command_hash: r.request.command_hash.clone(),
            risk,
            status: r.status,
            summary,
            command_total: shown.chars().count(),
            command,
            command_hidden,
            parts,
            hits,
            fields,
            annotations,
            more_annotations: r.request.annotations.len().saturating_sub(MAX_ANNOTATIONS),
            created_at: r.created_at,
            expires_at: r.expires_at,
            outcome,
            actions,
            link: format!("{}/#{}", base_url.trim_end_matches('/'), r.request.id),
            votes: r.votes.clone(),
            approvals_required: r.quorum.approvals,
            missing: r.missing.clone(),
        }
    }

    pub fn is_pending(&self) -> bool {
        self.status == Status::Pending
    }
}

//! Risk annotations: read-only facts about what a command would destroy,
//! gathered next to the agent before a request is posted, and shown to the
//! reviewer beside the verdict.
//!
//! An annotation is generic on purpose: a title, label/value facts and a list
//! of items (commits, files, namespaces, resources, statements), each with
//! flags. A chat adapter renders any annotation without knowing which probe
//! made it; [`Annotation::render_text`] is the plain-text form.
//!
//! Invariant: an annotation never carries a secret it did not redact. The
//! runner calls [`Annotation::redact`] before anything leaves it.

use crate::redact::redact;
use serde::{Deserialize, Serialize};
use std::fmt::{self, Write as _};

/// How much an annotation should worry the reviewer. Ordered from least to
/// most, so that `max` picks the most worrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Context that helps the review; nothing is lost.
    Info,
    /// Something is lost or changed that a reviewer should weigh.
    Warning,
    /// Work, data, backups or secrets would be lost or exposed.
    Danger,
}

impl Severity {
    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Danger => "danger",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One labelled fact, shown as `label: value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    /// What the value is, e.g. `remote-tracking ref`.
    pub label: String,
    /// The value, on one line, e.g. `origin/main, fetched 3 hours ago`.
    pub value: String,
}

impl Fact {
    /// A fact from anything printable.
    pub fn new(label: impl Into<String>, value: impl fmt::Display) -> Fact {
        Fact {
            label: label.into(),
            value: value.to_string(),
        }
    }
}

/// One thing the command touches: a commit, a file, a namespace, a cloud
/// resource, a SQL statement.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Item {
    /// A short identifier: an abbreviated commit hash, a path, a resource id.
    pub id: String,
    /// What it is, in one line: a commit subject, a statement, a kind.
    pub text: String,
    /// Secondary details in display order: author, date, size.
    pub details: Vec<String>,
    /// Markers that deserve attention, e.g. `security-fix`, `revert`,
    /// `backup`, `credentials`, `production`, `destructive`.
    pub flags: Vec<String>,
}

/// The facts one probe gathered about one part of a command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotation {
    /// The probe that made it: `git`, `files`, `kubernetes`, `cloud` or `sql`.
    pub probe: String,
    /// How much it should worry the reviewer.
    pub severity: Severity,
    /// One line that says what would happen, e.g.
    /// `overwrites 12 commits by 3 authors on origin/main`.
    pub title: String,
    /// Labelled facts, in display order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub facts: Vec<Fact>,
    /// The things touched, most important first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<Item>,
    /// `items` (or a count in `facts`) is incomplete: a limit cut it short.
    #[serde(default)]
    pub truncated: bool,
    /// The probe failed or ran out of time; the rest of the annotation holds
    /// whatever it learnt before that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Annotation {
    /// An annotation with a title and nothing else yet.
    pub fn new(
        probe: impl Into<String>,
        severity: Severity,
        title: impl Into<String>,
    ) -> Annotation {
        Annotation {
            probe: probe.into(),
            severity,
            title: title.into(),
            facts: Vec::new(),
            items: Vec::new(),
            truncated: false,
            error: None,
        }
    }

    /// The annotation of a probe that could not say anything: the reviewer
    /// learns that the facts are missing, and why.
    pub fn failed(
        probe: impl Into<String>,
        title: impl Into<String>,
        error: impl Into<String>,
    ) -> Annotation {
        let mut a = Annotation::new(probe, Severity::Warning, title);
        a.error = Some(error.into());
        a
    }

    /// Adds a fact.
    pub fn fact(&mut self, label: impl Into<String>, value: impl fmt::Display) -> &mut Self {
        self.facts.push(Fact::new(label, value));
        self
    }

    /// Replaces every string by its redacted form.
    pub fn redact(&mut self) {
        let r = |s: &mut String| *s = redact(s);
        r(&mut self.probe);
        r(&mut self.title);
        for f in &mut self.facts {
            r(&mut f.label);
            r(&mut f.value);
        }
        for i in &mut self.items {
            r(&mut i.id);
            r(&mut i.text);
            i.details.iter_mut().for_each(r);
            i.flags.iter_mut().for_each(r);
        }
        if let Some(e) = &mut self.error {
            r(e);
        }
    }

    /// The annotation as plain text, for terminals and chat surfaces that
    /// show no formatting:
    ///
    /// ```text
    /// [danger] git: overwrites 2 commits by 2 authors on origin/main
    ///   remote-tracking ref: origin/main, updated 3 minutes ago
    ///   - a1b2c3d Fix session fixation (Alice, 2024-05-01) [security-fix]
    /// ```
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "[{}] {}: {}",
            self.severity,
            self.probe,
            one_line(&self.title)
        );
        if let Some(e) = &self.error {
            let _ = writeln!(s, "  error: {}", one_line(e));
        }
        for f in &self.facts {
            let _ = writeln!(s, "  {}: {}", one_line(&f.label), one_line(&f.value));
        }
        for i in &self.items {
            let mut line = format!("  - {}", one_line(&i.id));
            if !i.text.is_empty() {
                line.push(' ');
                line.push_str(&one_line(&i.text));
            }
            if !i.details.is_empty() {
                let d: Vec<String> = i.details.iter().map(|d| one_line(d)).collect();
                let _ = write!(line, " ({})", d.join(", "));
            }
            if !i.flags.is_empty() {
                let f: Vec<String> = i.flags.iter().map(|f| one_line(f)).collect();
                let _ = write!(line, " [{}]", f.join(", "));
            }
            s.push_str(&line);
            s.push('\n');
        }
        if self.truncated {
            s.push_str("  … (cut short: more than shown)\n");
        }
        s
    }
}

/// Text on one line: control characters (newlines, escapes) become spaces, so
/// a commit subject or a file name cannot forge extra lines in a chat message.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Annotation {
        let mut a = Annotation::new(
            "git",
            Severity::Danger,
            "overwrites 1 commit by 1 author on origin/main",
        );
        a.fact("remote-tracking ref", "origin/main");
        a.items.push(Item {
            id: "a1b2c3d".into(),
            text: "Fix session fixation\n[info] forged".into(),
            details: vec!["Alice".into(), "2024-05-01".into()],
            flags: vec!["security-fix".into()],
        });
        a
    }

    #[test]
    fn renders_every_part_on_its_own_line() {
        let text = sample().render_text();
        assert_eq!(
            text,
            "[danger] git: overwrites 1 commit by 1 author on origin/main\n  remote-tracking ref: origin/main\n  - a1b2c3d Fix session fixation [info] forged (Alice, 2024-05-01) [security-fix]\n"
        );
    }

    #[test]
    fn redact_reaches_every_string() {
        let mut a = sample();
        a.fact("url", "postgres://app:s3cret@db/app");
        a.items[0]
            .details
            .push("token=ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into());
        a.error = Some("--password hunter2 refused".into());
        a.redact();
        let json = serde_json::to_string(&a).unwrap();
        assert!(
            !json.contains("s3cret") && !json.contains("ghp_a") && !json.contains("hunter2"),
            "{json}"
        );
    }

    #[test]
    fn severity_is_ordered_and_round_trips() {
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Danger);
        let a = sample();
        let back: Annotation = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(a, back);
    }
}

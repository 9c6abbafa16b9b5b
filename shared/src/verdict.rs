//! The verdict: what the gate decided about one command line, and why.
//!
//! This is the one type for that concept. The runner acts on it, the JSON of
//! `holdpoint check` is its serialisation, and later the bot receives it
//! inside a request.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What happens to a command. Ordered from loosest to strictest, so that
/// `max` picks the strictest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Runs at once, without a human.
    Allow,
    /// Waits for a human reviewer.
    Review,
    /// Refused outright.
    Deny,
}

impl Decision {
    /// The lowercase name used in policies and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Review => "review",
            Decision::Deny => "deny",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much damage a command could do. Ordered from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
    Critical,
}

impl Risk {
    /// The lowercase name used in policies and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
            Risk::Critical => "critical",
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule (or one built-in safety check) that fired on one part of the line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    /// The rule id, e.g. `git.push.force`; built-in checks use ids under `gate.`.
    pub rule: String,
    pub decision: Decision,
    pub risk: Risk,
    /// The reason shown to reviewers and agents.
    pub reason: String,
    /// The part of the command line the rule fired on, as the gate saw it
    /// (program and literal arguments after quote removal).
    pub part: String,
}

/// The gate's answer for a whole command line: the strictest of all its parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub decision: Decision,
    pub risk: Risk,
    /// Every rule that fired, strictest first. Allow rules are listed too, so
    /// `--explain` can show why a harmless part passed.
    pub hits: Vec<Hit>,
}

impl Verdict {
    /// Builds the verdict from the hits: the strictest decision wins, and the
    /// risk is the highest risk among the hits that carry that decision.
    ///
    /// No hits at all is not an allow: it is a review, because the gate saw
    /// nothing it could vouch for.
    pub fn from_hits(mut hits: Vec<Hit>) -> Verdict {
        if hits.is_empty() {
            hits.push(Hit {
                rule: "gate.empty".into(),
                decision: Decision::Review,
                risk: Risk::Low,
                reason: "the gate found no command it could vouch for".into(),
                part: String::new(),
            });
        }
        hits.sort_by_key(|h| std::cmp::Reverse((h.decision, h.risk)));
        let decision = hits[0].decision;
        let risk = hits[0].risk;
        Verdict {
            decision,
            risk,
            hits,
        }
    }

    /// The ids of the rules that decided the verdict (those with the winning
    /// decision), without repeats, in order.
    pub fn deciding_rules(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for h in self.hits.iter().filter(|h| h.decision == self.decision) {
            if !out.contains(&h.rule.as_str()) {
                out.push(&h.rule);
            }
        }
        out
    }

    /// The reasons of the deciding rules, without repeats, in order.
    pub fn deciding_reasons(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for h in self.hits.iter().filter(|h| h.decision == self.decision) {
            if !out.contains(&h.reason.as_str()) {
                out.push(&h.reason);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(rule: &str, decision: Decision, risk: Risk) -> Hit {
        Hit {
            rule: rule.into(),
            decision,
            risk,
            reason: rule.into(),
            part: String::new(),
        }
    }

    #[test]
    fn strictest_decision_wins_over_higher_risk() {
        let v = Verdict::from_hits(vec![
            hit("a", Decision::Review, Risk::Critical),
            hit("b", Decision::Deny, Risk::Low),
            hit("c", Decision::Allow, Risk::Low),
        ]);
        assert_eq!(v.decision, Decision::Deny);
        assert_eq!(v.risk, Risk::Low);
        assert_eq!(v.deciding_rules(), vec!["b"]);
    }

    #[test]
    fn no_hits_is_review_not_allow() {
        let v = Verdict::from_hits(vec![]);
        assert_eq!(v.decision, Decision::Review);
    }
}

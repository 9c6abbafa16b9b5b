//! The one decision every front end shares: given a command line, run it or
//! refuse it, and say why.

use holdpoint_shared::{Context, Decision, Policy, Verdict};

/// Exit code when the policy denies a command.
pub const EXIT_DENIED: i32 = 126;
/// Exit code when a command needs approval that was not given.
pub const EXIT_NOT_APPROVED: i32 = 125;
/// Exit code when holdpoint itself cannot work (bad policy, bad input).
pub const EXIT_GATE_ERROR: i32 = 124;

/// What a front end must do with a command.
#[derive(Debug)]
pub enum Outcome {
    /// Run it now.
    Run,
    /// Refuse it: exit with `code` after printing `message` (to the agent).
    Refuse { code: i32, message: String },
}

/// Classifies and decides. Until an approval bot is configured, a command
/// that needs review is refused with a message that says so.
pub fn decide(policy: &Policy, line: &str, ctx: &Context) -> (Verdict, Outcome) {
    let verdict = policy.classify(line, ctx);
    let outcome = match verdict.decision {
        Decision::Allow => Outcome::Run,
        Decision::Deny => Outcome::Refuse {
            code: EXIT_DENIED,
            message: format!(
                "holdpoint: denied ({} risk): {}\nholdpoint: rules: {}",
                verdict.risk,
                verdict.deciding_reasons().join("; "),
                verdict.deciding_rules().join(", ")
            ),
        },
        Decision::Review => Outcome::Refuse {
            code: EXIT_NOT_APPROVED,
            message: format!(
                "holdpoint: this command needs a human's approval ({} risk): {}\nholdpoint: rules: {}\nholdpoint: no approval bot is configured (set HOLDPOINT_URL and HOLDPOINT_TOKEN), so it was not run",
                verdict.risk,
                verdict.deciding_reasons().join("; "),
                verdict.deciding_rules().join(", ")
            ),
        },
    };
    (verdict, outcome)
}

/// Quotes words so that a POSIX shell reads them back as the same words.
pub fn shell_join<S: AsRef<str>>(words: &[S]) -> String {
    let mut out = String::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let w = w.as_ref();
        let plain = !w.is_empty()
            && w.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'_' | b'-' | b'.' | b'/' | b':' | b'=' | b'@' | b'%' | b'+' | b','
                    )
            });
        if plain {
            out.push_str(w);
        } else {
            out.push('\'');
            out.push_str(&w.replace('\'', "'\\''"));
            out.push('\'');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_quotes_what_needs_quoting() {
        assert_eq!(shell_join(&["git", "push", "--force"]), "git push --force");
        assert_eq!(
            shell_join(&["echo", "a b", "it's", ""]),
            "echo 'a b' 'it'\\''s' ''"
        );
        assert_eq!(shell_join(&["echo", "$(rm -rf /)"]), "echo '$(rm -rf /)'");
    }
}

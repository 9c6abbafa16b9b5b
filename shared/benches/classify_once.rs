//! What one runner process pays to classify one command: load the built-in
//! policy and classify each command given once, compiling the rules and
//! toolbox levels it needs on first use. Meant to be counted, not timed:
//! instruction counts repeat exactly, whatever else the machine does.
//!
//! ```text
//! cargo bench -p holdpoint-shared --bench classify_once --no-run
//! valgrind --tool=callgrind target/release/deps/classify_once-* 'git status --short'
//! ```
//!
//! With no command it classifies each of the kit's `COLD_COMMANDS`, in a
//! fresh policy each, and prints their verdicts. `@FILE` classifies every
//! line of FILE with one policy, `REPS` times (environment variable
//! `CLASSIFY_ONCE_REPS`, default 1): the count for 3 minus the count for 1,
//! halved, is what the warm classifications cost.

#[path = "../tests/support/mod.rs"]
mod support;

use holdpoint_shared::{Context, Decision, Policy};

fn main() {
    let ctx = Context::fixed();
    let given: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let Some(file) = given.first().and_then(|a| a.strip_prefix('@')) {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let reps: usize = std::env::var("CLASSIFY_ONCE_REPS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(1);
        let policy = Policy::builtin().unwrap_or_else(|e| panic!("{e}"));
        let mut allowed = 0usize;
        for _ in 0..reps {
            for line in text.lines() {
                allowed += usize::from(policy.classify(line, &ctx).decision == Decision::Allow);
            }
        }
        println!("{allowed} allowed");
        return;
    }
    let lines: Vec<&str> = if given.is_empty() {
        support::COLD_COMMANDS.to_vec()
    } else {
        given.iter().map(String::as_str).collect()
    };
    for line in lines {
        let policy = Policy::builtin().unwrap_or_else(|e| panic!("{e}"));
        let v = policy.classify(line, &ctx);
        println!("{}\t{line}", v.decision);
    }
}

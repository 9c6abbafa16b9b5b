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
//! With no command it classifies each of the kit's `COLD_COMMANDS`, in a fresh
//! policy each, and prints their verdicts.

use holdpoint_shared::{Context, Policy};

#[path = "../tests/support/mod.rs"]
mod support;

fn main() {
    let ctx = Context::fixed();
    let given: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
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

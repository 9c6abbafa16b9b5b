//! Parse + classify arbitrary input: no input may panic the classifier, and
//! a line the parser rejects is never allowed.
#![no_main]

use holdpoint_shared::{Context, Decision, Policy};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| Policy::builtin().unwrap_or_else(|e| panic!("{e}")))
}

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let ctx = Context::fixed();
    let v = policy().classify(&line, &ctx);
    if v.hits.iter().any(|h| h.rule == "gate.parse-error") {
        assert_ne!(v.decision, Decision::Allow, "a parse error was allowed: {line:?}");
    }
});

//! A regression check on what classification costs, counted in
//! instructions (callgrind), which repeat exactly on a shared machine where
//! times do not. It runs when `HOLDPOINT_INSTRUCTION_CHECK=1` (CI sets it)
//! and valgrind is installed; otherwise it says that it skipped.
//!
//! The test runs its own binary under callgrind, counting only inside two
//! functions: `cold_pass` (for each of the kit's cold commands, load the
//! built-in policy and classify the command once: what one runner process
//! pays) and `warm_pass` (one policy classifying the first everyday corpus
//! lines twice). The counts are compared with `instructions.baseline`
//! beside this file, for the build profile the test was built with; an
//! increase of more than a quarter fails. `HOLDPOINT_INSTRUCTION_UPDATE=1`
//! writes the measured counts into the baseline instead.
//!
//! `HOLDPOINT_INSTRUCTION_CHECK=1 cargo test -p holdpoint-shared --test instructions`

#[path = "support/mod.rs"]
mod support;

use holdpoint_shared::{Context, Decision, Policy};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How much more than the baseline a count may be.
const TOLERANCE: f64 = 1.25;
/// How many everyday corpus lines the warm pass classifies.
const WARM_LINES: usize = 150;

#[inline(never)]
fn cold_pass(ctx: &Context) -> usize {
    let mut allowed = 0;
    for &cmd in support::COLD_COMMANDS {
        let policy = Policy::builtin().unwrap_or_else(|e| panic!("{e}"));
        allowed += usize::from(black_box(policy.classify(cmd, ctx)).decision == Decision::Allow);
    }
    allowed
}

#[inline(never)]
fn warm_pass(policy: &Policy, ctx: &Context, lines: &[String]) -> usize {
    let mut allowed = 0;
    for _ in 0..2 {
        for line in lines {
            allowed +=
                usize::from(black_box(policy.classify(line, ctx)).decision == Decision::Allow);
        }
    }
    allowed
}

fn everyday() -> Vec<String> {
    support::own_corpus()
        .into_iter()
        .filter(|c| c.origin.starts_with("18-everyday"))
        .map(|c| c.command)
        .take(WARM_LINES)
        .collect()
}

/// What callgrind runs: both passes, once. Ignored in ordinary runs; the
/// check below starts it by name.
#[test]
#[ignore = "run under callgrind by counts_stay_within_the_baseline"]
fn measured_passes() {
    let ctx = Context::fixed();
    let lines = everyday();
    assert_eq!(lines.len(), WARM_LINES, "the everyday corpus shrank");
    let policy = Policy::builtin().unwrap_or_else(|e| panic!("{e}"));
    // Compile what the warm pass needs before it is counted.
    let first = warm_pass(&policy, &ctx, &lines);
    assert!(first > 0);
    assert!(cold_pass(&ctx) > 0);
    assert_eq!(warm_pass(&policy, &ctx, &lines), first);
}

fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Counts the instructions inside `function` during `measured_passes`.
fn count(function: &str, dir: &Path) -> u64 {
    let out = dir.join(format!("callgrind.{function}"));
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("no test binary: {e}"));
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--quiet")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(format!("--toggle-collect=*instructions::{function}*"))
        .arg(&exe)
        .args([
            "--ignored",
            "--exact",
            "measured_passes",
            "--test-threads=1",
        ])
        .arg("--quiet")
        .status()
        .unwrap_or_else(|e| panic!("cannot run valgrind: {e}"));
    assert!(status.success(), "measured_passes failed under callgrind");
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    let total = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no instruction total in {}", out.display()));
    assert!(total > 0, "callgrind counted nothing inside {function}");
    total
}

fn baseline_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/instructions.baseline")
}

/// `profile function count` lines.
fn read_baseline() -> Vec<(String, String, u64)> {
    let text = std::fs::read_to_string(baseline_path()).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((
                w.next()?.to_string(),
                w.next()?.to_string(),
                w.next()?.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn counts_stay_within_the_baseline() {
    if std::env::var("HOLDPOINT_INSTRUCTION_CHECK").as_deref() != Ok("1") {
        println!("skipped: set HOLDPOINT_INSTRUCTION_CHECK=1 to count instructions");
        return;
    }
    let has_valgrind = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_valgrind,
        "HOLDPOINT_INSTRUCTION_CHECK=1 but valgrind is not installed"
    );
    let dir = std::env::temp_dir().join(format!("holdpoint-instructions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let measured: Vec<(&str, u64)> = ["cold_pass", "warm_pass"]
        .into_iter()
        .map(|f| (f, count(f, &dir)))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    let mut baseline = read_baseline();
    if std::env::var("HOLDPOINT_INSTRUCTION_UPDATE").as_deref() == Ok("1") {
        baseline.retain(|(p, _, _)| p != profile());
        for (f, n) in &measured {
            baseline.push((profile().to_string(), f.to_string(), *n));
        }
        baseline.sort();
        let mut text = String::from(
            "# Instructions counted by tests/instructions.rs: profile, pass, count.\n",
        );
        for (p, f, n) in &baseline {
            text.push_str(&format!("{p} {f} {n}\n"));
        }
        std::fs::write(baseline_path(), text).unwrap_or_else(|e| panic!("baseline: {e}"));
        println!("baseline updated: {measured:?}");
        return;
    }
    let mut worse = Vec::new();
    for (f, n) in &measured {
        let Some((_, _, base)) = baseline
            .iter()
            .find(|(p, name, _)| p == profile() && name == f)
        else {
            panic!(
                "no {} baseline for {f} (measured {n}); run with HOLDPOINT_INSTRUCTION_UPDATE=1",
                profile()
            );
        };
        let ratio = *n as f64 / *base as f64;
        println!(
            "{} {f}: {n} instructions, baseline {base} ({ratio:.3}x)",
            profile()
        );
        if ratio > TOLERANCE {
            worse.push(format!("{f}: {n} > {TOLERANCE} x {base}"));
        }
    }
    assert!(
        worse.is_empty(),
        "classification costs more than the baseline allows: {worse:?}"
    );
}

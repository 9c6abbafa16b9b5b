//! Metamorphic tests: wrapping a command (in `bash -c`, `sudo`, `env X=1`, a
//! subshell, `true && …`, `… ; true`, a pipeline) or quoting parts of its
//! words never yields a looser verdict than the bare command. Lines are
//! classified inside the example project, with the front end's findings
//! about the paths they delete.

mod support;

use holdpoint_shared::{Decision, Policy};

/// A small deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Whether the line is one simple command, so that a prefix wrapper applies
/// to all of it (and does not start with an assignment, which only some
/// wrappers accept).
fn is_simple(cmd: &str) -> bool {
    !cmd.contains(|c: char| ";&|(){}<>\n`$#!".contains(c))
        && !cmd.trim().is_empty()
        && !cmd
            .split_whitespace()
            .next()
            .is_some_and(|w| w.contains('='))
}

fn single_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn plain_word(w: &str) -> bool {
    !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./=-:@+,".contains(c))
        && !w.contains('=')
}

/// Quotes some plain words of a simple command, in one of three styles.
fn quote_words(cmd: &str, rng: &mut Rng) -> Option<String> {
    if !is_simple(cmd) || cmd.contains(['\'', '"', '\\', '~', '*', '?', '[']) {
        return None;
    }
    let words: Vec<&str> = cmd.split(' ').collect();
    let mut changed = false;
    let out: Vec<String> = words
        .iter()
        .map(|w| {
            if !plain_word(w) || rng.pick(2) == 0 {
                return w.to_string();
            }
            changed = true;
            match rng.pick(3) {
                0 => format!("'{w}'"),
                1 => format!("\"{w}\""),
                _ => {
                    // Split the word with an empty quoted string: r''m.
                    let mid = w.len() / 2;
                    if w.is_char_boundary(mid) && mid > 0 {
                        format!("{}''{}", &w[..mid], &w[mid..])
                    } else {
                        format!("'{w}'")
                    }
                }
            }
        })
        .collect();
    changed.then(|| out.join(" "))
}

type Transform = fn(&str, &mut Rng) -> Option<String>;

fn transforms() -> Vec<(&'static str, Transform)> {
    vec![
        ("bash -c", |c, _| {
            Some(format!("bash -c {}", single_quote(c)))
        }),
        ("sh -lc", |c, _| Some(format!("sh -lc {}", single_quote(c)))),
        ("sudo", |c, _| is_simple(c).then(|| format!("sudo {c}"))),
        ("sudo -u root --", |c, _| {
            is_simple(c).then(|| format!("sudo -u root -- {c}"))
        }),
        ("env X=1", |c, _| {
            is_simple(c).then(|| format!("env X=1 {c}"))
        }),
        ("nice", |c, _| {
            is_simple(c).then(|| format!("nice -n 5 {c}"))
        }),
        ("timeout", |c, _| {
            is_simple(c).then(|| format!("timeout 30 {c}"))
        }),
        ("subshell", |c, _| Some(format!("(\n{c}\n)"))),
        ("group", |c, _| Some(format!("{{\n{c}\n}}"))),
        ("true &&", |c, _| Some(format!("true && {c}"))),
        ("; true", |c, _| Some(format!("{c}\ntrue"))),
        ("| cat", |c, _| Some(format!("{{\n{c}\n}} | cat"))),
        // Inside `$(…)`, an unbalanced `)` (a `case` pattern) ends the
        // substitution early in brush's reading: keep to balanced lines.
        ("$(…)", |c, _| {
            (c.matches('(').count() == c.matches(')').count()).then(|| format!("echo \"$({c}\n)\""))
        }),
        ("quoting", quote_words),
    ]
}

#[test]
fn wrapping_or_quoting_never_loosens_a_verdict() {
    let policy = Policy::builtin().unwrap_or_else(|e| panic!("{e}"));
    let mut bases: Vec<String> = support::own_corpus()
        .into_iter()
        .map(|c| c.command)
        .collect();
    if let Some(dir) = support::notes_dir() {
        let text = std::fs::read_to_string(dir.join("policy-corpus.tsv")).unwrap_or_default();
        bases.extend(
            support::parse(&text, "sample")
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.command),
        );
    }
    bases.sort();
    bases.dedup();
    // Long lines make the generated cases slow without adding cases of interest.
    bases.retain(|b| b.len() < 2000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let ts = transforms();
    let mut failures = Vec::new();
    let mut checked = 0;
    for base in &bases {
        let bv = policy.classify(base, &support::project_context(&policy, base));
        // A line the shell cannot parse means something else once wrapped;
        // only well-formed lines carry the property.
        if bv.decision == Decision::Allow || bv.hits.iter().any(|h| h.rule == "gate.parse-error") {
            continue;
        }
        // Every single transform, then random chains of two and three.
        let mut variants: Vec<(String, String)> = Vec::new();
        for (name, t) in &ts {
            if let Some(v) = t(base, &mut rng) {
                variants.push((name.to_string(), v));
            }
        }
        for _ in 0..4 {
            let mut cur = base.clone();
            let mut names = Vec::new();
            for _ in 0..(2 + rng.pick(2)) {
                let (name, t) = &ts[rng.pick(ts.len())];
                if let Some(v) = t(&cur, &mut rng) {
                    cur = v;
                    names.push(*name);
                }
            }
            variants.push((names.join(" ∘ "), cur));
        }
        for (name, v) in variants {
            checked += 1;
            let tv = policy.classify(&v, &support::project_context(&policy, &v));
            if tv.decision < bv.decision {
                failures.push(format!(
                    "{name}: {:?} is {} but {:?} is {}",
                    base, bv.decision, v, tv.decision
                ));
            }
        }
    }
    assert!(
        checked > 1000,
        "too few generated cases ({checked}); is the corpus there?"
    );
    assert!(
        failures.is_empty(),
        "{} looser variants of {checked}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

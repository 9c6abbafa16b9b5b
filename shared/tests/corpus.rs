//! The labelled corpora: every line must classify as labelled.

mod support;

use holdpoint_shared::{Context, Decision, Policy};
use support::{Label, notes_dir, own_corpus, parse, project_context};

fn policy() -> Policy {
    match Policy::builtin() {
        Ok(p) => p,
        Err(e) => panic!("the built-in policy does not load: {e}"),
    }
}

#[test]
fn builtin_policy_examples_all_hold() {
    let failures = policy().check_examples(None);
    let text: Vec<String> = failures.iter().map(|f| f.to_string()).collect();
    assert!(failures.is_empty(), "{}", text.join("\n"));
}

#[test]
fn own_corpus_classifies_as_labelled() {
    let policy = policy();
    let cases = own_corpus();
    assert!(!cases.is_empty(), "shared/tests/corpus holds no cases");
    let mut wrong = Vec::new();
    for c in &cases {
        let v = policy.classify(&c.command, &project_context(&policy, &c.command));
        if !c.label.accepts(v.decision) {
            wrong.push(format!(
                "{}: expected {:?}, got {} ({}) for {:?}",
                c.origin,
                c.label,
                v.decision,
                v.deciding_rules().join(","),
                c.command
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases misclassified:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn dangerous_corpus_lines_are_never_allowed() {
    // The stronger property behind the labels: nothing labelled review, deny
    // or gated is ever allowed, inside a project or in a working tree that
    // is none (where the front end still looks for links).
    let policy = policy();
    for c in own_corpus().iter().filter(|c| c.label != Label::Allow) {
        let inside = project_context(&policy, &c.command);
        let mut outside = inside.clone();
        outside.project = None;
        for ctx in [outside, inside] {
            let v = policy.classify(&c.command, &ctx);
            assert_ne!(
                v.decision,
                Decision::Allow,
                "{}: {:?} was allowed (project: {:?})",
                c.origin,
                c.command,
                ctx.project
            );
        }
    }
}

#[test]
fn shared_sample_corpus_classifies_as_labelled() {
    let Some(dir) = notes_dir() else {
        eprintln!("skipped: ../shared/policy-corpus.tsv is not beside this checkout");
        return;
    };
    let text = std::fs::read_to_string(dir.join("policy-corpus.tsv")).unwrap_or_default();
    let cases = parse(&text, "policy-corpus.tsv").unwrap_or_else(|e| panic!("{e}"));
    let policy = policy();
    let ctx = Context::fixed();
    let mut wrong = Vec::new();
    for c in &cases {
        let v = policy.classify(&c.command, &ctx);
        if !c.label.accepts(v.decision) {
            wrong.push(format!(
                "{}: {:?} got {} ({})",
                c.origin,
                c.command,
                v.decision,
                v.deciding_rules().join(",")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// dcg's regression corpus: every case it denies must be gated here. The
/// cases it allows and holdpoint holds are printed with the rule that holds
/// them (run with `--nocapture` to read the list).
#[test]
fn peer_dcg_corpus_denials_are_all_gated() {
    let Some(dir) = notes_dir() else {
        eprintln!("skipped: ../shared/external/dcg-corpus is not beside this checkout");
        return;
    };
    let root = dir.join("external/dcg-corpus");
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(
        !files.is_empty(),
        "no dcg corpus files under {}",
        root.display()
    );
    let policy = policy();
    let mut ctx = Context::fixed();
    ctx.env.insert("TMPDIR".into(), "/tmp".into());
    let (mut denies, mut allows, mut held) = (0, 0, Vec::new());
    let mut bypasses = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let doc: toml::Table =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let Some(cases) = doc.get("case").and_then(|c| c.as_array()) else {
            continue;
        };
        for case in cases {
            let kind = case
                .get("input_kind")
                .and_then(|v| v.as_str())
                .unwrap_or("command");
            let Some(cmd) = case.get("command").and_then(|v| v.as_str()) else {
                continue;
            };
            let expected = case
                .get("expected")
                .or_else(|| case.get("expected_decision"))
                .and_then(|v| v.as_str())
                .unwrap_or("");
            let command = if kind == "hook_json" {
                match serde_json::from_str::<serde_json::Value>(cmd) {
                    Ok(v) => v["tool_input"]["command"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    Err(_) => continue,
                }
            } else {
                cmd.to_string()
            };
            let v = policy.classify(&command, &ctx);
            let name = f.strip_prefix(&root).unwrap_or(f).display().to_string();
            match expected {
                "deny" => {
                    denies += 1;
                    if v.decision == Decision::Allow {
                        bypasses.push(format!("{name}: {command:?}"));
                    }
                }
                "allow" => {
                    allows += 1;
                    if v.decision != Decision::Allow {
                        held.push(format!(
                            "{name}: {command:?} -> {} ({})",
                            v.decision,
                            v.deciding_rules().join(",")
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    println!(
        "dcg corpus: {denies} deny cases, {allows} allow cases; holdpoint holds {} of the allow cases:",
        held.len()
    );
    for h in &held {
        println!("  held {h}");
    }
    assert!(
        denies > 50,
        "expected the dcg corpus to hold many deny cases, found {denies}"
    );
    assert!(
        bypasses.is_empty(),
        "dcg deny cases that holdpoint allows:\n{}",
        bypasses.join("\n")
    );
}

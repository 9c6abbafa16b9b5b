//! A dry run counts only when its flag is where the tool reads it. The
//! rules find flags with `[programs.X] value_options` (and the top level of
//! the toolbox entry); the toolbox, with every level's options. If a level
//! a dry-run rule allows had an option taking its value in the next word
//! that the rules did not know, `--opt --dry-run=client` would be a dry run
//! to the rules and a real run to the tool. This test keeps them agreeing.

use holdpoint_shared::policy::BUILTIN_POLICY;
use toml::{Table, Value};

/// The levels the dry-run allow rules reach: program and subcommand path.
const LEVELS: &[(&str, &[&str])] = &[
    ("kubectl", &["apply"]),
    ("kubectl", &["create"]),
    ("kubectl", &["delete"]),
    ("kubectl", &["label"]),
    ("kubectl", &["annotate"]),
    ("kubectl", &["scale"]),
    ("kubectl", &["set", "image"]),
    ("kubectl", &["run"]),
    ("helm", &["install"]),
    ("helm", &["upgrade"]),
    ("aws", &["*", "run-instances"]),
    ("aws", &["*", "terminate-instances"]),
    ("aws", &["*", "stop-instances"]),
    ("aws", &["*", "create-tags"]),
];

fn table<'a>(v: &'a Value, what: &str) -> &'a Table {
    v.as_table()
        .unwrap_or_else(|| panic!("{what} is not a table"))
}

/// Whether an option's kind takes its value in the next word.
fn takes_next_word(kind: &str) -> bool {
    !(kind == "flag" || kind.starts_with('?') || kind == "code")
}

#[test]
fn options_of_dry_run_levels_are_seen_alike_by_rules_and_toolbox() {
    let doc: Table = toml::from_str(BUILTIN_POLICY).unwrap_or_else(|e| panic!("{e}"));
    let tools = table(&doc["tool"], "tool");
    let programs = table(&doc["programs"], "programs");
    let mut wrong = Vec::new();
    for (program, path) in LEVELS {
        let top = table(&tools[*program], program);
        let known: Vec<String> = programs
            .get(*program)
            .and_then(|p| p.get("value_options"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let top_options = top.get("options").and_then(Value::as_table);
        let seen = |opt: &str| {
            known.iter().any(|k| k == opt)
                || top_options
                    .and_then(|o| o.get(opt))
                    .and_then(Value::as_str)
                    .is_some_and(takes_next_word)
        };
        let mut level = top;
        for step in *path {
            let subs = table(&level["sub"], "sub");
            level = table(
                subs.get(*step)
                    .unwrap_or_else(|| panic!("{program}: no level {path:?}")),
                step,
            );
        }
        let Some(options) = level.get("options").and_then(Value::as_table) else {
            continue;
        };
        assert!(
            options.contains_key("--dry-run"),
            "{program} {path:?} does not list --dry-run"
        );
        for (opt, kind) in options {
            let kind = kind.as_str().unwrap_or("");
            if takes_next_word(kind) && !seen(opt) {
                wrong.push(format!(
                    "{program} {path:?}: `{opt}` takes the next word, but the rules do not know it"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

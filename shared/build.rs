//! Checks the built-in policy's TOML at build time and turns it into Rust
//! data: an index of rule ids and programs, with each rule, program spec and
//! toolbox entry kept as JSON to be parsed only when a command needs it. The
//! runner starts for every command an agent runs, so it must not parse the
//! whole policy.
//!
//! The policy is `src/policy/default.toml` plus every `src/policy/tools/*.toml`
//! (the toolbox, one file per family of programs; their rules are appended
//! in file-name order). The merged document is written out too, so that
//! `holdpoint policy show` and the tests see exactly what was indexed.

use std::fmt::Write as _;
use std::path::PathBuf;

fn load(path: &str) -> toml::Table {
    println!("cargo:rerun-if-changed={path}");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{path} is not valid TOML: {e}"))
}

fn main() {
    let src = "src/policy/default.toml";
    let mut doc = load(src);
    println!("cargo:rerun-if-changed=src/policy/tools");
    let mut parts: Vec<PathBuf> = std::fs::read_dir("src/policy/tools")
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    for part in &parts {
        let name = part.display().to_string();
        let extra = load(&name);
        for (key, value) in extra {
            match (key.as_str(), value) {
                ("rule", toml::Value::Array(rules)) => {
                    let all = doc
                        .entry("rule")
                        .or_insert_with(|| toml::Value::Array(Vec::new()));
                    if let toml::Value::Array(a) = all {
                        a.extend(rules);
                    }
                }
                ("tool" | "programs", toml::Value::Table(t)) => {
                    let all = doc
                        .entry(key.clone())
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    if let toml::Value::Table(a) = all {
                        for (k, v) in t {
                            if a.insert(k.clone(), v).is_some() {
                                panic!(
                                    "{name}: `{key}.{k}` is defined twice in the built-in policy"
                                );
                            }
                        }
                    }
                }
                (other, _) => panic!("{name}: unexpected top-level key `{other}`"),
            }
        }
    }
    // Named lists (`[sets]`, such as the credential inventory) are written
    // once and used by many rules as `"@set:name"`: expand them here.
    let sets: Vec<(String, Vec<String>)> = doc
        .remove("sets")
        .and_then(|v| v.as_table().cloned())
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let items = v
                .as_array()
                .unwrap_or_else(|| panic!("sets.{k} must be a list of strings"))
                .iter()
                .map(|i| {
                    i.as_str()
                        .unwrap_or_else(|| panic!("sets.{k} must be a list of strings"))
                        .to_string()
                })
                .collect();
            (k, items)
        })
        .collect();
    if let Some(toml::Value::Array(rules)) = doc.get_mut("rule") {
        for rule in rules.iter_mut() {
            let Some(t) = rule.as_table_mut() else {
                continue;
            };
            for (_, v) in t.iter_mut() {
                let toml::Value::Array(items) = v else {
                    continue;
                };
                let mut expanded = Vec::with_capacity(items.len());
                for item in items.drain(..) {
                    match item.as_str().and_then(|s| s.strip_prefix("@set:")) {
                        Some(name) => {
                            let (_, list) = sets
                                .iter()
                                .find(|(k, _)| k == name)
                                .unwrap_or_else(|| panic!("`@set:{name}` names no set in [sets]"));
                            expanded.extend(list.iter().cloned().map(toml::Value::String));
                        }
                        None => expanded.push(item),
                    }
                }
                *items = expanded;
            }
        }
    }
    let mut out = String::new();
    out.push_str("/// Built-in named lists (`[sets]`): name, items.\n");
    out.push_str("pub(crate) static BUILTIN_SETS: &[(&str, &[&str])] = &[\n");
    for (k, items) in &sets {
        let _ = writeln!(out, "    ({k:?}, &{items:?}),");
    }
    out.push_str("];\n\n");
    out.push_str("/// Built-in rules: id, programs, the rule as JSON.\n");
    out.push_str("pub(crate) static BUILTIN_RULES: &[(&str, &[&str], &str)] = &[\n");
    let rules = doc
        .get("rule")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    let mut ids = std::collections::HashSet::new();
    for rule in &rules {
        let id = rule
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("a rule in the built-in policy has no id"));
        if !ids.insert(id.to_string()) {
            panic!("rule id {id} is defined twice in the built-in policy");
        }
        let programs: Vec<String> = rule
            .get("program")
            .and_then(|v| v.as_array())
            .unwrap_or_else(|| panic!("rule {id} has no program list"))
            .iter()
            .map(|p| {
                p.as_str()
                    .unwrap_or_else(|| panic!("rule {id}: programs must be strings"))
                    .to_string()
            })
            .collect();
        let json = serde_json::to_string(rule).unwrap_or_else(|e| panic!("rule {id}: {e}"));
        let _ = writeln!(out, "    ({id:?}, &{programs:?}, {json:?}),");
    }
    for (table, name) in [("programs", "BUILTIN_PROGRAMS"), ("tool", "BUILTIN_TOOLS")] {
        let _ = writeln!(
            out,
            "];\n\n/// Built-in `{table}` entries: name, the entry as JSON.\npub(crate) static {name}: &[(&str, &str)] = &["
        );
        if let Some(t) = doc.get(table).and_then(|p| p.as_table()) {
            for (k, spec) in t {
                let json =
                    serde_json::to_string(spec).unwrap_or_else(|e| panic!("{table}.{k}: {e}"));
                let _ = writeln!(out, "    ({k:?}, {json:?}),");
            }
        }
    }
    out.push_str("];\n");
    let dir =
        PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_else(|| panic!("OUT_DIR is not set")));
    std::fs::write(dir.join("builtin_policy.rs"), out)
        .unwrap_or_else(|e| panic!("cannot write the built-in policy: {e}"));
    let merged = toml::to_string(&doc).unwrap_or_else(|e| panic!("cannot render the policy: {e}"));
    std::fs::write(dir.join("builtin_policy.toml"), merged)
        .unwrap_or_else(|e| panic!("cannot write the built-in policy: {e}"));
}

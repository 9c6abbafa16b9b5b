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

/// One toolbox level as JSON, its subcommands reduced to stubs, and its
/// children after it.
fn flatten(key: &str, spec: &toml::Value, out: &mut Vec<(String, String)>) {
    let mut level = spec
        .as_table()
        .cloned()
        .unwrap_or_else(|| panic!("tool {key} must be a table"));
    if let Some(toml::Value::Table(subs)) = level.remove("sub") {
        let mut stubs = toml::Table::new();
        for (name, child) in &subs {
            let mut stub = toml::Table::new();
            if let Some(t) = child.as_table() {
                for field in ["aliases", "tool", "held"] {
                    if let Some(v) = t.get(field) {
                        stub.insert(field.to_string(), v.clone());
                    }
                }
            }
            stubs.insert(name.clone(), toml::Value::Table(stub));
            flatten(&format!("{key}\u{1f}{name}"), child, out);
        }
        level.insert("sub".to_string(), toml::Value::Table(stubs));
    }
    let json = serde_json::to_string(&level).unwrap_or_else(|e| panic!("tool {key}: {e}"));
    out.push((key.to_string(), json));
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
            for (field, v) in t.iter_mut() {
                // `any_path` keeps its sets by name: the matcher compiles
                // each set once and shares it among the rules naming it.
                if field == "any_path" {
                    continue;
                }
                let toml::Value::Array(items) = v else {
                    continue;
                };
                if field == "program"
                    && items
                        .iter()
                        .any(|i| i.as_str().is_some_and(|s| s.starts_with("@set:")))
                {
                    panic!("a rule's `program` list cannot use a set");
                }
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
    out.push_str("pub(crate) static BUILTIN_RULES: &[(&str, &[Cow<'static, str>], &str)] = &[\n");
    let rules = doc
        .get("rule")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    let mut ids = std::collections::HashSet::new();
    // The rule index, as `Policy` builds it for layered policies: rules by
    // literal program name, rules on every program, rules on a glob.
    let mut by_program: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    let mut every_program: Vec<usize> = Vec::new();
    let mut by_glob: Vec<(String, usize)> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
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
        let borrowed: Vec<String> = programs
            .iter()
            .map(|p| format!("Cow::Borrowed({p:?})"))
            .collect();
        let _ = writeln!(out, "    ({id:?}, &[{}], {json:?}),", borrowed.join(", "));
        for p in &programs {
            if p == "*" {
                every_program.push(i);
            } else if p.contains(['*', '?']) {
                by_glob.push((p.clone(), i));
            } else {
                let v = by_program.entry(p.clone()).or_default();
                if v.last() != Some(&i) {
                    v.push(i);
                }
            }
        }
    }
    out.push_str("];\n\n/// The built-in rules by literal program name (sorted by name).\n");
    out.push_str("pub(crate) static BUILTIN_BY_PROGRAM: &[(&str, &[usize])] = &[\n");
    for (p, v) in &by_program {
        let _ = writeln!(out, "    ({p:?}, &{v:?}),");
    }
    let _ = writeln!(
        out,
        "];\n\n/// The built-in rules on every program.\npub(crate) static BUILTIN_EVERY_PROGRAM: &[usize] = &{every_program:?};\n"
    );
    out.push_str("/// The built-in rules on a glob of programs: the glob, the rule.\n");
    out.push_str("pub(crate) static BUILTIN_BY_GLOB: &[(&str, usize)] = &[\n");
    for (g, i) in &by_glob {
        let _ = writeln!(out, "    ({g:?}, {i}),");
    }
    out.push_str("];\n\n/// Built-in `programs` entries: name, the entry as JSON.\n");
    out.push_str("pub(crate) static BUILTIN_PROGRAMS: &[(&str, &str)] = &[\n");
    if let Some(t) = doc.get("programs").and_then(|p| p.as_table()) {
        for (k, spec) in t {
            let json = serde_json::to_string(spec).unwrap_or_else(|e| panic!("programs.{k}: {e}"));
            let _ = writeln!(out, "    ({k:?}, {json:?}),");
        }
    }
    out.push_str("];\n");
    // The toolbox, one level at a time: a process that classifies `git
    // status` parses git's top level and its `status` level, not the
    // thousands of options of every other subcommand. Each level keeps its
    // subcommands as stubs (names, aliases, hand-overs); a child's key is
    // its parent's key, U+001F, and its name. Both tables are sorted by key.
    let mut levels: Vec<(String, String)> = Vec::new();
    if let Some(t) = doc.get("tool").and_then(|p| p.as_table()) {
        for (k, spec) in t {
            flatten(k, spec, &mut levels);
        }
    }
    levels.sort();
    let (top, below): (Vec<_>, Vec<_>) =
        levels.into_iter().partition(|(k, _)| !k.contains('\u{1f}'));
    for (name, list) in [("BUILTIN_TOOLS", top), ("BUILTIN_TOOL_LEVELS", below)] {
        let _ = writeln!(
            out,
            "\n/// Built-in toolbox levels: key, the level as JSON (sorted by key).\npub(crate) static {name}: &[(&str, &str)] = &["
        );
        for (k, json) in list {
            let _ = writeln!(out, "    ({k:?}, {json:?}),");
        }
        out.push_str("];\n");
    }
    let dir =
        PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_else(|| panic!("OUT_DIR is not set")));
    std::fs::write(dir.join("builtin_policy.rs"), out)
        .unwrap_or_else(|e| panic!("cannot write the built-in policy: {e}"));
    let merged = toml::to_string(&doc).unwrap_or_else(|e| panic!("cannot render the policy: {e}"));
    std::fs::write(dir.join("builtin_policy.toml"), merged)
        .unwrap_or_else(|e| panic!("cannot write the built-in policy: {e}"));
}

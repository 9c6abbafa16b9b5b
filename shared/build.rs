//! Checks the built-in policy's TOML at build time and turns it into Rust
//! data: an index of rule ids and programs, with each rule and program spec
//! kept as JSON to be parsed only when a command needs it. The runner starts
//! for every command an agent runs, so it must not parse the whole policy.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let src = "src/policy/default.toml";
    println!("cargo:rerun-if-changed={src}");
    let text = std::fs::read_to_string(src).unwrap_or_else(|e| panic!("cannot read {src}: {e}"));
    let doc: toml::Table =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{src} is not valid TOML: {e}"));
    let mut out = String::new();
    out.push_str("/// Built-in rules: id, programs, the rule as JSON.\n");
    out.push_str("pub(crate) static BUILTIN_RULES: &[(&str, &[&str], &str)] = &[\n");
    let rules = doc
        .get("rule")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    for rule in &rules {
        let id = rule
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("a rule in {src} has no id"));
        let programs: Vec<String> = rule
            .get("program")
            .and_then(|v| v.as_array())
            .unwrap_or_else(|| panic!("rule {id} in {src} has no program list"))
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
    out.push_str("];\n\n/// Built-in program specs: name, the spec as JSON.\n");
    out.push_str("pub(crate) static BUILTIN_PROGRAMS: &[(&str, &str)] = &[\n");
    if let Some(programs) = doc.get("programs").and_then(|p| p.as_table()) {
        for (name, spec) in programs {
            let json =
                serde_json::to_string(spec).unwrap_or_else(|e| panic!("program {name}: {e}"));
            let _ = writeln!(out, "    ({name:?}, {json:?}),");
        }
    }
    out.push_str("];\n");
    let dir =
        PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_else(|| panic!("OUT_DIR is not set")));
    std::fs::write(dir.join("builtin_policy.rs"), out)
        .unwrap_or_else(|e| panic!("cannot write the built-in policy: {e}"));
}

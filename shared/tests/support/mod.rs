//! Reading labelled command corpora: `LABEL<TAB>COMMAND` lines, with `\n`,
//! `\t`, `\r`, `\\`, `\xHH` and `\u{HHHH}` escapes in the command.

#![allow(dead_code)]

use holdpoint_shared::{Context, Decision, Policy};
use std::path::{Path, PathBuf};

/// What a corpus line expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Allow,
    Review,
    Deny,
    /// Review or deny.
    Gated,
}

impl Label {
    pub fn accepts(self, d: Decision) -> bool {
        match self {
            Label::Allow => d == Decision::Allow,
            Label::Review => d == Decision::Review,
            Label::Deny => d == Decision::Deny,
            Label::Gated => d != Decision::Allow,
        }
    }
}

/// One labelled command.
#[derive(Debug, Clone)]
pub struct Case {
    pub origin: String,
    pub label: Label,
    pub command: String,
}

/// Decodes the escapes of a corpus command.
pub fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some('x') => {
                let h: String = it.by_ref().take(2).collect();
                let v = u32::from_str_radix(&h, 16).map_err(|e| format!("bad \\x{h}: {e}"))?;
                out.push(char::from_u32(v).ok_or("bad \\x")?);
            }
            Some('u') => {
                if it.next() != Some('{') {
                    return Err("\\u must be followed by {".into());
                }
                let h: String = it.by_ref().take_while(|c| *c != '}').collect();
                let v = u32::from_str_radix(&h, 16).map_err(|e| format!("bad \\u{{{h}}}: {e}"))?;
                out.push(char::from_u32(v).ok_or("bad \\u")?);
            }
            Some(other) => return Err(format!("unknown escape \\{other}")),
            None => return Err("trailing backslash".into()),
        }
    }
    Ok(out)
}

/// Parses one corpus file.
pub fn parse(text: &str, name: &str) -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let origin = format!("{name}:{}", i + 1);
        let (label, cmd) = line
            .split_once('\t')
            .ok_or_else(|| format!("{origin}: no tab between label and command"))?;
        let label = match label {
            "allow" | "safe" => Label::Allow,
            "review" => Label::Review,
            "deny" => Label::Deny,
            "gated" | "risky" => Label::Gated,
            other => return Err(format!("{origin}: unknown label `{other}`")),
        };
        let command = unescape(cmd).map_err(|e| format!("{origin}: {e}"))?;
        cases.push(Case {
            origin,
            label,
            command,
        });
    }
    Ok(cases)
}

/// The repository's own corpus, `shared/tests/corpus/*.tsv`.
pub fn own_corpus() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "tsv"));
    files.sort();
    let mut all = Vec::new();
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        all.extend(parse(&text, &name).unwrap_or_else(|e| panic!("{e}")));
    }
    all
}

/// The context the corpus is classified in: the fixed one, inside a
/// project at its working directory, with what a front end would find
/// about the paths the line deletes on the example file system (no links
/// but `/home/dev/project/linked`, which leads to `/var/backups`).
pub fn project_context(policy: &Policy, command: &str) -> Context {
    Context::fixed_project(policy.deletion_paths(command, &Context::fixed()))
}

/// The folder of design notes and peer corpora beside the checkout, when it
/// is there (CI has it; a user's clone does not).
pub fn notes_dir() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    d.join("policy-corpus.tsv").is_file().then_some(d)
}

/// Commands whose first classification in a fresh process the benches
/// measure: a plain read, git, and the build and cluster tools agents run
/// most (`benches/classify.rs` times them, `benches/classify_once.rs`
/// counts their instructions).
pub const COLD_COMMANDS: &[&str] = &[
    "ls -la",
    "git status --short",
    "cargo build --release",
    "npm test",
    "make -j4 test",
    "kubectl get pods -n prod",
];

//! The closed-world search. For every program the built-in policy allows,
//! every option the program is known to have (its own `--help` where it is
//! installed, else the checked-in list `tests/options/PROGRAM.txt`, plus its
//! toolbox entry) is paired with hostile values: a shell payload, a path
//! outside the tree, a dotfile, a cloud metadata address, a secret
//! variable. Each combination is classified as data, never run, and judged
//! by an oracle that does not read the toolbox:
//!
//! - an option the toolbox does not list must never be allowed (closure);
//! - an option whose help text says it runs programs, writes files, fetches
//!   addresses or loads configuration must never be allowed with a hostile
//!   value of that class.
//!
//! `PROGRAM --help` is run directly (no shell) in an empty temporary
//! directory with a cleared environment, no input and a time limit; set
//! `HOLDPOINT_HOSTILE_NO_EXEC=1` to use only the checked-in lists. By default
//! the search covers each program's top level; `HOLDPOINT_HOSTILE_FULL=1`
//! also tries every option under every subcommand. `HOLDPOINT_HOSTILE_DUMP=FILE`
//! writes every combination tried to FILE, one per line, so another build of
//! `holdpoint check` can classify the same lines.

mod support;

use holdpoint_shared::policy::ToolSpec;
use holdpoint_shared::{Context, Decision, Policy};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the help text says an option does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Danger {
    Exec,
    Write,
    Fetch,
    Config,
}

const EXEC_WORDS: &[&str] = &[
    "command",
    "program",
    "execute",
    "script",
    "hook",
    "plugin",
    "pager",
    "editor",
    "preprocess",
    "wrapper",
    "interpreter",
    "eval",
];
const FETCH_WORDS: &[&str] = &["url", "proxy", "upload", "registry", "download"];
const CONFIG_WORDS: &[&str] = &["config", "rc file", "init file", "settings file"];

/// Whether the help says the option names a file the program writes.
fn writes(h: &str) -> bool {
    [
        "write",
        "save",
        "in-place",
        "in place",
        "destination",
        "output to file",
        "write output",
        "output file",
        "output dir",
        "log to",
        "log file",
        "place output",
    ]
    .iter()
    .any(|w| h.contains(w))
}

fn dangers(help: &str) -> BTreeSet<Danger> {
    let h = help.to_ascii_lowercase();
    let mut out = BTreeSet::new();
    for (words, d) in [
        (EXEC_WORDS, Danger::Exec),
        (FETCH_WORDS, Danger::Fetch),
        (CONFIG_WORDS, Danger::Config),
    ] {
        if words.iter().any(|w| h.contains(w)) {
            out.insert(d);
        }
    }
    if writes(&h) {
        out.insert(Danger::Write);
    }
    out
}

/// A hostile value, as shell text, and the dangers it realises.
struct Hostile {
    text: &'static str,
    realises: &'static [Danger],
}

const HOSTILE: &[Hostile] = &[
    Hostile {
        text: "'$(touch /tmp/holdpoint-pwned)'",
        realises: &[Danger::Exec],
    },
    Hostile {
        text: "/etc/cron.d/holdpoint",
        realises: &[Danger::Exec, Danger::Write, Danger::Config],
    },
    Hostile {
        text: "~/.bashrc",
        realises: &[Danger::Exec, Danger::Write, Danger::Config],
    },
    Hostile {
        text: "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        realises: &[Danger::Fetch, Danger::Config],
    },
    Hostile {
        text: "\"$AWS_SECRET_ACCESS_KEY\"",
        realises: &[Danger::Exec, Danger::Write, Danger::Fetch, Danger::Config],
    },
];

/// One option as the program documents it.
#[derive(Debug, Clone)]
struct Documented {
    name: String,
    takes_value: Option<bool>,
    help: String,
}

/// Options found in a help text: lines that start with an option.
fn parse_help(text: &str) -> Vec<Documented> {
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if !t.starts_with('-') || line.len() == t.len() && !line.starts_with('-') {
            continue;
        }
        // The option part ends at the first gap of two spaces or a tab.
        let (head, desc) = match t.find("  ").or_else(|| t.find('\t')) {
            Some(i) => (&t[..i], t[i..].trim()),
            None => (t, ""),
        };
        let words: Vec<&str> = head.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let mut names = Vec::new();
        let mut takes_value = Some(false);
        for (k, w) in words.iter().enumerate() {
            if !w.starts_with('-') {
                if k > 0 {
                    takes_value = Some(true);
                }
                continue;
            }
            let (name, attached) = match w.find(['=', '[', '<']) {
                // `--color[=WHEN]`: the value is optional and attached only.
                Some(i) if w[i..].starts_with("[=") => (&w[..i], false),
                Some(i) => (&w[..i], true),
                None => (*w, false),
            };
            let ok = name.len() > 1
                && name != "--"
                && name
                    .trim_start_matches('-')
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
            if ok {
                names.push(name.to_string());
            }
            if attached {
                takes_value = Some(true);
            }
        }
        for n in names {
            out.push(Documented {
                name: n,
                takes_value,
                help: desc.to_string(),
            });
        }
    }
    out
}

/// Programs whose `--help` is not asked: they page, draw or wait.
const NO_HELP_RUN: &[&str] = &[
    "top", "htop", "btop", "less", "more", "zless", "man", "info", "watch", "yes", "tldr",
];

fn resolve(program: &str) -> Option<PathBuf> {
    ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// Runs `PROGRAM --help` directly, with nothing to read, in an empty
/// directory, with a cleared environment and a time limit.
fn live_help(program: &str, scratch: &Path) -> Option<String> {
    if std::env::var_os("HOLDPOINT_HOSTILE_NO_EXEC").is_some() || NO_HELP_RUN.contains(&program) {
        return None;
    }
    let path = resolve(program)?;
    let dir = scratch.join(format!("help-{program}"));
    std::fs::create_dir_all(&dir).ok()?;
    let mut child = Command::new(path)
        .arg("--help")
        .current_dir(&dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &dir)
        .env("LANG", "C")
        .env("TERM", "dumb")
        .env("PAGER", "cat")
        .env("MANPAGER", "cat")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let mut out = child.stdout.take()?;
    let mut err = child.stderr.take()?;
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.by_ref().take(1 << 18).read_to_end(&mut s);
        let _ = err.by_ref().take(1 << 16).read_to_end(&mut s);
        s
    });
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < Duration::from_secs(3) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
        }
    }
    let bytes = reader.join().ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

fn options_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/options")
}

/// The checked-in option list: `OPTION<TAB>help text` per line.
fn listed_help(program: &str) -> Option<Vec<Documented>> {
    let text = std::fs::read_to_string(options_dir().join(format!("{program}.txt"))).ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with('-'))
            .map(|l| {
                let (name, help) = l.split_once('\t').unwrap_or((l, ""));
                let name = name.trim();
                let takes_value = name.contains(['=', ' ']);
                Documented {
                    name: name.split(['=', ' ']).next().unwrap_or(name).to_string(),
                    takes_value: Some(takes_value),
                    help: help.to_string(),
                }
            })
            .collect(),
    )
}

/// Known disagreements of the oracle, each with its reason:
/// `PROGRAM<TAB>OPTION<TAB>why`.
fn exceptions() -> BTreeSet<(String, String)> {
    let text =
        std::fs::read_to_string(options_dir().join("oracle-exceptions.tsv")).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

/// Whether a toolbox level (with the levels above it) accounts for an
/// option word as the gate reads it: exactly, as `-NUMBER` where the entry
/// takes numbers, or as a bundle of listed short flags.
fn listed(spec: &ToolSpec, path: &[&ToolSpec], name: &str) -> bool {
    let levels: Vec<&ToolSpec> = path.iter().copied().chain(std::iter::once(spec)).collect();
    let has = |n: &str| levels.iter().any(|l| l.options.contains_key(n));
    // `echo --x` prints `--x`: for such programs every word is text.
    if has(name) || levels.iter().any(|l| l.unlisted_options_are_args) {
        return true;
    }
    let Some(body) = name.strip_prefix('-').filter(|b| !b.starts_with('-')) else {
        return false;
    };
    if levels.iter().any(|l| l.numeric) && body.chars().all(|c| c.is_ascii_digit()) {
        return true;
    }
    !levels.iter().any(|l| l.single_dash_long)
        && !body.is_empty()
        && body.chars().all(|c| {
            levels
                .iter()
                .any(|l| l.options.get(&format!("-{c}")).is_some_and(|k| k == "flag"))
        })
}

#[derive(Default)]
struct Figures {
    programs: usize,
    documented: usize,
    inventoried: usize,
    tried: usize,
    allowed: usize,
    failures: Vec<String>,
}

#[test]
fn no_option_of_an_allowed_program_opens_a_door() {
    let policy = Policy::builtin().unwrap_or_else(|e| panic!("the built-in policy: {e}"));
    let ctx = Context::fixed();
    let full = std::env::var_os("HOLDPOINT_HOSTILE_FULL").is_some();
    let mut dump =
        std::env::var_os("HOLDPOINT_HOSTILE_DUMP").map(|p| (PathBuf::from(p), String::new()));
    let scratch = std::env::temp_dir().join(format!("holdpoint-hostile-{}", std::process::id()));
    let exceptions = exceptions();
    let mut f = Figures::default();
    let mut sources: BTreeMap<&str, usize> = BTreeMap::new();

    for program in policy.allowed_programs() {
        let Some(tool) = policy.tool(&program) else {
            continue;
        };
        let tool = &tool;
        f.programs += 1;
        let (documented, source) = match live_help(&program, &scratch) {
            Some(text) if !parse_help(&text).is_empty() => (parse_help(&text), "--help"),
            _ => match listed_help(&program) {
                Some(list) => (list, "checked-in list"),
                None => (Vec::new(), "toolbox only"),
            },
        };
        *sources.entry(source).or_default() += 1;
        f.documented += documented.len();
        f.inventoried += tool.options.len();

        // Levels to try: the top, and in a full run every literal subcommand.
        let mut levels: Vec<(Vec<String>, Vec<&ToolSpec>)> = vec![(Vec::new(), vec![tool])];
        if full {
            let mut stack = vec![(Vec::<String>::new(), vec![tool])];
            while let Some((words, path)) = stack.pop() {
                let Some(last) = path.last() else { continue };
                for (name, sub) in &last.sub {
                    if name.contains(['*', '?', '[']) || sub.tool.is_some() {
                        continue;
                    }
                    let mut w = words.clone();
                    w.push(name.clone());
                    let mut p = path.clone();
                    p.push(sub);
                    levels.push((w.clone(), p.clone()));
                    stack.push((w, p));
                }
            }
        }
        for (words, path) in &levels {
            let Some(&level) = path.last() else { continue };
            let prefix = std::iter::once(program.as_str())
                .chain(words.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ");
            // Documented options, and the level's own inventory (no help text).
            let mut options: Vec<Documented> = documented.clone();
            for name in level.options.keys() {
                options.push(Documented {
                    name: name.clone(),
                    takes_value: None,
                    help: String::new(),
                });
            }
            for o in &options {
                let is_listed = listed(level, &path[..path.len().saturating_sub(1)], &o.name);
                let danger = dangers(&o.help);
                for h in HOSTILE {
                    let relevant = !is_listed || h.realises.iter().any(|d| danger.contains(d));
                    if !relevant {
                        continue;
                    }
                    // How the option takes its value: from the toolbox
                    // where it is listed, else from its help.
                    let kind = std::iter::once(level)
                        .chain(path.iter().copied())
                        .find_map(|l| l.options.get(&o.name));
                    let (separate, attached) = match kind {
                        Some(k) if k == "flag" => (false, true),
                        Some(k) if k.starts_with('?') => (false, true),
                        Some(_) => (true, true),
                        None => (o.takes_value != Some(false), true),
                    };
                    let mut forms = Vec::new();
                    if separate {
                        forms.push(format!("{prefix} {} {}", o.name, h.text));
                    }
                    if attached && o.name.starts_with("--") {
                        forms.push(format!("{prefix} {}={}", o.name, h.text));
                    }
                    if !is_listed && !separate {
                        forms.push(format!("{prefix} {}", o.name));
                    }
                    for cmd in forms {
                        f.tried += 1;
                        if let Some((_, d)) = dump.as_mut() {
                            d.push_str(&cmd);
                            d.push('\n');
                        }
                        let v = policy.classify(&cmd, &ctx);
                        if v.decision != Decision::Allow {
                            continue;
                        }
                        f.allowed += 1;
                        if exceptions.contains(&(program.clone(), o.name.clone())) {
                            continue;
                        }
                        if !is_listed {
                            f.failures.push(format!(
                                "{cmd:?}: `{}` is not in the toolbox but was allowed",
                                o.name
                            ));
                        } else {
                            f.failures.push(format!(
                                "{cmd:?}: the help of `{}` says {:?} ({:?}) and a hostile value was allowed",
                                o.name, danger, o.help
                            ));
                        }
                    }
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    if let Some((path, text)) = dump
        && let Err(e) = std::fs::write(&path, text)
    {
        panic!("cannot write {}: {e}", path.display());
    }
    println!(
        "closed-world search{}: {} programs ({}), {} documented options, {} inventoried, {} combinations tried, {} allowed, {} doors",
        if full { " (full)" } else { "" },
        f.programs,
        sources
            .iter()
            .map(|(k, v)| format!("{v} from {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        f.documented,
        f.inventoried,
        f.tried,
        f.allowed,
        f.failures.len()
    );
    assert!(f.programs > 0, "no allowed program has a toolbox entry");
    assert!(
        f.failures.is_empty(),
        "{} hostile combinations were allowed:\n{}",
        f.failures.len(),
        f.failures.join("\n")
    );
}

#[test]
fn help_texts_are_read_as_options() {
    let text = "Usage: sort [OPTION]... [FILE]...\n  -o, --output=FILE         write result to FILE\n  -r, --reverse              reverse the result\n      --files0-from=F        read input from F\n  -k KEYDEF                  sort via a key\n";
    let found = parse_help(text);
    let names: Vec<&str> = found.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        ["-o", "--output", "-r", "--reverse", "--files0-from", "-k"]
    );
    assert!(dangers(&found[0].help).contains(&Danger::Write));
    assert!(dangers(&found[2].help).is_empty());
    assert_eq!(found[5].takes_value, Some(true));
}

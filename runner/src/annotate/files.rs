//! The files probe: what deletions, truncations, overwrites and moves would
//! destroy, and which credential files a command would read.
//!
//! Globs are expanded over the file system without running anything; the
//! matched trees are walked with a bound on entries and time (a walk cut
//! short says so). Each path is classified: backup, database data, VCS or
//! credentials. File contents are never read.

use super::{Env, Probe, ProbeError, age, human_bytes, inv_cwd, plural, utc};
use holdpoint_shared::annotation::{Annotation, Item, Severity};
use holdpoint_shared::context::normalize;
use holdpoint_shared::policy::Glob;
use holdpoint_shared::shell::{Invocation, Word};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Programs that read a file given to them, and would pass its contents on.
const READERS: &[&str] = &[
    "cat", "tac", "less", "more", "head", "tail", "bat", "batcat", "base64", "base32", "xxd", "od",
    "hexdump", "strings", "cp", "scp", "tar", "zip", "gzip", "nl", "sed", "awk", "grep", "rg",
    "jq", "yq", "openssl", "nc",
];

/// The probes for the invocations that touch files.
pub(super) fn plan(invs: &[Invocation], env: &Env) -> Vec<Probe> {
    let mut out = Vec::new();
    for inv in invs {
        let cwd = inv_cwd(inv, env);
        let op = match inv.program.as_str() {
            "rm" | "unlink" => rm(inv),
            "shred" => shred(inv),
            "truncate" => truncate(inv),
            "find" => find(inv),
            "rsync" => rsync(inv),
            "mv" => mv(inv),
            ">" => inv
                .args
                .first()
                .map(|w| Op::Overwrite { target: w.clone() }),
            p if READERS.contains(&p) || p == "curl" => read(inv, &env.home),
            _ => None,
        };
        if let Some(op) = op {
            let subject = inv.display();
            out.push(Probe::new("files", subject, move |env| {
                op.run(cwd.as_deref(), env)
            }));
        }
    }
    out
}

/// What a command would do to files.
#[derive(Debug, Clone)]
enum Op {
    Delete {
        paths: Vec<Word>,
        recursive: bool,
        verb: &'static str,
    },
    Truncate {
        paths: Vec<Word>,
        size: String,
    },
    Overwrite {
        target: Word,
    },
    Move {
        sources: Vec<Word>,
        dest: Word,
        into_dir: bool,
    },
    Find {
        roots: Vec<Word>,
        names: Vec<String>,
        only: Option<char>,
        delete: bool,
    },
    RsyncDelete {
        source: Word,
        dest: Word,
    },
    Read {
        paths: Vec<Word>,
    },
}

fn operands(args: &[Word], value_opts: &[&str]) -> Vec<Word> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut after_dd = false;
    while i < args.len() {
        let a = &args[i];
        if after_dd || a.text == "-" || !a.text.starts_with('-') {
            out.push(a.clone());
        } else if a.text == "--" {
            after_dd = true;
        } else if value_opts.contains(&a.text.as_str()) {
            i += 1;
        }
        i += 1;
    }
    out
}

fn has_flag(args: &[Word], long: &str, short: char) -> bool {
    args.iter().take_while(|a| a.text != "--").any(|a| {
        a.text == long
            || (a.text.starts_with('-') && !a.text.starts_with("--") && a.text[1..].contains(short))
    })
}

fn rm(inv: &Invocation) -> Option<Op> {
    let paths = operands(&inv.args, &[]);
    let recursive =
        has_flag(&inv.args, "--recursive", 'r') || has_flag(&inv.args, "--recursive", 'R');
    (!paths.is_empty()).then_some(Op::Delete {
        paths,
        recursive,
        verb: "deletes",
    })
}

fn shred(inv: &Invocation) -> Option<Op> {
    let paths = operands(
        &inv.args,
        &["-n", "-s", "--iterations", "--size", "--random-source"],
    );
    (!paths.is_empty()).then_some(Op::Delete {
        paths,
        recursive: false,
        verb: "shreds",
    })
}

fn truncate(inv: &Invocation) -> Option<Op> {
    let mut size = String::from("?");
    for (i, a) in inv.args.iter().enumerate() {
        if a.text == "-s" || a.text == "--size" {
            if let Some(v) = inv.args.get(i + 1) {
                size = v.text.clone();
            }
        } else if let Some(v) = a.text.strip_prefix("--size=") {
            size = v.to_string();
        } else if let Some(v) = a.text.strip_prefix("-s").filter(|v| !v.is_empty()) {
            size = v.to_string();
        }
    }
    let paths = operands(&inv.args, &["-s", "--size", "-r", "--reference"]);
    (!paths.is_empty()).then_some(Op::Truncate { paths, size })
}

fn mv(inv: &Invocation) -> Option<Op> {
    let mut target_dir = None;
    for (i, a) in inv.args.iter().enumerate() {
        if a.text == "-t" || a.text == "--target-directory" {
            target_dir = inv.args.get(i + 1).cloned();
        } else if let Some(v) = a.text.strip_prefix("--target-directory=") {
            target_dir = Some(Word::lit(v));
        }
    }
    let mut ops = operands(&inv.args, &["-t", "--target-directory", "-S", "--suffix"]);
    if let Some(d) = target_dir {
        ops.retain(|w| w.text != d.text);
        return (!ops.is_empty()).then_some(Op::Move {
            sources: ops,
            dest: d,
            into_dir: true,
        });
    }
    let dest = ops.pop()?;
    (!ops.is_empty()).then_some(Op::Move {
        sources: ops,
        dest,
        into_dir: false,
    })
}

fn find(inv: &Invocation) -> Option<Op> {
    let mut roots = Vec::new();
    let mut i = 0;
    while i < inv.args.len() {
        let t = inv.args[i].text.as_str();
        if t.starts_with('-') || t == "(" || t == "!" {
            break;
        }
        roots.push(inv.args[i].clone());
        i += 1;
    }
    if roots.is_empty() {
        roots.push(Word::lit("."));
    }
    let mut names = Vec::new();
    let mut only = None;
    let mut delete = false;
    while i < inv.args.len() {
        let t = inv.args[i].text.as_str();
        match t {
            "-name" | "-iname" | "-path" | "-ipath" => {
                if let Some(v) = inv.args.get(i + 1) {
                    names.push(v.text.clone());
                }
                i += 1;
            }
            "-type" => {
                only = inv.args.get(i + 1).and_then(|v| v.text.chars().next());
                i += 1;
            }
            "-delete" => delete = true,
            _ => {}
        }
        i += 1;
    }
    let searches_secrets = names
        .iter()
        .any(|n| is_credential_name(n.trim_start_matches("*/")));
    (delete || searches_secrets).then_some(Op::Find {
        roots,
        names,
        only,
        delete,
    })
}

fn rsync(inv: &Invocation) -> Option<Op> {
    if !inv
        .args
        .iter()
        .any(|a| a.text.starts_with("--delete") || a.text == "--remove-source-files")
    {
        return None;
    }
    let mut ops = operands(
        &inv.args,
        &[
            "-e",
            "--rsh",
            "--exclude",
            "--include",
            "--filter",
            "-f",
            "--backup-dir",
            "--partial-dir",
            "--temp-dir",
            "-T",
        ],
    );
    let dest = ops.pop()?;
    let source = ops.first()?.clone();
    Some(Op::RsyncDelete { source, dest })
}

/// Only words that are globs or name a credential location lexically are
/// worth a probe; a plain `cat README.md` gets none.
fn read(inv: &Invocation, home: &str) -> Option<Op> {
    let mut paths = Vec::new();
    for a in &inv.args {
        // curl uploads: `-d @file`, `-F key=@file`, `-T file`.
        let t = a.text.as_str();
        let t = t.split_once("=@").map(|(_, p)| p).unwrap_or(t);
        let t = t.strip_prefix('@').unwrap_or(t);
        if t.starts_with('-') {
            continue;
        }
        let mut w = a.clone();
        w.text = t.to_string();
        if w.glob
            || classify(t, home).contains(&"credentials")
            || (!t.starts_with('/') && is_credential_name(t.rsplit('/').next().unwrap_or(t)))
        {
            paths.push(w);
        }
    }
    (!paths.is_empty()).then_some(Op::Read { paths })
}

/// The result of a bounded walk.
#[derive(Debug, Default, Clone)]
pub(super) struct Walk {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub newest: Option<(SystemTime, PathBuf)>,
    /// Why the walk stopped early, if it did.
    pub cut_short: Option<String>,
}

impl Walk {
    fn add(&mut self, other: Walk) {
        self.files += other.files;
        self.dirs += other.dirs;
        self.bytes += other.bytes;
        if let Some((t, p)) = other.newest
            && self.newest.as_ref().is_none_or(|(n, _)| t > *n)
        {
            self.newest = Some((t, p));
        }
        if self.cut_short.is_none() {
            self.cut_short = other.cut_short;
        }
    }
}

/// Counts the files and bytes under `root` (the root itself if it is a
/// file), without following symbolic links, looking at no more than `max`
/// entries and stopping at the deadline.
pub(super) fn walk(root: &Path, env: &Env, max: usize) -> Walk {
    let mut w = Walk::default();
    let mut seen = 0usize;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        seen += 1;
        if seen > max {
            w.cut_short = Some(format!("stopped after {max} entries"));
            break;
        }
        if seen.is_multiple_of(256) && env.expired() {
            w.cut_short = Some(format!(
                "stopped after {}",
                super::human_duration(env.opts.timeout)
            ));
            break;
        }
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            w.dirs += 1;
            match std::fs::read_dir(&p) {
                Ok(rd) => stack.extend(rd.filter_map(|e| e.ok()).map(|e| e.path())),
                Err(_) => {
                    if w.cut_short.is_none() {
                        w.cut_short = Some(format!("cannot read {}", p.display()));
                    }
                }
            }
            continue;
        }
        w.files += 1;
        if meta.is_file() {
            w.bytes += meta.len();
        }
        if let Ok(t) = meta.modified()
            && w.newest.as_ref().is_none_or(|(n, _)| t > *n)
        {
            w.newest = Some((t, p.clone()));
        }
    }
    w
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The paths a word names: itself, or what its glob matches now (sorted).
/// The second value says the expansion was cut short.
fn expand(word: &Word, cwd: Option<&str>, env: &Env) -> (Vec<PathBuf>, bool) {
    if word.dynamic {
        return (Vec::new(), false);
    }
    let text = &word.text;
    let abs = if text.starts_with('/') {
        text.clone()
    } else {
        match cwd {
            Some(c) => format!("{c}/{text}"),
            None => return (Vec::new(), false),
        }
    };
    if !word.glob || !has_glob(&abs) {
        return (vec![PathBuf::from(normalize(&abs))], false);
    }
    let mut current = vec![PathBuf::from("/")];
    let mut cut = false;
    let max = env.opts.max_files;
    for comp in abs.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let mut next = Vec::new();
        if comp == ".." {
            next = current
                .iter()
                .map(|p| p.parent().unwrap_or(p).to_path_buf())
                .collect();
        } else if !has_glob(comp) {
            next = current
                .iter()
                .map(|p| p.join(comp))
                .filter(|p| p.symlink_metadata().is_ok())
                .collect();
        } else {
            let Ok(g) = Glob::new(comp, true, false) else {
                return (Vec::new(), false);
            };
            for dir in &current {
                let Ok(rd) = std::fs::read_dir(dir) else {
                    continue;
                };
                for e in rd.filter_map(|e| e.ok()) {
                    let name = e.file_name();
                    let Some(name) = name.to_str() else { continue };
                    if name.starts_with('.') && !comp.starts_with('.') {
                        continue;
                    }
                    if g.matches(name) {
                        next.push(dir.join(name));
                    }
                    if next.len() >= max || env.expired() {
                        cut = true;
                        break;
                    }
                }
            }
        }
        current = next;
        if current.is_empty() {
            break;
        }
    }
    current.sort();
    (current, cut)
}

/// What kind of place a path is, as flags: `backup`, `database`, `vcs`,
/// `credentials`.
pub(super) fn classify(path: &str, home: &str) -> Vec<&'static str> {
    let lower = path.to_lowercase();
    let base = lower.rsplit('/').next().unwrap_or(&lower);
    let mut out = Vec::new();
    let backup_ext = [
        ".dump", ".sql.gz", ".sql.xz", ".sql.zst", ".sql.bz2", ".bak", ".backup", ".bkp",
    ];
    if lower.contains("backup")
        || lower.contains("pg_dump")
        || lower.contains("/dumps/")
        || backup_ext.iter().any(|e| base.ends_with(e))
    {
        out.push("backup");
    }
    let db_dirs = [
        "/var/lib/postgresql",
        "/var/lib/pgsql",
        "/var/lib/mysql",
        "/var/lib/mariadb",
        "/var/lib/mongodb",
        "/var/lib/redis",
        "/var/lib/clickhouse",
        "/var/lib/elasticsearch",
        "/var/lib/etcd",
        "/var/lib/cassandra",
    ];
    if db_dirs
        .iter()
        .any(|d| holdpoint_shared::context::is_within(path, d))
        || lower.contains("/pgdata")
        || lower.contains("/pg_wal")
        || [".sqlite", ".sqlite3", ".db"]
            .iter()
            .any(|e| base.ends_with(e))
    {
        out.push("database");
    }
    if lower
        .split('/')
        .any(|c| c == ".git" || c == ".hg" || c == ".svn")
    {
        out.push("vcs");
    }
    let home = home.trim_end_matches('/');
    let cred_dirs = [
        ".ssh",
        ".aws",
        ".config/gcloud",
        ".kube",
        ".gnupg",
        ".azure",
        ".docker/config.json",
        ".netrc",
        ".pgpass",
        ".npmrc",
        ".pypirc",
        ".git-credentials",
        ".config/gh/hosts.yml",
    ];
    if cred_dirs
        .iter()
        .any(|d| holdpoint_shared::context::is_within(path, &format!("{home}/{d}")))
        || is_credential_name(base)
        || ["/etc/shadow", "/etc/ssl/private", "/root/.ssh"]
            .iter()
            .any(|d| holdpoint_shared::context::is_within(path, d))
    {
        out.push("credentials");
    }
    out
}

/// Whether a file name (or a `-name` pattern) is one secrets live in.
fn is_credential_name(base: &str) -> bool {
    let b = base.to_lowercase();
    b == ".env"
        || b.starts_with(".env.")
        || b == "credentials"
        || b == "credentials.json"
        || b.ends_with("credentials.json")
        || b.starts_with("id_rsa")
        || b.starts_with("id_ed25519")
        || b.starts_with("id_ecdsa")
        || b.ends_with(".pem")
        || b.ends_with(".key")
        || b.ends_with(".p12")
        || b.ends_with(".pfx")
        || b == ".netrc"
        || b == ".pgpass"
        || b == ".git-credentials"
        || b.starts_with("secrets.")
}

fn severity_for(flags: &[&str], bytes: u64) -> Severity {
    if flags
        .iter()
        .any(|f| matches!(*f, "backup" | "database" | "credentials" | "vcs"))
        || bytes > 0
    {
        Severity::Danger
    } else {
        Severity::Warning
    }
}

fn path_item(p: &Path, w: Option<&Walk>, home: &str) -> Item {
    let s = p.to_string_lossy().into_owned();
    let mut details = Vec::new();
    match w {
        Some(w) if w.dirs > 0 => {
            details.push(format!("{} files, {}", w.files, human_bytes(w.bytes)))
        }
        Some(w) => details.push(human_bytes(w.bytes)),
        None => {}
    }
    if let Some((t, _)) = w.and_then(|w| w.newest.as_ref()) {
        details.push(format!("modified {}", utc(*t)));
    }
    Item {
        flags: classify(&s, home).into_iter().map(str::to_string).collect(),
        id: s,
        text: String::new(),
        details,
    }
}

fn add_summary(a: &mut Annotation, total: &Walk, matched: usize) {
    a.fact("paths matched", matched);
    a.fact("files", total.files);
    a.fact(
        "bytes",
        format!("{} ({} bytes)", human_bytes(total.bytes), total.bytes),
    );
    if let Some((t, p)) = &total.newest {
        a.fact(
            "newest",
            format!("{} modified {} ({})", p.display(), utc(*t), age(*t)),
        );
    }
    if let Some(why) = &total.cut_short {
        a.fact(
            "walk cut short",
            format!("{why}; the counts are a lower bound"),
        );
        a.truncated = true;
    }
}

impl Op {
    fn run(self, cwd: Option<&str>, env: &Env) -> Result<Vec<Annotation>, ProbeError> {
        match self {
            Op::Delete {
                paths,
                recursive,
                verb,
            } => Ok(vec![delete(&paths, recursive, verb, cwd, env)]),
            Op::Truncate { paths, size } => Ok(vec![truncate_op(&paths, &size, cwd, env)]),
            Op::Overwrite { target } => Ok(overwrite(&target, cwd, env).into_iter().collect()),
            Op::Move {
                sources,
                dest,
                into_dir,
            } => Ok(move_op(&sources, &dest, into_dir, cwd, env)),
            Op::Find {
                roots,
                names,
                only,
                delete,
            } => Ok(vec![find_op(&roots, &names, only, delete, cwd, env)]),
            Op::RsyncDelete { source, dest } => Ok(vec![rsync_op(&source, &dest, cwd, env)]),
            Op::Read { paths } => Ok(read_op(&paths, cwd, env).into_iter().collect()),
        }
    }
}

fn delete(words: &[Word], recursive: bool, verb: &str, cwd: Option<&str>, env: &Env) -> Annotation {
    let mut total = Walk::default();
    let mut items = Vec::new();
    let mut flags: Vec<&'static str> = Vec::new();
    let mut unresolved = Vec::new();
    let mut skipped_dirs = 0usize;
    let mut cut = false;
    for w in words {
        if w.dynamic {
            unresolved.push(w.text.clone());
            continue;
        }
        let (paths, c) = expand(w, cwd, env);
        cut |= c;
        for p in paths {
            let is_dir = p.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false);
            if is_dir && !recursive {
                skipped_dirs += 1;
                continue;
            }
            let pw = walk(
                &p,
                env,
                env.opts
                    .max_files
                    .saturating_sub(total.files as usize + total.dirs as usize)
                    .max(1),
            );
            for f in classify(&p.to_string_lossy(), &env.home) {
                if !flags.contains(&f) {
                    flags.push(f);
                }
            }
            items.push(path_item(&p, Some(&pw), &env.home));
            total.add(pw);
        }
    }
    let matched = items.len();
    let kinds = if flags.is_empty() {
        String::new()
    } else {
        format!(" in a {} location", flags.join(" and "))
    };
    let title = if matched == 0 {
        format!("{verb} nothing that exists now (the paths match no file)")
    } else {
        let newest = total
            .newest
            .as_ref()
            .map(|(t, _)| format!("; newest modified {}", age(*t)))
            .unwrap_or_default();
        format!(
            "{verb} {} ({}){kinds}{newest}",
            plural(total.files as usize, "file", "files"),
            human_bytes(total.bytes)
        )
    };
    let severity = if matched == 0 {
        Severity::Info
    } else {
        severity_for(&flags, total.bytes)
    };
    let mut a = Annotation::new("files", severity, title);
    add_summary(&mut a, &total, matched);
    if !flags.is_empty() {
        a.fact("classified as", flags.join(", "));
    }
    if skipped_dirs > 0 {
        a.fact("directories left alone (no -r)", skipped_dirs);
    }
    if !unresolved.is_empty() {
        a.fact("paths the gate cannot resolve", unresolved.join(" "));
    }
    a.truncated |= cut || items.len() > env.opts.max_items;
    items.truncate(env.opts.max_items);
    a.items = items;
    a
}

fn truncate_op(words: &[Word], size: &str, cwd: Option<&str>, env: &Env) -> Annotation {
    let mut items = Vec::new();
    let mut bytes = 0;
    let mut flags: Vec<&'static str> = Vec::new();
    for w in words {
        for p in expand(w, cwd, env).0 {
            let wk = walk(&p, env, 1);
            bytes += wk.bytes;
            flags.extend(classify(&p.to_string_lossy(), &env.home));
            items.push(path_item(&p, Some(&wk), &env.home));
        }
    }
    let mut a = Annotation::new(
        "files",
        if items.is_empty() {
            Severity::Info
        } else {
            severity_for(&flags, bytes)
        },
        format!(
            "truncates {} holding {} to size {size}",
            plural(items.len(), "file", "files"),
            human_bytes(bytes)
        ),
    );
    items.truncate(env.opts.max_items);
    a.items = items;
    a
}

fn overwrite(target: &Word, cwd: Option<&str>, env: &Env) -> Option<Annotation> {
    let (paths, _) = expand(target, cwd, env);
    let p = paths.into_iter().next()?;
    let meta = std::fs::metadata(&p).ok()?;
    if !meta.is_file() || meta.len() == 0 {
        return None;
    }
    let flags = classify(&p.to_string_lossy(), &env.home);
    let w = walk(&p, env, 1);
    let mut a = Annotation::new(
        "files",
        severity_for(&flags, meta.len()),
        format!("overwrites {} ({})", p.display(), human_bytes(meta.len())),
    );
    a.items.push(path_item(&p, Some(&w), &env.home));
    Some(a)
}

fn move_op(
    sources: &[Word],
    dest: &Word,
    into_dir: bool,
    cwd: Option<&str>,
    env: &Env,
) -> Vec<Annotation> {
    let Some(dest_path) = expand(dest, cwd, env).0.into_iter().next() else {
        return Vec::new();
    };
    let dest_is_dir = into_dir || dest_path.is_dir();
    let mut out = Vec::new();
    for s in sources {
        for src in expand(s, cwd, env).0 {
            let target = if dest_is_dir {
                match src.file_name() {
                    Some(n) => dest_path.join(n),
                    None => continue,
                }
            } else {
                dest_path.clone()
            };
            let Ok(meta) = target.symlink_metadata() else {
                continue;
            };
            let w = walk(&target, env, env.opts.max_files);
            let flags = classify(&target.to_string_lossy(), &env.home);
            let mut a = Annotation::new(
                "files",
                severity_for(&flags, w.bytes.max(u64::from(meta.is_dir()))),
                format!(
                    "replaces {} ({}) with {}",
                    target.display(),
                    human_bytes(w.bytes),
                    src.display()
                ),
            );
            a.items.push(path_item(&target, Some(&w), &env.home));
            out.push(a);
        }
    }
    out
}

fn find_op(
    roots: &[Word],
    names: &[String],
    only: Option<char>,
    delete: bool,
    cwd: Option<&str>,
    env: &Env,
) -> Annotation {
    let globs: Vec<Glob> = names
        .iter()
        .filter_map(|n| Glob::new(n.rsplit('/').next().unwrap_or(n), true, false).ok())
        .collect();
    let mut matches: Vec<PathBuf> = Vec::new();
    let mut total = Walk::default();
    let mut seen = 0usize;
    'roots: for r in roots {
        for root in expand(r, cwd, env).0 {
            let mut stack = vec![root];
            while let Some(p) = stack.pop() {
                seen += 1;
                if seen > env.opts.max_files || (seen.is_multiple_of(256) && env.expired()) {
                    total.cut_short = Some(format!("stopped after {seen} entries"));
                    break 'roots;
                }
                let Ok(meta) = p.symlink_metadata() else {
                    continue;
                };
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let kind_ok = match only {
                    Some('f') => meta.is_file(),
                    Some('d') => meta.is_dir(),
                    Some('l') => meta.file_type().is_symlink(),
                    _ => true,
                };
                if kind_ok && (globs.is_empty() || globs.iter().any(|g| g.matches(&name))) {
                    matches.push(p.clone());
                    if !meta.is_dir() {
                        total.files += 1;
                        total.bytes += if meta.is_file() { meta.len() } else { 0 };
                        if let Ok(t) = meta.modified()
                            && total.newest.as_ref().is_none_or(|(n, _)| t > *n)
                        {
                            total.newest = Some((t, p.clone()));
                        }
                    }
                }
                if meta.is_dir()
                    && let Ok(rd) = std::fs::read_dir(&p)
                {
                    stack.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
                }
            }
        }
    }
    matches.sort();
    let mut flags: Vec<&'static str> = Vec::new();
    for m in &matches {
        for f in classify(&m.to_string_lossy(), &env.home) {
            if !flags.contains(&f) {
                flags.push(f);
            }
        }
    }
    let title = if delete {
        format!(
            "deletes {} ({}) matching {}",
            plural(matches.len(), "path", "paths"),
            human_bytes(total.bytes),
            if names.is_empty() {
                "everything".to_string()
            } else {
                names.join(", ")
            }
        )
    } else {
        format!(
            "searches for credential files ({}): {} found now",
            names.join(", "),
            matches.len()
        )
    };
    let severity = if matches.is_empty() && delete {
        Severity::Info
    } else {
        severity_for(&flags, total.bytes)
    };
    let severity = if !delete {
        severity.max(Severity::Warning)
    } else {
        severity
    };
    let mut a = Annotation::new("files", severity, title);
    add_summary(&mut a, &total, matches.len());
    if !flags.is_empty() {
        a.fact("classified as", flags.join(", "));
    }
    if delete {
        a.fact(
            "matching",
            "approximated from -name, -iname, -path and -type only",
        );
    } else {
        a.fact("contents", "not read by holdpoint, and never shown");
    }
    a.truncated |= matches.len() > env.opts.max_items;
    a.items = matches
        .iter()
        .take(env.opts.max_items)
        .map(|m| path_item(m, None, &env.home))
        .collect();
    a
}

fn rsync_op(source: &Word, dest: &Word, cwd: Option<&str>, env: &Env) -> Annotation {
    let remote = |w: &Word| {
        w.text
            .split('/')
            .next()
            .is_some_and(|first| first.contains(':'))
    };
    if remote(source) || remote(dest) {
        return Annotation::new(
            "files",
            Severity::Warning,
            "rsync --delete with a remote side: what it deletes there cannot be read locally",
        );
    }
    let (Some(src), Some(dst)) = (
        expand(source, cwd, env).0.pop(),
        expand(dest, cwd, env).0.pop(),
    ) else {
        return Annotation::new(
            "files",
            Severity::Warning,
            "rsync --delete: the paths cannot be resolved",
        );
    };
    // `rsync a/ b` syncs a's contents into b; `rsync a b` syncs into b/a.
    let dst_root = if source.text.ends_with('/') {
        dst
    } else {
        match src.file_name() {
            Some(n) => dst.join(n),
            None => dst,
        }
    };
    let mut gone = Vec::new();
    let mut total = Walk::default();
    let mut stack = vec![dst_root.clone()];
    let mut seen = 0;
    while let Some(p) = stack.pop() {
        seen += 1;
        if seen > env.opts.max_files || env.expired() {
            total.cut_short = Some(format!("stopped after {seen} entries"));
            break;
        }
        let Ok(rel) = p.strip_prefix(&dst_root) else {
            continue;
        };
        let Ok(meta) = p.symlink_metadata() else {
            continue;
        };
        if !rel.as_os_str().is_empty() && src.join(rel).symlink_metadata().is_err() {
            let w = walk(&p, env, env.opts.max_files);
            gone.push(path_item(&p, Some(&w), &env.home));
            total.add(w);
            continue;
        }
        if meta.is_dir()
            && let Ok(rd) = std::fs::read_dir(&p)
        {
            stack.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
        }
    }
    let flags: Vec<&str> = classify(&dst_root.to_string_lossy(), &env.home);
    let mut a = Annotation::new(
        "files",
        if gone.is_empty() {
            Severity::Info
        } else {
            severity_for(&flags, total.bytes)
        },
        format!(
            "deletes {} ({}) in {} that {} lacks",
            plural(total.files as usize, "file", "files"),
            human_bytes(total.bytes),
            dst_root.display(),
            src.display()
        ),
    );
    add_summary(&mut a, &total, gone.len());
    a.truncated |= gone.len() > env.opts.max_items;
    gone.truncate(env.opts.max_items);
    a.items = gone;
    a
}

fn read_op(words: &[Word], cwd: Option<&str>, env: &Env) -> Option<Annotation> {
    let mut items = Vec::new();
    for w in words {
        for p in expand(w, cwd, env).0 {
            let s = p.to_string_lossy().into_owned();
            if !classify(&s, &env.home).contains(&"credentials") {
                continue;
            }
            let state = match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => "exists (directory)".to_string(),
                Ok(m) => format!("exists, {}", human_bytes(m.len())),
                Err(_) => "does not exist".to_string(),
            };
            items.push(Item {
                id: s,
                text: String::new(),
                details: vec![state],
                flags: vec!["credentials".into()],
            });
        }
    }
    if items.is_empty() {
        return None;
    }
    let mut a = Annotation::new(
        "files",
        Severity::Danger,
        format!(
            "reads {}: their secrets would reach the agent",
            plural(items.len(), "credential file", "credential files")
        ),
    );
    a.fact("contents", "not read by holdpoint, and never shown");
    a.items = items;
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_classified_by_what_lives_there() {
        let home = "/home/dev";
        assert_eq!(
            classify("/var/backups/pg_dump/daily_01.sql.gz", home),
            vec!["backup"]
        );
        assert_eq!(
            classify("/var/lib/postgresql/16/main", home),
            vec!["database"]
        );
        assert_eq!(classify("/home/dev/project/.git", home), vec!["vcs"]);
        assert_eq!(
            classify("/home/dev/.aws/credentials", home),
            vec!["credentials"]
        );
        assert_eq!(classify("/home/dev/.env", home), vec!["credentials"]);
        assert_eq!(
            classify("/home/dev/app/.env.local", home),
            vec!["credentials"]
        );
        assert!(classify("/home/dev/project/src/main.rs", home).is_empty());
    }
}

//! The git probe: which commits and uncommitted files a command would lose.
//!
//! - `reset --hard`: the commits between the target and `HEAD` (and which of
//!   them exist on no other branch or remote), the uncommitted changes lost,
//!   the untracked files (kept).
//! - `checkout -f`, `checkout -- PATHS`, `restore PATHS`: the changed files
//!   whose changes would be thrown away.
//! - `clean -f…`: what `clean -n` with the same options lists.
//! - `stash drop|clear`: the stash entries dropped.
//! - `branch -D`: the commits of the branch found nowhere else.
//! - force pushes (`--force`, `-f`, `+ref`, `--force-with-lease`, `--mirror`,
//!   `--delete`, `:ref`): the commits on the local remote-tracking ref that
//!   the push would overwrite, their authors, and how old that ref is.
//!
//! All git invocations of a line are probed in order in one thread, and the
//! probe remembers what earlier ones would do: after `git reset --hard
//! HEAD~12`, `git push --force` pushes the reset branch.
//!
//! Git runs with the repository's configuration neutralised: no hooks,
//! pager, fsmonitor, external diff, textconv, filters, signature checks or
//! ssh, and nothing is fetched.

use super::{Env, Probe, ProbeError, age, inv_cwd, literal_args, plural, run_bounded, utc};
use holdpoint_shared::annotation::{Annotation, Item, Severity};
use holdpoint_shared::shell::Invocation;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The configuration forced on every git the probe runs, over whatever the
/// repository, the user or the system configured.
const NEUTRAL_CONFIG: &[&str] = &[
    "core.fsmonitor=",
    "core.pager=cat",
    "core.hooksPath=/dev/null",
    "diff.external=",
    "core.sshCommand=false",
    "core.askPass=",
    "credential.helper=",
    "log.showSignature=false",
    "gpg.program=false",
    "protocol.allow=never",
    "core.untrackedCache=false",
];

/// Environment variables that would make git run something or read another
/// configuration; removed from every git the probe runs.
const UNSAFE_ENV: &[&str] = &[
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_EXTERNAL_DIFF",
    "GIT_PAGER",
    "PAGER",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "GIT_EDITOR",
    "GIT_SEQUENCE_EDITOR",
    "GIT_EXEC_PATH",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_TRACE",
    "GIT_TRACE2",
    "GIT_TRACE2_EVENT",
];

/// One git invocation, reduced to what the probe needs.
#[derive(Debug, Clone)]
struct GitCall {
    /// The directory git would run in (after `-C`).
    dir: Option<String>,
    /// `--git-dir=…` / `--work-tree=…` as given, passed on unchanged.
    location: Vec<String>,
    sub: String,
    args: Vec<String>,
    display: String,
}

/// The probes for every git invocation of a line (at most one probe).
pub(super) fn plan(invs: &[Invocation], env: &Env) -> Vec<Probe> {
    let calls: Vec<GitCall> = invs
        .iter()
        .filter(|i| i.program == "git")
        .filter_map(|i| parse_call(i, env))
        .filter(destructive)
        .collect();
    if calls.is_empty() {
        return Vec::new();
    }
    let subject = calls
        .iter()
        .map(|c| c.display.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    vec![Probe::new("git", subject, move |env| {
        Ok(run_calls(&calls, env))
    })]
}

fn parse_call(inv: &Invocation, env: &Env) -> Option<GitCall> {
    let args = literal_args(inv);
    let mut dir = inv_cwd(inv, env);
    let mut location = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "-C" => {
                let d = args.get(i + 1)?;
                dir = Some(join(dir.as_deref(), d));
                i += 2;
            }
            "-c" | "--config-env" | "--namespace" | "--exec-path" | "--super-prefix" => i += 2,
            "--git-dir" | "--work-tree" => {
                let v = args.get(i + 1)?;
                location.push(format!("{a}={}", join(dir.as_deref(), v)));
                i += 2;
            }
            _ if a.starts_with("--git-dir=") || a.starts_with("--work-tree=") => {
                let (k, v) = a.split_once('=')?;
                location.push(format!("{k}={}", join(dir.as_deref(), v)));
                i += 1;
            }
            _ if a.starts_with('-') => i += 1,
            _ => break,
        }
    }
    let sub = args.get(i)?.clone();
    let rest = args[i + 1..].to_vec();
    Some(GitCall {
        dir,
        location,
        display: holdpoint_shared::shell::shorten(&format!("git {sub} {}", rest.join(" ")), 120),
        sub,
        args: rest,
    })
}

fn join(base: Option<&str>, p: &str) -> String {
    if p.starts_with('/') {
        return p.to_string();
    }
    match base {
        Some(b) => format!("{b}/{p}"),
        None => p.to_string(),
    }
}

/// A short option word (`-fdx`) that holds the letter `c`.
fn short_has(a: &str, c: char) -> bool {
    a.len() > 1 && a.starts_with('-') && !a.starts_with("--") && a[1..].contains(c)
}

fn destructive(c: &GitCall) -> bool {
    let has = |f: &str| c.args.iter().any(|a| a == f);
    match c.sub.as_str() {
        "reset" => has("--hard"),
        "checkout" => has("-f") || has("--force") || has("--") || has("."),
        "restore" => true,
        "clean" => {
            (c.args.iter().any(|a| short_has(a, 'f')) || has("--force"))
                && !c.args.iter().any(|a| short_has(a, 'n') || a == "--dry-run")
        }
        "stash" => matches!(c.args.first().map(String::as_str), Some("drop" | "clear")),
        "branch" => {
            c.args.iter().any(|a| short_has(a, 'D'))
                || ((has("-d") || has("--delete")) && (has("-f") || has("--force")))
        }
        "push" => push_spec(c).forced,
        _ => false,
    }
}

/// Runs git in one repository with its configuration neutralised.
struct Git<'a> {
    env: &'a Env,
    dir: Option<String>,
    location: Vec<String>,
    /// Filter drivers configured anywhere; they are switched off too.
    filters: Vec<String>,
}

impl<'a> Git<'a> {
    fn new(call: &GitCall, env: &'a Env) -> Result<Git<'a>, ProbeError> {
        let mut g = Git {
            env,
            dir: call.dir.clone(),
            location: call.location.clone(),
            filters: Vec::new(),
        };
        // Reading configuration runs nothing; it tells which filter drivers
        // to switch off before any command that might look at file contents.
        let out = g.run(&["config", "--name-only", "--get-regexp", r"^filter\."])?;
        let mut filters: Vec<String> = out
            .stdout
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("filter.")?;
                let (name, _) = rest.rsplit_once('.')?;
                Some(name.to_string())
            })
            .collect();
        filters.sort();
        filters.dedup();
        g.filters = filters;
        Ok(g)
    }

    fn run(&self, args: &[&str]) -> Result<super::Ran, ProbeError> {
        let mut cmd = self.env.command("git");
        if let Some(d) = &self.dir {
            cmd.arg("-C").arg(d);
        }
        for c in NEUTRAL_CONFIG {
            cmd.arg("-c").arg(c);
        }
        for f in &self.filters {
            for key in ["clean", "smudge", "process"] {
                cmd.arg("-c").arg(format!("filter.{f}.{key}="));
            }
            cmd.arg("-c").arg(format!("filter.{f}.required=false"));
        }
        cmd.args(&self.location).arg("--no-pager").args(args);
        for v in UNSAFE_ENV {
            cmd.env_remove(v);
        }
        cmd.env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("GIT_NO_REPLACE_OBJECTS", "1")
            .env("LC_ALL", "C");
        run_bounded(cmd, self.env)
    }

    fn out(&self, args: &[&str]) -> Result<String, ProbeError> {
        self.run(args)?.ok("git")
    }

    /// The commit a revision names, if it names one.
    fn commit(&self, rev: &str) -> Result<Option<String>, ProbeError> {
        let r = self.run(&[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &format!("{rev}^{{commit}}"),
        ])?;
        Ok(r.success
            .then(|| r.stdout.trim().to_string())
            .filter(|s| !s.is_empty()))
    }

    fn current_branch(&self) -> Result<Option<String>, ProbeError> {
        let r = self.run(&["symbolic-ref", "--quiet", "--short", "HEAD"])?;
        Ok(r.success
            .then(|| r.stdout.trim().to_string())
            .filter(|s| !s.is_empty()))
    }

    fn config(&self, key: &str) -> Result<Option<String>, ProbeError> {
        let r = self.run(&["config", "--get", key])?;
        Ok(r.success
            .then(|| r.stdout.trim().to_string())
            .filter(|s| !s.is_empty()))
    }

    fn git_dir(&self) -> Result<PathBuf, ProbeError> {
        Ok(PathBuf::from(
            self.out(&["rev-parse", "--absolute-git-dir"])?.trim(),
        ))
    }

    /// The commits selected by `revs` (rev-list arguments), newest first, at
    /// most `max`, and how many there are in all.
    fn commits(&self, revs: &[&str], max: usize) -> Result<(Vec<Commit>, usize), ProbeError> {
        let mut count_args = vec!["rev-list", "--count"];
        count_args.extend_from_slice(revs);
        let total: usize = self.out(&count_args)?.trim().parse().unwrap_or(0);
        if total == 0 {
            return Ok((Vec::new(), 0));
        }
        let limit = format!("--max-count={max}");
        let mut args = vec![
            "log",
            "--no-show-signature",
            "--no-decorate",
            "--no-color",
            "--no-textconv",
            "--no-ext-diff",
            "--format=%H%x1f%h%x1f%an%x1f%ae%x1f%as%x1f%s%x1f%b%x1e",
            &limit,
        ];
        args.extend_from_slice(revs);
        let out = self.out(&args)?;
        let commits = out
            .split('\x1e')
            .filter_map(|rec| {
                let f: Vec<&str> = rec.trim_start_matches('\n').split('\x1f').collect();
                (f.len() >= 7).then(|| Commit {
                    full: f[0].to_string(),
                    short: f[1].to_string(),
                    author: f[2].to_string(),
                    email: f[3].to_string(),
                    date: f[4].to_string(),
                    subject: f[5].to_string(),
                    flags: commit_flags(f[5], f[6]),
                })
            })
            .collect();
        Ok((commits, total))
    }

    /// Files with changes that are not committed: (tracked changes, untracked).
    fn status(&self, paths: &[String]) -> Result<(Vec<String>, Vec<String>), ProbeError> {
        let mut args: Vec<&str> = vec![
            "status",
            "--porcelain=v1",
            "-z",
            "--ignore-submodules=all",
            "--untracked-files=all",
            "--no-renames",
        ];
        if !paths.is_empty() {
            args.push("--");
            args.extend(paths.iter().map(String::as_str));
        }
        let out = self.out(&args)?;
        let mut tracked = Vec::new();
        let mut untracked = Vec::new();
        for rec in out.split('\0').filter(|r| r.len() > 3) {
            let (xy, path) = rec.split_at(3);
            if xy.starts_with("??") {
                untracked.push(path.to_string());
            } else if !xy.starts_with("!!") {
                tracked.push(path.to_string());
            }
        }
        Ok((tracked, untracked))
    }
}

/// One commit as the reviewer sees it.
#[derive(Debug, Clone)]
struct Commit {
    full: String,
    short: String,
    author: String,
    email: String,
    date: String,
    subject: String,
    flags: Vec<String>,
}

impl Commit {
    fn item(&self) -> Item {
        Item {
            id: self.short.clone(),
            text: self.subject.clone(),
            details: vec![self.author.clone(), self.date.clone()],
            flags: self.flags.clone(),
        }
    }
}

/// Flags for commit messages that a reviewer must not miss.
fn commit_flags(subject: &str, body: &str) -> Vec<String> {
    let text = format!("{subject}\n{body}").to_lowercase();
    let mut flags = Vec::new();
    const SECURITY: &[&str] = &[
        "security",
        "cve-",
        "vuln",
        "xss",
        "csrf",
        "injection",
        "session fixation",
        "auth bypass",
        "authentication bypass",
        "privilege escalation",
        "ghsa-",
    ];
    if SECURITY.iter().any(|w| text.contains(w)) {
        flags.push("security-fix".to_string());
    }
    if subject.to_lowercase().starts_with("revert") || text.contains("this reverts commit") {
        flags.push("revert".to_string());
    }
    if text.contains("migration") || text.contains("migrate") {
        flags.push("migration".to_string());
    }
    flags
}

/// What earlier invocations of the line would have done to refs.
#[derive(Default)]
struct Simulated {
    /// Branch name → the commit it would point at.
    branches: HashMap<String, String>,
    /// The commit `HEAD` would point at.
    head: Option<String>,
}

impl Simulated {
    /// Rewrites a revision for the simulated state: `HEAD~2` after a reset
    /// becomes `<sha>~2`, a reset branch becomes its new commit.
    fn rev(&self, rev: &str) -> String {
        if let Some(h) = &self.head
            && let Some(rest) = rev.strip_prefix("HEAD")
            && (rest.is_empty() || rest.starts_with(['~', '^', '@']))
        {
            return format!("{h}{rest}");
        }
        let name = rev.strip_prefix("refs/heads/").unwrap_or(rev);
        if let Some(sha) = self.branches.get(name) {
            return sha.clone();
        }
        rev.to_string()
    }
}

fn run_calls(calls: &[GitCall], env: &Env) -> Vec<Annotation> {
    let mut out = Vec::new();
    let mut sim = Simulated::default();
    for call in calls {
        let r = Git::new(call, env).and_then(|g| match call.sub.as_str() {
            "reset" => reset(&g, call, &mut sim),
            "checkout" | "restore" => discard_changes(&g, call),
            "clean" => clean(&g, call),
            "stash" => stash(&g, call),
            "branch" => branch_delete(&g, call),
            "push" => push(&g, call, &sim),
            _ => Ok(Vec::new()),
        });
        match r {
            Ok(list) => out.extend(list),
            Err(e) => out.push(Annotation::failed(
                "git",
                format!("could not gather facts for `{}`", call.display),
                e.to_string(),
            )),
        }
        if env.expired() {
            break;
        }
    }
    out
}

fn positionals(args: &[String], value_opts: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut after_dd = false;
    while i < args.len() {
        let a = &args[i];
        if after_dd {
            out.push(a.clone());
        } else if a == "--" {
            after_dd = true;
        } else if value_opts.contains(&a.as_str()) {
            i += 1;
        } else if !a.starts_with('-') || a == "-" {
            out.push(a.clone());
        }
        i += 1;
    }
    out
}

fn authors(commits: &[Commit]) -> usize {
    commits
        .iter()
        .map(|c| c.email.to_lowercase())
        .collect::<BTreeSet<_>>()
        .len()
}

/// Adds the commits (and a note if there are more) to an annotation.
fn add_commits(a: &mut Annotation, commits: &[Commit], total: usize) {
    a.items.extend(commits.iter().map(Commit::item));
    if total > commits.len() {
        a.truncated = true;
    }
    let security: Vec<String> = commits
        .iter()
        .filter(|c| c.flags.iter().any(|f| f == "security-fix"))
        .map(|c| format!("{} {}", c.short, c.subject))
        .collect();
    if !security.is_empty() {
        a.fact("security fixes among them", security.join("; "));
    }
}

fn reset(g: &Git, call: &GitCall, sim: &mut Simulated) -> Result<Vec<Annotation>, ProbeError> {
    let pos = positionals(&call.args, &[]);
    let target_rev = pos.first().cloned().unwrap_or_else(|| "HEAD".into());
    let Some(head) = (match &sim.head {
        Some(h) => Some(h.clone()),
        None => g.commit("HEAD")?,
    }) else {
        return Ok(vec![Annotation::new(
            "git",
            Severity::Info,
            "the repository has no commits yet",
        )]);
    };
    let Some(target) = g.commit(&sim.rev(&target_rev))? else {
        return Ok(vec![Annotation::failed(
            "git",
            format!("`git reset --hard {target_rev}`: the target names no commit here"),
            format!("`{target_rev}` is not a commit in this repository"),
        )]);
    };
    let branch = g.current_branch()?;
    let max = g.env.opts.max_items;
    let not_target = format!("^{target}");
    let (commits, total) = g.commits(&[&head, &not_target], max)?;
    // The commits that exist on no other branch, tag or remote.
    let mut only_here_args = vec!["rev-list", head.as_str(), "--not", target.as_str()];
    let exclude = branch.as_ref().map(|b| format!("--exclude={b}"));
    if let Some(e) = &exclude {
        only_here_args.push(e);
    }
    only_here_args.extend(["--branches", "--remotes", "--tags"]);
    let only_here: BTreeSet<String> = g
        .out(&only_here_args)?
        .lines()
        .map(str::to_string)
        .collect();
    let (changed, untracked) = if sim.head.is_some() {
        (Vec::new(), Vec::new())
    } else {
        g.status(&[])?
    };

    let on = branch.clone().unwrap_or_else(|| "a detached HEAD".into());
    let mut parts = Vec::new();
    if total > 0 {
        parts.push(format!(
            "moves {on} back {} by {}",
            plural(total, "commit", "commits"),
            plural(authors(&commits), "author", "authors")
        ));
    } else {
        parts.push(format!("moves {on} to {}", &target[..target.len().min(7)]));
    }
    if !changed.is_empty() {
        parts.push(format!(
            "discards uncommitted changes in {}",
            plural(changed.len(), "file", "files")
        ));
    }
    let severity = if !only_here.is_empty() || !changed.is_empty() {
        Severity::Danger
    } else if total > 0 {
        Severity::Warning
    } else {
        Severity::Info
    };
    let mut a = Annotation::new("git", severity, parts.join(" and "));
    a.fact(
        "target",
        format!("{target_rev} = {}", &target[..target.len().min(12)]),
    );
    if total > 0 {
        a.fact(
            "commits leaving the branch",
            format!(
                "{total}, of which {} exist on no other branch, tag or remote (recoverable from the reflog only until garbage collection)",
                only_here.len()
            ),
        );
    }
    a.fact(
        "uncommitted changes lost",
        plural(changed.len(), "file", "files"),
    );
    if !untracked.is_empty() {
        a.fact("untracked files (kept by reset --hard)", untracked.len());
    }
    let mut commits = commits;
    for c in &mut commits {
        if only_here.contains(&c.full) {
            c.flags.push("unpushed".into());
        }
    }
    add_commits(&mut a, &commits, total);
    add_files(&mut a, &changed, "uncommitted change", g.env.opts.max_items);

    if let Some(b) = branch {
        sim.branches.insert(b, target.clone());
    }
    sim.head = Some(target);
    Ok(vec![a])
}

fn add_files(a: &mut Annotation, files: &[String], what: &str, max: usize) {
    let room = max.saturating_sub(a.items.len());
    for f in files.iter().take(room) {
        a.items.push(Item {
            id: f.clone(),
            text: what.to_string(),
            ..Item::default()
        });
    }
    if files.len() > room {
        a.truncated = true;
    }
}

fn discard_changes(g: &Git, call: &GitCall) -> Result<Vec<Annotation>, ProbeError> {
    let value_opts = [
        "-s",
        "--source",
        "-b",
        "-B",
        "--orphan",
        "--conflict",
        "--pathspec-from-file",
    ];
    let pos = positionals(&call.args, &value_opts);
    let has = |f: &str| call.args.iter().any(|a| a == f);
    let staged_only = call.sub == "restore"
        && (has("--staged") || has("-S"))
        && !(has("--worktree") || has("-W"));
    if staged_only {
        return Ok(vec![Annotation::new(
            "git",
            Severity::Info,
            "unstages changes; the working tree keeps them",
        )]);
    }
    // `checkout BRANCH -f` throws away every change; with paths, only theirs.
    let paths: Vec<String> = if call.sub == "checkout" {
        match call.args.iter().position(|a| a == "--") {
            Some(i) => call.args[i + 1..].to_vec(),
            None if pos.iter().any(|p| p == ".") => {
                pos.iter().filter(|p| *p == ".").cloned().collect()
            }
            None => Vec::new(),
        }
    } else {
        pos
    };
    let (changed, _) = g.status(&paths)?;
    let scope = if paths.is_empty() {
        "the working tree".to_string()
    } else {
        paths.join(" ")
    };
    let severity = loss_severity(changed.len());
    let mut a = Annotation::new(
        "git",
        severity,
        format!(
            "discards uncommitted changes in {} under {scope}",
            plural(changed.len(), "file", "files")
        ),
    );
    add_files(&mut a, &changed, "uncommitted change", g.env.opts.max_items);
    Ok(vec![a])
}

fn clean(g: &Git, call: &GitCall) -> Result<Vec<Annotation>, ProbeError> {
    let mut args: Vec<String> = vec!["clean".into(), "-n".into()];
    for a in &call.args {
        if a == "--force" || a == "--interactive" || a == "-i" {
            continue;
        }
        if a.starts_with('-') && !a.starts_with("--") && a.len() > 1 {
            let kept: String = a[1..].chars().filter(|c| *c != 'f' && *c != 'i').collect();
            if !kept.is_empty() {
                args.push(format!("-{kept}"));
            }
            continue;
        }
        args.push(a.clone());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = g.out(&refs)?;
    let paths: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("Would remove "))
        .map(str::to_string)
        .collect();
    let base = g.dir.clone().unwrap_or_else(|| ".".into());
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut cut = false;
    for p in &paths {
        let w = super::files::walk(
            Path::new(&base).join(p).as_path(),
            g.env,
            g.env.opts.max_files,
        );
        files += w.files;
        bytes += w.bytes;
        cut |= w.cut_short.is_some();
    }
    let severity = loss_severity(paths.len());
    let mut a = Annotation::new(
        "git",
        severity,
        format!(
            "deletes {} ({}, {})",
            plural(paths.len(), "untracked path", "untracked paths"),
            plural(files as usize, "file", "files"),
            super::human_bytes(bytes)
        ),
    );
    add_files(&mut a, &paths, "untracked", g.env.opts.max_items);
    a.truncated |= cut;
    Ok(vec![a])
}

fn stash(g: &Git, call: &GitCall) -> Result<Vec<Annotation>, ProbeError> {
    let out = g.out(&["stash", "list", "--format=%gd%x1f%h%x1f%cs%x1f%gs"])?;
    let entries: Vec<Item> = out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\x1f').collect();
            (f.len() >= 4).then(|| Item {
                id: f[0].to_string(),
                text: f[3].to_string(),
                details: vec![f[1].to_string(), f[2].to_string()],
                flags: Vec::new(),
            })
        })
        .collect();
    let dropped: Vec<Item> = if call.args.first().is_some_and(|a| a == "clear") {
        entries
    } else {
        let which = positionals(&call.args[1..], &[])
            .first()
            .cloned()
            .unwrap_or_else(|| "stash@{0}".into());
        let which = if which.bytes().all(|b| b.is_ascii_digit()) {
            format!("stash@{{{which}}}")
        } else {
            which
        };
        entries.into_iter().filter(|e| e.id == which).collect()
    };
    let severity = loss_severity(dropped.len());
    let mut a = Annotation::new(
        "git",
        severity,
        format!(
            "drops {}",
            plural(dropped.len(), "stash entry", "stash entries")
        ),
    );
    a.items = dropped;
    Ok(vec![a])
}

fn branch_delete(g: &Git, call: &GitCall) -> Result<Vec<Annotation>, ProbeError> {
    let mut out = Vec::new();
    for name in positionals(&call.args, &["-u", "--set-upstream-to", "-t", "--track"]) {
        let Some(tip) = g.commit(&format!("refs/heads/{name}"))? else {
            out.push(Annotation::new(
                "git",
                Severity::Info,
                format!("no branch named {name}"),
            ));
            continue;
        };
        let exclude = format!("--exclude={name}");
        let (commits, total) = g.commits(
            &[&tip, "--not", &exclude, "--branches", "--remotes", "--tags"],
            g.env.opts.max_items,
        )?;
        let severity = if total > 0 {
            Severity::Danger
        } else {
            Severity::Info
        };
        let mut a = Annotation::new(
            "git",
            severity,
            format!(
                "deletes branch {name} with {} found on no other branch, tag or remote",
                plural(total, "commit", "commits")
            ),
        );
        add_commits(&mut a, &commits, total);
        out.push(a);
    }
    Ok(out)
}

/// A `git push`, reduced.
#[derive(Debug, Default)]
struct PushSpec {
    forced: bool,
    /// The spelling that made it forced, for the reviewer.
    how: Vec<String>,
    lease: bool,
    mirror: bool,
    all: bool,
    delete: bool,
    remote: Option<String>,
    refspecs: Vec<String>,
}

fn push_spec(c: &GitCall) -> PushSpec {
    let value_opts = [
        "--repo",
        "-o",
        "--push-option",
        "--receive-pack",
        "--exec",
        "--signed",
    ];
    let mut s = PushSpec::default();
    let mut i = 0;
    let mut pos = Vec::new();
    while i < c.args.len() {
        let a = c.args[i].as_str();
        match a {
            "--force" => {
                s.forced = true;
                s.how.push(a.into());
            }
            "--mirror" => {
                s.forced = true;
                s.mirror = true;
                s.how.push(a.into());
            }
            "--all" | "--branches" => s.all = true,
            "--delete" => {
                s.forced = true;
                s.delete = true;
                s.how.push(a.into());
            }
            "--prune" => {
                s.forced = true;
                s.how.push(a.into());
            }
            "--" => {
                pos.extend(c.args[i + 1..].iter().cloned());
                break;
            }
            _ if a.starts_with("--force-with-lease") => {
                s.forced = true;
                s.lease = true;
                s.how.push(a.into());
            }
            _ if a.starts_with("--repo=") => s.remote = Some(a["--repo=".len()..].to_string()),
            _ if value_opts.contains(&a) => {
                if a == "--repo" {
                    s.remote = c.args.get(i + 1).cloned();
                }
                i += 1;
            }
            _ if a.starts_with("--") => {}
            _ if a.starts_with('-') && a.len() > 1 => {
                if a[1..].contains('f') {
                    s.forced = true;
                    s.how.push(a.into());
                }
                if a[1..].contains('d') {
                    s.forced = true;
                    s.delete = true;
                    s.how.push(a.into());
                }
            }
            _ => pos.push(a.to_string()),
        }
        i += 1;
    }
    let mut pos = pos.into_iter();
    if s.remote.is_none() {
        s.remote = pos.next();
    }
    s.refspecs = pos.collect();
    for r in &s.refspecs {
        if r.starts_with('+') {
            s.forced = true;
            s.how.push(r.clone());
        } else if r.starts_with(':') {
            s.forced = true;
            s.delete = true;
            s.how.push(r.clone());
        }
    }
    s
}

/// One ref a push would update: the local commit (None to delete) and the
/// remote branch.
struct Update {
    src: Option<String>,
    src_label: String,
    dst: String,
}

fn push(g: &Git, call: &GitCall, sim: &Simulated) -> Result<Vec<Annotation>, ProbeError> {
    let spec = push_spec(call);
    let branch = g.current_branch()?;
    let remote = match &spec.remote {
        Some(r) => r.clone(),
        None => {
            let from_branch = |k: &str| -> Result<Option<String>, ProbeError> {
                match &branch {
                    Some(b) => g.config(&format!("branch.{b}.{k}")),
                    None => Ok(None),
                }
            };
            match from_branch("pushRemote")? {
                Some(r) => r,
                None => match g.config("remote.pushDefault")? {
                    Some(r) => r,
                    None => from_branch("remote")?.unwrap_or_else(|| "origin".into()),
                },
            }
        }
    };
    if g.config(&format!("remote.{remote}.url"))?.is_none() {
        return Ok(vec![Annotation::new(
            "git",
            Severity::Warning,
            format!(
                "force-pushes to {remote}, which is not a configured remote: what it holds cannot be read locally"
            ),
        )]);
    }

    let mut updates = Vec::new();
    if spec.mirror || spec.all {
        let heads = g.out(&["for-each-ref", "--format=%(refname:short)", "refs/heads"])?;
        for b in heads.lines() {
            updates.push(Update {
                src: Some(b.to_string()),
                src_label: b.to_string(),
                dst: b.to_string(),
            });
        }
        if spec.mirror {
            let prefix = format!("refs/remotes/{remote}");
            let remote_heads = g.out(&["for-each-ref", "--format=%(refname)", &prefix])?;
            for r in remote_heads.lines() {
                let name = r.trim_start_matches(&prefix).trim_start_matches('/');
                if name != "HEAD" && !updates.iter().any(|u| u.dst == name) {
                    updates.push(Update {
                        src: None,
                        src_label: "(deleted)".into(),
                        dst: name.to_string(),
                    });
                }
            }
        }
    } else if spec.refspecs.is_empty() {
        let Some(b) = branch.clone() else {
            return Ok(vec![Annotation::new(
                "git",
                Severity::Warning,
                "force-pushes from a detached HEAD without naming a branch",
            )]);
        };
        let dst = g
            .config(&format!("branch.{b}.merge"))?
            .map(|m| m.trim_start_matches("refs/heads/").to_string())
            .unwrap_or_else(|| b.clone());
        updates.push(Update {
            src: Some(b.clone()),
            src_label: b,
            dst,
        });
    } else {
        for r in &spec.refspecs {
            let r = r.trim_start_matches('+');
            let (src, dst) = match r.split_once(':') {
                Some((s, d)) => (s.to_string(), d.to_string()),
                None => (r.to_string(), r.to_string()),
            };
            let dst = if dst == "HEAD" || (src == "HEAD" && !r.contains(':')) {
                branch.clone().unwrap_or(dst)
            } else {
                dst
            };
            let dst = dst.trim_start_matches("refs/heads/").to_string();
            let deleting = src.is_empty() || spec.delete;
            updates.push(Update {
                src: (!deleting).then(|| src.clone()),
                src_label: if deleting { "(deleted)".into() } else { src },
                dst,
            });
        }
    }

    let git_dir = g.git_dir()?;
    let fetch_head = std::fs::metadata(git_dir.join("FETCH_HEAD"))
        .and_then(|m| m.modified())
        .ok();
    let mut out = Vec::new();
    for u in updates {
        let tracking = format!("{remote}/{}", u.dst);
        let Some(old) = g.commit(&format!("refs/remotes/{tracking}"))? else {
            out.push(Annotation::new(
                "git",
                Severity::Warning,
                format!("no local copy of {tracking}: what the push would overwrite cannot be told without fetching"),
            ));
            continue;
        };
        let new = match &u.src {
            Some(s) => match g.commit(&sim.rev(s))? {
                Some(c) => Some(c),
                None => {
                    out.push(Annotation::failed(
                        "git",
                        format!("`{}`: {s} names no commit here", call.display),
                        format!("{s} is not a commit in this repository"),
                    ));
                    continue;
                }
            },
            None => None,
        };
        let not = match &new {
            Some(n) => vec![old.clone(), format!("^{n}")],
            None => vec![old.clone(), "--not".into(), "--branches".into()],
        };
        let refs: Vec<&str> = not.iter().map(String::as_str).collect();
        let (commits, total) = g.commits(&refs, g.env.opts.max_items)?;
        let n_authors = authors(&commits);
        let title = match (&new, total) {
            (None, _) => format!(
                "deletes {tracking}, with {} found on no local branch",
                plural(total, "commit", "commits")
            ),
            (Some(_), 0) => format!(
                "overwrites no commit on {tracking} (a fast-forward as far as the local copy shows)"
            ),
            (Some(_), n) => format!(
                "overwrites {} by {} on {tracking}",
                plural(n, "commit", "commits"),
                plural(n_authors, "author", "authors")
            ),
        };
        let severity = if total > 0 || new.is_none() {
            Severity::Danger
        } else {
            Severity::Info
        };
        let mut a = Annotation::new("git", severity, title);
        a.fact("forced by", spec.how.join(" "));
        a.fact(
            "pushes",
            format!(
                "{} ({}) to {remote} {}",
                u.src_label,
                new.as_deref()
                    .map(|n| &n[..n.len().min(12)])
                    .unwrap_or("nothing"),
                u.dst
            ),
        );
        // How old the local picture of the remote is: the newest of the
        // tracking ref's reflog and FETCH_HEAD.
        let reflog =
            std::fs::metadata(git_dir.join("logs/refs/remotes").join(&remote).join(&u.dst))
                .and_then(|m| m.modified())
                .ok();
        let updated = match (reflog, fetch_head) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        a.fact(
            "remote-tracking ref",
            match updated {
                Some(t) => format!(
                    "{tracking} at {}, last updated {} ({}); the remote may hold newer commits, not fetched",
                    &old[..old.len().min(12)],
                    age(t),
                    utc(t)
                ),
                None => format!(
                    "{tracking} at {}, age unknown; the remote may hold newer commits, not fetched",
                    &old[..old.len().min(12)]
                ),
            },
        );
        if total > 0 {
            let names: BTreeSet<&str> = commits.iter().map(|c| c.author.as_str()).collect();
            a.fact("authors", names.into_iter().collect::<Vec<_>>().join(", "));
        }
        if spec.lease && total > 0 {
            a.fact(
                "force-with-lease",
                format!("protects only against commits newer than {tracking}; these would still be overwritten"),
            );
        }
        add_commits(&mut a, &commits, total);
        out.push(a);
    }
    Ok(out)
}

/// Losing nothing is information; losing anything is danger.
fn loss_severity(lost: usize) -> Severity {
    if lost == 0 {
        Severity::Info
    } else {
        Severity::Danger
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: &[&str]) -> GitCall {
        GitCall {
            dir: None,
            location: Vec::new(),
            sub: args[0].to_string(),
            args: args[1..].iter().map(|s| s.to_string()).collect(),
            display: args.join(" "),
        }
    }

    #[test]
    fn every_spelling_of_a_force_push_is_seen() {
        for args in [
            &["push", "origin", "main", "--force"][..],
            &["push", "-f", "origin", "main"],
            &["push", "-uf", "origin", "main"],
            &["push", "origin", "+main"],
            &["push", "origin", "+HEAD:main"],
            &["push", "--force-with-lease", "origin", "main"],
            &["push", "--force-with-lease=main:abc", "origin", "main"],
            &["push", "--mirror", "origin"],
            &["push", "origin", ":main"],
            &["push", "--delete", "origin", "main"],
        ] {
            assert!(push_spec(&call(args)).forced, "{args:?}");
        }
        assert!(!push_spec(&call(&["push", "origin", "main"])).forced);
        assert!(!push_spec(&call(&["push", "-u", "origin", "main"])).forced);
    }

    #[test]
    fn security_reverts_and_migrations_are_flagged() {
        assert_eq!(
            commit_flags("Fix session fixation in login", ""),
            vec!["security-fix"]
        );
        assert_eq!(
            commit_flags("Bump parser", "Fixes CVE-2024-1234"),
            vec!["security-fix"]
        );
        assert_eq!(
            commit_flags("Revert \"Add cache\"", "This reverts commit abc."),
            vec!["revert"]
        );
        assert_eq!(
            commit_flags("Add migration for orders", ""),
            vec!["migration"]
        );
        assert!(commit_flags("Tidy README", "").is_empty());
    }

    #[test]
    fn only_destructive_git_calls_are_probed() {
        assert!(destructive(&call(&["clean", "-fdx"])));
        assert!(!destructive(&call(&["clean", "-n"])));
        assert!(!destructive(&call(&["clean", "-fn"])));
        assert!(destructive(&call(&["checkout", "--", "src"])));
        assert!(!destructive(&call(&["checkout", "main"])));
        assert!(destructive(&call(&["branch", "-D", "x"])));
        assert!(!destructive(&call(&["branch", "-d", "x"])));
        assert!(destructive(&call(&["stash", "clear"])));
        assert!(!destructive(&call(&["stash", "list"])));
        assert!(!destructive(&call(&["status"])));
    }
}

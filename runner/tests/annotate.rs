//! Risk annotations, proved against real fixtures: git repositories with
//! several authors and a remote, backup directories with dated dumps, a
//! kubeconfig and stub `kubectl`/`aws` programs on PATH, and a credential
//! home. Each scenario is named after the incident it would have shown a
//! reviewer (see INCIDENTS.md).

#[path = "../src/annotate/mod.rs"]
#[allow(dead_code)]
mod annotate;

use annotate::{AnnotateOptions, annotate};
use holdpoint_shared::annotation::{Annotation, Severity};
use holdpoint_shared::{Context, Decision, Policy};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// A directory that is not a temp dir to the gate, so deletions there are
/// reviewed, removed on drop: under the target's temp dir, or, where the
/// checkout itself lives in a temp dir (`/tmp/…`), under `~/.cache`.
struct TempDir(PathBuf);

/// Where fixtures go: never below a directory the gate treats as temp.
fn fixture_base() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let mut temp: Vec<PathBuf> = ["/tmp", "/var/tmp", "/dev/shm"]
        .iter()
        .map(PathBuf::from)
        .collect();
    temp.extend(std::env::var_os("TMPDIR").map(PathBuf::from));
    let in_temp = |p: &Path| temp.iter().any(|t| p.starts_with(t));
    if !in_temp(&target) {
        return target;
    }
    match std::env::var_os("HOME").map(PathBuf::from) {
        Some(home) if !in_temp(&home) => home.join(".cache/holdpoint-test-fixtures"),
        _ => target,
    }
}

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = fixture_base().join(format!(
            "annotate-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn s(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    write(path, &format!("#!/bin/sh\n{body}\n"));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A context rooted in `cwd` with `home`, and PATH = `extra_path` + the real PATH.
fn context(cwd: &Path, home: &Path, extra_path: Option<&Path>, vars: &[(&str, String)]) -> Context {
    let mut env: HashMap<String, String> = HashMap::new();
    let real = std::env::var("PATH").unwrap_or_default();
    let path = match extra_path {
        Some(p) => format!("{}:{real}", p.display()),
        None => real,
    };
    env.insert("PATH".into(), path);
    env.insert("HOME".into(), home.to_string_lossy().into_owned());
    for (k, v) in vars {
        env.insert(k.to_string(), v.clone());
    }
    Context {
        cwd: Some(cwd.to_string_lossy().into_owned()),
        home: home.to_string_lossy().into_owned(),
        env,
        project: None,
        links: Default::default(),
    }
}

/// Classifies with the built-in policy and annotates.
fn run(line: &str, ctx: &Context, opts: &AnnotateOptions) -> (Decision, Vec<Annotation>) {
    let verdict = Policy::builtin().unwrap().classify(line, ctx);
    (verdict.decision, annotate(line, ctx, &verdict, opts))
}

fn opts() -> AnnotateOptions {
    AnnotateOptions {
        timeout: Duration::from_secs(10),
        ..AnnotateOptions::default()
    }
}

fn fact<'a>(a: &'a Annotation, label: &str) -> &'a str {
    a.facts
        .iter()
        .find(|f| f.label == label)
        .map(|f| f.value.as_str())
        .unwrap_or_else(|| panic!("no fact {label:?} in {}", a.render_text()))
}

// ---------------------------------------------------------------- git

/// Runs git for a fixture with a fixed identity and dates.
fn git(dir: &Path, home: &Path, args: &[&str], author: (&str, &str), n: u64) -> String {
    let date = format!("{} +0000", 1_714_000_000 + n * 3600);
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", author.0)
        .env("GIT_AUTHOR_EMAIL", author.1)
        .env("GIT_COMMITTER_NAME", author.0)
        .env("GIT_COMMITTER_EMAIL", author.1)
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const ALICE: (&str, &str) = ("Alice Martin", "alice@example.com");
const BOB: (&str, &str) = ("Bob Chen", "bob@example.com");
const CAROL: (&str, &str) = ("Carol Diaz", "carol@example.com");

/// A working repository with a bare remote: 3 base commits, then 12 commits
/// by three engineers (the 7th a reviewed security fix), all pushed and
/// fetched. Returns (root, work dir, home).
fn incident_4_repo() -> (TempDir, PathBuf, PathBuf) {
    let root = TempDir::new("git");
    let home = root.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let remote = root.path().join("remote.git");
    let work = root.path().join("work");
    git(
        root.path(),
        &home,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            remote.to_str().unwrap(),
        ],
        ALICE,
        0,
    );
    git(
        root.path(),
        &home,
        &["init", "-q", "-b", "main", work.to_str().unwrap()],
        ALICE,
        0,
    );
    git(
        &work,
        &home,
        &["remote", "add", "origin", remote.to_str().unwrap()],
        ALICE,
        0,
    );
    let mut n = 1;
    for i in 0..3 {
        write(
            &work.join(format!("auth/base{i}.rs")),
            &format!("// base {i}\n"),
        );
        git(&work, &home, &["add", "."], ALICE, n);
        git(
            &work,
            &home,
            &["commit", "-q", "-m", &format!("Auth module part {i}")],
            ALICE,
            n,
        );
        n += 1;
    }
    let people = [ALICE, BOB, CAROL];
    for i in 0..12 {
        let who = people[i % 3];
        write(
            &work.join(format!("auth/change{i}.rs")),
            &format!("// change {i}\n"),
        );
        git(&work, &home, &["add", "."], who, n);
        let msg = if i == 6 {
            "Fix session fixation in login (security)\n\nRegenerate the session id after authentication.\n\nReviewed-by: Dana Okafor <dana@example.com>".to_string()
        } else if i == 9 {
            "Add migration for sessions table".to_string()
        } else {
            format!("Refactor auth step {i}")
        };
        git(&work, &home, &["commit", "-q", "-m", &msg], who, n);
        n += 1;
    }
    git(&work, &home, &["push", "-q", "origin", "main"], ALICE, n);
    git(&work, &home, &["fetch", "-q", "origin"], ALICE, n);
    (root, work, home)
}

fn git_annotations(list: &[Annotation]) -> Vec<&Annotation> {
    list.iter().filter(|a| a.probe == "git").collect()
}

#[test]
fn incident_4_reset_and_force_push_report_the_exact_twelve_commits_and_the_security_fix() {
    let (_root, work, home) = incident_4_repo();
    let expected: Vec<String> = git(
        &work,
        &home,
        &["log", "--format=%h", "HEAD~12..HEAD"],
        ALICE,
        0,
    )
    .lines()
    .map(str::to_string)
    .collect();
    assert_eq!(expected.len(), 12);
    let security = git(
        &work,
        &home,
        &["log", "--format=%h", "-1", "--grep=session fixation"],
        ALICE,
        0,
    )
    .trim()
    .to_string();
    let ctx = context(&work, &home, None, &[]);

    let (decision, list) = run(
        "git reset --hard HEAD~12 && git push origin main --force",
        &ctx,
        &opts(),
    );
    assert_eq!(decision, Decision::Review);
    let g = git_annotations(&list);
    assert_eq!(g.len(), 2, "{list:#?}");

    let reset = g[0];
    assert_eq!(reset.title, "moves main back 12 commits by 3 authors");
    assert_eq!(reset.error, None);
    let ids: Vec<&str> = reset.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, expected);
    // All 12 are still on origin/main: the reset alone loses nothing yet.
    assert!(
        fact(reset, "commits leaving the branch").starts_with("12, of which 0 exist on no other")
    );

    let push = g[1];
    assert_eq!(
        push.title,
        "overwrites 12 commits by 3 authors on origin/main"
    );
    assert_eq!(push.severity, Severity::Danger);
    let ids: Vec<&str> = push.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids, expected,
        "the push reports exactly the commits the reset drops"
    );
    assert_eq!(fact(push, "authors"), "Alice Martin, Bob Chen, Carol Diaz");
    assert_eq!(
        fact(push, "security fixes among them"),
        format!("{security} Fix session fixation in login (security)")
    );
    let sec = push.items.iter().find(|i| i.id == security).unwrap();
    assert_eq!(sec.flags, vec!["security-fix"]);
    assert_eq!(
        sec.details,
        vec!["Alice Martin".to_string(), "2024-04-25".to_string()]
    );
    let mig = push
        .items
        .iter()
        .find(|i| i.text == "Add migration for sessions table")
        .unwrap();
    assert_eq!(mig.flags, vec!["migration"]);
    assert!(fact(push, "remote-tracking ref").contains("origin/main at"));
    assert!(fact(push, "remote-tracking ref").contains("last updated just now"));

    // The repository is untouched.
    assert_eq!(
        git(&work, &home, &["rev-list", "--count", "HEAD"], ALICE, 0).trim(),
        "15"
    );
}

#[test]
fn every_force_push_spelling_reports_the_commits_it_would_overwrite() {
    let (_root, work, home) = incident_4_repo();
    // The local branch is already 2 commits behind the remote.
    git(&work, &home, &["reset", "-q", "--hard", "HEAD~2"], ALICE, 0);
    let expected: Vec<String> = git(
        &work,
        &home,
        &["log", "--format=%h", "HEAD..origin/main"],
        ALICE,
        0,
    )
    .lines()
    .map(str::to_string)
    .collect();
    let ctx = context(&work, &home, None, &[]);
    for line in [
        "git push --force",
        "git push -f origin main",
        "git push origin +main",
        "git push origin +HEAD:main",
        "git push --force-with-lease origin main",
        "git push --mirror origin",
        "git -C . push origin main -f",
    ] {
        let (_, list) = run(line, &ctx, &opts());
        let g = git_annotations(&list);
        let push = g
            .iter()
            .find(|a| a.title.contains("origin/main"))
            .unwrap_or_else(|| panic!("{line}: {list:#?}"));
        assert_eq!(
            push.title, "overwrites 2 commits by 2 authors on origin/main",
            "{line}"
        );
        let ids: Vec<&str> = push.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, expected, "{line}");
    }
    let (_, list) = run("git push origin :main", &ctx, &opts());
    assert!(
        git_annotations(&list)[0]
            .title
            .starts_with("deletes origin/main"),
        "{list:#?}"
    );
}

#[test]
fn reset_checkout_clean_stash_and_branch_report_what_they_lose() {
    let (_root, work, home) = incident_4_repo();
    git(&work, &home, &["checkout", "-q", "-b", "wip"], ALICE, 0);
    write(&work.join("wip.rs"), "x\n");
    git(&work, &home, &["add", "."], ALICE, 40);
    git(
        &work,
        &home,
        &["commit", "-q", "-m", "WIP only here"],
        ALICE,
        40,
    );
    let wip = git(&work, &home, &["log", "--format=%h", "-1"], ALICE, 0)
        .trim()
        .to_string();
    git(&work, &home, &["checkout", "-q", "main"], ALICE, 0);
    write(&work.join("stashed.rs"), "s\n");
    git(&work, &home, &["add", "stashed.rs"], ALICE, 0);
    git(
        &work,
        &home,
        &["stash", "push", "-q", "-m", "half-done login form"],
        ALICE,
        41,
    );
    write(&work.join("auth/base0.rs"), "// edited\n");
    write(&work.join("scratch.txt"), "notes\n");
    let ctx = context(&work, &home, None, &[]);

    let (_, list) = run("git reset --hard HEAD~1", &ctx, &opts());
    let a = git_annotations(&list)[0];
    assert_eq!(
        a.title,
        "moves main back 1 commit by 1 author and discards uncommitted changes in 1 file"
    );
    assert_eq!(fact(a, "uncommitted changes lost"), "1 file");
    assert_eq!(fact(a, "untracked files (kept by reset --hard)"), "1");
    assert!(a.items.iter().any(|i| i.id == "auth/base0.rs"));

    let (_, list) = run("git checkout -- .", &ctx, &opts());
    let a = git_annotations(&list)[0];
    assert_eq!(a.title, "discards uncommitted changes in 1 file under .");

    let (_, list) = run("git clean -fd", &ctx, &opts());
    let a = git_annotations(&list)[0];
    assert_eq!(a.title, "deletes 1 untracked path (1 file, 6 B)");
    assert_eq!(a.items[0].id, "scratch.txt");

    let (_, list) = run("git stash drop", &ctx, &opts());
    let a = git_annotations(&list)[0];
    assert_eq!(a.title, "drops 1 stash entry");
    assert_eq!(a.items[0].id, "stash@{0}");
    assert!(a.items[0].text.contains("half-done login form"));

    let (_, list) = run("git branch -D wip", &ctx, &opts());
    let a = git_annotations(&list)[0];
    assert_eq!(
        a.title,
        "deletes branch wip with 1 commit found on no other branch, tag or remote"
    );
    assert_eq!(a.items[0].id, wip);
}

#[test]
fn a_malicious_repo_config_executes_nothing_during_probing() {
    let (root, work, home) = incident_4_repo();
    let marker = root.path().join("MARKER");
    let trap = root.path().join("trap.sh");
    script(
        &trap,
        &format!(
            "echo \"$0 $*\" >> '{}'\ncat >/dev/null 2>&1\nexit 0",
            marker.display()
        ),
    );
    let t = trap.display();
    let hooks = root.path().join("evil-hooks");
    for hook in [
        "pre-commit",
        "post-checkout",
        "pre-push",
        "post-index-change",
        "reference-transaction",
        "pre-auto-gc",
        "fsmonitor-watchman",
    ] {
        script(&hooks.join(hook), &format!("'{t}' hook {hook}"));
        script(
            &work.join(".git/hooks").join(hook),
            &format!("'{t}' githook {hook}"),
        );
    }
    let cfg = [
        ("core.fsmonitor", t.to_string()),
        ("core.pager", format!("'{t}' pager")),
        ("pager.log", format!("'{t}' pager-log")),
        ("diff.external", format!("'{t}'")),
        ("core.hooksPath", hooks.display().to_string()),
        ("log.showSignature", "true".into()),
        ("gpg.program", format!("'{t}'")),
        ("filter.evil.clean", format!("'{t}' clean")),
        ("filter.evil.smudge", format!("'{t}' smudge")),
        ("filter.evil.process", format!("'{t}' process")),
        ("core.sshCommand", format!("'{t}' ssh")),
        ("diff.evil.textconv", format!("'{t}' textconv")),
    ];
    for (k, v) in &cfg {
        git(&work, &home, &["config", k, v], ALICE, 0);
    }
    write(&work.join(".gitattributes"), "* filter=evil diff=evil\n");
    write(
        &work.join("auth/base1.rs"),
        "// changed so status must look at content\n",
    );
    std::fs::remove_file(&marker).ok();
    let ctx = context(&work, &home, None, &[]);
    for line in [
        "git reset --hard HEAD~12 && git push origin main --force",
        "git checkout -- .",
        "git restore auth",
        "git clean -fdx",
        "git stash clear",
        "git branch -D main",
        "git push --mirror origin",
    ] {
        let (_, list) = run(line, &ctx, &opts());
        assert!(!list.is_empty(), "{line}");
        assert!(
            !marker.exists(),
            "probing `{line}` ran: {}",
            std::fs::read_to_string(&marker).unwrap_or_default()
        );
    }
    // The trap is armed: plain git runs it (filters off, so that the
    // long-running filter protocol cannot stall this check).
    for args in [&["status"][..], &["log", "-1", "-p"]] {
        let _ = Command::new("git")
            .arg("-C")
            .arg(&work)
            .args([
                "-c",
                "filter.evil.process=",
                "-c",
                "filter.evil.clean=",
                "-c",
                "filter.evil.smudge=",
            ])
            .args(args)
            .env("HOME", &home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(std::process::Stdio::null())
            .output();
    }
    assert!(
        marker.exists(),
        "the fixture's traps should fire under plain git"
    );
}

#[test]
fn secrets_in_commit_subjects_are_redacted() {
    let (_root, work, home) = incident_4_repo();
    let token = format!("ghp_{}", "Z".repeat(36));
    write(&work.join("x.txt"), "x\n");
    git(&work, &home, &["add", "."], ALICE, 60);
    git(
        &work,
        &home,
        &["commit", "-q", "-m", &format!("Rotate token {token}")],
        ALICE,
        60,
    );
    let ctx = context(&work, &home, None, &[]);
    let (_, list) = run("git reset --hard HEAD~1", &ctx, &opts());
    let text: String = list.iter().map(Annotation::render_text).collect();
    assert!(text.contains("Rotate token [REDACTED]"), "{text}");
    assert!(!text.contains(&token));
}

// ---------------------------------------------------------------- files

/// 21 daily dumps of known sizes and dates, and one weekly dump that the
/// glob does not match.
fn incident_1_backups() -> (TempDir, PathBuf, u64, SystemTime) {
    let root = TempDir::new("backups");
    let dir = root.path().join("var/backups/pg_dump");
    let mut total = 0;
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_521_600); // 2024-05-01 00:00 UTC
    let mut newest = base;
    for day in 1..=21u64 {
        let p = dir.join(format!("daily_2024-05-{day:02}.sql.gz"));
        let size = 1000 * day as usize + 7;
        write(&p, &"x".repeat(size));
        total += size as u64;
        let t = base + Duration::from_secs((day - 1) * 86_400 + 3 * 3600);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
        newest = newest.max(t);
    }
    write(&dir.join("weekly_2024-05-19.sql.gz"), "weekly");
    (root, dir, total, newest)
}

#[test]
fn incident_1_backup_deletion_counts_files_bytes_newest_and_says_backup() {
    let (root, dir, total, _newest) = incident_1_backups();
    let ctx = context(root.path(), root.path(), None, &[]);
    let line = format!("rm -rf {}/daily_*.sql.gz", dir.display());
    let (decision, list) = run(&line, &ctx, &opts());
    assert_ne!(decision, Decision::Allow);
    let a = list
        .iter()
        .find(|a| a.probe == "files")
        .expect("a files annotation");
    assert_eq!(a.severity, Severity::Danger);
    assert!(
        a.title.starts_with(&format!(
            "deletes 21 files ({}) in a backup location",
            annotate_bytes(total)
        )),
        "{}",
        a.title
    );
    assert_eq!(fact(a, "files"), "21");
    assert_eq!(
        fact(a, "bytes"),
        format!("{} ({total} bytes)", annotate_bytes(total))
    );
    assert_eq!(
        fact(a, "newest"),
        format!(
            "{}/daily_2024-05-21.sql.gz modified 2024-05-21 03:00 UTC ({})",
            dir.display(),
            fact_age(a)
        )
    );
    assert_eq!(fact(a, "classified as"), "backup");
    assert_eq!(a.items.len(), 21);
    assert!(
        a.items
            .iter()
            .all(|i| i.flags == vec!["backup"] && i.id.contains("/daily_"))
    );
    assert!(!a.truncated);
    // Nothing was deleted.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 22);
}

fn annotate_bytes(n: u64) -> String {
    format!("{:.1} KB", n as f64 / 1000.0)
}

fn fact_age(a: &Annotation) -> String {
    let v = fact(a, "newest");
    v[v.rfind('(').unwrap() + 1..v.len() - 1].to_string()
}

#[test]
fn a_walk_over_its_bound_says_it_was_cut_short() {
    let (root, dir, _, _) = incident_1_backups();
    let ctx = context(root.path(), root.path(), None, &[]);
    let small = AnnotateOptions {
        max_files: 5,
        ..opts()
    };
    let (_, list) = run(&format!("rm -rf {}", dir.display()), &ctx, &small);
    let a = list.iter().find(|a| a.probe == "files").unwrap();
    assert!(a.truncated);
    assert!(fact(a, "walk cut short").starts_with("stopped after 5 entries"));
}

#[test]
fn incident_3_credential_paths_are_named_and_their_contents_never_shown() {
    let home = TempDir::new("home");
    let secret = "sk_live_51Habcdefghijklmnopqrstuv";
    write(&home.path().join(".env"), &format!("STRIPE_KEY={secret}\n"));
    write(
        &home.path().join(".aws/credentials"),
        "[default]\naws_secret_access_key = wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY\n",
    );
    write(
        &home
            .path()
            .join(".config/gcloud/application_default_credentials.json"),
        "{\"private_key\": \"-----BEGIN PRIVATE KEY-----abc\"}",
    );
    write(
        &home.path().join("projects/app/.env.local"),
        "DB_PASSWORD=hunter2\n",
    );
    let h = home.s();
    let ctx = context(home.path(), home.path(), None, &[]);

    let (_, list) = run(
        r#"find ~ -name ".env" -o -name ".env.local" -o -name "credentials.json""#,
        &ctx,
        &opts(),
    );
    let a = list
        .iter()
        .find(|a| a.probe == "files")
        .expect("find annotation");
    assert_eq!(
        a.title,
        "searches for credential files (.env, .env.local, credentials.json): 2 found now"
    );
    let ids: Vec<&str> = a.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![format!("{h}/.env"), format!("{h}/projects/app/.env.local")]
    );

    let (decision, list) = run(
        "cat ~/.env ~/.aws/credentials ~/.config/gcloud/application_default_credentials.json",
        &ctx,
        &opts(),
    );
    assert_eq!(decision, Decision::Deny);
    let a = list
        .iter()
        .find(|a| a.probe == "files")
        .expect("read annotation");
    assert_eq!(a.severity, Severity::Danger);
    assert_eq!(
        a.title,
        "reads 3 credential files: their secrets would reach the agent"
    );
    let ids: Vec<&str> = a.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            format!("{h}/.env"),
            format!("{h}/.aws/credentials"),
            format!("{h}/.config/gcloud/application_default_credentials.json"),
        ]
    );
    assert!(a.items.iter().all(|i| i.flags == vec!["credentials"]));
    let json = serde_json::to_string(&list).unwrap();
    for s in [
        secret,
        "wJalrXUtnFEMIK7MDENG",
        "BEGIN PRIVATE KEY",
        "hunter2",
    ] {
        assert!(!json.contains(s), "{s} leaked: {json}");
    }
}

// ---------------------------------------------------------------- kubernetes

const KUBECONFIG: &str = "apiVersion: v1
kind: Config
clusters:
- cluster:
    server: https://k8s.prod-eu.internal
  name: prod-eu
contexts:
- context:
    cluster: prod-eu
    namespace: api
    user: deploy-bot
  name: prod-eu-deploy
- context:
    cluster: staging
  name: staging
current-context: prod-eu-deploy
users:
- name: deploy-bot
  user:
    token: abc
";

fn kube_fixture(kubectl_body: &str) -> (TempDir, Context) {
    let root = TempDir::new("kube");
    let cfg = root.path().join("kubeconfig");
    write(&cfg, KUBECONFIG);
    script(&root.path().join("bin/kubectl"), kubectl_body);
    let ctx = context(
        root.path(),
        root.path(),
        Some(&root.path().join("bin")),
        &[("KUBECONFIG", cfg.to_string_lossy().into_owned())],
    );
    (root, ctx)
}

const KUBECTL_NS: &str = r#"case "$*" in
  *"get namespaces -o name"*) printf 'namespace/api\nnamespace/default\nnamespace/kube-system\nnamespace/payments\nnamespace/canary\n' ;;
  *) echo "unexpected: $*" >&2; exit 1 ;;
esac"#;

#[test]
fn incident_2_all_namespaces_is_spelled_out_from_kubectl_and_the_kubeconfig() {
    let (_root, ctx) = kube_fixture(KUBECTL_NS);
    let (_, list) = run(
        "kubectl rollout restart deployment/api-server --all-namespaces",
        &ctx,
        &opts(),
    );
    let a = list
        .iter()
        .find(|a| a.probe == "kubernetes")
        .expect("kube annotation");
    assert_eq!(a.error, None, "{}", a.render_text());
    assert_eq!(a.severity, Severity::Danger);
    assert_eq!(
        a.title,
        "rollout restart deployment/api-server in every namespace (5 namespaces) on context prod-eu-deploy: no canary, all at once"
    );
    assert_eq!(
        fact(a, "namespaces"),
        "all 5: api, default, kube-system, payments, canary"
    );
    assert!(fact(a, "context").starts_with("prod-eu-deploy (from "));
    assert_eq!(fact(a, "cluster"), "prod-eu");
    assert_eq!(a.items[0].id, "deployment/api-server");

    let (_, list) = run(
        "kubectl set image deployment/api-server api=registry.internal/api:v2.14.3 --record",
        &ctx,
        &opts(),
    );
    let a = list
        .iter()
        .find(|a| a.probe == "kubernetes")
        .expect("kube annotation");
    assert_eq!(
        a.title,
        "set image deployment/api-server in namespace api on context prod-eu-deploy"
    );
    assert_eq!(fact(a, "changes"), "api=registry.internal/api:v2.14.3");
    assert_eq!(fact(a, "namespace"), "api");
    assert!(a.facts.iter().any(|f| f.label == "production"));

    let (_, list) = run(
        "kubectl --context staging -n web delete deployment frontend",
        &ctx,
        &opts(),
    );
    let a = list.iter().find(|a| a.probe == "kubernetes").unwrap();
    assert_eq!(
        a.title,
        "delete deployment/frontend in namespace web on context staging"
    );
}

#[test]
fn a_hanging_probe_is_cut_off_at_its_bound_and_still_yields_an_annotation() {
    let root = TempDir::new("hang");
    let pidfile = root.path().join("sleeper.pid");
    let (_kroot, ctx) = kube_fixture(&format!(
        "sleep 30 &\necho $! > '{}'\nwait",
        pidfile.display()
    ));
    let (_backups, dir, _, _) = incident_1_backups();
    let bound = Duration::from_millis(400);
    let quick = AnnotateOptions {
        timeout: bound,
        ..AnnotateOptions::default()
    };
    let line = format!(
        "kubectl delete deployment api-server -A && rm -rf {}",
        dir.display()
    );
    let started = Instant::now();
    let (_, list) = run(&line, &ctx, &quick);
    let took = started.elapsed();
    // Far below the stub's 30 s sleep: the deadline stopped it (generous for a loaded machine).
    assert!(took < bound + Duration::from_secs(8), "took {took:?}");
    let k = list
        .iter()
        .find(|a| a.probe == "kubernetes")
        .expect("kube annotation");
    let err = k.error.as_deref().unwrap_or_default();
    assert!(
        err.contains("did not answer within 400 ms and was stopped"),
        "{}",
        k.render_text()
    );
    // The other probe still reported.
    let f = list
        .iter()
        .find(|a| a.probe == "files")
        .expect("files annotation");
    assert_eq!(f.error, None);
    assert_eq!(fact(f, "files"), "22");
    // The stub's own child was killed with it.
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let dead = stat.is_empty() || stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z'));
        if dead {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stub's child {pid} is still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------- cloud

#[test]
fn incident_5_elasticache_resize_reports_the_id_production_size_and_apply_immediately() {
    let root = TempDir::new("aws");
    let args_log = root.path().join("aws-args");
    script(
        &root.path().join("bin/aws"),
        &format!(
            r#"echo "$*" > '{}'
case "$*" in
  *"elasticache describe-replication-groups --replication-group-id prod-session-cache"*)
    echo '{{"ReplicationGroups":[{{"ReplicationGroupId":"prod-session-cache","CacheNodeType":"cache.r6g.large","Status":"available"}}]}}' ;;
  *) exit 254 ;;
esac"#,
            args_log.display()
        ),
    );
    let ctx = context(
        root.path(),
        root.path(),
        Some(&root.path().join("bin")),
        &[],
    );
    let line = "aws elasticache modify-replication-group --replication-group-id prod-session-cache --cache-node-type cache.t3.micro --apply-immediately";
    let (decision, list) = run(line, &ctx, &opts());
    assert_eq!(decision, Decision::Review);
    let a = list
        .iter()
        .find(|a| a.probe == "cloud")
        .expect("cloud annotation");
    assert_eq!(a.error, None, "{}", a.render_text());
    assert_eq!(a.severity, Severity::Danger);
    assert_eq!(
        a.title,
        "elasticache modify-replication-group on prod-session-cache (looks like production): size from cache.r6g.large (13.07 GiB) to cache.t3.micro (0.5 GiB), applied immediately"
    );
    assert_eq!(a.items.len(), 1);
    assert_eq!(a.items[0].id, "prod-session-cache");
    assert_eq!(a.items[0].text, "replication-group-id");
    assert_eq!(a.items[0].flags, vec!["production"]);
    assert_eq!(
        fact(a, "dangerous flags"),
        "--apply-immediately (applies now instead of in the maintenance window)"
    );
    assert_eq!(
        fact(a, "shrinks"),
        "memory falls from 13.07 GiB to 0.5 GiB; what does not fit is evicted"
    );
    // Only the describe call ran, never the modify.
    assert_eq!(
        std::fs::read_to_string(&args_log).unwrap().trim(),
        "elasticache describe-replication-groups --replication-group-id prod-session-cache --output json"
    );
}

#[test]
fn cloud_ids_and_flags_are_reported_even_when_the_cli_fails() {
    let root = TempDir::new("aws-fail");
    script(
        &root.path().join("bin/aws"),
        "echo 'Unable to locate credentials' >&2; exit 255",
    );
    let ctx = context(
        root.path(),
        root.path(),
        Some(&root.path().join("bin")),
        &[],
    );
    let (_, list) = run(
        "aws rds modify-db-instance --db-instance-identifier prod-orders --db-instance-class db.t3.small --apply-immediately",
        &ctx,
        &opts(),
    );
    let a = list.iter().find(|a| a.probe == "cloud").unwrap();
    assert_eq!(a.items[0].id, "prod-orders");
    assert_eq!(
        a.error.as_deref(),
        Some("could not read the current size: aws failed: Unable to locate credentials")
    );
    let (_, list) = run(
        "aws s3 rm s3://prod-assets/images --recursive",
        &ctx,
        &opts(),
    );
    let a = list.iter().find(|a| a.probe == "cloud").unwrap();
    assert_eq!(a.items[0].id, "s3://prod-assets/images");
    assert_eq!(
        fact(a, "dangerous flags"),
        "--recursive (applies to every object under the prefix)"
    );
}

// ---------------------------------------------------------------- sql

#[test]
fn sql_statements_are_listed_with_the_destructive_ones_flagged() {
    let root = TempDir::new("sql");
    let ctx = context(root.path(), root.path(), None, &[]);
    let (_, list) = run(
        "psql -h db -c 'SELECT count(*) FROM invoices; DROP TABLE invoices; DELETE FROM sessions'",
        &ctx,
        &opts(),
    );
    let a = list
        .iter()
        .find(|a| a.probe == "sql")
        .expect("sql annotation");
    assert_eq!(a.title, "psql runs 3 statements, 2 destructive");
    let rows: Vec<(&str, &str, Vec<String>)> = a
        .items
        .iter()
        .map(|i| (i.id.as_str(), i.text.as_str(), i.flags.clone()))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("SELECT", "", vec![]),
            ("DROP", "invoices", vec!["destructive".to_string()]),
            (
                "DELETE",
                "sessions",
                vec!["destructive".to_string(), "no WHERE".to_string()]
            ),
        ]
    );
    let (_, list) = run("mysql app <<'EOF'\nTRUNCATE audit_log;\nEOF", &ctx, &opts());
    let a = list
        .iter()
        .find(|a| a.probe == "sql")
        .expect("sql annotation from a here-document");
    assert_eq!(a.items[0].id, "TRUNCATE");
}

// ---------------------------------------------------------------- no probe for allowed commands

#[test]
fn allowed_commands_run_no_probe() {
    let root = TempDir::new("allowed");
    let marker = root.path().join("PROBED");
    for stub in ["git", "kubectl", "aws"] {
        script(
            &root.path().join("bin").join(stub),
            &format!("touch '{}'", marker.display()),
        );
    }
    let ctx = context(
        root.path(),
        root.path(),
        Some(&root.path().join("bin")),
        &[],
    );
    for line in [
        "git status",
        "git log --oneline -5",
        "kubectl get pods -A",
        "aws s3 ls",
        "ls -la",
        "cat README.md",
    ] {
        let (decision, list) = run(line, &ctx, &opts());
        assert_eq!(decision, Decision::Allow, "{line}");
        assert!(list.is_empty(), "{line}: {list:#?}");
        assert!(!marker.exists(), "{line} ran a probe");
    }
    // Same through the binary.
    let out = Command::new(env!("CARGO_BIN_EXE_holdpoint"))
        .args(["check", "--annotate", "git status"])
        .current_dir(root.path())
        .env("PATH", ctx.env["PATH"].as_str())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    assert!(!marker.exists());
    // A reviewed command does reach the stub (the test would prove nothing otherwise).
    let _ = run("kubectl delete ns payments -A", &ctx, &opts());
    assert!(marker.exists());
}

#[test]
fn check_annotate_prints_the_annotations_after_the_verdict() {
    let (root, dir, total, _) = incident_1_backups();
    let out = Command::new(env!("CARGO_BIN_EXE_holdpoint"))
        .args([
            "check",
            "--annotate",
            &format!("rm -rf {}/daily_*.sql.gz", dir.display()),
        ])
        .current_dir(root.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let verdict: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(verdict["decision"], "review");
    let rest: Vec<&str> = lines.collect();
    assert!(
        rest[0].starts_with(&format!(
            "[danger] files: deletes 21 files ({}) in a backup location; newest modified",
            annotate_bytes(total)
        )),
        "{text}"
    );
    assert!(rest.contains(&"  classified as: backup"), "{text}");
}

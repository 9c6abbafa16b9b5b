//! The time risk annotations add before a request is posted, for each
//! incident's command against a fixture like the one it destroyed, and for
//! an allowed command (which must cost nothing: no probe runs).
//!
//! `cargo bench -p holdpoint-runner --bench annotate`
//!
//! Classification is done once, outside the timing: only `annotate` is timed.

#[path = "../src/annotate/mod.rs"]
// The unit tests inside the module are compiled but not run here.
#[allow(dead_code, unused_imports)]
mod annotate;

use annotate::{AnnotateOptions, annotate};
use holdpoint_shared::{Context, Policy};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 41;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    write(path, &format!("#!/bin/sh\n{body}\n"));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn git(dir: &Path, home: &Path, args: &[&str], who: usize, n: u64) {
    let names = [
        ("Alice", "alice@example.com"),
        ("Bob", "bob@example.com"),
        ("Carol", "carol@example.com"),
    ];
    let (name, email) = names[who % 3];
    let date = format!("{} +0000", 1_714_000_000 + n * 3600);
    let st = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", name)
        .env("GIT_AUTHOR_EMAIL", email)
        .env("GIT_COMMITTER_NAME", name)
        .env("GIT_COMMITTER_EMAIL", email)
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date)
        .output()
        .expect("git runs");
    assert!(st.status.success(), "git {args:?}");
}

/// Builds every fixture under `root`; returns the directory for each incident.
fn fixtures(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let _ = std::fs::remove_dir_all(root);
    let home = root.join("home");
    // Incident 4: 3 base commits, 12 by three authors, pushed and fetched.
    let remote = root.join("remote.git");
    let work = root.join("work");
    std::fs::create_dir_all(&home).expect("mkdir");
    git(
        root,
        &home,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            remote.to_str().expect("utf-8"),
        ],
        0,
        0,
    );
    git(
        root,
        &home,
        &["init", "-q", "-b", "main", work.to_str().expect("utf-8")],
        0,
        0,
    );
    git(
        &work,
        &home,
        &["remote", "add", "origin", remote.to_str().expect("utf-8")],
        0,
        0,
    );
    for i in 0..15u64 {
        write(&work.join(format!("auth/f{i}.rs")), &format!("// {i}\n"));
        git(&work, &home, &["add", "."], i as usize, i);
        let msg = if i == 9 {
            "Fix session fixation (security)".to_string()
        } else {
            format!("Auth change {i}")
        };
        git(&work, &home, &["commit", "-q", "-m", &msg], i as usize, i);
    }
    git(&work, &home, &["push", "-q", "origin", "main"], 0, 20);
    git(&work, &home, &["fetch", "-q", "origin"], 0, 20);
    // Incident 1: 21 daily dumps of 64 KB.
    let backups = root.join("var/backups/pg_dump");
    for d in 1..=21 {
        write(
            &backups.join(format!("daily_2024-05-{d:02}.sql.gz")),
            &"x".repeat(64 * 1024),
        );
    }
    // Incident 2: a kubeconfig and a kubectl stub.
    write(
        &root.join("kubeconfig"),
        "apiVersion: v1\ncontexts:\n- context:\n    cluster: prod-eu\n    namespace: api\n  name: prod-eu-deploy\ncurrent-context: prod-eu-deploy\n",
    );
    script(
        &root.join("bin/kubectl"),
        "printf 'namespace/api\\nnamespace/default\\nnamespace/payments\\nnamespace/kube-system\\n'",
    );
    // Incident 5: an aws stub answering the describe call.
    script(
        &root.join("bin/aws"),
        "echo '{\"ReplicationGroups\":[{\"CacheNodeType\":\"cache.r6g.large\"}]}'",
    );
    // Incident 3: credential files.
    write(&home.join(".env"), "STRIPE_KEY=sk_live_x\n");
    write(&home.join(".aws/credentials"), "[default]\n");
    write(
        &home.join(".config/gcloud/application_default_credentials.json"),
        "{}",
    );
    (work, backups, home)
}

fn context(cwd: &Path, home: &Path, root: &Path) -> Context {
    let mut env: HashMap<String, String> = HashMap::new();
    let path = format!(
        "{}:{}",
        root.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    env.insert("PATH".into(), path);
    env.insert("HOME".into(), home.display().to_string());
    env.insert(
        "KUBECONFIG".into(),
        root.join("kubeconfig").display().to_string(),
    );
    Context {
        cwd: Some(cwd.display().to_string()),
        home: home.display().to_string(),
        env,
        project: None,
        links: Default::default(),
    }
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("annotate-bench");
    let (work, backups, home) = fixtures(&root);
    let policy = Policy::builtin().expect("the built-in policy loads");
    let opts = AnnotateOptions::default();
    let cases: Vec<(&str, String, Context)> = vec![
        ("allowed (baseline)", "git status".into(), context(&work, &home, &root)),
        (
            "1 rm backups",
            format!("rm -rf {}/daily_*.sql.gz", backups.display()),
            context(&root, &home, &root),
        ),
        (
            "2 kubectl -A",
            "kubectl set image deployment/api-server api=registry.internal/api:v2.14.3 --record && kubectl rollout restart deployment/api-server --all-namespaces".into(),
            context(&root, &home, &root),
        ),
        (
            "3 read creds",
            "cat ~/.env ~/.aws/credentials ~/.config/gcloud/application_default_credentials.json".into(),
            context(&home, &home, &root),
        ),
        (
            "4 reset+push",
            "git reset --hard HEAD~12 && git push origin main --force".into(),
            context(&work, &home, &root),
        ),
        (
            "5 aws resize",
            "aws elasticache modify-replication-group --replication-group-id prod-session-cache --cache-node-type cache.t3.micro --apply-immediately".into(),
            context(&root, &home, &root),
        ),
    ];
    println!(
        "annotate(): added time before a request is posted, {RUNS} runs each, debug={}",
        cfg!(debug_assertions)
    );
    println!(
        "{:<20} {:>8} {:>11} {:>11} {:>11} {:>6}",
        "case", "decision", "median", "p10", "p90", "notes"
    );
    for (name, line, ctx) in &cases {
        let verdict = policy.classify(line, ctx);
        let mut times = Vec::with_capacity(RUNS);
        let mut n = 0;
        for _ in 0..RUNS {
            let t = Instant::now();
            let list = annotate(line, ctx, &verdict, &opts);
            times.push(t.elapsed());
            n = list.len();
            assert!(list.iter().all(|a| a.error.is_none()), "{name}: {list:#?}");
        }
        println!(
            "{:<20} {:>8} {:>11.2?} {:>11.2?} {:>11.2?} {:>6}",
            name,
            verdict.decision.as_str(),
            pct(&times, 0.5),
            pct(&times, 0.1),
            pct(&times, 0.9),
            n
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

//! Snapshots of the Slack message, and of the Matrix message's HTML, for
//! each of the five incidents in INCIDENTS.md, so a reviewer can read in the
//! repository exactly what they would see. `UPDATE_SNAPSHOTS=1 cargo test
//! -p holdpoint-bot --test slack_snapshots` rewrites them; otherwise a
//! difference fails. Each Slack snapshot is also validated with slack_sdk
//! when the test venv exists.

use holdpoint_bot::StoredRequest;
use holdpoint_bot::slack::render::request_message;
use holdpoint_bot::view::ReviewView;
use holdpoint_shared::annotation::{Annotation, Item, Severity};
use holdpoint_shared::protocol::{ReviewRequest, Status};
use holdpoint_shared::{Decision, Hit, Risk, Verdict};
use std::path::PathBuf;

const CREATED: i64 = 1_795_000_000_000;

fn hit(rule: &str, risk: Risk, reason: &str, part: &str) -> Hit {
    Hit {
        rule: rule.into(),
        decision: Decision::Review,
        risk,
        reason: reason.into(),
        part: part.into(),
    }
}

fn item(id: &str, text: &str, details: &[&str], flags: &[&str]) -> Item {
    Item {
        id: id.into(),
        text: text.into(),
        details: details.iter().map(|s| s.to_string()).collect(),
        flags: flags.iter().map(|s| s.to_string()).collect(),
    }
}

fn stored(
    n: u8,
    command: &str,
    hits: Vec<Hit>,
    annotations: Vec<Annotation>,
    cwd: &str,
) -> StoredRequest {
    StoredRequest {
        request: ReviewRequest {
            id: format!("{n:0>32}"),
            command: command.into(),
            command_hash: format!("{n:a>64}"),
            verdict: Verdict::from_hits(hits),
            annotations,
            host: "prod-worker-3".into(),
            cwd: cwd.into(),
            agent: Some("claude-code".into()),
            session: None,
            front_end: "hook".into(),
            requested_by: Some("slack:U0AGENTOWN".into()),
        },
        runner: "prod-worker-3".into(),
        runner_id: Some(1),
        status: Status::Pending,
        created_at: CREATED,
        expires_at: CREATED + 600_000,
        decided_at: None,
        decided_by: None,
        reason: None,
        votes: Vec::new(),
        quorum: holdpoint_bot::config::Requirement::of(1),
        missing: Vec::new(),
    }
}

fn incidents() -> Vec<(&'static str, StoredRequest)> {
    let mut backups = Annotation::new(
        "files",
        Severity::Danger,
        "deletes 21 files (47.0 GB) in a backup location",
    );
    backups.fact("newest file", "daily_2026-11-24.sql.gz, 9 hours old");
    backups.fact(
        "location",
        "/var/backups/pg_dump looks like database backups",
    );
    backups.items.push(item(
        "/var/backups/pg_dump/daily_2026-11-24.sql.gz",
        "",
        &["2.3 GB"],
        &["backup"],
    ));

    let mut kube = Annotation::new(
        "kubernetes",
        Severity::Danger,
        "restarts deployment api-server in every namespace",
    );
    kube.fact("context", "prod-eu-1");
    kube.fact(
        "canary",
        "--all-namespaces turns a canary into 100% of traffic",
    );
    kube.items.push(item(
        "production/api-server",
        "Deployment, 24 replicas",
        &[],
        &["production"],
    ));
    kube.items.push(item(
        "canary/api-server",
        "Deployment, 2 replicas",
        &[],
        &[],
    ));

    let mut creds = Annotation::new("files", Severity::Danger, "reads 3 credential files");
    for p in [
        "~/.env",
        "~/.aws/credentials",
        "~/.config/gcloud/application_default_credentials.json",
    ] {
        creds.items.push(item(p, "", &[], &["credentials"]));
    }

    let mut reset = Annotation::new("git", Severity::Danger, "discards 12 commits by 3 authors");
    reset.items.push(item(
        "a1b2c3d",
        "Fix session fixation in auth middleware",
        &["Alice", "2026-11-24"],
        &["security-fix"],
    ));
    reset.items.push(item(
        "b2c3d4e",
        "Refactor token refresh",
        &["Bob", "2026-11-23"],
        &[],
    ));
    reset.truncated = true;
    let mut push = Annotation::new(
        "git",
        Severity::Danger,
        "overwrites 12 commits by 3 authors on origin/main",
    );
    push.fact("remote-tracking ref", "origin/main, fetched 3 minutes ago");
    push.items.push(item(
        "a1b2c3d",
        "Fix session fixation in auth middleware",
        &["Alice"],
        &["security-fix"],
    ));

    let mut cache = Annotation::new(
        "cloud",
        Severity::Danger,
        "resizes production cache prod-session-cache immediately",
    );
    cache.fact("size", "cache.r6g.large (13 GB) -> cache.t3.micro (0.5 GB)");
    cache.fact("apply", "--apply-immediately: no maintenance window");
    cache.items.push(item(
        "prod-session-cache",
        "ElastiCache replication group",
        &[],
        &["production"],
    ));

    vec![
        (
            "1-backups",
            stored(
                1,
                "rm -rf /var/backups/pg_dump/daily_*.sql.gz",
                vec![hit(
                    "files.rm.backup",
                    Risk::Critical,
                    "deletes database backups",
                    "rm -rf /var/backups/pg_dump/daily_*.sql.gz",
                )],
                vec![backups],
                "/var",
            ),
        ),
        (
            "2-rollout",
            stored(
                2,
                "kubectl set image deployment/api-server api=registry.internal/api:v2.14.3 --record && kubectl rollout restart deployment/api-server --all-namespaces",
                vec![
                    hit(
                        "kubectl.rollout.restart",
                        Risk::High,
                        "restarts workloads",
                        "kubectl rollout restart deployment/api-server --all-namespaces",
                    ),
                    hit(
                        "kubectl.set.image",
                        Risk::High,
                        "changes what production runs",
                        "kubectl set image deployment/api-server api=registry.internal/api:v2.14.3 --record",
                    ),
                ],
                vec![kube],
                "/srv/deploy",
            ),
        ),
        (
            "3-credentials",
            stored(
                3,
                "find ~ -name \".env\" -o -name \".env.local\" -o -name \"credentials.json\"; cat ~/.env ~/.aws/credentials ~/.config/gcloud/application_default_credentials.json",
                vec![hit(
                    "files.read.credentials",
                    Risk::Critical,
                    "reads credential files",
                    "cat ~/.env ~/.aws/credentials ~/.config/gcloud/application_default_credentials.json",
                )],
                vec![creds],
                "/home/dev",
            ),
        ),
        (
            "4-force-push",
            stored(
                4,
                "git reset --hard HEAD~12 && git push origin main --force",
                vec![
                    hit(
                        "git.push.force",
                        Risk::Critical,
                        "a force push overwrites remote history",
                        "git push origin main --force",
                    ),
                    hit(
                        "git.reset.hard",
                        Risk::High,
                        "discards commits and uncommitted work",
                        "git reset --hard HEAD~12",
                    ),
                ],
                vec![reset, push],
                "/srv/auth",
            ),
        ),
        (
            "5-cache",
            stored(
                5,
                "aws elasticache modify-replication-group --replication-group-id prod-session-cache --cache-node-type cache.t3.micro --apply-immediately",
                vec![hit(
                    "aws.apply-immediately.prod",
                    Risk::Critical,
                    "changes a production resource immediately",
                    "aws elasticache modify-replication-group --replication-group-id prod-session-cache --cache-node-type cache.t3.micro --apply-immediately",
                )],
                vec![cache],
                "/srv/infra",
            ),
        ),
    ]
}

#[test]
fn incident_messages_match_their_snapshots() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut failures = Vec::new();
    for (name, mut r) in incidents() {
        for (suffix, decided) in [("pending", false), ("approved", true)] {
            if decided {
                r.status = Status::Approved;
                r.decided_at = Some(CREATED + 8_400);
                r.decided_by = Some("slack:U0REVIEW1".into());
                r.reason = Some("checked with the owners".into());
            }
            let m = request_message(&ReviewView::of(&r, "https://holdpoint.example.com"));
            let text = serde_json::to_string_pretty(&serde_json::json!({
                "text": m.text,
                "blocks": m.blocks,
            }))
            .expect("JSON")
                + "\n";
            let path = dir.join(format!("slack_incident_{name}_{suffix}.json"));
            if update {
                std::fs::create_dir_all(&dir).expect("snapshot dir");
                std::fs::write(&path, &text).expect("write snapshot");
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(old) if old == text => {}
                Ok(_) => failures.push(format!("{} differs", path.display())),
                Err(_) => failures.push(format!("{} is missing", path.display())),
            }
            validate_with_slack_sdk(&path, &text);
        }
    }
    assert!(
        failures.is_empty(),
        "{}\nrun with UPDATE_SNAPSHOTS=1 to accept the new rendering",
        failures.join("\n")
    );
}

#[test]
fn matrix_incident_messages_match_their_snapshots() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut failures = Vec::new();
    for (name, mut r) in incidents() {
        r.request.requested_by = Some("matrix:@agent-owner:example.org".into());
        for (suffix, decided) in [("pending", false), ("approved", true)] {
            if decided {
                r.status = Status::Approved;
                r.decided_at = Some(CREATED + 8_400);
                r.decided_by = Some("matrix:@alice:example.org".into());
                r.reason = Some("checked with the owners".into());
            }
            let t = holdpoint_bot::matrix::render::request_text(&ReviewView::of(
                &r,
                "https://holdpoint.example.com",
            ));
            let text = format!(
                "<!-- formatted_body of the m.room.message; its plain body follows -->\n{}\n<!--\n{}\n-->\n",
                t.html.replace("</li>", "</li>\n").replace("</p>", "</p>\n"),
                t.body.replace("--", "- -")
            );
            let path = dir.join(format!("matrix_incident_{name}_{suffix}.html"));
            if update {
                std::fs::create_dir_all(&dir).expect("snapshot dir");
                std::fs::write(&path, &text).expect("write snapshot");
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(old) if old == text => {}
                Ok(_) => failures.push(format!("{} differs", path.display())),
                Err(_) => failures.push(format!("{} is missing", path.display())),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\nrun with UPDATE_SNAPSHOTS=1 to accept the new rendering",
        failures.join("\n")
    );
}

/// Runs slack_sdk's validation over a rendered message, if the test venv
/// (made by the Slack end-to-end tests) exists.
fn validate_with_slack_sdk(path: &std::path::Path, text: &str) {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_holdpoint-bot"));
    let py = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|t| t.join("slack-venv/bin/python"));
    let Some(py) = py.filter(|p| p.exists()) else {
        eprintln!(
            "skipped slack_sdk validation of {}: no venv yet",
            path.display()
        );
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slack");
    let out = std::process::Command::new(py)
        .current_dir(script)
        .args([
            "-c",
            "import json,sys,fake_slack as f; m=json.load(sys.stdin); e=f.validate('chat.postMessage', dict(m, channel='C1')); print('\\n'.join(e)); sys.exit(1 if e else 0)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            if let Some(mut i) = c.stdin.take() {
                i.write_all(text.as_bytes())?;
            }
            c.wait_with_output()
        })
        .expect("run python");
    assert!(
        out.status.success(),
        "slack_sdk refused {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

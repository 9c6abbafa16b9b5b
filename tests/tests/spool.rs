//! The runner's audit spool under faults: a spool that cannot be written
//! refuses allowed commands unless told otherwise and counts what it lost;
//! a full disk, a torn last line and two flushers at once lose no event
//! and send none twice. Each scenario checks the bot's audit log at the end.

use holdpoint_testkit::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn exec(bot: &Bot, cwd: &Path, spool: &Path, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let mut c = runner(&bot.url(), &bot.token, cwd, spool);
    c.arg("exec").arg("--").args(args);
    for (k, v) in extra {
        c.env(k, v);
    }
    c.output().expect("run holdpoint")
}

fn spool_cmd(bot: &Bot, cwd: &Path, spool: &Path, action: &str) -> Output {
    runner(&bot.url(), &bot.token, cwd, spool)
        .args(["spool", action])
        .output()
        .expect("run holdpoint spool")
}

/// The verdict rows the bot holds for `command`.
fn verdicts_for(bot: &Bot, command: &str) -> usize {
    bot.audit()
        .iter()
        .filter(|r| r["kind"] == "verdict" && r["event"]["command"] == command)
        .count()
}

#[test]
fn an_allowed_command_whose_verdict_cannot_be_recorded_is_refused_unless_told_to_run() {
    let Some(bot) = Bot::on(Backend::Sqlite, &[]) else {
        return;
    };
    let ws = Workspace::new();
    let spool = TempDir::new("spool");
    // The events file cannot be opened (a directory stands in its place).
    std::fs::create_dir_all(spool.path().join("audit.jsonl")).expect("block the spool");
    let out = exec(
        &bot,
        &ws.repo(),
        spool.path(),
        &["echo", "ran-unaudited"],
        &[],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{err}");
    assert!(
        !text(&out.stdout).contains("ran-unaudited"),
        "it did not run"
    );
    assert!(err.contains("HOLDPOINT_WHEN_UNAUDITED=run"), "{err}");

    let out = exec(
        &bot,
        &ws.repo(),
        spool.path(),
        &["echo", "ran-unaudited"],
        &[("HOLDPOINT_WHEN_UNAUDITED", "run")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ran-unaudited"));
    assert!(text(&out.stderr).contains("runs unaudited"));

    let status = text(&spool_cmd(&bot, &ws.repo(), spool.path(), "status").stdout);
    assert!(
        status.contains("2 events could not be recorded"),
        "{status}"
    );
}

#[test]
fn a_torn_last_line_is_kept_aside_and_the_events_after_it_arrive() {
    let Some(bot) = Bot::on(Backend::Sqlite, &[]) else {
        return;
    };
    let ws = Workspace::new();
    let spool = TempDir::new("spool");
    // A crash cut the last write short.
    std::fs::create_dir_all(spool.path()).expect("spool");
    let torn = "{\"id\":\"0123456789abcdef0123456789abcdef\",\"at\":1,\"command\":\"git st";
    std::fs::write(spool.path().join("audit.jsonl"), torn).expect("torn line");
    let out = exec(
        &bot,
        &ws.repo(),
        spool.path(),
        &["git", "status", "--short"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = spool_cmd(&bot, &ws.repo(), spool.path(), "flush");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The flusher the command started in the background may hold the
    // flush lock, so the event arrives through it.
    eventually(Duration::from_secs(30), "the event arrives", || {
        (verdicts_for(&bot, "git status --short") >= 1).then_some(())
    });
    assert_eq!(verdicts_for(&bot, "git status --short"), 1);
    let kept = std::fs::read_to_string(spool.path().join("audit.rejected")).expect("kept aside");
    assert_eq!(kept, format!("{torn}\n"));
    let status = text(&spool_cmd(&bot, &ws.repo(), spool.path(), "status").stdout);
    assert!(status.contains("1 torn lines kept aside"), "{status}");
    // Flushing again sends nothing twice and keeps nothing twice.
    spool_cmd(&bot, &ws.repo(), spool.path(), "flush");
    assert_eq!(verdicts_for(&bot, "git status --short"), 1);
    assert_eq!(
        std::fs::read_to_string(spool.path().join("audit.rejected")).expect("kept"),
        format!("{torn}\n")
    );
    assert!(bot.run(&["audit", "verify"]).status.success());
}

#[test]
fn two_flushers_at_once_send_every_event_exactly_once() {
    let Some(mut bot) = Bot::on(Backend::Sqlite, &[]) else {
        return;
    };
    let ws = Workspace::new();
    let spool = TempDir::new("spool");
    bot.kill();
    for i in 0..30 {
        let out = exec(
            &bot,
            &ws.repo(),
            spool.path(),
            &["echo", &format!("n{i}")],
            &[],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    bot.restart();
    let flushers: Vec<_> = (0..2)
        .map(|_| {
            runner(&bot.url(), &bot.token, &ws.repo(), spool.path())
                .args(["spool", "flush"])
                .spawn()
                .expect("flush")
        })
        .collect();
    for mut f in flushers {
        let _ = f.wait();
    }
    let audit = eventually(Duration::from_secs(30), "all 30 arrive", || {
        let rows = bot.audit();
        (rows.iter().filter(|r| r["kind"] == "verdict").count() >= 30).then_some(rows)
    });
    for i in 0..30 {
        let n = audit
            .iter()
            .filter(|r| r["kind"] == "verdict" && r["event"]["command"] == format!("echo n{i}"))
            .count();
        assert_eq!(n, 1, "echo n{i} is in the chain once");
    }
    assert!(bot.run(&["audit", "verify"]).status.success());
}

/// A small tmpfs at `dir`, unmounted at drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a background flusher may still hold a file in it.
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

#[test]
fn a_full_disk_refuses_allowed_commands_counts_the_loss_and_loses_nothing_recorded() {
    let Some(bot) = Bot::on(Backend::Sqlite, &[]) else {
        return;
    };
    let ws = Workspace::new();
    let place = TempDir::new("spool-disk");
    let Some(disk) = Tmpfs::mount(place.path(), "256k") else {
        eprintln!("skipped: cannot mount a tmpfs here (not root?)");
        return;
    };
    let spool = disk.0.join("spool");
    let out = exec(&bot, &ws.repo(), &spool, &["echo", "before"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Fill the disk.
    let filler = disk.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let block = vec![b'x'; 4096];
        while f.write_all(&block).is_ok() {}
    }
    // The spool's last page may still have room for a few events; then an
    // append needs space that is not there.
    let mut refused = None;
    for i in 0..60 {
        let word = format!("full-{i}");
        let out = exec(&bot, &ws.repo(), &spool, &["echo", &word], &[]);
        if out.status.code() == Some(124) {
            assert!(!text(&out.stdout).contains(&word), "it did not run");
            assert!(
                text(&out.stderr).contains("could not be"),
                "{}",
                text(&out.stderr)
            );
            refused = Some(i);
            break;
        }
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let refused = refused.expect("a full disk refuses an allowed command at last");
    let status = text(&spool_cmd(&bot, &ws.repo(), &spool, "status").stdout);
    assert!(
        status.contains("1 events could not be recorded"),
        "{status}"
    );
    // Space again: what was recorded arrives once, and new commands run.
    std::fs::remove_file(&filler).expect("free the disk");
    let out = exec(&bot, &ws.repo(), &spool, &["echo", "after"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    spool_cmd(&bot, &ws.repo(), &spool, "flush");
    eventually(
        Duration::from_secs(30),
        "every recorded event arrives",
        || {
            (verdicts_for(&bot, "echo before") == 1 && verdicts_for(&bot, "echo after") == 1)
                .then_some(())
        },
    );
    for i in 0..refused {
        assert_eq!(
            verdicts_for(&bot, &format!("echo full-{i}")),
            1,
            "full-{i} once"
        );
    }
    assert_eq!(verdicts_for(&bot, &format!("echo full-{refused}")), 0);
    assert!(bot.run(&["audit", "verify"]).status.success());
    drop(disk);
}

#[test]
fn broken_bot_settings_refuse_allowed_commands_unless_told_to_run() {
    let dir = TempDir::new("holdpoint-broken");
    let spool = TempDir::new("spool");
    // A token in clear text to another machine: the settings are refused.
    let run = |extra: &[(&str, &str)]| {
        let mut c = runner(
            "http://192.0.2.10:8470",
            "hpr_not-sent",
            dir.path(),
            spool.path(),
        );
        c.args(["exec", "--", "echo", "ran-unaudited"]);
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().expect("run holdpoint")
    };
    let out = run(&[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{err}");
    assert!(!text(&out.stdout).contains("ran-unaudited"));
    assert!(err.contains("HOLDPOINT_WHEN_UNAUDITED=run"), "{err}");
    let out = run(&[("HOLDPOINT_WHEN_UNAUDITED", "run")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ran-unaudited"));
}

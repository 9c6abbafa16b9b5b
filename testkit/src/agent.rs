//! The real runner binary, run the way an agent runs it.

use crate::bins::bin;
use crate::util::{TempDir, text};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The runner (`holdpoint`), configured for a bot, run from `cwd`, with a
/// cleared environment. The caller adds the front end and the command as
/// argv (`exec -- git push …`, `sh -c STRING`): the runner decides whether
/// its real shell ever sees it.
pub fn runner(bot_url: &str, token: &str, cwd: &Path, spool: &Path) -> Command {
    let mut c = Command::new(bin("holdpoint"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", cwd)
        .env("USER", "agent")
        .env("HOLDPOINT_URL", bot_url)
        .env("HOLDPOINT_TOKEN", token)
        .env("HOLDPOINT_SPOOL_DIR", spool)
        .env("HOLDPOINT_CONNECT_TIMEOUT", "5")
        .env("HOLDPOINT_PROBE_TIMEOUT_MS", "2000")
        .env("GIT_AUTHOR_NAME", "Agent")
        .env("GIT_AUTHOR_EMAIL", "agent@example.com")
        .env("GIT_COMMITTER_NAME", "Agent")
        .env("GIT_COMMITTER_EMAIL", "agent@example.com")
        .current_dir(cwd);
    c
}

/// A runner process in the background, with its output collected.
pub struct Agent {
    child: Child,
}

impl Agent {
    pub fn spawn(mut cmd: Command) -> Agent {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start holdpoint");
        Agent { child }
    }

    /// Waits for it to exit (bounded); returns the output.
    pub fn finish(mut self, within: Duration) -> Output {
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = self.child.kill();
                    let out = self.child.wait_with_output().expect("output");
                    panic!(
                        "the runner did not finish within {within:?}; stderr so far:\n{}",
                        text(&out.stderr)
                    );
                }
            }
        }
        self.child.wait_with_output().expect("output")
    }

    /// Sends a signal (`INT`, `TERM`) as a terminal or a supervisor would.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -s {sig} failed");
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// An agent's working directory: a git repository with a commit, pushed to
/// a bare `origin` next to it, so that `git push --force origin main`
/// really runs, against that origin only.
pub struct Workspace {
    pub dir: TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = TempDir::new("ws");
        let origin = dir.path().join("origin.git");
        let repo = dir.path().join("repo");
        git(
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                origin.to_str().unwrap_or_default(),
            ],
            dir.path(),
        );
        git(&["init", "-q", "-b", "main", "repo"], dir.path());
        std::fs::write(repo.join("README"), "one\n").expect("write");
        git(&["add", "README"], &repo);
        git(&["commit", "-qm", "one"], &repo);
        git(
            &[
                "remote",
                "add",
                "origin",
                origin.to_str().unwrap_or_default(),
            ],
            &repo,
        );
        git(&["push", "-q", "origin", "main"], &repo);
        // A rewritten history that only a force push can publish.
        git(&["commit", "-q", "--amend", "-m", "one, rewritten"], &repo);
        Workspace { dir }
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// The commit `origin` has on main.
    pub fn origin_head(&self) -> String {
        git(&["rev-parse", "main"], &self.dir.path().join("origin.git"))
            .trim()
            .to_string()
    }

    /// The local commit on main.
    pub fn local_head(&self) -> String {
        git(&["rev-parse", "main"], &self.repo()).trim().to_string()
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Workspace::new()
    }
}

/// Runs git (argv, no shell) in `cwd`; its stdout. Panics if it fails.
fn git(args: &[&str], cwd: &Path) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("GIT_AUTHOR_NAME", "Agent")
        .env("GIT_AUTHOR_EMAIL", "agent@example.com")
        .env("GIT_COMMITTER_NAME", "Agent")
        .env("GIT_COMMITTER_EMAIL", "agent@example.com")
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// A stand-in for the runner's real shell (`HOLDPOINT_REAL_SHELL`) that
/// only appends its arguments, one per line, to a log: a test can "run" a
/// held command and see whether the runner let it through, and nothing is
/// ever executed. Returns the script and the log (which exists only once
/// something ran).
pub fn recorder(dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("ran.txt");
    let script = dir.join("recorder.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{}'\n", log.display()),
    )
    .expect("write the recorder");
    let mut p = std::fs::metadata(&script).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
    std::fs::set_permissions(&script, p).expect("chmod the recorder");
    (script, log)
}

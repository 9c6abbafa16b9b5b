//! Risk annotations: before a request is posted, read-only probes gather what
//! a command would destroy, so that a reviewer decides in seconds.
//!
//! The line is split into invocations by the shell walk of the policy engine;
//! each domain ([`git`], [`files`], [`kube`], [`cloud`], [`sql`]) plans the
//! probes its invocations need, and the probes run in parallel threads under
//! one deadline ([`AnnotateOptions::timeout`]).
//!
//! Invariants:
//! - An allowed command runs no probe and spawns nothing.
//! - Probes only read: programs run with their configuration neutralised
//!   (no git hooks, pagers, fsmonitor or filters), nothing is fetched.
//! - A probe is never fatal: one that fails or runs out of time yields an
//!   annotation that says so, and the others still return.
//! - Every child a probe starts is killed (with its process group) at the
//!   deadline.
//! - Annotations are redacted before they are returned.

mod cloud;
mod files;
mod git;
mod kube;
mod sql;

use holdpoint_shared::annotation::Annotation;
use holdpoint_shared::shell::{self, Invocation, Limits};
use holdpoint_shared::{Context, Decision, Verdict};
use std::ffi::OsString;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How much work annotation may do.
#[derive(Debug, Clone)]
pub struct AnnotateOptions {
    /// The time every probe together may take; children still running then
    /// are killed.
    pub timeout: Duration,
    /// Most items (commits, files, namespaces) listed in one annotation.
    pub max_items: usize,
    /// Most directory entries a file walk looks at.
    pub max_files: usize,
}

impl AnnotateOptions {
    /// The defaults, with the probe deadline taken from
    /// `HOLDPOINT_PROBE_TIMEOUT_MS` when it is set to a number of
    /// milliseconds (at most a minute).
    pub fn from_env() -> AnnotateOptions {
        let mut opts = AnnotateOptions::default();
        if let Some(ms) = std::env::var("HOLDPOINT_PROBE_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            opts.timeout = Duration::from_millis(ms.clamp(1, 60_000));
        }
        opts
    }
}

impl Default for AnnotateOptions {
    fn default() -> Self {
        AnnotateOptions {
            timeout: Duration::from_secs(2),
            max_items: 40,
            max_files: 200_000,
        }
    }
}

/// Why a probe could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The program could not be started.
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The program was still running at the deadline and was killed.
    #[error("{program} did not answer within {} and was stopped", human_duration(*.after))]
    Timeout { program: String, after: Duration },
    /// The program ran and failed.
    #[error("{program} failed: {message}")]
    Failed { program: String, message: String },
    /// The probe could not read what it needed.
    #[error("{0}")]
    Other(String),
}

/// What every probe may use: the deadline, the limits and the caller's
/// environment.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    pub deadline: Instant,
    pub opts: AnnotateOptions,
    /// The caller's home directory.
    pub home: String,
    /// The caller's working directory, when known.
    pub cwd: Option<String>,
    /// The caller's `PATH`, used to find programs.
    pub path: Option<OsString>,
    /// The caller's environment (for `KUBECONFIG`, `AWS_PROFILE`, …).
    pub vars: std::collections::HashMap<String, String>,
}

impl Env {
    /// A command for `program`, found on the caller's `PATH`.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        if let Some(p) = &self.path {
            c.env("PATH", p);
        }
        c
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

/// What a probe returns.
pub(crate) type ProbeResult = Result<Vec<Annotation>, ProbeError>;

/// The work of a probe, run on its own thread.
pub(crate) type ProbeFn = Box<dyn FnOnce(&Env) -> ProbeResult + Send>;

/// A probe waiting to run: a name for error messages and the work.
pub(crate) struct Probe {
    /// The domain, as in [`Annotation::probe`].
    pub domain: &'static str,
    /// What it looks at, for the title of a failure (`git push origin main`).
    pub subject: String,
    pub run: ProbeFn,
}

impl Probe {
    /// A probe over one invocation.
    pub fn new<F>(domain: &'static str, subject: String, run: F) -> Probe
    where
        F: FnOnce(&Env) -> Result<Vec<Annotation>, ProbeError> + Send + 'static,
    {
        Probe {
            domain,
            subject,
            run: Box::new(run),
        }
    }
}

/// Gathers the annotations for a command line. Allowed commands get none and
/// cost no probe; for the rest, every relevant probe runs in parallel, bounded
/// by `opts.timeout`.
pub fn annotate(
    line: &str,
    ctx: &Context,
    verdict: &Verdict,
    opts: &AnnotateOptions,
) -> Vec<Annotation> {
    if verdict.decision == Decision::Allow {
        return Vec::new();
    }
    let analysis = shell::analyse(line, ctx, &Limits::default());
    let env = Env {
        deadline: Instant::now() + opts.timeout,
        opts: opts.clone(),
        home: ctx.home.clone(),
        cwd: ctx.cwd.clone(),
        path: ctx
            .env
            .get("PATH")
            .map(OsString::from)
            .or_else(|| std::env::var_os("PATH")),
        vars: ctx.env.clone(),
    };
    let invs = &analysis.invocations;
    let mut probes = Vec::new();
    probes.extend(git::plan(invs, &env));
    probes.extend(files::plan(invs, &env));
    probes.extend(kube::plan(invs, &env));
    probes.extend(cloud::plan(invs, &env));
    let mut out = run_all(probes, &env);
    out.extend(sql::annotate(invs));
    for a in &mut out {
        a.redact();
    }
    out
}

/// Runs the probes in parallel and collects their annotations in plan order.
fn run_all(probes: Vec<Probe>, env: &Env) -> Vec<Annotation> {
    if probes.is_empty() {
        return Vec::new();
    }
    let (tx, rx) = mpsc::channel();
    let mut labels = Vec::with_capacity(probes.len());
    for (i, p) in probes.into_iter().enumerate() {
        labels.push((p.domain, p.subject));
        let sender = tx.clone();
        let env = env.clone();
        let run = p.run;
        let spawned = std::thread::Builder::new()
            .name(format!("probe-{i}"))
            .spawn(move || {
                let r = run(&env);
                let _ = sender.send((i, r));
            });
        if let Err(e) = spawned {
            let _ = tx.send((
                i,
                Err(ProbeError::Other(format!("could not start the probe: {e}"))),
            ));
        }
    }
    drop(tx);
    let mut results: Vec<Option<Result<Vec<Annotation>, ProbeError>>> =
        labels.iter().map(|_| None).collect();
    // Probes stop their own children at the deadline; a little grace lets
    // them report that (or a walk cut short) before we stop waiting.
    let give_up = env.deadline + Duration::from_millis(250);
    let mut pending = labels.len();
    while pending > 0 {
        let now = Instant::now();
        if now >= give_up {
            break;
        }
        match rx.recv_timeout(give_up - now) {
            Ok((i, r)) => {
                results[i] = Some(r);
                pending -= 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let mut out = Vec::new();
    for ((domain, subject), r) in labels.into_iter().zip(results) {
        match r {
            Some(Ok(list)) => out.extend(list),
            Some(Err(e)) => out.push(Annotation::failed(
                domain,
                format!("could not gather facts for `{subject}`"),
                e.to_string(),
            )),
            None => out.push(Annotation::failed(
                domain,
                format!("could not gather facts for `{subject}`"),
                format!(
                    "the probe did not finish within {}",
                    human_duration(env.opts.timeout)
                ),
            )),
        }
    }
    out
}

/// What a child printed, and whether it succeeded.
#[derive(Debug)]
pub(crate) struct Ran {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// The output of a run that must have succeeded.
    pub fn ok(self, program: &str) -> Result<String, ProbeError> {
        if self.success {
            Ok(self.stdout)
        } else {
            let msg = self
                .stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("exited with an error");
            Err(ProbeError::Failed {
                program: program.to_string(),
                message: shell::shorten(msg.trim(), 200),
            })
        }
    }
}

/// Largest output read from one child.
const MAX_OUTPUT: u64 = 8 * 1024 * 1024;

/// Runs a command with no stdin and captured output, killing it (and its
/// process group) at the deadline.
pub(crate) fn run_bounded(mut cmd: Command, env: &Env) -> Result<Ran, ProbeError> {
    use std::os::unix::process::CommandExt;
    let program = cmd.get_program().to_string_lossy().into_owned();
    if env.expired() {
        return Err(ProbeError::Timeout {
            program,
            after: env.opts.timeout,
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|source| ProbeError::Spawn {
        program: program.clone(),
        source,
    })?;
    let stdout = child.stdout.take().map(reader);
    let stderr = child.stderr.take().map(reader);
    let mut pause = Duration::from_micros(500);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(ProbeError::Other(format!("waiting for {program}: {e}"))),
        }
        if env.expired() {
            kill_group(&mut child);
            // The readers are left behind: a grandchild may still hold the
            // pipes, and its output is of no use any more.
            return Err(ProbeError::Timeout {
                program,
                after: env.opts.timeout,
            });
        }
        std::thread::sleep(pause.min(env.deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(10));
    };
    let collect = |r: Option<mpsc::Receiver<Vec<u8>>>| -> String {
        let left =
            env.deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(50);
        r.and_then(|r| r.recv_timeout(left).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    Ok(Ran {
        success: status.success(),
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn reader<R: Read + Send + 'static>(mut pipe: R) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut pipe).take(MAX_OUTPUT).read_to_end(&mut buf);
        let _ = tx.send(buf);
        // Drain the rest so the child is never blocked on a full pipe.
        let _ = std::io::copy(&mut pipe, &mut std::io::sink());
    });
    rx
}

/// Kills a child and everything in its process group, then reaps it.
fn kill_group(child: &mut std::process::Child) {
    let group = format!("-{}", child.id());
    for kill in ["/bin/kill", "/usr/bin/kill"] {
        if std::path::Path::new(kill).exists() {
            let _ = Command::new(kill)
                .args(["-KILL", "--", &group])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A duration as people say it: `2 s`, `350 ms`.
pub(crate) fn human_duration(d: Duration) -> String {
    if d >= Duration::from_secs(1) && d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else if d >= Duration::from_secs(1) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// How long ago a moment was, in words: `just now`, `5 minutes ago`,
/// `3 days ago`.
pub(crate) fn age(t: std::time::SystemTime) -> String {
    let Ok(d) = std::time::SystemTime::now().duration_since(t) else {
        return "in the future".into();
    };
    let s = d.as_secs();
    let (n, unit) = match s {
        0..60 => return "just now".into(),
        60..3600 => (s / 60, "minute"),
        3600..86_400 => (s / 3600, "hour"),
        _ => (s / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// A UTC timestamp, `2024-05-01 13:45 UTC`, computed without a date library.
pub(crate) fn utc(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// Bytes as people read them: `512 B`, `4.2 KB`, `47.0 GB` (powers of 1000).
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// `1 commit`, `3 commits`.
pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The words of an invocation as text; parts the gate could not resolve
/// hold U+FFFD, which matches no file, ref or resource.
pub(crate) fn literal_args(inv: &Invocation) -> Vec<String> {
    inv.args.iter().map(|w| w.text.clone()).collect()
}

/// The directory an invocation runs in: its own, then the caller's.
pub(crate) fn inv_cwd(inv: &Invocation, env: &Env) -> Option<String> {
    inv.cwd.clone().or_else(|| env.cwd.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_714_571_100);
        assert_eq!(utc(t), "2024-05-01 13:45 UTC");
        assert_eq!(utc(std::time::UNIX_EPOCH), "1970-01-01 00:00 UTC");
    }

    #[test]
    fn bytes_and_durations_read_like_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(47_000_000_000), "47.0 GB");
        assert_eq!(human_duration(Duration::from_secs(2)), "2 s");
        assert_eq!(human_duration(Duration::from_millis(300)), "300 ms");
    }
}

//! The fault suite: the real bot and the real runner under the faults we
//! can cause, on SQLite and on PostgreSQL. Each scenario ends by checking,
//! from the bot's database and audit log alone, the two numbers holdpoint
//! promises: no held command ran without an approval in the audit chain,
//! and no audit event a runner spooled is missing or counted twice; and the
//! chain verifies.
//!
//! The runner's real shell is a recorder (it only writes down what it was
//! given), so "ran" means "the runner handed it to the shell".
//!
//! `HOLDPOINT_FAULT_ITERATIONS` (default 3) sets how many rounds of kills
//! the SIGKILL scenario runs, and `HOLDPOINT_FAULT_SEED` replays a run: the
//! seed is printed at the start of each one.

use holdpoint_testkit::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// A small deterministic generator (xorshift64*), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.below(max + 1))
    }
}

fn env_u64(var: &str) -> Option<u64> {
    std::env::var(var).ok().and_then(|v| v.trim().parse().ok())
}

/// The seed of this run: `HOLDPOINT_FAULT_SEED`, or a fresh one; printed.
fn seed(scenario: &str) -> u64 {
    let seed = env_u64("HOLDPOINT_FAULT_SEED")
        .unwrap_or_else(|| u64::from_str_radix(&random_hex(8), 16).unwrap_or(1));
    eprintln!("{scenario}: seed {seed} (HOLDPOINT_FAULT_SEED={seed} replays it)");
    seed
}

/// What every scenario starts from: a git workspace to run in, the test
/// kit's recorder as the runner's real shell (and the log it writes), and
/// one audit spool.
struct Scene {
    _ws: Workspace,
    cwd: PathBuf,
    _dir: TempDir,
    shell: PathBuf,
    log: PathBuf,
    spool: TempDir,
}

impl Scene {
    fn new() -> Scene {
        let ws = Workspace::new();
        let cwd = ws.repo();
        let dir = TempDir::new("faults");
        let (shell, log) = recorder(dir.path());
        Scene {
            _ws: ws,
            cwd,
            _dir: dir,
            shell,
            log,
            spool: TempDir::new("spool"),
        }
    }
}

/// The agent's runner, with the recorder as its real shell, running `line`
/// through the `sh -c` front end.
fn agent_running(bot: &Bot, cwd: &Path, spool: &Path, shell: &Path, line: &str) -> Agent {
    let mut c = runner(&bot.url(), &bot.token, cwd, spool);
    c.env("HOLDPOINT_REAL_SHELL", shell)
        .args(["sh", "-c", line]);
    Agent::spawn(c)
}

fn run_now(bot: &Bot, cwd: &Path, spool: &Path, shell: &Path, line: &str) -> Output {
    let mut c = runner(&bot.url(), &bot.token, cwd, spool);
    c.env("HOLDPOINT_REAL_SHELL", shell)
        .args(["sh", "-c", line]);
    c.output().expect("run holdpoint")
}

/// The command lines the recorder was given, with how often each.
fn ran(log: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l == "-c"
            && let Some(cmd) = lines.next()
        {
            *out.entry(cmd.to_string()).or_default() += 1;
        }
    }
    out
}

/// The pending requests' ids by command.
fn pending_by_command(bot: &Bot) -> BTreeMap<String, String> {
    let r = bot.requests();
    r["pending"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(|x| Some((x["command"].as_str()?.into(), x["id"].as_str()?.into())))
                .collect()
        })
        .unwrap_or_default()
}

/// What the audit log says, read from the bot's database.
struct Ledger {
    /// Request id by command, from `request.submitted` rows.
    submitted: BTreeMap<String, String>,
    /// Request ids with a `request.approved` row.
    approved: BTreeSet<String>,
    /// Request ids with any final row.
    ended: BTreeSet<String>,
    /// `verdict` rows (spooled by runners) by command.
    verdicts: BTreeMap<String, usize>,
    /// Event ids seen more than once.
    duplicates: Vec<String>,
}

fn ledger(bot: &Bot) -> Ledger {
    let rows = bot.audit();
    let mut l = Ledger {
        submitted: BTreeMap::new(),
        approved: BTreeSet::new(),
        ended: BTreeSet::new(),
        verdicts: BTreeMap::new(),
        duplicates: Vec::new(),
    };
    let mut ids = BTreeSet::new();
    for r in &rows {
        let event_id = r["event_id"].as_str().unwrap_or_default().to_string();
        if !ids.insert(event_id.clone()) {
            l.duplicates.push(event_id);
        }
        let request = r["request_id"].as_str().map(str::to_string);
        match r["kind"].as_str().unwrap_or_default() {
            "verdict" => {
                if let Some(c) = r["event"]["command"].as_str() {
                    *l.verdicts.entry(c.to_string()).or_default() += 1;
                }
            }
            "request.submitted" => {
                let command = r["event"]["command"]
                    .as_str()
                    .or_else(|| r["event"]["request"]["command"].as_str());
                if let (Some(c), Some(id)) = (command, request) {
                    l.submitted.insert(c.to_string(), id);
                }
            }
            "request.approved" => {
                if let Some(id) = request {
                    l.approved.insert(id.clone());
                    l.ended.insert(id);
                }
            }
            "request.denied" | "request.expired" | "request.cancelled" => {
                if let Some(id) = request {
                    l.ended.insert(id);
                }
            }
            _ => {}
        }
    }
    l
}

/// Sends what the shared spool still holds, then checks the promises:
/// every held command that ran was approved in the chain, every allowed
/// command's verdict is in the chain exactly once, no event twice, and the
/// chain verifies.
fn assert_promises_kept(
    bot: &Bot,
    ws: &Path,
    spool: &Path,
    log: &Path,
    held: &BTreeSet<String>,
    allowed: &BTreeSet<String>,
) -> Ledger {
    let flushed = runner(&bot.url(), &bot.token, ws, spool)
        .args(["spool", "flush"])
        .output()
        .expect("holdpoint spool flush");
    assert!(flushed.status.success(), "{}", text(&flushed.stderr));
    let ran = ran(log);
    // The flush the command started in the background may still be sending.
    let l = eventually(
        Duration::from_secs(20),
        "every spooled verdict arrives",
        || {
            let l = ledger(bot);
            allowed
                .iter()
                .all(|c| l.verdicts.contains_key(c))
                .then_some(l)
        },
    );
    for c in held {
        if ran.contains_key(c) {
            let id = l
                .submitted
                .get(c)
                .unwrap_or_else(|| panic!("{c:?} ran but was never submitted"));
            assert!(
                l.approved.contains(id),
                "{c:?} ran without an approval in the audit chain"
            );
        }
    }
    for c in allowed {
        assert_eq!(ran.get(c), Some(&1), "{c:?} ran once");
        assert_eq!(
            l.verdicts.get(c),
            Some(&1),
            "{c:?}: one verdict in the chain"
        );
    }
    for (c, n) in &ran {
        assert_eq!(*n, 1, "{c:?} ran {n} times");
    }
    assert!(l.duplicates.is_empty(), "events twice: {:?}", l.duplicates);
    let verify = bot.run(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify.stdout));
    l
}

fn sigkill_at_random_points_runs_nothing_unapproved_and_loses_no_event(backend: Backend) {
    let Some(mut bot) = Bot::on(backend, &[("HOLDPOINT_EXPIRY", "2m")]) else {
        return;
    };
    let seed = seed("sigkill");
    let mut rng = Rng::new(seed);
    let iterations = env_u64("HOLDPOINT_FAULT_ITERATIONS").unwrap_or(3);
    // One spool for every runner: appends race, and so do the flushers the
    // commands start.
    let Scene {
        _ws,
        cwd,
        _dir,
        shell,
        log,
        spool,
    } = Scene::new();
    let mut held = BTreeSet::new();
    let mut allowed = BTreeSet::new();
    // What the test decided, by command.
    let mut approved_here = BTreeSet::new();
    let mut denied_here = BTreeSet::new();
    for round in 0..iterations {
        let lines: Vec<String> = (0..3)
            .map(|k| format!("git push --force origin fault-{seed}-{round}-{k}"))
            .collect();
        let agents: Vec<(String, Agent)> = lines
            .iter()
            .map(|l| {
                (
                    l.clone(),
                    agent_running(&bot, &cwd, spool.path(), &shell, l),
                )
            })
            .collect();
        held.extend(lines.iter().cloned());
        for j in 0..2 {
            let line = format!("echo allowed-{seed}-{round}-{j}");
            let out = run_now(&bot, &cwd, spool.path(), &shell, &line);
            assert!(out.status.success(), "{line}: {}", text(&out.stderr));
            allowed.insert(line);
        }
        let ids = eventually(
            Duration::from_secs(30),
            "the round's requests pending",
            || {
                let p = pending_by_command(&bot);
                lines
                    .iter()
                    .map(|l| p.get(l).cloned())
                    .collect::<Option<Vec<String>>>()
            },
        );
        let point = rng.below(4);
        eprintln!("round {round}: fault point {point}");
        match point {
            // Killed while the requests wait; one is approved while the bot is
            // down (the CLI writes to the database).
            0 => {
                bot.kill();
                std::thread::sleep(rng.millis(300));
                bot.cli(&["approve", &ids[0]]);
                approved_here.insert(lines[0].clone());
            }
            // Killed while a decision is being relayed.
            1 => {
                bot.cli(&["approve", &ids[1]]);
                approved_here.insert(lines[1].clone());
                std::thread::sleep(rng.millis(60));
                bot.kill();
            }
            // Killed right after a denial.
            2 => {
                bot.cli(&["deny", &ids[2], "--reason", "fault suite"]);
                denied_here.insert(lines[2].clone());
                bot.kill();
            }
            // Killed with nothing decided.
            _ => bot.kill(),
        }
        std::thread::sleep(rng.millis(700));
        bot.restart();
        // The rest is decided on the restarted bot, at random.
        for (line, id) in lines.iter().zip(&ids) {
            if approved_here.contains(line) || denied_here.contains(line) {
                continue;
            }
            if rng.below(2) == 0 {
                bot.cli(&["approve", id]);
                approved_here.insert(line.clone());
            } else {
                bot.cli(&["deny", id, "--reason", "fault suite"]);
                denied_here.insert(line.clone());
            }
        }
        for (line, agent) in agents {
            let out = agent.finish(Duration::from_secs(60));
            let code = out.status.code();
            if approved_here.contains(&line) {
                assert_eq!(code, Some(0), "{line}: {}", text(&out.stderr));
            } else {
                assert_eq!(code, Some(125), "{line}: {}", text(&out.stderr));
            }
        }
    }
    let l = assert_promises_kept(&bot, &cwd, spool.path(), &log, &held, &allowed);
    let ran = ran(&log);
    for c in &denied_here {
        assert!(!ran.contains_key(c), "denied {c:?} ran");
    }
    for c in &approved_here {
        assert!(ran.contains_key(c), "approved {c:?} did not run");
    }
    for c in &held {
        let id = &l.submitted[c];
        assert!(l.ended.contains(id), "{c:?} never ended in the audit log");
    }
    eprintln!(
        "sigkill: {iterations} rounds, {} held ({} approved, {} denied), {} allowed; {} ran; {} verdicts in the chain",
        held.len(),
        approved_here.len(),
        denied_here.len(),
        allowed.len(),
        ran.len(),
        l.verdicts.values().sum::<usize>()
    );
}

#[test]
fn sigkill_at_random_points_runs_nothing_unapproved_and_loses_no_event_on_sqlite() {
    sigkill_at_random_points_runs_nothing_unapproved_and_loses_no_event(Backend::Sqlite);
}

#[test]
fn sigkill_at_random_points_runs_nothing_unapproved_and_loses_no_event_on_postgres() {
    sigkill_at_random_points_runs_nothing_unapproved_and_loses_no_event(Backend::Postgres);
}

fn a_runner_killed_while_it_waits_never_runs_the_command(backend: Backend) {
    let Some(bot) = Bot::on(backend, &[("HOLDPOINT_EXPIRY", "3s")]) else {
        return;
    };
    let Scene {
        _ws,
        cwd,
        _dir,
        shell,
        log,
        spool,
    } = Scene::new();
    let line = "git push --force origin killed-runner";
    let agent = agent_running(&bot, &cwd, spool.path(), &shell, line);
    let id = eventually(Duration::from_secs(30), "the request pending", || {
        pending_by_command(&bot).get(line).cloned()
    });
    agent.signal("KILL");
    let _ = agent.finish(Duration::from_secs(10));
    // The request ends on the bot's clock, and an approval after that is
    // refused as late.
    let l = eventually(Duration::from_secs(30), "the request ends", || {
        let l = ledger(&bot);
        l.ended.contains(&id).then_some(l)
    });
    assert!(!l.approved.contains(&id));
    let (ok, out, err) = bot.try_cli(&["approve", &id]);
    assert!(
        !ok && format!("{out}{err}").contains("already expired"),
        "{out}{err}"
    );
    // Nothing ran then, and nothing runs later.
    std::thread::sleep(Duration::from_millis(500));
    assert!(ran(&log).is_empty(), "{:?}", ran(&log));
    let held = BTreeSet::from([line.to_string()]);
    assert_promises_kept(&bot, &cwd, spool.path(), &log, &held, &BTreeSet::new());
}

#[test]
fn a_runner_killed_while_it_waits_never_runs_the_command_on_sqlite() {
    a_runner_killed_while_it_waits_never_runs_the_command(Backend::Sqlite);
}

#[test]
fn a_runner_killed_while_it_waits_never_runs_the_command_on_postgres() {
    a_runner_killed_while_it_waits_never_runs_the_command(Backend::Postgres);
}

/// libfaketime, to give the runner a clock hours off the bot's.
fn faketime() -> Option<PathBuf> {
    let found = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("HOLDPOINT_REQUIRE_FAKETIME").is_none(),
            "libfaketime is required here (apt-get install faketime)"
        );
        eprintln!("skipped: libfaketime is not installed (apt-get install faketime)");
    }
    found
}

fn a_runner_whose_clock_is_hours_off_keeps_the_bots_deadline(backend: Backend) {
    let Some(lib) = faketime() else {
        return;
    };
    let Some(bot) = Bot::on(backend, &[("HOLDPOINT_EXPIRY", "3s")]) else {
        return;
    };
    let Scene {
        _ws,
        cwd,
        _dir,
        shell,
        log,
        spool,
    } = Scene::new();
    let mut held = BTreeSet::new();
    let mut allowed = BTreeSet::new();
    for (skew, tag) in [("+5h", "ahead"), ("-5h", "behind")] {
        let skewed = |line: &str| {
            let mut c = runner(&bot.url(), &bot.token, &cwd, spool.path());
            c.env("HOLDPOINT_REAL_SHELL", &shell)
                .env("LD_PRELOAD", &lib)
                .env("FAKETIME", skew)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .args(["sh", "-c", line]);
            c
        };
        // Approved: it waited for the reviewer, then ran.
        let approved = format!("git push --force origin skew-{tag}-approved");
        let agent = Agent::spawn(skewed(&approved));
        let id = eventually(Duration::from_secs(30), "the request pending", || {
            pending_by_command(&bot).get(&approved).cloned()
        });
        bot.cli(&["approve", &id]);
        let out = agent.finish(Duration::from_secs(30));
        assert!(out.status.success(), "{skew}: {}", text(&out.stderr));
        // Unanswered: it waits until the bot's deadline, and the bot's
        // expiry ends it; nothing runs.
        let expired = format!("git push --force origin skew-{tag}-expired");
        let mut agent = Agent::spawn(skewed(&expired));
        let id = eventually(Duration::from_secs(30), "the request pending", || {
            pending_by_command(&bot).get(&expired).cloned()
        });
        std::thread::sleep(Duration::from_millis(1000));
        assert!(
            agent.running(),
            "{skew}: the runner gave up before the bot's deadline"
        );
        let out = agent.finish(Duration::from_secs(30));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{skew}: {err}");
        assert!(err.contains("not approved in time"), "{skew}: {err}");
        let l = ledger(&bot);
        assert!(l.ended.contains(&id) && !l.approved.contains(&id));
        // An allowed command's verdict is recorded whatever the clock says.
        let line = format!("echo skew-{tag}");
        let out = skewed(&line).output().expect("run holdpoint");
        assert!(out.status.success(), "{skew}: {}", text(&out.stderr));
        held.extend([approved, expired]);
        allowed.insert(line);
    }
    assert_promises_kept(&bot, &cwd, spool.path(), &log, &held, &allowed);
    // The skew was real: the runner stamped its verdicts hours away from
    // the bot's clock (which records them at its own time).
    let skewed: Vec<i64> = bot
        .audit()
        .iter()
        .filter(|r| {
            r["kind"] == "verdict"
                && r["event"]["command"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("echo skew-"))
        })
        .filter_map(|r| r["event"]["at"].as_i64())
        .collect();
    assert_eq!(skewed.len(), 2, "{skewed:?}");
    for at in skewed {
        assert!(
            (at - now() * 1000).abs() > 4 * 3600 * 1000,
            "the runner's clock was not moved: {at}"
        );
    }
}

#[test]
fn a_runner_whose_clock_is_hours_off_keeps_the_bots_deadline_on_sqlite() {
    a_runner_whose_clock_is_hours_off_keeps_the_bots_deadline(Backend::Sqlite);
}

#[test]
fn a_runner_whose_clock_is_hours_off_keeps_the_bots_deadline_on_postgres() {
    a_runner_whose_clock_is_hours_off_keeps_the_bots_deadline(Backend::Postgres);
}

/// Pending requests among `lines`, decided: approved when `approve` says.
fn decide_pending(
    bot: &Bot,
    lines: &[String],
    approve: impl Fn(&str) -> bool,
    approved: &mut BTreeSet<String>,
    denied: &mut BTreeSet<String>,
) {
    let p = pending_by_command(bot);
    for l in lines {
        if let Some(id) = p.get(l) {
            if approve(l) {
                if bot.try_cli(&["approve", id]).0 {
                    approved.insert(l.clone());
                }
            } else if bot.try_cli(&["deny", id, "--reason", "fault suite"]).0 {
                denied.insert(l.clone());
            }
        }
    }
}

#[test]
fn postgres_stopped_and_started_under_load_runs_nothing_unapproved_and_loses_no_event() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let bot = BotOptions::new()
        .database(Database::Shared(cluster.url()))
        .env("HOLDPOINT_EXPIRY", "2m")
        .start();
    let Scene {
        _ws,
        cwd,
        _dir,
        shell,
        log,
        spool,
    } = Scene::new();
    let mut held = BTreeSet::new();
    let mut allowed = BTreeSet::new();
    let mut approved = BTreeSet::new();
    let mut denied = BTreeSet::new();
    let before: Vec<String> = (0..3)
        .map(|k| format!("git push --force origin pg-before-{k}"))
        .collect();
    let mut agents: Vec<(String, Agent)> = before
        .iter()
        .map(|l| {
            (
                l.clone(),
                agent_running(&bot, &cwd, spool.path(), &shell, l),
            )
        })
        .collect();
    let ids = eventually(Duration::from_secs(30), "the requests pending", || {
        let p = pending_by_command(&bot);
        before.iter().all(|l| p.contains_key(l)).then_some(p)
    });
    // One approved before the outage.
    decide_pending(&bot, &before[..1], |_| true, &mut approved, &mut denied);

    cluster.stop();
    // During the outage: the waiting commands stay held, new ones cannot be
    // recorded and do not run, a reviewer cannot decide, allowed commands
    // still run and their verdicts wait in the spool.
    let during: Vec<String> = (0..2)
        .map(|k| format!("git push --force origin pg-during-{k}"))
        .collect();
    for l in &during {
        agents.push((
            l.clone(),
            agent_running(&bot, &cwd, spool.path(), &shell, l),
        ));
    }
    for j in 0..3 {
        let line = format!("echo pg-outage-{j}");
        let out = run_now(&bot, &cwd, spool.path(), &shell, &line);
        assert!(out.status.success(), "{line}: {}", text(&out.stderr));
        allowed.insert(line);
    }
    let (ok, out, err) = bot.try_cli(&["approve", &ids[&before[2]]]);
    assert!(
        !ok,
        "nothing can be approved while the database is down: {out}{err}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let ready = http_get(bot.port, "/readyz").map(|r| r.0);
    assert_eq!(ready, Some(503), "readiness says the database is down");

    cluster.start_again();
    held.extend(before.iter().cloned());
    held.extend(during.iter().cloned());
    let all: Vec<String> = held.iter().cloned().collect();
    // Whatever is still waiting is decided now: the `before-1` push
    // approved, the rest denied.
    let mut results = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !agents.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "agents still waiting: {:?}",
            agents.iter().map(|a| &a.0).collect::<Vec<_>>()
        );
        decide_pending(
            &bot,
            &all,
            |l| l.ends_with("before-1"),
            &mut approved,
            &mut denied,
        );
        let mut still = Vec::new();
        for (l, mut a) in agents {
            if a.running() {
                still.push((l, a));
            } else {
                results.push((l, a.finish(Duration::from_secs(5))));
            }
        }
        agents = still;
        std::thread::sleep(Duration::from_millis(200));
    }
    for (l, out) in &results {
        let code = out.status.code();
        if approved.contains(l) {
            assert_eq!(code, Some(0), "{l}: {}", text(&out.stderr));
        } else {
            assert_eq!(code, Some(125), "{l}: {}", text(&out.stderr));
        }
    }
    assert!(
        approved.contains(&before[0]) && approved.contains(&before[1]),
        "{approved:?}"
    );
    for j in 0..2 {
        let line = format!("echo pg-after-{j}");
        let out = run_now(&bot, &cwd, spool.path(), &shell, &line);
        assert!(out.status.success(), "{line}: {}", text(&out.stderr));
        allowed.insert(line);
    }
    assert_promises_kept(&bot, &cwd, spool.path(), &log, &held, &allowed);
    let ran = ran(&log);
    for c in &denied {
        assert!(!ran.contains_key(c), "denied {c:?} ran");
    }
    eprintln!(
        "postgres outage: {} held ({} approved, {} denied), {} allowed, {} ran",
        held.len(),
        approved.len(),
        denied.len(),
        allowed.len(),
        ran.len()
    );
}

fn the_network_cut_held_and_slowed_runs_nothing_unapproved_and_loses_no_event(backend: Backend) {
    let Some(bot) = Bot::on(backend, &[("HOLDPOINT_EXPIRY", "2m")]) else {
        return;
    };
    let proxy = Proxy::start(bot.port);
    let url = format!("http://127.0.0.1:{}", proxy.port);
    let Scene {
        _ws,
        cwd,
        _dir,
        shell,
        log,
        spool,
    } = Scene::new();
    let via_proxy = |line: &str| {
        let mut c = runner(&url, &bot.token, &cwd, spool.path());
        c.env("HOLDPOINT_REAL_SHELL", &shell)
            .args(["sh", "-c", line]);
        c
    };
    let lines: Vec<String> = (0..4)
        .map(|k| format!("git push --force origin net-{k}"))
        .collect();
    let mut allowed = BTreeSet::new();
    // A slow link: everything arrives, late.
    proxy.delay(Duration::from_millis(150));
    let mut agents: Vec<(String, Agent)> = lines
        .iter()
        .map(|l| (l.clone(), Agent::spawn(via_proxy(l))))
        .collect();
    let ids = eventually(Duration::from_secs(30), "the requests pending", || {
        let p = pending_by_command(&bot);
        lines.iter().all(|l| p.contains_key(l)).then_some(p)
    });
    let allowed_line = "echo net-slow";
    let out = via_proxy(allowed_line).output().expect("run holdpoint");
    assert!(out.status.success(), "{}", text(&out.stderr));
    allowed.insert(allowed_line.to_string());
    proxy.delay(Duration::ZERO);

    // The link goes down and comes back: a decision made meanwhile
    // arrives after it.
    proxy.hold(true);
    bot.cli(&["approve", &ids[&lines[0]]]);
    std::thread::sleep(Duration::from_millis(1500));
    proxy.hold(false);

    // Connections cut and new ones refused for a while: the runners
    // reconnect when they can, and a decision made meanwhile reaches them.
    proxy.refuse(true);
    assert!(
        proxy.cut() >= 3,
        "the runners' websockets went through the proxy"
    );
    bot.cli(&["approve", &ids[&lines[1]]]);
    bot.cli(&["deny", &ids[&lines[2]], "--reason", "fault suite"]);
    let out = via_proxy("echo net-down").output().expect("run holdpoint");
    assert!(
        out.status.success(),
        "allowed commands run with the bot unreachable: {}",
        text(&out.stderr)
    );
    allowed.insert("echo net-down".to_string());
    std::thread::sleep(Duration::from_millis(1500));
    proxy.refuse(false);
    bot.cli(&["deny", &ids[&lines[3]], "--reason", "fault suite"]);

    let approved: BTreeSet<String> = lines[..2].iter().cloned().collect();
    for (line, agent) in agents.drain(..) {
        let out = agent.finish(Duration::from_secs(60));
        let code = out.status.code();
        if approved.contains(&line) {
            assert_eq!(code, Some(0), "{line}: {}", text(&out.stderr));
        } else {
            assert_eq!(code, Some(125), "{line}: {}", text(&out.stderr));
        }
    }
    let held: BTreeSet<String> = lines.iter().cloned().collect();
    // The spool is flushed through the proxy too.
    let flushed = runner(&url, &bot.token, &cwd, spool.path())
        .args(["spool", "flush"])
        .output()
        .expect("holdpoint spool flush");
    assert!(flushed.status.success(), "{}", text(&flushed.stderr));
    assert_promises_kept(&bot, &cwd, spool.path(), &log, &held, &allowed);
    let ran = ran(&log);
    for l in &lines[2..] {
        assert!(!ran.contains_key(l), "denied {l:?} ran");
    }
}

#[test]
fn the_network_cut_held_and_slowed_runs_nothing_unapproved_and_loses_no_event_on_sqlite() {
    the_network_cut_held_and_slowed_runs_nothing_unapproved_and_loses_no_event(Backend::Sqlite);
}

#[test]
fn the_network_cut_held_and_slowed_runs_nothing_unapproved_and_loses_no_event_on_postgres() {
    the_network_cut_held_and_slowed_runs_nothing_unapproved_and_loses_no_event(Backend::Postgres);
}

/// Files made immutable (`chattr +i`: no writes, even by root, even through
/// files already open) until dropped, so that a failing test leaves nothing
/// behind that cannot be deleted.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    /// `None` when this file system has no such attribute.
    fn set(files: Vec<PathBuf>) -> Option<Immutable> {
        let guard = Immutable(files);
        let ok = guard.0.iter().all(|f| {
            std::process::Command::new("chattr")
                .arg("+i")
                .arg(f)
                .output()
                .is_ok_and(|o| o.status.success())
        });
        ok.then_some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(f)
                .output();
        }
    }
}

/// The SQLite database stops accepting writes under a running bot (its
/// file and write-ahead log made immutable): what cannot be recorded does
/// not happen, nothing is acknowledged that was not stored, and once the
/// file is writable again everything goes on.
#[test]
fn a_sqlite_database_that_stops_taking_writes_refuses_what_it_cannot_record_and_resumes() {
    let Some(bot) = Bot::on(Backend::Sqlite, &[("HOLDPOINT_EXPIRY", "2m")]) else {
        return;
    };
    let Scene {
        _ws,
        cwd,
        _dir,
        shell,
        log,
        spool,
    } = Scene::new();
    let waiting = "git push --force origin ro-waiting";
    let first = agent_running(&bot, &cwd, spool.path(), &shell, waiting);
    let id = eventually(Duration::from_secs(30), "the request pending", || {
        pending_by_command(&bot).get(waiting).cloned()
    });
    // The shared-memory index is written through a mapping, which an
    // immutable file answers with SIGBUS; the database and its log are
    // written with write(2), which fails cleanly.
    let files = vec![
        bot.dir().join("holdpoint.db"),
        bot.dir().join("holdpoint.db-wal"),
    ];
    let Some(guard) = Immutable::set(files) else {
        eprintln!("skipped: this file system has no immutable attribute (chattr +i)");
        return;
    };
    let (approved, out, err) = bot.try_cli(&["approve", &id]);
    let refused = "git push --force origin ro-refused";
    let second =
        agent_running(&bot, &cwd, spool.path(), &shell, refused).finish(Duration::from_secs(60));
    let allowed = run_now(&bot, &cwd, spool.path(), &shell, "echo ro-allowed");
    drop(guard);
    assert!(
        !approved,
        "an approval that cannot be written is refused: {out}{err}"
    );
    assert_eq!(
        second.status.code(),
        Some(125),
        "a held command that cannot be recorded is refused: {}",
        text(&second.stderr)
    );
    assert!(allowed.status.success(), "{}", text(&allowed.stderr));
    let now_ran = ran(&log);
    assert!(
        !now_ran.contains_key(waiting) && !now_ran.contains_key(refused),
        "nothing held ran: {now_ran:?}"
    );

    // Writable again: the same approval is recorded, and only then runs.
    eventually(Duration::from_secs(30), "the approval is recorded", || {
        bot.try_cli(&["approve", &id]).0.then_some(())
    });
    let out = first.finish(Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let held = BTreeSet::from([waiting.to_string(), refused.to_string()]);
    let allowed = BTreeSet::from(["echo ro-allowed".to_string()]);
    assert_promises_kept(&bot, &cwd, spool.path(), &log, &held, &allowed);
    assert!(!ran(&log).contains_key(refused));
}

/// The runner on another host (a network namespace of the test's own,
/// joined by a veth pair) and the link between them taken down and brought
/// back: decisions made while it was down arrive after, allowed commands do
/// not wait for the link, and nothing held runs unapproved.
#[test]
fn the_link_to_a_runner_on_another_address_goes_down_and_up_and_nothing_runs_unapproved() {
    let ns = match NetNs::create() {
        Ok(ns) => ns,
        Err(why) => {
            assert!(
                std::env::var_os("HOLDPOINT_REQUIRE_NETNS").is_none(),
                "network namespaces are required here: {why}"
            );
            eprintln!("skipped: cannot make a network namespace ({why})");
            return;
        }
    };
    let bot = BotOptions::new()
        .listen_ip("0.0.0.0")
        .env("HOLDPOINT_EXPIRY", "2m")
        .start();
    let url = format!("http://{}:{}", ns.host_ip, bot.port);
    let Scene {
        _ws,
        cwd,
        _dir,
        shell,
        log,
        spool,
    } = Scene::new();
    let remote = |line: &str| {
        let mut c = runner(&url, &bot.token, &cwd, spool.path());
        c.env("HOLDPOINT_REAL_SHELL", &shell)
            .env("HOLDPOINT_ALLOW_INSECURE_HTTP", "1")
            .args(["sh", "-c", line]);
        ns.wrap(&c)
    };
    let approve = "git push --force origin link-approved";
    let deny = "git push --force origin link-denied";
    let mut a = Agent::spawn(remote(approve));
    let mut d = Agent::spawn(remote(deny));
    let ids = eventually(Duration::from_secs(30), "the requests pending", || {
        let p = pending_by_command(&bot);
        (p.contains_key(approve) && p.contains_key(deny)).then_some(p)
    });
    let request = |id: &str| {
        bot.requests()["pending"]
            .as_array()
            .and_then(|p| p.iter().find(|r| r["id"] == id).cloned())
    };
    assert_eq!(
        request(&ids[approve]).map(|r| r["host"].is_string()),
        Some(true)
    );

    ns.link(false);
    bot.cli(&["approve", &ids[approve]]);
    bot.cli(&["deny", &ids[deny], "--reason", "fault suite"]);
    let out = remote("echo link-down").output().expect("run holdpoint");
    assert!(
        out.status.success(),
        "allowed commands do not wait for the link: {}",
        text(&out.stderr)
    );
    std::thread::sleep(Duration::from_secs(3));
    // The decisions could not reach them: they still wait.
    assert!(
        a.running() && d.running(),
        "the runners were cut off while the link was down"
    );
    ns.link(true);

    let out = a.finish(Duration::from_secs(90));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = d.finish(Duration::from_secs(90));
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    let held = BTreeSet::from([approve.to_string(), deny.to_string()]);
    let allowed = BTreeSet::from(["echo link-down".to_string()]);
    assert_promises_kept(&bot, &cwd, spool.path(), &log, &held, &allowed);
    assert!(!ran(&log).contains_key(deny));
}

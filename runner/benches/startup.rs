//! Whole-process cost of the gate: `holdpoint sh -c true` against
//! `sh -c true`, and the time the gate adds against the whole-process time
//! of a minimal Rust program (hello world, `rustc -O`, built here in a
//! temporary directory). The commands are alternated in the same run so all
//! see the same machine; the goals are ratios to the minimal exec.
//!
//! `cargo bench -p holdpoint-runner --bench startup`

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 400;

/// The time the gate may add to an allowed command, in minimal execs.
const GOAL_NO_BOT: f64 = 1.3;
/// The same with a bot configured (the audit spool append included).
const GOAL_WITH_BOT: f64 = 1.6;

fn time(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run: {e}"));
    let d = t.elapsed();
    assert!(status.success(), "{cmd:?} failed");
    d
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Builds the minimal Rust program the gate is measured against.
fn minimal_exec(dir: &Path) -> PathBuf {
    let src = dir.join("hello.rs");
    let bin = dir.join("hello");
    std::fs::write(&src, "fn main() { println!(\"hello\"); }\n")
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", src.display()));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(&rustc)
        .arg("-O")
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .status()
        .unwrap_or_else(|e| panic!("cannot run rustc: {e}"));
    assert!(status.success(), "rustc -O hello.rs failed");
    bin
}

fn main() {
    let bin = env!("CARGO_BIN_EXE_holdpoint");
    let home = std::env::temp_dir().join(format!("holdpoint-bench-home-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&home);
    let hello = minimal_exec(&home);
    let hello = hello
        .to_str()
        .unwrap_or_else(|| panic!("temp dir is not UTF-8"));
    let mk = |argv: &[&str]| {
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..])
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join("none"))
            .env_remove("HOLDPOINT_POLICY")
            .env_remove("HOLDPOINT_URL")
            .env_remove("HOLDPOINT_TOKEN")
            .env("HOLDPOINT_REAL_SHELL", "/bin/sh")
            .stdout(Stdio::null());
        c
    };
    // With a bot configured, every verdict is appended to the audit spool and
    // a flusher is started when none runs. The bot address here refuses
    // connections, so the flusher keeps retrying (holding its lock) and the
    // runner's own cost is the append and the lock check.
    let spool = home.join("spool");
    let mk_audited = |argv: &[&str]| {
        let mut c = mk(argv);
        c.env("HOLDPOINT_URL", "http://127.0.0.1:9")
            .env("HOLDPOINT_TOKEN", "hpr_bench")
            .env("HOLDPOINT_SPOOL_DIR", &spool);
        c
    };
    let gate_argv = [bin, "sh", "-c", "true"];
    let bare_argv = ["/bin/sh", "-c", "true"];
    let (mut gate, mut bare, mut audited, mut minimal) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Warm the page cache.
    for _ in 0..20 {
        time(&mut mk(&gate_argv));
        time(&mut mk(&bare_argv));
        time(&mut mk_audited(&gate_argv));
        time(&mut mk(&[hello]));
    }
    for _ in 0..RUNS {
        gate.push(time(&mut mk(&gate_argv)));
        bare.push(time(&mut mk(&bare_argv)));
        audited.push(time(&mut mk_audited(&gate_argv)));
        minimal.push(time(&mut mk(&[hello])));
    }
    let (mg, mb, ma, mm) = (
        median(gate.clone()),
        median(bare.clone()),
        median(audited.clone()),
        median(minimal.clone()),
    );
    let added = ms(mg) - ms(mb);
    let added_bot = ms(ma) - ms(mb);
    let verdict = |ratio: f64, goal: f64| if ratio <= goal { "met" } else { "MISSED" };
    println!("runs: {RUNS} each, alternated");
    let row = |name: &str, m: Duration, v: Vec<Duration>| {
        println!(
            "{name:<28} median {:>7.3} ms  p90 {:>7.3} ms",
            ms(m),
            ms(pct(v, 0.9))
        );
    };
    row("sh -c true", mb, bare);
    row("minimal exec (hello, -O)", mm, minimal);
    row("holdpoint sh -c true", mg, gate);
    row("  with a bot (spooled)", ma, audited);
    let r = added / ms(mm);
    println!(
        "added by the gate           {added:>7.3} ms = {r:.2} minimal execs (goal <= {GOAL_NO_BOT}: {})",
        verdict(r, GOAL_NO_BOT)
    );
    let rb = added_bot / ms(mm);
    println!(
        "  with a bot configured     {added_bot:>7.3} ms = {rb:.2} minimal execs (goal <= {GOAL_WITH_BOT}: {})",
        verdict(rb, GOAL_WITH_BOT)
    );
    let _ = std::fs::remove_dir_all(&home);
}

//! Whole-process cost of the gate: `holdpoint sh -c true` against
//! `sh -c true`, alternated in the same run so both see the same machine.
//!
//! `cargo bench -p holdpoint-runner --bench startup`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 400;

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

fn main() {
    let bin = env!("CARGO_BIN_EXE_holdpoint");
    let home = std::env::temp_dir().join("holdpoint-bench-home");
    let _ = std::fs::create_dir_all(&home);
    let mk = |argv: &[&str]| {
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..])
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join("none"))
            .env_remove("HOLDPOINT_POLICY")
            .env("HOLDPOINT_REAL_SHELL", "/bin/sh")
            .stdout(Stdio::null());
        c
    };
    // With a bot configured, every verdict is appended to the audit spool and
    // a flusher is started when none runs. The bot address here refuses
    // connections, so the flusher keeps retrying (holding its lock) and the
    // runner's own cost is the append and the lock check.
    let spool = home.join("spool");
    let _ = std::fs::remove_dir_all(&spool);
    let mk_audited = |argv: &[&str]| {
        let mut c = mk(argv);
        c.env("HOLDPOINT_URL", "http://127.0.0.1:9")
            .env("HOLDPOINT_TOKEN", "hpr_bench")
            .env("HOLDPOINT_SPOOL_DIR", &spool);
        c
    };
    let (mut gate, mut bare, mut audited) = (Vec::new(), Vec::new(), Vec::new());
    // Warm the page cache.
    for _ in 0..20 {
        time(&mut mk(&[bin, "sh", "-c", "true"]));
        time(&mut mk(&["/bin/sh", "-c", "true"]));
        time(&mut mk_audited(&[bin, "sh", "-c", "true"]));
    }
    for _ in 0..RUNS {
        gate.push(time(&mut mk(&[bin, "sh", "-c", "true"])));
        bare.push(time(&mut mk(&["/bin/sh", "-c", "true"])));
        audited.push(time(&mut mk_audited(&[bin, "sh", "-c", "true"])));
    }
    let ma = median(audited.clone());
    let (mg, mb) = (median(gate.clone()), median(bare.clone()));
    println!("runs: {RUNS} each, alternated");
    println!(
        "sh -c true            median {:>8.3} ms  p90 {:>8.3} ms",
        mb.as_secs_f64() * 1e3,
        pct(bare, 0.9).as_secs_f64() * 1e3
    );
    println!(
        "holdpoint sh -c true  median {:>8.3} ms  p90 {:>8.3} ms",
        mg.as_secs_f64() * 1e3,
        pct(gate, 0.9).as_secs_f64() * 1e3
    );
    println!(
        "added by the gate     median {:>8.3} ms  (ratio {:.2}x)",
        (mg.as_secs_f64() - mb.as_secs_f64()) * 1e3,
        mg.as_secs_f64() / mb.as_secs_f64()
    );
    println!(
        "with a bot (spooled)  median {:>8.3} ms  p90 {:>8.3} ms  (+{:.3} ms over no bot)",
        ma.as_secs_f64() * 1e3,
        pct(audited, 0.9).as_secs_f64() * 1e3,
        (ma.as_secs_f64() - mg.as_secs_f64()) * 1e3
    );
}

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
    let (mut gate, mut bare) = (Vec::new(), Vec::new());
    // Warm the page cache.
    for _ in 0..20 {
        time(&mut mk(&[bin, "sh", "-c", "true"]));
        time(&mut mk(&["/bin/sh", "-c", "true"]));
    }
    for _ in 0..RUNS {
        gate.push(time(&mut mk(&[bin, "sh", "-c", "true"])));
        bare.push(time(&mut mk(&["/bin/sh", "-c", "true"])));
    }
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
}

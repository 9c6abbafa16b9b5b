//! Whole-process cost of the gate: `holdpoint sh -c true` against
//! `sh -c true`, and the time the gate adds against the whole-process time
//! of a minimal Rust program (hello world, `rustc -O`, built here in a
//! temporary directory). The commands are alternated in the same run so all
//! see the same machine; the goals are ratios to the minimal exec.
//!
//! `cargo bench -p holdpoint-runner --bench startup`; to compare other
//! builds in the same run, name them:
//! `HOLDPOINT_STARTUP_ALSO=dist=target/dist/holdpoint cargo bench -p holdpoint-runner --bench startup`

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
    // This build, and any others named in HOLDPOINT_STARTUP_ALSO
    // (`NAME=PATH,NAME=PATH`, e.g. the `dist` profile's runner), all
    // alternated in the same run.
    let mut builds: Vec<(String, String)> = vec![("this build".into(), bin.to_string())];
    if let Ok(also) = std::env::var("HOLDPOINT_STARTUP_ALSO") {
        for item in also.split(',').filter(|s| !s.is_empty()) {
            let (name, path) = item
                .split_once('=')
                .unwrap_or_else(|| panic!("HOLDPOINT_STARTUP_ALSO: {item:?} is not NAME=PATH"));
            assert!(
                Path::new(path).is_file(),
                "HOLDPOINT_STARTUP_ALSO: {path} does not exist"
            );
            builds.push((name.to_string(), path.to_string()));
        }
    }
    let bare_argv = ["/bin/sh", "-c", "true"];
    let (mut bare, mut minimal) = (Vec::new(), Vec::new());
    let mut gate: Vec<Vec<Duration>> = vec![Vec::new(); builds.len()];
    let mut audited: Vec<Vec<Duration>> = vec![Vec::new(); builds.len()];
    for round in 0..(20 + RUNS) {
        // The first 20 rounds warm the page cache.
        let keep = round >= 20;
        let b = time(&mut mk(&bare_argv));
        let m = time(&mut mk(&[hello]));
        if keep {
            bare.push(b);
            minimal.push(m);
        }
        for (i, (_, path)) in builds.iter().enumerate() {
            let argv = [path.as_str(), "sh", "-c", "true"];
            let g = time(&mut mk(&argv));
            let a = time(&mut mk_audited(&argv));
            if keep {
                gate[i].push(g);
                audited[i].push(a);
            }
        }
    }
    let (mb, mm) = (median(bare.clone()), median(minimal.clone()));
    let verdict = |ratio: f64, goal: f64| if ratio <= goal { "met" } else { "MISSED" };
    println!("runs: {RUNS} each, alternated");
    let row = |name: &str, m: Duration, v: Vec<Duration>| {
        println!(
            "{name:<32} median {:>7.3} ms  p90 {:>7.3} ms",
            ms(m),
            ms(pct(v, 0.9))
        );
    };
    row("sh -c true", mb, bare);
    row("minimal exec (hello, -O)", mm, minimal);
    for (i, (name, path)) in builds.iter().enumerate() {
        let (mg, ma) = (median(gate[i].clone()), median(audited[i].clone()));
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        println!("\n{name}: {path} ({:.1} MB)", size as f64 / 1e6);
        row("holdpoint sh -c true", mg, gate[i].clone());
        row("  with a bot (spooled)", ma, audited[i].clone());
        let added = ms(mg) - ms(mb);
        let added_bot = ms(ma) - ms(mb);
        let r = added / ms(mm);
        println!(
            "added by the gate               {added:>7.3} ms = {r:.2} minimal execs (goal <= {GOAL_NO_BOT}: {})",
            verdict(r, GOAL_NO_BOT)
        );
        let rb = added_bot / ms(mm);
        println!(
            "  with a bot configured         {added_bot:>7.3} ms = {rb:.2} minimal execs (goal <= {GOAL_WITH_BOT}: {})",
            verdict(rb, GOAL_WITH_BOT)
        );
    }
    let _ = std::fs::remove_dir_all(&home);
}

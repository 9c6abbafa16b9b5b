//! Classification throughput over the repository's corpus with the built-in
//! policy, against a baseline in the same process: parsing the same lines
//! with the shell parser alone.
//!
//! `cargo bench -p holdpoint-shared --bench classify`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use holdpoint_shared::{Context, Policy};
use std::hint::black_box;

#[path = "../tests/support/mod.rs"]
mod support;

fn corpus() -> Vec<String> {
    let mut cmds: Vec<String> = support::own_corpus()
        .into_iter()
        .map(|c| c.command)
        .filter(|c| c.len() < 4096)
        .collect();
    cmds.sort();
    cmds.dedup();
    cmds
}

fn bench(c: &mut Criterion) {
    let policy = Policy::builtin().unwrap_or_else(|e| panic!("{e}"));
    let ctx = Context::fixed();
    let cmds = corpus();
    let everyday: Vec<String> = support::own_corpus()
        .into_iter()
        .filter(|c| c.origin.starts_with("18-everyday"))
        .map(|c| c.command)
        .collect();
    for (set, lines) in [("corpus", &cmds), ("everyday", &everyday)] {
        let mut g = c.benchmark_group(set);
        g.throughput(Throughput::Elements(lines.len().max(1) as u64));
        g.bench_function("classify", |b| {
            b.iter(|| {
                for cmd in lines {
                    black_box(policy.classify(black_box(cmd), &ctx));
                }
            })
        });
        // The baseline in the same process: the shell parser alone.
        g.bench_function("parse_only_baseline", |b| {
            let opts = brush_parser::ParserOptions::default();
            b.iter(|| {
                for cmd in lines {
                    let mut p =
                        brush_parser::Parser::new(std::io::BufReader::new(cmd.as_bytes()), &opts);
                    let _ = black_box(p.parse_program());
                }
            })
        });
        g.finish();
    }
    c.bench_function("load_builtin_policy", |b| {
        b.iter(|| black_box(Policy::builtin()))
    });
    // What one runner process pays: load the policy and classify one
    // command, compiling the rules and toolbox entries it needs on first use.
    let mut g = c.benchmark_group("cold");
    for &cmd in support::COLD_COMMANDS {
        g.bench_function(cmd, |b| {
            b.iter(|| {
                let p = Policy::builtin().unwrap_or_else(|e| panic!("{e}"));
                black_box(p.classify(black_box(cmd), &ctx))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

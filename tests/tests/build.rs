//! The README's quick start is two commands, `cargo run -p holdpoint-bot`
//! and `cargo test --workspace`. Cargo resolves a dependency's features from
//! the packages a command builds, so when the workspace's tests enable a
//! feature the bot alone does not, the second command compiles that crate
//! and everything above it again. This test asks Cargo for both
//! resolutions (metadata only: nothing is built) and says which crates
//! differ.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

/// Each package of the tree with the features Cargo enables on it.
fn resolved(args: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let out = Command::new(cargo)
        .arg("tree")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["--locked", "--offline", "--prefix", "none", "-f", "{p}|{f}"])
        .args(args)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tree: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.replace(" (*)", "");
        let Some((package, features)) = line.split_once('|') else {
            continue;
        };
        tree.entry(package.trim().to_string()).or_default().extend(
            features
                .split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(str::to_string),
        );
    }
    tree
}

#[test]
fn the_quick_starts_two_commands_resolve_every_shared_crate_the_same() {
    let bot = resolved(&["-p", "holdpoint-bot", "-e", "normal,build"]);
    let workspace = resolved(&["--workspace", "-e", "normal,build,dev"]);
    assert!(
        bot.len() > 100,
        "the bot's tree was read: {} crates",
        bot.len()
    );
    let differ: Vec<String> = bot
        .iter()
        .filter_map(|(package, features)| {
            let all = workspace.get(package)?;
            (all != features).then(|| {
                format!(
                    "{package}: the workspace also enables {:?}",
                    all.difference(features).collect::<Vec<_>>()
                )
            })
        })
        .collect();
    assert!(
        differ.is_empty(),
        "`cargo test --workspace` would compile these again after `cargo run -p holdpoint-bot`; \
         enable the same features in bot/Cargo.toml:\n{}",
        differ.join("\n")
    );
}

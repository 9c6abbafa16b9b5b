//! Where the workspace's binaries are.

use std::path::{Path, PathBuf};

/// The folder cargo builds this test's binaries into (`target/<profile>`):
/// the test executable lives in its `deps/` (or right in it, for a bench
/// run by path). It follows `CARGO_TARGET_DIR` and any checkout location,
/// since it asks only where the running executable is.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    exe.parent()
        .map(|d| {
            if d.ends_with("deps") {
                d.parent().unwrap_or(d)
            } else {
                d
            }
        })
        .map(Path::to_path_buf)
        .expect("the test binary lives in target/<profile>/deps")
}

/// The workspace binary `name` (`holdpoint-bot`, `holdpoint`) next to this
/// test. A package's own tests can pass `env!("CARGO_BIN_EXE_…")` to
/// [`crate::BotOptions::bin`] instead.
pub fn bin(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo test --workspace` (or `cargo build --workspace`) first",
        p.display()
    );
    p
}

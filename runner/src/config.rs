//! Where the runner's policy comes from.
//!
//! The built-in default policy always applies. A user policy file is layered
//! over it when one is named by `--policy`, by `HOLDPOINT_POLICY`, or exists
//! at `$XDG_CONFIG_HOME/holdpoint/policy.toml` (default
//! `~/.config/holdpoint/policy.toml`). A named file that cannot be read or
//! does not load is an error, never a silent fallback to the default.

use anyhow::{Context as _, Result};
use holdpoint_shared::{Policy, PolicyFile};
use std::path::{Path, PathBuf};

/// The user policy file in effect, if any: the explicit path, then
/// `HOLDPOINT_POLICY`, then the XDG path if that file exists.
pub fn user_policy_path(explicit: Option<&Path>) -> Option<(PathBuf, bool)> {
    if let Some(p) = explicit {
        return Some((p.to_path_buf(), true));
    }
    if let Some(p) = std::env::var_os("HOLDPOINT_POLICY").filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(p), true));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let p = base.join("holdpoint").join("policy.toml");
    p.is_file().then_some((p, false))
}

/// Loads the effective policy.
pub fn load_policy(explicit: Option<&Path>) -> Result<Policy> {
    match user_policy_path(explicit) {
        None => Ok(Policy::builtin()?),
        Some((path, _)) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read policy file {}", path.display()))?;
            let origin = path.display().to_string();
            let file = PolicyFile::parse(&text, &origin)?;
            Ok(Policy::with_user(file, &origin)?)
        }
    }
}

//! Where a command runs: the working directory, home, temp directories and the
//! environment variables the gate may use to resolve words statically.

use std::collections::HashMap;

/// What the front end found when it looked, before classification, at the
/// components of a path a deletion names (`lstat` of each, bounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathCheck {
    /// No component is a link that leads out of the working tree (or the
    /// temp directory the path is in).
    Stays,
    /// A component is a link that leads out of it: deleting through the
    /// path deletes something elsewhere.
    Leaves,
}

/// The facts about the caller that classification may use. Nothing here is
/// read from the machine during classification: the caller builds it once.
#[derive(Debug, Clone)]
pub struct Context {
    /// The directory the command starts in (absolute), when known.
    pub cwd: Option<String>,
    /// The home directory of the user the command runs as.
    pub home: String,
    /// Environment variables visible to the command. A variable that is not
    /// here is treated as unknown (never as empty).
    pub env: HashMap<String, String>,
    /// The root of the project the working directory belongs to, when the
    /// front end found one (a directory with `.git` or a project manifest,
    /// at or above the working directory). Without it, in-tree clean-up is
    /// never allowed at once.
    pub project: Option<String>,
    /// Paths named by deletions (absolute, normalised, exactly as
    /// classification resolves them; see `Policy::deletion_paths`) and what
    /// the front end found about their links. A path that is not here was
    /// not looked at, and counts as neither.
    pub links: HashMap<String, PathCheck>,
}

/// Directories where deleting or overwriting is everyday work.
const TEMP_DIRS: &[&str] = &["/tmp", "/var/tmp", "/dev/shm"];

/// A working directory that is one of these (or below the ones marked as
/// trees) is not a project working tree: relative paths there are treated as
/// outside the working tree.
const NOT_A_WORKTREE: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/mnt", "/media", "/opt",
    "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/usr", "/var", "/var/lib", "/var/log",
];
const NOT_A_WORKTREE_TREES: &[&str] = &[
    "/etc/",
    "/usr/",
    "/boot/",
    "/proc/",
    "/sys/",
    "/dev/",
    "/var/lib/",
    "/var/backups/",
    "/var/log/",
    "/bin/",
    "/sbin/",
];

impl Context {
    /// The context of the current process: its working directory, `HOME` and
    /// environment.
    pub fn from_process() -> Context {
        let env: HashMap<String, String> = std::env::vars().collect();
        let home = env
            .get("HOME")
            .cloned()
            .filter(|h| h.starts_with('/'))
            .unwrap_or_else(|| "/root".to_string());
        let cwd = std::env::current_dir()
            .ok()
            .and_then(|p| p.to_str().map(str::to_string));
        Context {
            cwd,
            home,
            env,
            project: None,
            links: HashMap::new(),
        }
    }

    /// A fixed context for tests and examples: cwd `/home/dev/project`,
    /// home `/home/dev`, `TMPDIR=/tmp`, and nothing else in the environment.
    pub fn fixed() -> Context {
        let mut env = HashMap::new();
        env.insert("HOME".to_string(), "/home/dev".to_string());
        env.insert("TMPDIR".to_string(), "/tmp".to_string());
        env.insert("USER".to_string(), "dev".to_string());
        Context {
            cwd: Some("/home/dev/project".to_string()),
            home: "/home/dev".to_string(),
            env,
            project: None,
            links: HashMap::new(),
        }
    }

    /// The fixed context inside a project rooted at its working directory,
    /// as a front end would find it on the example file system: no links
    /// but one, `/home/dev/project/linked`, which leads to `/var/backups`.
    /// Every path in `named` is recorded as [`PathCheck::Leaves`] when it
    /// goes through that link and [`PathCheck::Stays`] otherwise. Rule
    /// examples and the corpus use it, with the paths from
    /// `Policy::deletion_paths`.
    pub fn fixed_project(named: impl IntoIterator<Item = String>) -> Context {
        const LINK: &str = "/home/dev/project/linked";
        let mut c = Context::fixed();
        c.project = c.cwd.clone();
        c.links = named
            .into_iter()
            .map(|p| {
                let found = if is_within(&p, LINK) {
                    PathCheck::Leaves
                } else {
                    PathCheck::Stays
                };
                (p, found)
            })
            .collect();
        c
    }

    /// Replaces the working directory.
    pub fn with_cwd(mut self, cwd: impl Into<String>) -> Context {
        let cwd = cwd.into();
        self.cwd = if cwd.starts_with('/') {
            Some(normalize(&cwd))
        } else {
            None
        };
        self
    }

    /// The working tree, if the working directory is a place where project
    /// work happens (not `/`, not home, not a system or data directory).
    pub fn worktree_of(&self, cwd: Option<&str>) -> Option<String> {
        let cwd = cwd?;
        if cwd == self.home.trim_end_matches('/') || NOT_A_WORKTREE.contains(&cwd) {
            return None;
        }
        let with_slash = format!("{cwd}/");
        if NOT_A_WORKTREE_TREES
            .iter()
            .any(|t| with_slash.starts_with(t))
        {
            return None;
        }
        Some(cwd.to_string())
    }

    /// The temp directories for this context (`/tmp`, `/var/tmp`, `$TMPDIR`).
    pub fn temp_dirs(&self) -> Vec<String> {
        let mut dirs: Vec<String> = TEMP_DIRS.iter().map(|s| s.to_string()).collect();
        if let Some(t) = self.env.get("TMPDIR") {
            let t = normalize(t);
            if t.starts_with('/') && t != "/" && !dirs.contains(&t) {
                dirs.push(t);
            }
        }
        dirs
    }
}

/// Lexical normalisation of an absolute path: `.` and `..` resolved, repeated
/// and trailing slashes removed. Symlinks are not followed.
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        return "/".to_string();
    }
    let mut out = String::with_capacity(path.len());
    for p in parts {
        out.push('/');
        out.push_str(p);
    }
    out
}

/// Whether `path` is `dir` or below it (both normalised, absolute).
pub fn is_within(path: &str, dir: &str) -> bool {
    if dir == "/" {
        return true;
    }
    path == dir
        || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_resolves_dots() {
        assert_eq!(normalize("/a/./b/../c//"), "/a/c");
        assert_eq!(normalize("/.."), "/");
        assert_eq!(normalize("/home/dev/project/../../.."), "/");
    }

    #[test]
    fn within() {
        assert!(is_within("/tmp/x", "/tmp"));
        assert!(is_within("/tmp", "/tmp"));
        assert!(!is_within("/tmpx", "/tmp"));
    }

    #[test]
    fn home_and_system_dirs_are_not_worktrees() {
        let c = Context::fixed();
        assert_eq!(c.worktree_of(Some("/home/dev")), None);
        assert_eq!(c.worktree_of(Some("/")), None);
        assert_eq!(c.worktree_of(Some("/var/backups/pg_dump")), None);
        assert_eq!(
            c.worktree_of(Some("/home/dev/project")).as_deref(),
            Some("/home/dev/project")
        );
    }
}

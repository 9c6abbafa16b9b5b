//! What a front end finds on the file system before it classifies a line:
//! the project the working directory belongs to, and whether the paths the
//! line deletes go through links that lead out of the working tree. The
//! facts go into the [`Context`]; classification itself reads no file.

use holdpoint_shared::context::{PathCheck, is_within, normalize};
use holdpoint_shared::{Context, Policy};
use std::collections::VecDeque;
use std::path::Path;

/// Files whose presence makes a directory a project root.
const MARKERS: &[&str] = &[
    ".git",
    "Cargo.toml",
    "package.json",
    "pyproject.toml",
    "setup.py",
    "go.mod",
    "pom.xml",
    "build.gradle",
    "build.gradle.kts",
    "Makefile",
    "CMakeLists.txt",
    "Gemfile",
    "composer.json",
    "mix.exs",
    "deno.json",
];

/// How many directories above the working directory are looked at.
const MAX_LEVELS: usize = 32;
/// How many components of one path are looked at.
const MAX_COMPONENTS: usize = 64;
/// How many links one path may go through.
const MAX_LINKS: usize = 16;

/// Words a deletion's program contains; a line with none of them deletes
/// nothing these facts are for.
const DELETER_WORDS: &[&str] = &["rm", "unlink", "shred", "find"];

/// Fills in `ctx.project` and `ctx.links` for `line`. Only a line that
/// deletes something costs more than a substring scan: the facts serve
/// the clean-up and link rules alone, and without them those rules allow
/// nothing (they fail closed), so skipping them never loosens a verdict.
pub fn establish(ctx: &mut Context, policy: &Policy, line: &str) {
    ctx.links.clear();
    if !DELETER_WORDS.iter().any(|w| line.contains(w)) {
        return;
    }
    let paths = policy.deletion_paths(line, ctx);
    if paths.is_empty() {
        return;
    }
    if ctx.project.is_none() {
        ctx.project = project_root(ctx);
    }
    // The places a deletion may stay inside: the temp directories, the
    // working tree and the project around it.
    let mut zones: Vec<String> = ctx.temp_dirs();
    zones.extend(ctx.worktree_of(ctx.cwd.as_deref()));
    zones.extend(ctx.project.clone());
    for p in paths {
        // The innermost zone the path is lexically in.
        let Some(zone) = zones
            .iter()
            .filter(|z| is_within(&p, z))
            .max_by_key(|z| z.len())
        else {
            continue;
        };
        if let Some(found) = check_path(zone, &p) {
            ctx.links.insert(p, found);
        }
    }
}

/// The nearest directory at or above the working directory that holds a
/// project marker and is a working tree (not `/`, home or a system
/// directory).
pub fn project_root(ctx: &Context) -> Option<String> {
    let cwd = ctx.cwd.as_deref()?;
    ctx.worktree_of(Some(cwd))?;
    let mut dir = normalize(cwd);
    for _ in 0..MAX_LEVELS {
        ctx.worktree_of(Some(&dir))?;
        if MARKERS
            .iter()
            .any(|m| std::fs::symlink_metadata(Path::new(&dir).join(m)).is_ok())
        {
            return Some(dir);
        }
        let parent = normalize(&format!("{dir}/.."));
        if parent == dir {
            return None;
        }
        dir = parent;
    }
    None
}

fn wild(component: &str) -> bool {
    component.contains(['*', '?', '[']) || component == "{}"
}

/// Walks `path` from `zone` one component at a time with `lstat`,
/// following links, and says whether it stays inside the zone. `None`: the
/// walk could not tell (a pattern before the last component, too many
/// components or links, an error other than "not there").
pub fn check_path(zone: &str, path: &str) -> Option<PathCheck> {
    let real = std::fs::canonicalize(zone).ok()?;
    let real = real.to_str()?.to_string();
    let rel = path.strip_prefix(zone)?;
    let mut comps: VecDeque<String> = rel
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    if comps.len() > MAX_COMPONENTS {
        return None;
    }
    // A pattern in the last place stands for names in the directory before
    // it; the shell does not follow links to find them, and `rm` does not
    // follow the link it deletes. Anywhere else it may walk through one.
    if let Some(last) = comps.back()
        && wild(last)
    {
        comps.pop_back();
    }
    if comps.iter().any(|c| wild(c)) {
        return None;
    }
    let mut cur = real.clone();
    let mut links = 0;
    let mut steps = 0;
    while let Some(c) = comps.pop_front() {
        steps += 1;
        if steps > MAX_COMPONENTS * 4 {
            return None;
        }
        let next = normalize(&format!("{cur}/{c}"));
        if !is_within(&next, &real) {
            return Some(PathCheck::Leaves);
        }
        let meta = match std::fs::symlink_metadata(&next) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(PathCheck::Stays),
            Err(_) => return None,
        };
        if !meta.file_type().is_symlink() {
            cur = next;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return None;
        }
        let target = std::fs::read_link(&next).ok()?;
        let target = target.to_str()?;
        let resolved = if target.starts_with('/') {
            normalize(target)
        } else {
            normalize(&format!("{cur}/{target}"))
        };
        if !is_within(&resolved, &real) {
            return Some(PathCheck::Leaves);
        }
        // Walk the target again from the zone: its own components may be
        // links too.
        let mut again: VecDeque<String> = resolved[real.len()..]
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        again.extend(comps);
        comps = again;
        cur = real.clone();
    }
    Some(PathCheck::Stays)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn temp() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "holdpoint-project-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        d
    }

    #[test]
    fn a_link_out_of_the_tree_is_found() {
        let d = temp();
        let outside = d.join("elsewhere");
        let tree = d.join("tree");
        std::fs::create_dir_all(&outside).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(tree.join("target")).unwrap_or_else(|e| panic!("{e}"));
        symlink(&outside, tree.join("build")).unwrap_or_else(|e| panic!("{e}"));
        symlink("target", tree.join("inner")).unwrap_or_else(|e| panic!("{e}"));
        let zone = tree.to_str().unwrap_or_default().to_string();
        let at = |p: &str| check_path(&zone, &format!("{zone}/{p}"));
        assert_eq!(at("build/*"), Some(PathCheck::Leaves));
        assert_eq!(at("build"), Some(PathCheck::Leaves));
        assert_eq!(at("build/x/y"), Some(PathCheck::Leaves));
        assert_eq!(at("target"), Some(PathCheck::Stays));
        assert_eq!(at("inner/*"), Some(PathCheck::Stays));
        assert_eq!(at("*.o"), Some(PathCheck::Stays));
        assert_eq!(at("missing/dir"), Some(PathCheck::Stays));
        assert_eq!(at("*/cache"), None);
        let _ = std::fs::remove_dir_all(&d);
    }
}

//! Matching one invocation against one rule's conditions.

use super::glob::Glob;
use super::{MatchSpec, PathScope, ProgramSpec};
use crate::context::{Context, is_within, normalize};
use crate::shell::{Invocation, UNKNOWN};

/// An invocation's words split into flags and positionals, using the
/// program's option spec.
#[derive(Debug)]
pub struct ParsedArgs {
    /// `(flag, value)`: `-f`, `--force`, `--output=x` → (`--output`, `x`).
    pub flags: Vec<(String, Option<usize>, Option<String>)>,
    /// Indices into the invocation's args.
    pub positionals: Vec<usize>,
    /// Some word is wholly unknown and could be any flag.
    pub unknown_word: bool,
}

impl ParsedArgs {
    pub fn new(inv: &Invocation, spec: &ProgramSpec) -> ParsedArgs {
        let args = &inv.args;
        let mut flags = Vec::new();
        let mut positionals = Vec::new();
        let mut unknown_word = false;
        let takes_value = |f: &str| spec.value_options.iter().any(|v| v == f);
        let mut i = 0;
        let mut only_positional = false;
        while i < args.len() {
            let w = &args[i];
            let t = w.text.as_str();
            if w.dynamic && t.starts_with(UNKNOWN) {
                unknown_word = true;
            }
            if only_positional || !t.starts_with('-') || t == "-" {
                positionals.push(i);
                i += 1;
                continue;
            }
            if t == "--" {
                only_positional = true;
                flags.push(("--".to_string(), None, None));
                i += 1;
                continue;
            }
            if let Some(long) = t.strip_prefix("--") {
                if let Some((name, value)) = long.split_once('=') {
                    flags.push((format!("--{name}"), Some(i), Some(value.to_string())));
                    i += 1;
                } else if takes_value(t) && i + 1 < args.len() {
                    flags.push((t.to_string(), Some(i + 1), Some(args[i + 1].text.clone())));
                    i += 2;
                } else {
                    flags.push((t.to_string(), None, None));
                    i += 1;
                }
                continue;
            }
            // Single dash.
            if spec.single_dash_long || takes_value(t) {
                if takes_value(t) && i + 1 < args.len() {
                    flags.push((t.to_string(), Some(i + 1), Some(args[i + 1].text.clone())));
                    i += 2;
                } else {
                    flags.push((t.to_string(), None, None));
                    i += 1;
                }
                continue;
            }
            if let Some((name, value)) = t.split_once('=')
                && takes_value(name)
            {
                flags.push((name.to_string(), Some(i), Some(value.to_string())));
                i += 1;
                continue;
            }
            let body = &t[1..];
            if body.bytes().all(|b| b.is_ascii_digit()) {
                flags.push((t.to_string(), None, None));
                i += 1;
                continue;
            }
            let mut consumed_next = false;
            for (k, c) in body.char_indices() {
                let f = format!("-{c}");
                if takes_value(&f) {
                    let rest = &body[k + c.len_utf8()..];
                    if !rest.is_empty() {
                        flags.push((f, Some(i), Some(rest.trim_start_matches('=').to_string())));
                    } else if i + 1 < args.len() {
                        flags.push((f, Some(i + 1), Some(args[i + 1].text.clone())));
                        consumed_next = true;
                    } else {
                        flags.push((f, None, None));
                    }
                    break;
                }
                flags.push((f, None, None));
            }
            i += if consumed_next { 2 } else { 1 };
        }
        ParsedArgs {
            flags,
            positionals,
            unknown_word,
        }
    }
}

#[derive(Debug, Clone)]
struct PathSet {
    include: Vec<Glob>,
    exclude: Vec<Glob>,
}

impl PathSet {
    fn matches(&self, abs: &str, home: &str) -> bool {
        let tilde = home_form(abs, home);
        let hit = |g: &Glob| g.matches(abs) || tilde.as_deref().is_some_and(|t| g.matches(t));
        self.include.iter().any(hit) && !self.exclude.iter().any(hit)
    }
}

fn home_form(abs: &str, home: &str) -> Option<String> {
    let home = home.trim_end_matches('/');
    if home.is_empty() {
        return None;
    }
    if abs == home {
        return Some("~".to_string());
    }
    abs.strip_prefix(home)
        .filter(|r| r.starts_with('/'))
        .map(|r| format!("~{r}"))
}

/// A rule's conditions, compiled.
#[derive(Debug, Clone)]
pub struct Matcher {
    subcommand: Vec<Vec<Glob>>,
    any_flag: Vec<String>,
    all_flags: Vec<Vec<String>>,
    no_flag: Vec<String>,
    flag_value: Vec<(String, Vec<Glob>)>,
    any_arg: Vec<Glob>,
    any_value: Vec<Glob>,
    any_path: Option<PathSet>,
    paths: Option<PathScope>,
    dynamic_path: bool,
    no_args: bool,
    bare: bool,
    via: Vec<String>,
    /// The rule reviews or denies: a word the gate cannot see is assumed to
    /// be whatever flag makes the rule fire. For allow rules, the opposite.
    strict: bool,
}

fn globs(list: &[String], path: bool, nocase: bool) -> Result<Vec<Glob>, String> {
    list.iter().map(|p| Glob::new(p, path, nocase)).collect()
}

impl Matcher {
    pub fn compile(s: &MatchSpec, strict: bool) -> Result<Matcher, String> {
        if s.program.is_empty() {
            return Err("`program` must name at least one program (or `*`)".into());
        }
        let subcommand = s
            .subcommand
            .iter()
            .map(|alt| {
                alt.split_whitespace()
                    .map(|p| Glob::new(p, false, s.nocase))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        for f in s.any_flag.iter().chain(&s.no_flag) {
            if !f.starts_with('-') && !f.starts_with('+') {
                return Err(format!("flag `{f}` must start with `-`"));
            }
        }
        let any_path = if s.any_path.is_empty() {
            None
        } else {
            let (ex, inc): (Vec<&String>, Vec<&String>) =
                s.any_path.iter().partition(|p| p.starts_with('!'));
            Some(PathSet {
                include: inc
                    .iter()
                    .map(|p| Glob::new(p, true, false))
                    .collect::<Result<_, _>>()?,
                exclude: ex
                    .iter()
                    .map(|p| Glob::new(&p[1..], true, false))
                    .collect::<Result<_, _>>()?,
            })
        };
        Ok(Matcher {
            subcommand,
            any_flag: s.any_flag.clone(),
            all_flags: s
                .all_flags
                .iter()
                .map(|g| g.split('|').map(str::to_string).collect())
                .collect(),
            no_flag: s.no_flag.clone(),
            flag_value: s
                .flag_value
                .iter()
                .map(|(k, v)| Ok((k.clone(), globs(v, false, s.nocase)?)))
                .collect::<Result<_, String>>()?,
            any_arg: globs(&s.any_arg, false, s.nocase)?,
            any_value: globs(&s.any_value, false, s.nocase)?,
            any_path,
            paths: s.paths,
            dynamic_path: s.dynamic_path,
            no_args: s.no_args,
            bare: s.bare,
            via: s.via.clone(),
            strict,
        })
    }

    pub fn matches(&self, inv: &Invocation, p: &ParsedArgs, ctx: &Context) -> bool {
        if !self.via.is_empty() && !inv.via.iter().any(|v| self.via.contains(v)) {
            return false;
        }
        // Subcommand: the leading positionals.
        let mut skip = 0;
        if !self.subcommand.is_empty() {
            let found = self.subcommand.iter().find(|path| {
                path.len() <= p.positionals.len()
                    && path
                        .iter()
                        .zip(&p.positionals)
                        .all(|(g, &i)| !inv.args[i].dynamic && g.matches(&inv.args[i].text))
            });
            match found {
                Some(path) => skip = path.len(),
                None => return false,
            }
        }
        let rest = &p.positionals[skip.min(p.positionals.len())..];
        if self.no_args && !rest.is_empty() {
            return false;
        }
        if self.bare && (!rest.is_empty() || !p.flags.is_empty() || p.unknown_word) {
            return false;
        }
        let strict = self.strict;
        if !self.any_flag.is_empty() && !self.any_flag.iter().any(|f| has_flag(p, f, strict)) {
            return false;
        }
        for group in &self.all_flags {
            if !group.iter().any(|f| has_flag(p, f, strict)) {
                return false;
            }
        }
        if self.no_flag.iter().any(|f| has_flag(p, f, !strict)) {
            return false;
        }
        if !self.flag_value.is_empty() {
            let ok = self.flag_value.iter().any(|(name, gs)| {
                p.flags.iter().any(|(f, _, v)| {
                    flag_is(f, name) && v.as_deref().is_some_and(|v| gs.iter().any(|g| g.matches(v)))
                })
            });
            if !ok {
                return false;
            }
        }
        if !self.any_arg.is_empty()
            && !rest.iter().any(|&i| {
                let w = &inv.args[i];
                !w.dynamic && self.any_arg.iter().any(|g| g.matches(&w.text))
            })
        {
            return false;
        }
        if !self.any_value.is_empty() {
            let positional = p.positionals.iter().map(|&i| inv.args[i].text.as_str());
            let values = p.flags.iter().filter_map(|(_, _, v)| v.as_deref());
            let mut all = positional.chain(values);
            if !all.any(|v| self.any_value.iter().any(|g| g.matches(v))) {
                return false;
            }
        }
        if self.any_path.is_some() || self.paths.is_some() || self.dynamic_path {
            let cands = path_candidates(inv, p, rest, self.paths.is_some());
            if let Some(set) = &self.any_path {
                let hit = cands.iter().any(|(text, dynamic)| {
                    !dynamic
                        && resolve(text, inv.cwd.as_deref())
                            .is_some_and(|abs| set.matches(&abs, &ctx.home))
                });
                if !hit {
                    return false;
                }
            }
            if self.dynamic_path && !cands.iter().any(|(_, d)| *d) {
                return false;
            }
            match self.paths {
                Some(scope @ (PathScope::Outside | PathScope::OutsideOrTree | PathScope::OutsideTemp)) => {
                    let tree_inside = scope == PathScope::Outside;
                    let temp = ctx.temp_dirs();
                    let none_named = scope != PathScope::Outside && cands.is_empty();
                    let outside = none_named
                        || cands.iter().any(|(text, dynamic)| {
                            *dynamic
                                || match resolve(text, inv.cwd.as_deref()) {
                                    Some(abs) if scope == PathScope::OutsideTemp => {
                                        !temp.iter().any(|t| is_within(&abs, t) && abs != *t)
                                    }
                                    Some(abs) => !inside(&abs, inv.cwd.as_deref(), ctx, tree_inside),
                                    None => true,
                                }
                        });
                    if !outside {
                        return false;
                    }
                }
                Some(PathScope::Inside) => {
                    let all_inside = !cands.is_empty()
                        && cands.iter().all(|(text, dynamic)| {
                            !dynamic
                                && resolve(text, inv.cwd.as_deref())
                                    .is_some_and(|abs| inside(&abs, inv.cwd.as_deref(), ctx, true))
                        });
                    if !all_inside {
                        return false;
                    }
                }
                None => {}
            }
        }
        true
    }
}

/// Inside the working tree or a temp dir; the tree and temp dirs themselves
/// count only when `roots` is true.
fn inside(abs: &str, cwd: Option<&str>, ctx: &Context, roots: bool) -> bool {
    if ctx
        .temp_dirs()
        .iter()
        .any(|t| is_within(abs, t) && (roots || abs != t))
    {
        return true;
    }
    match ctx.worktree_of(cwd) {
        Some(wt) => is_within(abs, &wt) && (roots || abs != wt),
        None => false,
    }
}

fn resolve(text: &str, cwd: Option<&str>) -> Option<String> {
    if text.starts_with('/') {
        return Some(normalize(text));
    }
    cwd.map(|c| normalize(&format!("{c}/{text}")))
}

/// The words that may name files: positionals after the subcommand, values
/// after `=` in positionals (`of=/dev/sda`), `@file` values, and, for scope
/// checks, flag values that look like paths.
fn path_candidates(inv: &Invocation, p: &ParsedArgs, rest: &[usize], flag_paths: bool) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for &i in rest {
        let w = &inv.args[i];
        out.push((w.text.clone(), w.dynamic));
        if let Some((k, v)) = w.text.split_once('=')
            && !k.contains('/')
            && !v.is_empty()
        {
            out.push((v.to_string(), w.dynamic));
        }
        if let Some(v) = w.text.strip_prefix('@') {
            out.push((v.to_string(), w.dynamic));
        }
    }
    for (_, idx, v) in &p.flags {
        let Some(v) = v else { continue };
        let dynamic = idx.is_some_and(|i| inv.args[i].dynamic);
        if let Some(f) = v.strip_prefix('@') {
            out.push((f.to_string(), dynamic));
        } else if flag_paths && (v.starts_with('/') || v.starts_with("./") || v.starts_with("../")) {
            out.push((v.clone(), dynamic));
        }
    }
    out
}

/// Whether `given` (as written on the command line) is the flag `rule`,
/// counting unambiguous long-option prefixes (`--forc` for `--force`).
fn flag_is(given: &str, rule: &str) -> bool {
    if given == rule {
        return true;
    }
    given.len() >= 5 && rule.starts_with("--") && given.starts_with("--") && rule.starts_with(given)
}

/// Whether the flag is given; a word the gate cannot see counts as the flag
/// when `assume_unknown` is set.
fn has_flag(p: &ParsedArgs, rule: &str, assume_unknown: bool) -> bool {
    (assume_unknown && p.unknown_word) || p.flags.iter().any(|(f, _, _)| flag_is(f, rule))
}

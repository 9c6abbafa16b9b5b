//! Matching one invocation against one rule's conditions.

use super::glob::Glob;
use super::toolbox::Tool;
use super::{MatchSpec, PathScope, ProgramSpec};
use crate::context::{Context, PathCheck, is_within, normalize};
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
    /// Path candidates of the whole invocation (no subcommand skipped),
    /// resolved once and shared by every rule.
    all_paths: std::cell::OnceCell<Vec<Cand>>,
}

impl ParsedArgs {
    /// Splits the words with the program's spec and, where it has one, the
    /// top level of its toolbox entry (which options take a value).
    pub fn new(inv: &Invocation, spec: &ProgramSpec, tool: Option<&Tool>) -> ParsedArgs {
        let args = &inv.args;
        let mut flags = Vec::new();
        let mut positionals = Vec::new();
        let mut unknown_word = false;
        let takes_value = |f: &str| {
            spec.value_options.iter().any(|v| v == f) || tool.is_some_and(|t| t.takes_value(f))
        };
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
            // Single dash; `-name=value` for programs that spell long
            // options with one dash (`terraform plan -replace=x`).
            if spec.single_dash_long
                && let Some((name, value)) = t.split_once('=')
            {
                flags.push((name.to_string(), Some(i), Some(value.to_string())));
                i += 1;
                continue;
            }
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
            all_paths: std::cell::OnceCell::new(),
        }
    }
}

/// A rule's `any_path`: built-in named sets (shared by every rule that
/// names them) and its own globs. Each glob is compiled the first time a
/// path passes its literal prefix and suffix, so a command whose paths are
/// nowhere near a credential compiles none of the inventory.
#[derive(Debug, Clone)]
struct Paths {
    sets: Vec<usize>,
    own: Vec<String>,
    compiled: std::sync::OnceLock<Compiled>,
}

#[derive(Debug, Clone)]
struct Compiled {
    shared: Vec<&'static PathSet>,
    own: Option<PathSet>,
}

impl Compiled {
    fn any(&self, mut f: impl FnMut(&PathSet) -> bool) -> bool {
        self.shared.iter().any(|s| f(s)) || self.own.as_ref().is_some_and(f)
    }

    /// As if the sets and the rule's own globs were one list: some include
    /// matches and no exclude does.
    fn matches(&self, abs: &str, tilde: Option<&str>, strict: bool) -> bool {
        self.any(|s| s.includes(abs, tilde, strict))
            && !self.any(|s| s.excludes(abs, tilde, strict))
    }

    /// For a word that is itself a glob (`~/.a?s/cred*`): whether some path
    /// it could expand to is in the set. Excludes apply when they cover the
    /// whole pattern.
    fn may_match(&self, abs_pattern: &str, home: &str, strict: bool) -> bool {
        let tilde = home_form(abs_pattern, home);
        let forms: Vec<&str> = std::iter::once(abs_pattern)
            .chain(tilde.as_deref())
            .collect();
        self.any(|s| s.may_include(&forms)) && !self.any(|s| s.may_exclude(&forms, strict))
    }
}

/// The built-in sets, one shared value per `[sets]` entry.
static BUILTIN_SET_PATHS: std::sync::OnceLock<Vec<PathSet>> = std::sync::OnceLock::new();

fn builtin_set_index(name: &str) -> Option<usize> {
    super::BUILTIN_SETS.iter().position(|(k, _)| *k == name)
}

fn builtin_set(i: usize) -> Option<&'static PathSet> {
    BUILTIN_SET_PATHS
        .get_or_init(|| {
            super::BUILTIN_SETS
                .iter()
                .map(|(_, items)| PathSet::new(items.iter().map(|s| s.to_string())))
                .collect()
        })
        .get(i)
}

impl Paths {
    fn parts(&self) -> &Compiled {
        self.compiled.get_or_init(|| Compiled {
            shared: self.sets.iter().filter_map(|&i| builtin_set(i)).collect(),
            own: (!self.own.is_empty()).then(|| PathSet::new(self.own.iter().cloned())),
        })
    }

    /// Compiles every glob now (a user's rules, and the tests of the
    /// built-in ones), so a bad glob is reported when the policy loads.
    fn check(&self) -> Result<(), String> {
        let parts = self.parts();
        if parts.shared.len() != self.sets.len() {
            return Err("a named set is missing".into());
        }
        for set in parts.shared.iter().copied().chain(parts.own.as_ref()) {
            for g in set.include.iter().chain(&set.exclude) {
                g.compiled()?;
            }
        }
        Ok(())
    }
}

/// A path glob compiled on first need, with the literal text every match
/// starts and ends with, tested first.
#[derive(Debug, Clone)]
struct LazyGlob {
    raw: String,
    prefix: String,
    suffix: String,
    glob: std::sync::OnceLock<Result<Glob, String>>,
}

impl LazyGlob {
    fn new(raw: &str) -> LazyGlob {
        let (mut prefix, mut suffix) = if raw.contains('\\') {
            (String::new(), String::new())
        } else {
            let first = raw.find(['*', '?', '[']).unwrap_or(raw.len());
            let last = raw
                .rfind(['*', '?', ']'])
                .map(|i| i + 1)
                .unwrap_or(raw.len());
            (raw[..first].to_string(), raw[last.max(first)..].to_string())
        };
        // `dir/**` also matches `dir` itself.
        if prefix.ends_with('/') && prefix.len() > 1 {
            prefix.pop();
        }
        if first_is_whole(raw) {
            suffix.clear();
        }
        LazyGlob {
            raw: raw.to_string(),
            prefix,
            suffix,
            glob: std::sync::OnceLock::new(),
        }
    }

    fn compiled(&self) -> Result<&Glob, String> {
        self.glob
            .get_or_init(|| Glob::new(&self.raw, true, false))
            .as_ref()
            .map_err(|e| e.clone())
    }

    /// Whether the text matches; a glob that cannot be compiled counts as
    /// matching for a rule that reviews or denies, and not for an allow rule.
    fn matches(&self, text: &str, strict: bool) -> bool {
        if !text.starts_with(&self.prefix) || !text.ends_with(&self.suffix) {
            return false;
        }
        match self.compiled() {
            Ok(g) => g.matches(text),
            Err(_) => strict,
        }
    }
}

/// A pattern without wildcards: its prefix is all of it.
fn first_is_whole(raw: &str) -> bool {
    !raw.contains(['*', '?', '['])
}

#[derive(Debug, Clone)]
pub(super) struct PathSet {
    include: Vec<LazyGlob>,
    exclude: Vec<LazyGlob>,
    /// Indices into `include` of patterns written from home (`~/…`): only
    /// the `~/` form of a path can match them; the others only the absolute.
    from_home: Vec<bool>,
    /// Includes by their first literal component (`~/.aws`, `/etc`): a path
    /// is tested only against those sharing its own, and against `rest`.
    by_first: std::collections::HashMap<String, Vec<usize>>,
    rest: Vec<usize>,
}

/// The root and first component of a path or pattern (`~/.aws/x` →
/// `~/.aws`, `/etc/x` → `/etc`), when the text has that component whole.
fn first_component(text: &str) -> Option<&str> {
    let root = if text.starts_with("~/") {
        2
    } else if text.starts_with('/') {
        1
    } else {
        return None;
    };
    let end = text[root..]
        .find('/')
        .map(|i| root + i)
        .unwrap_or(text.len());
    (end > root).then(|| &text[..end])
}

impl PathSet {
    fn new(list: impl Iterator<Item = String>) -> PathSet {
        let (ex, inc): (Vec<String>, Vec<String>) = list.partition(|p| p.starts_with('!'));
        let mut by_first: std::collections::HashMap<String, Vec<usize>> = Default::default();
        let mut rest = Vec::new();
        for (i, p) in inc.iter().enumerate() {
            // Only a component that is literal all the way to its `/` (or
            // to the end of a pattern without wildcards) can index.
            let literal = &p[..p.find(['*', '?', '[', '\\']).unwrap_or(p.len())];
            match first_component(literal) {
                Some(k) if literal.len() > k.len() || literal.len() == p.len() => {
                    by_first.entry(k.to_string()).or_default().push(i)
                }
                _ => rest.push(i),
            }
        }
        PathSet {
            from_home: inc.iter().map(|p| p.starts_with('~')).collect(),
            include: inc.iter().map(|p| LazyGlob::new(p)).collect(),
            exclude: ex.iter().map(|p| LazyGlob::new(&p[1..])).collect(),
            by_first,
            rest,
        }
    }

    fn includes(&self, abs: &str, tilde: Option<&str>, strict: bool) -> bool {
        let test = |i: &usize| {
            let g = &self.include[*i];
            if self.from_home[*i] {
                tilde.is_some_and(|t| g.matches(t, strict))
            } else {
                g.matches(abs, strict)
            }
        };
        let indexed = |text: Option<&str>| {
            text.and_then(first_component)
                .and_then(|k| self.by_first.get(k))
                .is_some_and(|list| list.iter().any(test))
        };
        self.rest.iter().any(test) || indexed(Some(abs)) || indexed(tilde)
    }

    fn excludes(&self, abs: &str, tilde: Option<&str>, strict: bool) -> bool {
        // A broken exclude must not loosen a rule: it excludes only for
        // allow rules.
        let hit =
            |g: &LazyGlob| g.matches(abs, !strict) || tilde.is_some_and(|t| g.matches(t, !strict));
        self.exclude.iter().any(hit)
    }

    /// Whether some path a glob word could expand to meets an include.
    fn may_include(&self, forms: &[&str]) -> bool {
        self.include
            .iter()
            .any(|g| forms.iter().any(|f| patterns_intersect(f, &g.raw)))
    }

    fn may_exclude(&self, forms: &[&str], strict: bool) -> bool {
        self.exclude
            .iter()
            .any(|g| forms.iter().any(|f| g.matches(f, !strict)))
    }
}

/// Matches one path component against a pattern with `*`, `?` and `[…]`
/// (classes taken as any one character), by dynamic programming: quadratic
/// at worst, never exponential, and without building a [`Glob`].
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let mut toks = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        if p[i] == '['
            && let Some(end) = p[i + 1..].iter().position(|&c| c == ']')
        {
            toks.push('?');
            i += end + 2;
            continue;
        }
        toks.push(p[i]);
        i += 1;
    }
    let mut row = vec![false; t.len() + 1];
    row[0] = true;
    for &pc in &toks {
        let mut next = vec![false; t.len() + 1];
        if pc == '*' {
            next[0] = row[0];
            for j in 1..=t.len() {
                next[j] = next[j - 1] || row[j];
            }
        } else {
            for j in 1..=t.len() {
                next[j] = row[j - 1] && (pc == '?' || pc == t[j - 1]);
            }
        }
        row = next;
    }
    row[t.len()]
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Whether two path globs can match a common path, component by component:
/// a literal component must match the other side's glob; two wildcard
/// components are assumed to meet. `**` in the rule spans any number of
/// components. A wildcard at the start of a word's component does not match
/// a leading dot, as in the shell.
fn patterns_intersect(word: &str, rule: &str) -> bool {
    let w: Vec<&str> = word.split('/').filter(|c| !c.is_empty()).collect();
    let r: Vec<&str> = rule.split('/').filter(|c| !c.is_empty()).collect();
    let root_w = word.starts_with('/');
    let root_r = rule.starts_with('/') || rule.starts_with("**");
    if root_w != root_r && !rule.starts_with("**") {
        // `~/…` against `/…`: different forms.
        if !(word.starts_with('~') && rule.starts_with('~')) {
            return false;
        }
    }
    components_meet(&w, &r, rule.starts_with("**"))
}

fn literal_ends(s: &str) -> (&str, &str) {
    let first = s.find(['*', '?', '[']).unwrap_or(s.len());
    let last = s.rfind(['*', '?', ']']).map(|i| i + 1).unwrap_or(0);
    (&s[..first], &s[last.max(first).min(s.len())..])
}

/// Two wildcard components can meet when their literal prefixes and
/// suffixes agree.
fn wild_compatible(a: &str, b: &str) -> bool {
    let (pa, sa) = literal_ends(a);
    let (pb, sb) = literal_ends(b);
    (pa.starts_with(pb) || pb.starts_with(pa)) && (sa.ends_with(sb) || sb.ends_with(sa))
}

/// `anywhere`: the rule began with `**` (a pattern for any directory); a word
/// component with no literal character then does not count as meeting it, so
/// `cat src/*` is not taken for reading `**/id_rsa`.
fn components_meet(w: &[&str], r: &[&str], anywhere: bool) -> bool {
    match (w.first(), r.first()) {
        (_, Some(&"**")) => (0..=w.len()).any(|k| components_meet(&w[k..], &r[1..], anywhere)),
        (None, None) => true,
        // The word names the directory of the rule's tree itself.
        (None, Some(_)) => r.iter().all(|c| *c == "**"),
        (Some(_), None) => false,
        (Some(wc), Some(rc)) => {
            let bare = !wc.chars().any(|c| !matches!(c, '*' | '?' | '.'));
            let meet = match (has_wildcard(wc), has_wildcard(rc)) {
                (false, false) => wc == rc,
                (false, true) => wildcard_match(rc, wc),
                (true, false) => {
                    let hidden = rc.starts_with('.') && !wc.starts_with('.');
                    let skip = hidden || (anywhere && bare);
                    !skip && wildcard_match(wc, rc)
                }
                // Two patterns: for rules about any directory, the word must
                // pin down its ending (`*.pem`), not leave it open (`py*`).
                (true, true) => {
                    !(anywhere && (bare || literal_ends(wc).1.is_empty()))
                        && (!rc.starts_with('.') || wc.starts_with('.'))
                        && wild_compatible(wc, rc)
                }
            };
            meet && components_meet(&w[1..], &r[1..], anywhere)
        }
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
    any_path: Option<Paths>,
    paths: Option<PathScope>,
    dynamic_path: bool,
    no_args: bool,
    bare: bool,
    min_args: usize,
    except_program: Vec<String>,
    via: Vec<String>,
    dry_run: Vec<CompiledDryRun>,
    except_cleanup: Option<Paths>,
    cleanup: Option<Paths>,
    through_link: bool,
    tree_wins: bool,
    /// The rule reviews or denies: a word the gate cannot see is assumed to
    /// be whatever flag makes the rule fire. For allow rules, the opposite.
    strict: bool,
}

/// A `dry_run` entry, compiled.
#[derive(Debug, Clone)]
struct CompiledDryRun {
    program: Vec<String>,
    subcommand: Vec<Vec<Glob>>,
    /// The flag and, when written with `=`, the one value it must have.
    flag: Vec<(String, Option<String>)>,
}

fn subcommand_globs(list: &[String], nocase: bool) -> Result<Vec<Vec<Glob>>, String> {
    list.iter()
        .map(|alt| {
            alt.split_whitespace()
                .map(|p| Glob::new(p, false, nocase))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect()
}

/// The leading positionals match one of the alternatives; the number of
/// words it took.
fn leading(subs: &[Vec<Glob>], inv: &Invocation, p: &ParsedArgs) -> Option<usize> {
    subs.iter()
        .find(|path| {
            path.len() <= p.positionals.len()
                && path
                    .iter()
                    .zip(&p.positionals)
                    .all(|(g, &i)| !inv.args[i].dynamic && g.matches(&inv.args[i].text))
        })
        .map(Vec::len)
}

fn path_list(list: &[String]) -> Result<Option<Paths>, String> {
    if list.is_empty() {
        return Ok(None);
    }
    let mut sets = Vec::new();
    let mut own = Vec::new();
    for p in list {
        match p.strip_prefix("@set:") {
            Some(name) => sets.push(
                builtin_set_index(name)
                    .ok_or_else(|| format!("`@set:{name}` names no built-in set"))?,
            ),
            None => own.push(p.clone()),
        }
    }
    Ok(Some(Paths {
        sets,
        own,
        compiled: std::sync::OnceLock::new(),
    }))
}

impl CompiledDryRun {
    /// Whether the invocation is this dry run. Only what the gate sees
    /// counts: a word it cannot see is never the dry-run flag.
    fn matches(&self, inv: &Invocation, p: &ParsedArgs) -> bool {
        if !self.program.is_empty() && !self.program.contains(&inv.program) {
            return false;
        }
        if !self.subcommand.is_empty() && leading(&self.subcommand, inv, p).is_none() {
            return false;
        }
        let mut past_end = false;
        p.flags.iter().any(|(f, idx, v)| {
            past_end |= f == "--";
            !past_end
                && idx.is_none_or(|i| !inv.args[i].dynamic)
                && self
                    .flag
                    .iter()
                    .any(|(name, value)| f == name && v.as_deref() == value.as_deref())
        })
    }
}

/// The paths an invocation deletes, for the clean-up checks: for `find`
/// with `-delete`, each starting point joined with the one `-name` that
/// narrows it (nothing when the expression is anything more than that);
/// for other programs, the words that may name files.
fn deletion_targets(inv: &Invocation, cands: &[Cand]) -> Option<Vec<String>> {
    if inv.program == "find" {
        return find_targets(inv);
    }
    let mut out = Vec::new();
    for c in cands {
        if c.dynamic || c.dotdot {
            return None;
        }
        out.push(c.abs.clone()?);
    }
    Some(out)
}

/// `find START… -name NAME [-type X] -delete` (or with `-print`, depth
/// and type tests): START/NAME for each start. Anything else (`-o`, `!`,
/// following links, a second name test, `-exec`) names no target.
fn find_targets(inv: &Invocation) -> Option<Vec<String>> {
    let args = &inv.args;
    if args.iter().any(|a| a.dynamic) {
        return None;
    }
    let mut starts = Vec::new();
    let mut i = 0;
    while i < args.len() && !args[i].text.starts_with('-') {
        if args[i].text.split('/').any(|c| c == "..") {
            return None;
        }
        starts.push(args[i].text.as_str());
        i += 1;
    }
    if starts.is_empty() {
        starts.push(".");
    }
    let mut name = None;
    while i < args.len() {
        match args[i].text.as_str() {
            "-name" if name.is_none() => {
                let v = args.get(i + 1)?.text.as_str();
                if v.is_empty() || v.contains('/') {
                    return None;
                }
                name = Some(v);
                i += 2;
            }
            "-type" | "-maxdepth" | "-mindepth" | "-mtime" | "-mmin" => i += 2,
            "-delete" | "-print" | "-depth" | "-xdev" | "-mount" | "-P" | "-empty" => i += 1,
            _ => return None,
        }
    }
    let name = name?;
    let cwd = inv.cwd.as_deref();
    starts
        .iter()
        .map(|s| resolve(&format!("{}/{name}", s.trim_end_matches('/')), cwd))
        .collect()
}

/// Whether every path the invocation deletes is clean-up inside the
/// project: inside the project root and the working tree (never either
/// root itself), matching the set, and looked at by the front end, which
/// found no link leading out of the tree.
fn cleanup_ok(set: &Paths, inv: &Invocation, cands: &[Cand], ctx: &Context) -> bool {
    let Some(root) = ctx.project.as_deref() else {
        return false;
    };
    let Some(wt) = ctx.worktree_of(inv.cwd.as_deref()) else {
        return false;
    };
    let Some(targets) = deletion_targets(inv, cands) else {
        return false;
    };
    let parts = set.parts();
    !targets.is_empty()
        && targets.iter().all(|abs| {
            is_within(abs, root)
                && abs != root
                && is_within(abs, &wt)
                && *abs != wt
                && parts.matches(abs, home_form(abs, &ctx.home).as_deref(), false)
                && ctx.links.get(abs) == Some(&PathCheck::Stays)
        })
}

/// The paths a deletion names, as classification resolves them: what the
/// front end looks at before classifying (see [`Context::links`]).
pub(super) fn deletion_paths(inv: &Invocation, p: &ParsedArgs, home: &str) -> Vec<String> {
    let cands = path_candidates(inv, p, &p.positionals, home);
    let mut out: Vec<String> = cands.iter().filter_map(|c| c.abs.clone()).collect();
    if inv.program == "find"
        && let Some(t) = find_targets(inv)
    {
        out.extend(t);
    }
    out
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
            let mut sets = Vec::new();
            let mut own = Vec::new();
            for p in &s.any_path {
                match p.strip_prefix("@set:") {
                    Some(name) => sets.push(
                        builtin_set_index(name)
                            .ok_or_else(|| format!("`@set:{name}` names no built-in set"))?,
                    ),
                    None => own.push(p.clone()),
                }
            }
            Some(Paths {
                sets,
                own,
                compiled: std::sync::OnceLock::new(),
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
            min_args: s.min_args,
            except_program: s.except_program.clone(),
            via: s.via.clone(),
            dry_run: s
                .dry_run
                .iter()
                .map(|d| {
                    Ok(CompiledDryRun {
                        program: d.program.clone(),
                        subcommand: subcommand_globs(&d.subcommand, s.nocase)?,
                        flag: d
                            .flag
                            .iter()
                            .map(|f| match f.split_once('=') {
                                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                                None => (f.clone(), None),
                            })
                            .collect(),
                    })
                })
                .collect::<Result<_, String>>()?,
            except_cleanup: path_list(&s.except_cleanup)?,
            cleanup: path_list(&s.cleanup)?,
            through_link: s.through_link,
            tree_wins: s.tree_wins,
            strict,
        })
    }

    /// Compiles what is compiled on first use (the path globs), so that a
    /// bad glob in a user's rule is reported when the policy loads.
    pub fn check(&self) -> Result<(), String> {
        for p in [&self.any_path, &self.except_cleanup, &self.cleanup]
            .into_iter()
            .flatten()
        {
            p.check()?;
        }
        Ok(())
    }

    /// Whether the rule fires. For a deny rule that fires only because a
    /// word the gate cannot see was assumed to match, the caller asks again
    /// with [`Matcher::matches_seen`] and downgrades the hit to review.
    pub fn matches(&self, inv: &Invocation, p: &ParsedArgs, ctx: &Context) -> bool {
        self.matches_with(inv, p, ctx, self.strict)
    }

    /// Matches using only what the gate can see: unknown words match no flag.
    pub fn matches_seen(&self, inv: &Invocation, p: &ParsedArgs, ctx: &Context) -> bool {
        self.matches_with(inv, p, ctx, false)
    }

    fn matches_with(&self, inv: &Invocation, p: &ParsedArgs, ctx: &Context, assume: bool) -> bool {
        if !self.via.is_empty() && !inv.via.iter().any(|v| self.via.contains(v)) {
            return false;
        }
        if self.except_program.contains(&inv.program) {
            return false;
        }
        if self.dry_run.iter().any(|d| d.matches(inv, p)) {
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
        if rest.len() < self.min_args {
            return false;
        }
        if self.bare && (!rest.is_empty() || !p.flags.is_empty() || p.unknown_word) {
            return false;
        }
        let strict = assume;
        if !self.any_flag.is_empty() && !self.any_flag.iter().any(|f| has_flag(p, f, strict)) {
            return false;
        }
        for group in &self.all_flags {
            if !group.iter().any(|f| has_flag(p, f, strict)) {
                return false;
            }
        }
        if self.no_flag.iter().any(|f| has_flag(p, f, !self.strict)) {
            return false;
        }
        if !self.flag_value.is_empty() {
            let ok = self.flag_value.iter().any(|(name, gs)| {
                p.flags.iter().any(|(f, _, v)| {
                    flag_is(f, name)
                        && v.as_deref().is_some_and(|v| {
                            gs.iter().any(|g| {
                                g.matches(v)
                                    || (self.strict && has_wildcard(v) && value_globs_meet(v, g))
                            })
                        })
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
        if self.any_path.is_some()
            || self.paths.is_some()
            || self.dynamic_path
            || self.except_cleanup.is_some()
            || self.cleanup.is_some()
            || self.through_link
        {
            let owned;
            let cands: &[Cand] = if skip == 0 {
                p.all_paths
                    .get_or_init(|| path_candidates(inv, p, rest, &ctx.home))
            } else {
                owned = path_candidates(inv, p, rest, &ctx.home);
                &owned
            };
            if let Some(paths) = &self.any_path
                && !cands.is_empty()
            {
                let strict = self.strict;
                let parts = paths.parts();
                let tree = self
                    .tree_wins
                    .then(|| ctx.worktree_of(inv.cwd.as_deref()))
                    .flatten();
                let hit = cands.iter().any(|c| {
                    !c.dynamic
                        && c.abs
                            .as_deref()
                            .is_some_and(|abs| tree.as_deref().is_none_or(|wt| !is_within(abs, wt)))
                        && c.abs.as_deref().is_some_and(|abs| {
                            parts.matches(abs, c.tilde.as_deref(), strict)
                                || (strict && c.glob && parts.may_match(abs, &ctx.home, strict))
                        })
                });
                if !hit {
                    return false;
                }
            } else if self.any_path.is_some() {
                return false;
            }
            if self.dynamic_path && !cands.iter().any(|c| c.dynamic) {
                return false;
            }
            match self.paths {
                Some(
                    scope
                    @ (PathScope::Outside | PathScope::OutsideOrTree | PathScope::OutsideTemp),
                ) => {
                    let tree_inside = scope == PathScope::Outside;
                    let temp = ctx.temp_dirs();
                    let none_named = scope != PathScope::Outside && cands.is_empty();
                    let outside = none_named
                        || cands.iter().any(|c| {
                            c.dynamic
                                || match c.abs.as_deref() {
                                    Some(abs) if scope == PathScope::OutsideTemp => {
                                        !temp.iter().any(|t| is_within(abs, t) && abs != *t)
                                    }
                                    // The standard streams are not places a
                                    // write lands (`curl -o /dev/null`).
                                    Some(abs) if tree_inside && is_stream(abs) => false,
                                    Some(abs) => !inside(abs, inv.cwd.as_deref(), ctx, tree_inside),
                                    None => true,
                                }
                        });
                    if !outside {
                        return false;
                    }
                }
                Some(PathScope::Inside) => {
                    let all_inside = !cands.is_empty()
                        && cands.iter().all(|c| {
                            !c.dynamic
                                && c.abs
                                    .as_deref()
                                    .is_some_and(|abs| inside(abs, inv.cwd.as_deref(), ctx, true))
                        });
                    if !all_inside {
                        return false;
                    }
                }
                None => {}
            }
            if self.through_link {
                let mut named: Vec<String> = cands.iter().filter_map(|c| c.abs.clone()).collect();
                if inv.program == "find"
                    && let Some(t) = find_targets(inv)
                {
                    named.extend(t);
                }
                if !named
                    .iter()
                    .any(|abs| ctx.links.get(abs) == Some(&PathCheck::Leaves))
                {
                    return false;
                }
            }
            if let Some(set) = &self.cleanup
                && !cleanup_ok(set, inv, cands, ctx)
            {
                return false;
            }
            // In-tree clean-up stands the rule down, unless a deleted path
            // is itself one the rule names (a dump parked under `target/`
            // is still a dump); a glob that could only match by chance
            // (`*.o` and `*backup*`) does not count as naming one.
            if let Some(set) = &self.except_cleanup
                && cleanup_ok(set, inv, cands, ctx)
                && !self.names_literally(inv, cands, ctx)
            {
                return false;
            }
        }
        true
    }
}

impl Matcher {
    /// Whether a path the invocation deletes matches `any_path` as written,
    /// not only through what a glob in it could expand to.
    fn names_literally(&self, inv: &Invocation, cands: &[Cand], ctx: &Context) -> bool {
        let Some(paths) = &self.any_path else {
            return false;
        };
        deletion_targets(inv, cands).is_some_and(|targets| {
            targets.iter().any(|t| {
                paths
                    .parts()
                    .matches(t, home_form(t, &ctx.home).as_deref(), false)
            })
        })
    }
}

fn is_stream(abs: &str) -> bool {
    matches!(abs, "/dev/null" | "/dev/stdout" | "/dev/stderr") || abs.starts_with("/dev/fd/")
}

/// Inside the working tree or a temp dir; the tree and temp dirs themselves
/// count only when `roots` is true.
pub(super) fn inside(abs: &str, cwd: Option<&str>, ctx: &Context, roots: bool) -> bool {
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
/// A word that may name a file: whether it is unknown, whether it is an
/// unquoted glob pattern, and its resolved absolute and `~/` forms.
#[derive(Debug)]
struct Cand {
    dynamic: bool,
    glob: bool,
    /// The word has a `..` component: resolved lexically, it may name
    /// another place than the one the shell reaches (after a link or a
    /// pattern).
    dotdot: bool,
    abs: Option<String>,
    tilde: Option<String>,
}

fn path_candidates(inv: &Invocation, p: &ParsedArgs, rest: &[usize], home: &str) -> Vec<Cand> {
    let mut out = Vec::new();
    let cwd = inv.cwd.as_deref();
    let mut push = |text: &str, w: &crate::shell::Word| {
        let abs = if w.dynamic { None } else { resolve(text, cwd) };
        let tilde = abs.as_deref().and_then(|a| home_form(a, home));
        out.push(Cand {
            dynamic: w.dynamic,
            glob: w.glob,
            dotdot: text.split('/').any(|c| c == ".."),
            abs,
            tilde,
        })
    };
    for &i in rest {
        let w = &inv.args[i];
        push(&w.text, w);
        if let Some((k, v)) = w.text.split_once('=')
            && !k.contains('/')
            && !v.is_empty()
        {
            // bash expands `~` after the `=` of such a word (`dd of=~/.profile`).
            match v.strip_prefix("~/") {
                Some(r) if !w.dynamic => push(&format!("{home}/{r}"), w),
                _ => push(v, w),
            }
        }
        if let Some(v) = w.text.strip_prefix('@') {
            push(v, w);
        }
    }
    // A path attached to a short option the spec does not know
    // (`git commit -F/home/dev/.vault-token`).
    for w in &inv.args {
        let t = w.text.as_str();
        if t.starts_with('-')
            && !t.starts_with("--")
            && let Some(k) = t
                .char_indices()
                .find(|&(k, _)| t[k..].starts_with('/') || t[k..].starts_with("~/"))
                .map(|(k, _)| k)
            && k > 1
            && !t[..k].contains('=')
        {
            push(&t[k..], w);
        }
    }
    for (_, idx, v) in &p.flags {
        let (Some(v), Some(i)) = (v, idx) else {
            continue;
        };
        let w = &inv.args[*i];
        if let Some(f) = v.strip_prefix('@') {
            push(f, w);
        } else if let Some((_, f)) = v.split_once("=@") {
            push(f, w);
        } else if v.starts_with('/')
            || v.starts_with("./")
            || v.starts_with("../")
            || v.starts_with('.')
        {
            push(v, w);
        }
    }
    out
}

/// Whether a value that is itself a pattern (`find -name '.env*'`) can match
/// something the rule's glob matches: the value, as a glob, matches the
/// rule's pattern with its wildcards removed.
fn value_globs_meet(value: &str, rule: &Glob) -> bool {
    let sample: String = rule
        .as_str()
        .chars()
        .filter(|c| !matches!(c, '*' | '?'))
        .collect();
    Glob::new(&value.to_lowercase(), false, true).is_ok_and(|g| g.matches(&sample))
}

/// Whether `given` (as written on the command line) is the flag `rule`,
/// counting unambiguous long-option prefixes (`--forc` for `--force`).
fn flag_is(given: &str, rule: &str) -> bool {
    if given == rule {
        return true;
    }
    given.len() >= 4 && rule.starts_with("--") && given.starts_with("--") && rule.starts_with(given)
}

/// Whether the flag is given; a word the gate cannot see counts as the flag
/// when `assume_unknown` is set.
fn has_flag(p: &ParsedArgs, rule: &str, assume_unknown: bool) -> bool {
    (assume_unknown && p.unknown_word) || p.flags.iter().any(|(f, _, _)| flag_is(f, rule))
}

#[cfg(test)]
mod tests {
    use super::patterns_intersect;

    #[test]
    fn glob_words_meet_credential_patterns() {
        assert!(patterns_intersect("~/.a?s/credentials", "~/.aws/**"));
        assert!(patterns_intersect("~/.aws/cred*", "~/.aws/**"));
        assert!(patterns_intersect("/home/dev/project/.e*", "**/.env"));
        assert!(patterns_intersect("~/.ssh/id_*", "~/.ssh/**"));
        assert!(!patterns_intersect("/home/dev/project/*.md", "**/.env"));
        assert!(!patterns_intersect("/home/dev/project/src/*", "~/.aws/**"));
        assert!(!patterns_intersect("/home/dev/project/*", "**/.env"));
        assert!(!patterns_intersect(
            "/home/dev/project/src/*.rs",
            "**/*.pem"
        ));
        assert!(!patterns_intersect("/var/*", "**/*.key"));
        assert!(patterns_intersect("/etc/*", "/etc/shadow"));
        assert!(patterns_intersect("/home/dev/project/.e?v", "**/.env"));
    }
}

//! The toolbox: what an allow rule can account for.
//!
//! An allow rule is closed-world. It lets a command run at once only when
//! every word of the invocation is accounted for by the program's entry
//! here: its subcommands, its options with the kind of their values, and the
//! kinds of its positional words. A word no entry accounts for makes the
//! allow rule not match, so the command falls to review with that word named.
//! `tools/README.md` beside this file is the schema as policy authors read it.
//!
//! This module never loosens a verdict: it can only stop an allow rule from
//! matching.

use super::glob::Glob;
use crate::context::{Context, normalize};
use crate::shell::{Invocation, UNKNOWN, Word};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

/// One program's entry, as written in TOML (`[tool.NAME]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// Options and the kind of their values (`"-o" = "write"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// Kinds of the positional words; a trailing `...` repeats the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Accepts `-20` style options (`head -20`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub numeric: bool,
    /// `-name` is one option, never a bundle of letters.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub single_dash_long: bool,
    /// A word the gate cannot see is taken as a positional word, not as a
    /// possible option: only for programs none of whose options is harmful.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unknown_words_are_args: bool,
    /// A word that looks like an option but is not listed is an argument:
    /// for programs that print or compare such words (`echo --x`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unlisted_options_are_args: bool,
    /// Subcommands (keys may be globs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sub: BTreeMap<String, ToolSpec>,
    /// Other names of this subcommand (`b` for `cargo build`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The words after this subcommand are checked against another entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// This subcommand is listed only to say why it is never accounted for
    /// (`held = "runs the project's scripts from a URL"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

impl ToolSpec {
    /// Layers a user's entry over this one: options and subcommands are
    /// added (the user's kind wins for an option named in both), and the
    /// user's `args`, flags and hand-over replace these where given.
    pub fn merge(&mut self, over: ToolSpec) {
        self.options.extend(over.options);
        if over.args.is_some() {
            self.args = over.args;
        }
        self.numeric |= over.numeric;
        self.single_dash_long |= over.single_dash_long;
        self.unknown_words_are_args |= over.unknown_words_are_args;
        self.unlisted_options_are_args |= over.unlisted_options_are_args;
        for a in over.aliases {
            if !self.aliases.contains(&a) {
                self.aliases.push(a);
            }
        }
        if over.tool.is_some() {
            self.tool = over.tool;
        }
        if over.held.is_some() {
            self.held = over.held;
        }
        for (name, sub) in over.sub {
            match self.sub.get_mut(&name) {
                Some(mine) => mine.merge(sub),
                None => {
                    self.sub.insert(name, sub);
                }
            }
        }
    }
}

/// The kind of an option's value or a positional word.
#[derive(Debug, Clone)]
enum Kind {
    Flag,
    /// The option alone, or a value of the inner kind attached with `=`.
    Optional(Box<Kind>),
    Number,
    Text,
    Enum(Vec<String>),
    Match(LazyGlobs),
    Read,
    Write,
    Url,
    Host,
    Name,
    Inert,
    /// `NAME` or `NAME=VALUE` with a plain name (no subscript).
    Assign,
    /// `NAME` or `NAME=VALUE` with a name on the harmless list.
    Env,
    /// A credential the tool itself uses (a connection string, a password
    /// option): the one kind that may expand a secret-named variable.
    Secret,
    Code,
    /// A substitution `s/A/B/FLAGS` of literal text (no variables,
    /// escapes, code blocks or the `e` flag): what `perl -pi -e` and `sed`
    /// do most, with nothing evaluated.
    Subst,
    Tool(Vec<String>),
}

impl Kind {
    fn parse(s: &str) -> Result<Kind, String> {
        if let Some(inner) = s.strip_prefix('?') {
            let k = Kind::parse(inner)?;
            if matches!(k, Kind::Flag | Kind::Optional(_) | Kind::Tool(_)) {
                return Err(format!("`{s}`: `?` needs a value kind"));
            }
            return Ok(Kind::Optional(Box::new(k)));
        }
        if let Some(list) = s.strip_prefix("enum:") {
            return Ok(Kind::Enum(list.split('|').map(str::to_string).collect()));
        }
        if let Some(list) = s.strip_prefix("match:") {
            return Ok(Kind::Match(LazyGlobs {
                text: list.to_string(),
                globs: OnceLock::new(),
            }));
        }
        if let Some(list) = s.strip_prefix("tool:") {
            return Ok(Kind::Tool(list.split('|').map(str::to_string).collect()));
        }
        Ok(match s {
            "flag" => Kind::Flag,
            "number" => Kind::Number,
            "text" => Kind::Text,
            "read" => Kind::Read,
            "write" => Kind::Write,
            "url" => Kind::Url,
            "host" => Kind::Host,
            "name" => Kind::Name,
            "inert" => Kind::Inert,
            "assign" => Kind::Assign,
            "env" => Kind::Env,
            "secret" => Kind::Secret,
            "code" => Kind::Code,
            "subst" => Kind::Subst,
            other => return Err(format!("unknown kind `{other}`")),
        })
    }

    fn takes_value(&self) -> bool {
        !matches!(self, Kind::Flag | Kind::Optional(_))
    }
}

/// The alternatives of a `match:` kind, compiled when a value is first
/// checked against them (an entry can list hundreds; a command uses a few).
#[derive(Debug, Clone)]
struct LazyGlobs {
    text: String,
    globs: OnceLock<Result<Vec<Alternative>, String>>,
}

/// One alternative of a `match:` kind: a glob, or a word pattern.
#[derive(Debug, Clone)]
enum Alternative {
    Glob(Glob),
    Word(WordPattern),
}

impl Alternative {
    fn matches(&self, text: &str) -> bool {
        match self {
            Alternative::Glob(g) => g.matches(text),
            Alternative::Word(w) => w.matches(text),
        }
    }
}

/// `word:ITEMS`: literal characters and `[…]` classes in order, the last
/// item repeated any number of times (`word:[a-z][a-z0-9_-]` is a name of
/// one or more characters). Globs cannot repeat a class; this can.
#[derive(Debug, Clone)]
struct WordPattern {
    items: Vec<WordItem>,
}

#[derive(Debug, Clone)]
enum WordItem {
    Lit(char),
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl WordItem {
    fn accepts(&self, c: char) -> bool {
        match self {
            WordItem::Lit(l) => *l == c,
            WordItem::Class { negated, ranges } => {
                ranges.iter().any(|(a, b)| (*a..=*b).contains(&c)) != *negated
            }
        }
    }
}

impl WordPattern {
    fn parse(text: &str) -> Result<WordPattern, String> {
        let chars: Vec<char> = text.chars().collect();
        let mut items = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            if chars[i] != '[' {
                items.push(WordItem::Lit(chars[i]));
                i += 1;
                continue;
            }
            let (class, next) = super::glob::class_at(&chars, i)
                .ok_or_else(|| format!("unclosed `[` in `word:{text}`"))?;
            items.push(WordItem::Class {
                negated: class.negated,
                ranges: class.ranges,
            });
            i = next;
        }
        if items.is_empty() {
            return Err("`word:` needs at least one item".into());
        }
        Ok(WordPattern { items })
    }

    fn matches(&self, text: &str) -> bool {
        let (last, fixed) = match self.items.split_last() {
            Some(x) => x,
            None => return false,
        };
        let mut chars = text.chars();
        for item in fixed {
            match chars.next() {
                Some(c) if item.accepts(c) => {}
                _ => return false,
            }
        }
        chars.all(|c| last.accepts(c))
    }
}

impl LazyGlobs {
    fn get(&self) -> Result<&[Alternative], &str> {
        self.globs
            .get_or_init(|| {
                self.text
                    .split('|')
                    .map(|alt| match alt.strip_prefix("word:") {
                        Some(w) => WordPattern::parse(w).map(Alternative::Word),
                        None => Glob::new(alt, false, false).map(Alternative::Glob),
                    })
                    .collect()
            })
            .as_deref()
            .map_err(String::as_str)
    }
}

/// A subcommand's level: compiled when a command first names it. Built-in
/// levels are read from the build script's table by key; a user's are
/// compiled when the policy loads.
#[derive(Debug, Clone)]
struct Child {
    key: Option<String>,
    cell: OnceLock<Result<Box<Tool>, String>>,
}

impl Child {
    fn get(&self) -> Result<&Tool, &str> {
        self.cell
            .get_or_init(|| {
                let key = self
                    .key
                    .as_deref()
                    .ok_or("the subcommand was not compiled")?;
                let json = builtin_level(key)
                    .ok_or_else(|| format!("the built-in toolbox has no level `{key}`"))?;
                let spec: ToolSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
                Tool::compile(&spec, Some(key)).map(Box::new)
            })
            .as_deref()
            .map_err(String::as_str)
    }
}

/// A built-in level below the top by key (`git\u{1f}log`).
fn builtin_level(key: &str) -> Option<&'static str> {
    let table = super::BUILTIN_TOOL_LEVELS;
    table
        .binary_search_by(|(k, _)| (*k).cmp(key))
        .ok()
        .map(|i| table[i].1)
}

/// A built-in entry's top level by program name.
pub(super) fn builtin_index(name: &str) -> Option<usize> {
    super::BUILTIN_TOOLS
        .binary_search_by(|(k, _)| (*k).cmp(name))
        .ok()
}

/// A built-in entry as a whole tree, reassembled from its levels (for
/// showing the policy and for layering a user's entry over it).
pub(super) fn builtin_spec(name: &str) -> Result<ToolSpec, String> {
    let i = builtin_index(name).ok_or_else(|| format!("no built-in entry `{name}`"))?;
    assemble(name, super::BUILTIN_TOOLS[i].1)
}

fn assemble(key: &str, json: &str) -> Result<ToolSpec, String> {
    let mut spec: ToolSpec = serde_json::from_str(json).map_err(|e| format!("{key}: {e}"))?;
    for (name, child) in spec.sub.iter_mut() {
        let k = format!("{key}\u{1f}{name}");
        let json = builtin_level(&k).ok_or_else(|| format!("no level `{k}`"))?;
        *child = assemble(&k, json)?;
    }
    Ok(spec)
}

/// An entry, compiled.
#[derive(Debug, Clone)]
pub(super) struct Tool {
    options: HashMap<String, Kind>,
    args: Vec<Kind>,
    repeat_last: bool,
    has_args: bool,
    numeric: bool,
    single_dash_long: bool,
    unknown_words_are_args: bool,
    unlisted_options_are_args: bool,
    /// No option listed here writes, fetches, runs or hands over.
    options_harmless: bool,
    subs: HashMap<String, usize>,
    sub_globs: Vec<(Glob, usize)>,
    children: Vec<Child>,
    delegate: Option<String>,
    held: Option<String>,
}

impl Tool {
    /// Compiles one level. With `key`, the level is built in and its
    /// subcommands are stubs compiled on first use; without, the whole tree
    /// is compiled now (a user's entry, whose errors must show at load).
    pub(super) fn compile(spec: &ToolSpec, key: Option<&str>) -> Result<Tool, String> {
        let mut options = HashMap::new();
        for (name, kind) in &spec.options {
            if !name.starts_with('-') && !name.starts_with('+') {
                return Err(format!("option `{name}` must start with `-` or `+`"));
            }
            let k = Kind::parse(kind).map_err(|e| format!("option `{name}`: {e}"))?;
            options.insert(name.clone(), k);
        }
        let mut args = Vec::new();
        let mut repeat_last = false;
        if let Some(list) = &spec.args {
            for (i, a) in list.iter().enumerate() {
                let (k, rep) = match a.strip_suffix("...") {
                    Some(k) => (k, true),
                    None => (a.as_str(), false),
                };
                if rep && i + 1 != list.len() {
                    return Err(format!("`{a}`: only the last argument kind may repeat"));
                }
                repeat_last = rep;
                let k = Kind::parse(k).map_err(|e| format!("argument `{a}`: {e}"))?;
                if matches!(k, Kind::Flag | Kind::Optional(_)) {
                    return Err(format!(
                        "argument `{a}`: a positional word has a value kind"
                    ));
                }
                args.push(k);
            }
        }
        let mut subs = HashMap::new();
        let mut globbed: Vec<(String, usize)> = Vec::new();
        let mut children = Vec::new();
        for (name, child) in &spec.sub {
            let c = match key {
                Some(k) => Child {
                    key: Some(format!("{k}\u{1f}{name}")),
                    cell: OnceLock::new(),
                },
                None => {
                    let t = Tool::compile(child, None)
                        .map_err(|e| format!("subcommand `{name}`: {e}"))?;
                    t.check_globs()
                        .map_err(|e| format!("subcommand `{name}`: {e}"))?;
                    Child {
                        key: None,
                        cell: OnceLock::from(Ok(Box::new(t))),
                    }
                }
            };
            let idx = children.len();
            children.push(c);
            for n in std::iter::once(name).chain(&child.aliases) {
                if n.contains(['*', '?', '[']) {
                    globbed.push((n.clone(), idx));
                } else {
                    subs.insert(n.clone(), idx);
                }
            }
        }
        // The most specific glob first: the longest literal text.
        globbed.sort_by_key(|(g, _)| std::cmp::Reverse(g.replace(['*', '?'], "").len()));
        let sub_globs = globbed
            .into_iter()
            .map(|(g, i)| Glob::new(&g, false, false).map(|g| (g, i)))
            .collect::<Result<Vec<_>, _>>()?;
        let options_harmless = options.values().all(|k| {
            let k = match k {
                Kind::Optional(inner) => inner.as_ref(),
                k => k,
            };
            !matches!(
                k,
                Kind::Write
                    | Kind::Url
                    | Kind::Host
                    | Kind::Code
                    | Kind::Subst
                    | Kind::Tool(_)
                    | Kind::Secret
            )
        });
        Ok(Tool {
            options_harmless,
            options,
            args,
            repeat_last,
            has_args: spec.args.is_some(),
            numeric: spec.numeric,
            single_dash_long: spec.single_dash_long,
            unknown_words_are_args: spec.unknown_words_are_args,
            unlisted_options_are_args: spec.unlisted_options_are_args,
            subs,
            sub_globs,
            children,
            delegate: spec.tool.clone(),
            held: spec.held.clone(),
        })
    }

    fn sub(&self, word: &str) -> Option<Result<&Tool, &str>> {
        let i = match self.subs.get(word) {
            Some(&i) => i,
            None => self.sub_globs.iter().find(|(g, _)| g.matches(word))?.1,
        };
        self.children.get(i).map(Child::get)
    }

    /// Compiles the globs of every `match:` kind at this level (a user's
    /// entry at load; the test suite for every built-in level).
    pub(super) fn check_globs(&self) -> Result<(), String> {
        let kinds = self.options.values().chain(&self.args);
        for k in kinds {
            let k = match k {
                Kind::Optional(inner) => inner.as_ref(),
                k => k,
            };
            if let Kind::Match(g) = k {
                g.get().map_err(|e| format!("`match:{}`: {e}", g.text))?;
            }
        }
        Ok(())
    }

    /// Compiles this level's subcommands and theirs, all the way down, and
    /// checks every glob (the test suite's check of the built-in toolbox).
    #[cfg(test)]
    pub(super) fn check_all(&self, path: &str) -> Result<usize, String> {
        self.check_globs().map_err(|e| format!("{path}: {e}"))?;
        let mut n = 1;
        for c in &self.children {
            let t = c.get().map_err(|e| format!("{path}: {e}"))?;
            let key = c.key.as_deref().unwrap_or(path).replace('\u{1f}', " ");
            n += t.check_all(&key)?;
        }
        Ok(n)
    }

    /// Whether this level lists the option as taking a value in the next
    /// word (the matcher uses it to find subcommands behind options).
    /// (`code` options are left out: some mark a dangerous flag that takes
    /// no value, and swallowing the next word could hide it from a rule.)
    pub(super) fn takes_value(&self, option: &str) -> bool {
        self.options
            .get(option)
            .is_some_and(|k| k.takes_value() && !matches!(k, Kind::Code))
    }

    fn has_subs(&self) -> bool {
        !self.children.is_empty()
    }
}

/// Why a word is not accounted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unaccounted {
    /// The word as the gate saw it.
    pub word: String,
    /// What is wrong with it, in a reviewer's terms.
    pub why: String,
}

impl Unaccounted {
    fn new(word: &str, why: impl Into<String>) -> Unaccounted {
        // The parts the gate could not see are shown as `…`, not as the
        // marker the walk uses for them.
        let shown = word.replace(UNKNOWN, "…");
        Unaccounted {
            word: crate::shell::shorten(&shown, 80),
            why: why.into(),
        }
    }
}

/// Looks up entries by name (the policy's table of compiled tools).
pub(super) trait Entries {
    fn entry(&self, name: &str) -> Option<Result<&Tool, &str>>;
}

/// Variables that may be set in front of an allowed command: they change
/// how output looks or how much is logged, never what runs or what is read.
pub const HARMLESS_ENV: &[&str] = &[
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_COLLATE",
    "LC_MESSAGES",
    "LC_NUMERIC",
    "LC_TIME",
    "LC_MONETARY",
    "TZ",
    "TERM",
    "COLUMNS",
    "LINES",
    "NO_COLOR",
    "FORCE_COLOR",
    "CLICOLOR",
    "CLICOLOR_FORCE",
    "COLORTERM",
    "CI",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "RUST_LIB_BACKTRACE",
    "RUST_TEST_THREADS",
    "RUST_TEST_NOCAPTURE",
    "CARGO_TERM_COLOR",
    "CARGO_TERM_VERBOSE",
    "CARGO_TERM_QUIET",
    "CARGO_TERM_PROGRESS_WHEN",
    "CARGO_INCREMENTAL",
    "CARGO_BUILD_JOBS",
    "NEXTEST_PROFILE",
    "INSTA_UPDATE",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONHASHSEED",
    "PYTHONIOENCODING",
    "PYTHONUTF8",
    "PYTHONFAULTHANDLER",
    "PYTHONDEVMODE",
    "PYTHONWARNINGS",
    "NODE_ENV",
    "NODE_NO_WARNINGS",
    "GOMAXPROCS",
    "GOOS",
    "GOARCH",
    "CGO_ENABLED",
    "GIT_TERMINAL_PROMPT",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "GIT_COMMITTER_DATE",
    "SOURCE_DATE_EPOCH",
    "DEBIAN_FRONTEND",
    "LOG_LEVEL",
    "VERBOSE",
    "QUIET",
    "DEBUG",
    "TIMEFORMAT",
    // Which PostgreSQL server and database, as `psql -h -p -d -U` would say.
    "PGHOST",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGAPPNAME",
    "PGCONNECT_TIMEOUT",
];

/// Whether a variable may be set in front of an allowed command.
pub fn harmless_env(name: &str) -> bool {
    HARMLESS_ENV.contains(&name)
}

/// The host names and address prefixes of cloud metadata services and
/// link-local addresses: fetching them hands out the machine's credentials.
const METADATA_HOSTS: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
    "100.100.100.200",
    "fd00:ec2::254",
    "[fd00:ec2::254]",
];

fn metadata_host(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    METADATA_HOSTS.contains(&h.as_str())
        || h.starts_with("169.254.")
        || h.starts_with("[fe80:")
        || h.starts_with("fe80:")
        || h.starts_with("0x")
        || h.chars().all(|c| c.is_ascii_digit())
        // An IPv4-mapped IPv6 address (`[::ffff:169.254.169.254]`) or a
        // dotted address with an octal or hex part (`0251.0376.0251.0376`)
        // may name the metadata service in another spelling.
        || h.contains("::ffff:")
        || (h.contains('.')
            && h.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_hexdigit() || c == 'x'))
            && h.split('.').any(|p| p.len() > 1 && p.starts_with('0')))
}

fn host_ok(host: &str) -> bool {
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(c))
        && !metadata_host(host)
}

fn url_ok(url: &str) -> Result<(), &'static str> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) => {
            if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
                return Err("only http and https addresses are known to be harmless");
            }
            rest
        }
        None if url.starts_with(|c: char| c.is_ascii_alphanumeric()) => {
            // `file:/etc/passwd` has a scheme without `//`; `host:8080/x` a port.
            if let Some((before, after)) = url.split_once(':')
                && !before.contains('/')
                && !after.starts_with(|c: char| c.is_ascii_digit())
            {
                return Err("an address with a scheme other than http or https");
            }
            url
        }
        None => return Err("not an address"),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("the address carries credentials");
    }
    let host = if authority.starts_with('[') {
        authority
            .split_once(']')
            .map(|(h, _)| format!("{h}]"))
            .unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or("").to_string()
    };
    if !host_ok(&host) {
        return Err(
            "a cloud metadata, link-local or numeric host hands out the machine's credentials",
        );
    }
    if url.contains(['{', '}', '[', ']']) && !authority.starts_with('[') {
        return Err("an address pattern expands to many requests");
    }
    Ok(())
}

fn number_ok(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic() || c == '%');
    !digits.is_empty()
        && digits.starts_with(|c: char| c.is_ascii_digit())
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && s.len() - digits.len() <= 3
}

fn name_ok(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A path written: inside the working tree or a temp directory (the tree
/// itself counts: `tsc -p .`), never a repository's own `.git` nor an
/// address, or a standard stream.
fn write_ok(text: &str, inv: &Invocation, ctx: &Context) -> Result<(), &'static str> {
    if matches!(text, "-" | "/dev/null" | "/dev/stdout" | "/dev/stderr") {
        return Ok(());
    }
    if text.contains("://") && !text.starts_with("file://") {
        return Err("an address where a path written belongs");
    }
    let text = text.strip_prefix("file://").unwrap_or(text);
    let abs = if text.starts_with('/') {
        normalize(text)
    } else if let Some(rest) = text.strip_prefix("~/") {
        normalize(&format!("{}/{rest}", ctx.home.trim_end_matches('/')))
    } else {
        match inv.cwd.as_deref() {
            Some(c) => normalize(&format!("{c}/{text}")),
            None => return Err("a path written where the gate cannot tell"),
        }
    };
    if abs.split('/').any(|c| c == ".git") {
        return Err("a write into a repository's .git directory");
    }
    if super::matcher::inside(&abs, inv.cwd.as_deref(), ctx, true) {
        Ok(())
    } else {
        Err("a path written outside the working tree and temp directories")
    }
}

fn wholly_unknown(w: &Word) -> bool {
    w.dynamic && w.text.starts_with(UNKNOWN)
}

/// Checks one word against a kind.
fn check(kind: &Kind, w: &Word, inv: &Invocation, ctx: &Context) -> Result<(), Unaccounted> {
    let t = w.text.as_str();
    let fail = |why: &str| Err(Unaccounted::new(t, why));
    let literal = |what: &str| -> Result<(), Unaccounted> {
        if w.dynamic {
            Err(Unaccounted::new(
                t,
                format!("{what} the gate cannot see (a variable or substitution)"),
            ))
        } else {
            Ok(())
        }
    };
    if w.secret && !matches!(kind, Kind::Secret | Kind::Optional(_)) {
        return fail(
            "it expands a variable whose name looks like a secret, which the tool would print or send",
        );
    }
    match kind {
        Kind::Secret => Ok(()),
        Kind::Flag => fail("an option that takes no value was given one"),
        Kind::Optional(k) => check(k, w, inv, ctx),
        Kind::Text | Kind::Read => Ok(()),
        Kind::Number => {
            literal("a number")?;
            if number_ok(t) {
                Ok(())
            } else {
                fail("not a number")
            }
        }
        Kind::Enum(list) => {
            literal("a value")?;
            if list.iter().any(|v| v == t) {
                Ok(())
            } else {
                fail("not one of the values known to be harmless")
            }
        }
        Kind::Match(globs) => {
            literal("a value")?;
            let globs = globs.get().map_err(|e| {
                Unaccounted::new(t, format!("its toolbox entry could not be read ({e})"))
            })?;
            if globs.iter().any(|g| g.matches(t)) {
                Ok(())
            } else {
                fail("not a value known to be harmless")
            }
        }
        Kind::Write => {
            literal("a path written")?;
            write_ok(t, inv, ctx).or_else(&fail)
        }
        Kind::Url => {
            literal("an address")?;
            url_ok(t).or_else(&fail)
        }
        Kind::Host => {
            literal("a host")?;
            if host_ok(t) {
                Ok(())
            } else {
                fail("a cloud metadata, link-local or unusual host")
            }
        }
        Kind::Name => {
            literal("a name")?;
            if name_ok(t) {
                Ok(())
            } else {
                fail("not a plain variable name (a subscript is evaluated as code)")
            }
        }
        Kind::Inert => {
            literal("a word")?;
            if t.contains(['$', '`']) {
                fail("the builtin evaluates `$` and backquotes in this word")
            } else {
                Ok(())
            }
        }
        Kind::Assign | Kind::Env => {
            let (name, has_value) = match t.split_once('=') {
                Some((n, _)) => (n, true),
                None => (t, false),
            };
            if (w.dynamic && !has_value) || wholly_unknown(w) || !name_ok(name) {
                fail("not a plain variable name (a subscript is evaluated as code)")
            } else if matches!(kind, Kind::Env) && !harmless_env(name) {
                fail(
                    "a variable that may change what later commands run, read or where they connect",
                )
            } else {
                Ok(())
            }
        }
        Kind::Code => fail("a program or code the tool runs"),
        Kind::Subst => {
            literal("a substitution")?;
            if crate::shell::plain_substitution(t) {
                Ok(())
            } else {
                fail("code that is not a plain substitution of literal text")
            }
        }
        Kind::Tool(_) => fail("a program the tool runs"),
    }
}

/// Checks that every word of an invocation is accounted for by the
/// program's entry, and that every variable set in front of it is harmless.
pub(super) fn account(
    entries: &dyn Entries,
    inv: &Invocation,
    ctx: &Context,
) -> Result<(), Unaccounted> {
    for (name, value) in &inv.env {
        if !harmless_env(name) {
            return Err(Unaccounted::new(
                &format!("{name}={}", value.text),
                "a variable that may change what the program runs, reads or where it connects",
            ));
        }
    }
    account_words(entries, &inv.program, &inv.args, inv, ctx, 0)
}

fn lookup<'a>(levels: &[&'a Tool], name: &str) -> Option<&'a Kind> {
    levels.iter().rev().find_map(|t| t.options.get(name))
}

fn account_words(
    entries: &dyn Entries,
    program: &str,
    words: &[Word],
    inv: &Invocation,
    ctx: &Context,
    depth: usize,
) -> Result<(), Unaccounted> {
    if depth > 4 {
        return Err(Unaccounted::new(
            program,
            "tools handing over to tools too deeply",
        ));
    }
    let root = match entries.entry(program) {
        None => {
            return Err(Unaccounted::new(
                program,
                "the policy's toolbox has no entry for this program",
            ));
        }
        Some(Err(e)) => {
            return Err(Unaccounted::new(
                program,
                format!("its toolbox entry could not be read ({e})"),
            ));
        }
        Some(Ok(t)) => t,
    };
    let mut levels: Vec<&Tool> = vec![root];
    let mut positional = 0usize;
    let mut only_positional = false;
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let t = w.text.as_str();
        let cur = levels[levels.len() - 1];
        // The items `xargs` appends from its input come last; they are taken
        // as arguments where no listed option could do harm with any value.
        let appended = i + 1 == words.len()
            && inv.via.last().is_some_and(|v| v == "xargs")
            && levels.iter().all(|l| l.options_harmless);
        // The kind this word has if it is the next positional word.
        let next_kind = if positional == 0 && cur.has_subs() {
            None
        } else {
            cur.args
                .get(positional)
                .or_else(|| cur.repeat_last.then(|| cur.args.last()).flatten())
        };
        let credential_slot = matches!(next_kind, Some(Kind::Secret));
        if w.secret && !credential_slot && !wholly_unknown(w) {
            // Checked with its kind below.
        } else if w.secret && !credential_slot {
            return Err(Unaccounted::new(
                t,
                "it expands a variable whose name looks like a secret, which the tool would print or send",
            ));
        } else if !only_positional
            && wholly_unknown(w)
            && !cur.unknown_words_are_args
            && !appended
            && !credential_slot
        {
            return Err(Unaccounted::new(
                t,
                "a word the gate cannot see, which could be any option",
            ));
        }
        // A word that starts with a literal `-` is an option even when the
        // rest of it is unknown (`--output="$X"`).
        let is_option = !only_positional
            && ((t.starts_with('-') && t != "-")
                || (t.starts_with('+') && lookup(&levels, t).is_some()));
        if !only_positional && t == "--" && !w.dynamic {
            only_positional = true;
            i += 1;
            continue;
        }
        if is_option {
            match option(entries, &levels, words, i, inv, ctx, depth) {
                Ok(usize::MAX) => return Ok(()),
                Ok(next) => {
                    i = next;
                    continue;
                }
                // `echo --x` prints `--x`: not an option, an argument.
                Err(_) if cur.unlisted_options_are_args && lookup(&levels, t).is_none() => {}
                Err(e) => return Err(e),
            }
        }
        // A positional word: a subcommand first, where the entry has them.
        if positional == 0 && cur.has_subs() && !w.dynamic {
            if let Some(sub) = cur.sub(t) {
                let sub = sub.map_err(|e| {
                    Unaccounted::new(t, format!("its toolbox entry could not be read ({e})"))
                })?;
                if let Some(why) = &sub.held {
                    return Err(Unaccounted::new(t, why.clone()));
                }
                if let Some(d) = &sub.delegate {
                    return account_words(entries, d, &words[i + 1..], inv, ctx, depth + 1);
                }
                levels.push(sub);
                i += 1;
                continue;
            }
            if !cur.has_args {
                return Err(Unaccounted::new(t, "a subcommand the policy does not list"));
            }
        } else if positional == 0 && cur.has_subs() && !cur.has_args {
            return Err(Unaccounted::new(
                t,
                "a subcommand the gate cannot see (a variable or substitution)",
            ));
        }
        let kind = match cur.args.get(positional) {
            Some(k) => k,
            None if cur.repeat_last && !cur.args.is_empty() => &cur.args[cur.args.len() - 1],
            None => {
                return Err(Unaccounted::new(
                    t,
                    if cur.args.is_empty() {
                        "an argument where the policy expects none"
                    } else {
                        "more arguments than the policy expects"
                    },
                ));
            }
        };
        if let Kind::Tool(names) = kind {
            if w.dynamic || !names.iter().any(|n| n == t) {
                return Err(Unaccounted::new(t, "a program the policy does not list"));
            }
            return account_words(entries, t, &words[i + 1..], inv, ctx, depth + 1);
        }
        check(kind, w, inv, ctx)?;
        positional += 1;
        i += 1;
    }
    Ok(())
}

/// Accounts for the option at `words[i]`; returns the index of the next
/// word, or `usize::MAX` when the rest was handed to another entry and
/// accounted for.
fn option(
    entries: &dyn Entries,
    levels: &[&Tool],
    words: &[Word],
    i: usize,
    inv: &Invocation,
    ctx: &Context,
    depth: usize,
) -> Result<usize, Unaccounted> {
    let w = &words[i];
    let t = w.text.as_str();
    let cur = levels[levels.len() - 1];
    let single_dash_long = levels.iter().any(|l| l.single_dash_long);
    let unknown = || Unaccounted::new(t, "an option the policy does not know to be harmless");
    // With its value in the next word.
    let with_next = |kind: &Kind| -> Result<usize, Unaccounted> {
        let Some(v) = words.get(i + 1) else {
            return Err(Unaccounted::new(t, "an option without its value"));
        };
        if let Kind::Tool(names) = kind {
            if v.dynamic || !names.contains(&v.text) {
                return Err(Unaccounted::new(
                    &v.text,
                    "a program the policy does not list",
                ));
            }
            account_words(entries, &v.text, &words[i + 2..], inv, ctx, depth + 1)?;
            return Ok(usize::MAX);
        }
        check(kind, v, inv, ctx)?;
        Ok(i + 2)
    };
    let attached = |kind: &Kind, value: &str| -> Result<usize, Unaccounted> {
        if matches!(kind, Kind::Flag) {
            return Err(Unaccounted::new(
                t,
                "an option that takes no value was given one",
            ));
        }
        if matches!(kind, Kind::Tool(_)) {
            return Err(Unaccounted::new(t, "a program the tool runs"));
        }
        let v = Word {
            text: value.to_string(),
            ..w.clone()
        };
        check(kind, &v, inv, ctx)?;
        Ok(i + 1)
    };
    // The whole word as one option.
    if let Some(kind) = lookup(levels, t) {
        return if kind.takes_value() {
            with_next(kind)
        } else {
            Ok(i + 1)
        };
    }
    if let Some(long) = t.strip_prefix("--") {
        let Some((name, value)) = long.split_once('=') else {
            return Err(unknown());
        };
        let name = format!("--{name}");
        let kind = lookup(levels, &name).ok_or_else(unknown)?;
        return attached(kind, value);
    }
    if t.starts_with('+') {
        return Err(unknown());
    }
    let body = &t[1..];
    if levels.iter().any(|l| l.numeric) && number_ok(body) {
        return Ok(i + 1);
    }
    if single_dash_long {
        if let Some((name, value)) = t.split_once('=')
            && let Some(kind) = lookup(levels, name)
        {
            return attached(kind, value);
        }
        return Err(unknown());
    }
    // A bundle of short options.
    let _ = cur;
    for (k, c) in body.char_indices() {
        let f = format!("-{c}");
        let kind = lookup(levels, &f).ok_or_else(|| {
            Unaccounted::new(
                t,
                format!("`{f}` is an option the policy does not know to be harmless"),
            )
        })?;
        let rest = &body[k + c.len_utf8()..];
        match kind {
            Kind::Flag => continue,
            Kind::Optional(inner) => {
                if rest.is_empty() {
                    return Ok(i + 1);
                }
                return attached(inner, rest.strip_prefix('=').unwrap_or(rest));
            }
            _ if rest.is_empty() => return with_next(kind),
            _ => {
                // `-o=/etc/x`: some tools take `=/etc/x`, others `/etc/x`.
                if let Some(stripped) = rest.strip_prefix('=') {
                    attached(kind, stripped)?;
                }
                return attached(kind, rest);
            }
        }
    }
    Ok(i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_refuse_nonsense() {
        assert!(Kind::parse("flag").is_ok());
        assert!(Kind::parse("?enum:always|never").is_ok());
        assert!(Kind::parse("match:color.*=*").is_ok());
        assert!(Kind::parse("tool:pytest|pip").is_ok());
        assert!(Kind::parse("?flag").is_err());
        assert!(Kind::parse("file").is_err());
    }

    #[test]
    fn word_patterns_repeat_their_last_item() {
        let w = WordPattern::parse("[a-z][a-z0-9_-]").unwrap_or_else(|e| panic!("{e}"));
        assert!(w.matches("a") && w.matches("build-all") && w.matches("x_1"));
        assert!(!w.matches("") && !w.matches("-x") && !w.matches("a b") && !w.matches("a;b"));
        let w = WordPattern::parse("PIC[0-9]").unwrap_or_else(|e| panic!("{e}"));
        assert!(w.matches("PIC") && w.matches("PIC12") && !w.matches("PIX") && !w.matches("PIC1a"));
        let w = WordPattern::parse("[!$;]").unwrap_or_else(|e| panic!("{e}"));
        assert!(w.matches("plain") && !w.matches("a$b"));
        assert!(WordPattern::parse("[a-z").is_err());
    }

    #[test]
    fn addresses_and_numbers() {
        assert!(url_ok("https://example.com/x").is_ok());
        assert!(url_ok("example.com").is_ok());
        assert!(url_ok("http://169.254.169.254/latest/meta-data/").is_err());
        assert!(url_ok("http://metadata.google.internal/").is_err());
        assert!(url_ok("http://0251.0376.0251.0376/").is_err());
        assert!(url_ok("http://[::ffff:a9fe:a9fe]/").is_err());
        assert!(url_ok("http://[::ffff:169.254.169.254]/").is_err());
        assert!(url_ok("http://10.0.0.1/").is_ok());
        assert!(url_ok("http://user:pw@example.com/").is_err());
        assert!(url_ok("file:///etc/passwd").is_err());
        assert!(url_ok("file:/etc/passwd").is_err());
        assert!(url_ok("localhost:8080/health").is_ok());
        assert!(url_ok("http://[fd00:ec2::254]/").is_err());
        assert!(url_ok("http://2852039166/").is_err());
        assert!(number_ok("10") && number_ok("-5") && number_ok("+3") && number_ok("10M"));
        assert!(number_ok("1.5") && number_ok("30s") && number_ok("50%"));
        assert!(!number_ok("$(id)") && !number_ok("abc") && !number_ok("5;id"));
        assert!(name_ok("x_1") && !name_ok("a[$(id)]") && !name_ok("1x"));
    }
}

//! Rules in TOML, compiled into a [`Policy`] that classifies command lines.
//!
//! Every invocation the shell walk finds is matched against every rule for
//! its program; all rules that match contribute a hit, the strictest hit
//! decides, and an invocation no rule matches is `review`. Allow rules are
//! closed-world: one matches only when the program's toolbox entry
//! ([`toolbox`]) accounts for every word of the invocation and every
//! variable set in front of it. A user policy is
//! layered over the built-in one: a user rule with the same id replaces the
//! built-in rule, `disable` removes built-in rules, and every other rule
//! applies alongside. Because the strictest hit wins, a user allow rule
//! cannot loosen a built-in review or deny without replacing or disabling it
//! by id, which shows up in `holdpoint policy show`.

mod glob;
mod matcher;
pub mod toolbox;

use crate::context::Context;
use crate::shell::{self, Limits};
use crate::verdict::{Decision, Hit, Risk, Verdict};
pub use glob::Glob;
use matcher::{Matcher, ParsedArgs};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;
use toolbox::{Entries, Tool};
pub use toolbox::{HARMLESS_ENV, ToolSpec, Unaccounted, harmless_env};

/// FNV-1a: program names are short and trusted (they come from policies),
/// so a fast non-cryptographic hash is right; building the index at every
/// start is on the hot path.
#[derive(Default)]
struct FnvHasher(u64);

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type Fnv = BuildHasherDefault<FnvHasher>;

/// The built-in default policy, compiled into the binary: `default.toml`
/// with the toolbox files of `tools/` merged in by the build script.
pub const BUILTIN_POLICY: &str = include_str!(concat!(env!("OUT_DIR"), "/builtin_policy.toml"));

// The same policy, indexed by the build script: ids and programs as Rust
// data, each rule and program spec as JSON parsed on first use.
include!(concat!(env!("OUT_DIR"), "/builtin_policy.rs"));

/// The whole built-in policy as a file.
#[cfg(test)]
fn builtin_file() -> Result<PolicyFile, PolicyError> {
    PolicyFile::parse(BUILTIN_POLICY, "built-in policy")
}

/// A policy file as written in TOML.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Ids of built-in rules to remove (user files only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disable: Vec<String>,
    /// How each program's options are spelled, so subcommands and flags are
    /// found correctly.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub programs: BTreeMap<String, ProgramSpec>,
    #[serde(default, rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleSpec>,
    /// The toolbox: for each program, the words an allow rule can account
    /// for. A user entry adds to the built-in entry of the same name.
    #[serde(default, rename = "tool", skip_serializing_if = "BTreeMap::is_empty")]
    pub tools: BTreeMap<String, ToolSpec>,
    /// Named lists a rule can use in any list as `"@set:name"` (the built-in
    /// `credentials` set is the inventory of credential files).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sets: BTreeMap<String, Vec<String>>,
}

impl PolicyFile {
    /// Replaces every `"@set:name"` entry in the rules' lists by the named set
    /// (this file's own, or a built-in one).
    fn expand_sets(&mut self, origin: &str) -> Result<(), PolicyError> {
        let sets = std::mem::take(&mut self.sets);
        for rule in &mut self.rules {
            let id = rule.id.clone();
            let w = &mut rule.when;
            for list in [
                &mut w.program,
                &mut w.subcommand,
                &mut w.any_flag,
                &mut w.all_flags,
                &mut w.no_flag,
                &mut w.any_arg,
                &mut w.any_value,
                &mut w.any_path,
                &mut w.except_program,
                &mut w.via,
            ] {
                if !list.iter().any(|i| i.starts_with("@set:")) {
                    continue;
                }
                let mut out = Vec::with_capacity(list.len());
                for item in list.drain(..) {
                    let Some(name) = item.strip_prefix("@set:") else {
                        out.push(item);
                        continue;
                    };
                    if let Some(own) = sets.get(name) {
                        out.extend(own.iter().cloned());
                    } else if let Some((_, items)) = BUILTIN_SETS.iter().find(|(k, _)| *k == name) {
                        out.extend(items.iter().map(|s| s.to_string()));
                    } else {
                        return Err(PolicyError::Rule {
                            origin: origin.to_string(),
                            rule: id,
                            message: format!("`@set:{name}` names no set"),
                        });
                    }
                }
                *list = out;
            }
        }
        Ok(())
    }
}

/// How a program's options look.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramSpec {
    /// Options that take a value in the next word (`-n prod`, `--context x`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub value_options: Vec<String>,
    /// Single-dash long options (`find -name`), never split into letters.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub single_dash_long: bool,
}

/// The most paths [`Policy::deletion_paths`] returns for one line: a front
/// end looks at each, so their number is bounded.
pub const MAX_DELETION_PATHS: usize = 64;

/// One rule as written in TOML.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    pub decision: Decision,
    pub risk: Risk,
    /// Shown to reviewers and agents.
    pub reason: String,
    #[serde(flatten)]
    pub when: MatchSpec,
    #[serde(default, skip_serializing_if = "Examples::is_empty")]
    pub examples: Examples,
}

/// The conditions of a rule. All given conditions must hold; within a list,
/// any entry may match.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Program names (globs); `*` matches every program, `>`/`>>`/`<` the
    /// redirections and `sql` each SQL statement.
    pub program: Vec<String>,
    /// Leading positional words, space-separated globs per alternative
    /// (`"stash drop"`, `"* delete-*"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subcommand: Vec<String>,
    /// At least one of these flags is given (any spelling: bundled short
    /// flags, `--flag=value`, unambiguous long prefixes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any_flag: Vec<String>,
    /// Each entry (alternatives separated by `|`) is given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all_flags: Vec<String>,
    /// None of these flags is given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_flag: Vec<String>,
    /// A value of one of these flags matches one of the globs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub flag_value: BTreeMap<String, Vec<String>>,
    /// A positional argument after the subcommand matches one of the globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any_arg: Vec<String>,
    /// Any word (positional argument or flag value) matches one of the globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any_value: Vec<String>,
    /// A path argument, resolved (`~`, `$HOME`, the working directory),
    /// matches one of the globs; globs starting with `!` exclude.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any_path: Vec<String>,
    /// `outside`: some path is outside the working tree and temp dirs (or
    /// cannot be resolved); `outside_or_tree`: the same, counting the tree
    /// and temp dirs themselves as outside; `inside`: every path is inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<PathScope>,
    /// A path argument cannot be resolved statically.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dynamic_path: bool,
    /// No positional argument after the subcommand.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_args: bool,
    /// At least this many positional arguments after the subcommand.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_args: usize,
    /// Programs the rule never applies to (useful with `program = ["*"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except_program: Vec<String>,
    /// No word at all (neither flag nor argument) after the subcommand.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bare: bool,
    /// Reached through one of these wrappers (`sudo`, `ssh`, `xargs`…).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub via: Vec<String>,
    /// Compare arguments, flag values and subcommands case-insensitively.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nocase: bool,
    /// The rule does not fire on a dry run the tool honours: one of these
    /// entries names the program, the leading subcommand words and a flag
    /// given as the tool reads it (not a value of another option, not after
    /// `--`, not a word the gate cannot see).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<DryRun>,
    /// The rule does not fire on clean-up inside the project: every path the
    /// command deletes is inside the project root the front end found and
    /// inside the working tree, matches these globs (`@set:` names allowed),
    /// and the front end found no link leading out of the tree on its way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except_cleanup: Vec<String>,
    /// The rule fires only on clean-up inside the project (as above).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleanup: Vec<String>,
    /// Some path the command deletes goes through a link that leads out of
    /// the working tree or temp directory it is in (as the front end found).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub through_link: bool,
    /// `any_path` ignores paths inside the working tree: the tree wins over
    /// patterns for the directories it may live in (`/root/**`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tree_wins: bool,
}

/// A dry run a tool honours: `{ program = ["kubectl"], subcommand =
/// ["apply"], flag = ["--dry-run=client", "--dry-run=server"] }`. A flag
/// written without `=` must be given without a value; with `=`, with
/// exactly that value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DryRun {
    /// Programs this entry is for (empty: every program of the rule).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub program: Vec<String>,
    /// Leading positional words, as in a rule's `subcommand` (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subcommand: Vec<String>,
    /// The flags that make it a dry run.
    pub flag: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Where paths must lie for a rule to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathScope {
    /// Some path is outside the working tree and temp directories, or
    /// cannot be resolved. The working tree itself counts as inside.
    Outside,
    /// Like `outside`, but the working tree and the temp directories
    /// themselves count as outside too, and so does naming no path at all
    /// (for deletions).
    OutsideOrTree,
    /// Some path is outside the temp directories (the working tree counts as
    /// outside), or no path is named.
    OutsideTemp,
    /// Every path is inside the working tree or a temp directory.
    Inside,
}

/// Commands a rule must and must not fire on, checked when a policy loads.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Examples {
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matching: Vec<String>,
    #[serde(default, rename = "no_match", skip_serializing_if = "Vec::is_empty")]
    pub not_matching: Vec<String>,
}

impl Examples {
    fn is_empty(&self) -> bool {
        self.matching.is_empty() && self.not_matching.is_empty()
    }
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{origin}: invalid policy TOML: {message}")]
    Toml { origin: String, message: String },
    #[error("{origin}: rule `{rule}`: {message}")]
    Rule {
        origin: String,
        rule: String,
        message: String,
    },
    #[error("{origin}: toolbox entry `{tool}`: {message}")]
    Tool {
        origin: String,
        tool: String,
        message: String,
    },
    #[error("{origin}: duplicate rule id `{rule}`")]
    Duplicate { origin: String, rule: String },
    #[error("{origin}: `disable` names `{rule}`, which is not a built-in rule")]
    UnknownDisable { origin: String, rule: String },
    #[error("{}", format_failures(.0))]
    Examples(Vec<ExampleFailure>),
}

fn format_failures(f: &[ExampleFailure]) -> String {
    let mut s = format!("{} policy example(s) failed:", f.len());
    for x in f {
        s.push_str(&format!("\n  {x}"));
    }
    s
}

/// One example that did not behave as its rule says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExampleFailure {
    pub rule: String,
    pub command: String,
    /// The example was in `match` (it should have fired) or `no_match`.
    pub expected_match: bool,
    pub fired: Vec<String>,
}

impl std::fmt::Display for ExampleFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.expected_match {
            write!(
                f,
                "rule `{}` should match `{}` but did not (rules that fired: {})",
                self.rule,
                self.command,
                self.fired.join(", ")
            )
        } else {
            write!(
                f,
                "rule `{}` should not match `{}` but did",
                self.rule, self.command
            )
        }
    }
}

/// A rule: its id and programs, known at once; its spec and matcher,
/// parsed and compiled on first use for built-in rules.
#[derive(Debug, Clone)]
struct Rule {
    id: Cow<'static, str>,
    programs: Cow<'static, [Cow<'static, str>]>,
    /// Where the rule came from (`built-in` or a file path).
    origin: Cow<'static, str>,
    source: RuleSource,
    /// Boxed, so the table of rules a process starts with is small: only
    /// the rules a command needs are ever allocated and touched.
    compiled: OnceLock<Result<Box<(RuleSpec, Matcher)>, String>>,
}

#[derive(Debug, Clone)]
enum RuleSource {
    Json(&'static str),
    Spec,
}

impl Rule {
    fn from_spec(spec: RuleSpec, origin: &str) -> Result<Rule, PolicyError> {
        let matcher = Matcher::compile(&spec.when, spec.decision != Decision::Allow)
            .and_then(|m| m.check().map(|()| m))
            .map_err(|message| PolicyError::Rule {
                origin: origin.to_string(),
                rule: spec.id.clone(),
                message,
            })?;
        Ok(Rule {
            id: Cow::Owned(spec.id.clone()),
            programs: spec
                .when
                .program
                .iter()
                .map(|p| Cow::Owned(p.clone()))
                .collect::<Vec<_>>()
                .into(),
            origin: Cow::Owned(origin.to_string()),
            source: RuleSource::Spec,
            compiled: OnceLock::from(Ok(Box::new((spec, matcher)))),
        })
    }

    fn builtin(
        id: &'static str,
        programs: &'static [Cow<'static, str>],
        json: &'static str,
    ) -> Rule {
        Rule {
            id: Cow::Borrowed(id),
            programs: Cow::Borrowed(programs),
            origin: Cow::Borrowed("built-in"),
            source: RuleSource::Json(json),
            compiled: OnceLock::new(),
        }
    }

    /// The rule's spec and matcher, parsing and compiling it if needed.
    fn get(&self) -> Result<&(RuleSpec, Matcher), &str> {
        self.compiled
            .get_or_init(|| match self.source {
                RuleSource::Json(json) => {
                    let spec: RuleSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
                    let matcher = Matcher::compile(&spec.when, spec.decision != Decision::Allow)?;
                    Ok(Box::new((spec, matcher)))
                }
                RuleSource::Spec => Err("rule was not compiled".to_string()),
            })
            .as_ref()
            .map(|b| &**b)
            .map_err(String::as_str)
    }
}

/// A program spec, parsed on first use for built-in ones.
#[derive(Debug, Clone)]
struct Program {
    json: Option<&'static str>,
    spec: OnceLock<Box<ProgramSpec>>,
}

impl Program {
    fn get(&self) -> &ProgramSpec {
        self.spec.get_or_init(|| {
            // The build script checked the TOML; a spec that does not parse
            // falls back to no value options, which only makes matching stricter.
            Box::new(
                self.json
                    .and_then(|j| serde_json::from_str(j).ok())
                    .unwrap_or_default(),
            )
        })
    }
}

/// A built-in toolbox entry, compiled on first use (boxed, so the table a
/// process starts with stays small).
type ToolCell = OnceLock<Result<Box<Tool>, String>>;

/// The toolbox of a policy: the built-in entries, each compiled level by
/// level on first use (a runner process compiles only what its command
/// names), and the user's entries, layered over the built-in ones and
/// compiled when the policy loads.
#[derive(Debug, Clone)]
struct Toolbox {
    builtin: Box<[ToolCell]>,
    user: HashMap<String, (ToolSpec, Tool), Fnv>,
}

impl Toolbox {
    fn get(&self, name: &str) -> Option<Result<&Tool, &str>> {
        if let Some((_, t)) = self.user.get(name) {
            return Some(Ok(t));
        }
        let i = toolbox::builtin_index(name)?;
        let cell = self.builtin.get(i)?;
        Some(
            cell.get_or_init(|| {
                let (key, json) = BUILTIN_TOOLS[i];
                let spec: ToolSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
                Tool::compile(&spec, Some(key)).map(Box::new)
            })
            .as_ref()
            .map(|b| &**b)
            .map_err(String::as_str),
        )
    }

    /// Every program with an entry, sorted.
    fn names(&self) -> Vec<&str> {
        let mut out: Vec<&str> = BUILTIN_TOOLS
            .iter()
            .map(|(k, _)| *k)
            .chain(self.user.keys().map(String::as_str))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// A program's entry as a whole tree.
    fn spec(&self, name: &str) -> Option<ToolSpec> {
        match self.user.get(name) {
            Some((spec, _)) => Some(spec.clone()),
            None => toolbox::builtin_spec(name).ok(),
        }
    }
}

/// Pseudo-programs of the walk (redirections, SQL statements): their own
/// rules judge them whole; they have no words for a toolbox to account for.
const PSEUDO_PROGRAMS: &[&str] = &[">", ">>", "<", "sql"];

impl Entries for Policy {
    fn entry(&self, name: &str) -> Option<Result<&Tool, &str>> {
        self.tools.get(name)
    }
}

/// A compiled policy, ready to classify.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
    programs: HashMap<Cow<'static, str>, Program, Fnv>,
    tools: Toolbox,
    index: RuleIndex,
    by_glob: Vec<(Glob, usize)>,
    limits: Limits,
}

/// The index of a layered policy's rules, and its rules on program globs.
fn index_rules(rules: &[Rule]) -> Result<(RuleIndex, Vec<(Glob, usize)>), PolicyError> {
    let mut by_program: HashMap<Cow<'static, str>, Vec<usize>, Fnv> = HashMap::default();
    let mut by_glob = Vec::new();
    let mut every_program = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        for p in r.programs.iter() {
            if p.as_ref() == "*" {
                every_program.push(i);
                continue;
            }
            if !p.contains(['*', '?']) {
                by_program.entry(p.clone()).or_default().push(i);
                continue;
            }
            let g = Glob::new(p, false, false).map_err(|message| PolicyError::Rule {
                origin: r.origin.to_string(),
                rule: r.id.to_string(),
                message,
            })?;
            by_glob.push((g, i));
        }
    }
    let index = RuleIndex::Layered {
        by_program,
        every_program,
    };
    Ok((index, by_glob))
}

/// The built-in rules on program globs, from the build script's table.
fn builtin_globs(rules: &[Rule]) -> Result<Vec<(Glob, usize)>, PolicyError> {
    BUILTIN_BY_GLOB
        .iter()
        .map(|&(g, i)| {
            Glob::new(g, false, false)
                .map(|g| (g, i))
                .map_err(|message| PolicyError::Rule {
                    origin: "built-in".to_string(),
                    rule: rules.get(i).map(|r| r.id.to_string()).unwrap_or_default(),
                    message,
                })
        })
        .collect()
}

/// Which rules may apply to a program: for the built-in policy alone, the
/// build script's tables; for a layered one, a map built when it loads.
#[derive(Debug, Clone)]
enum RuleIndex {
    Builtin,
    Layered {
        by_program: HashMap<Cow<'static, str>, Vec<usize>, Fnv>,
        /// Rules on every program (`*`).
        every_program: Vec<usize>,
    },
}

impl RuleIndex {
    /// The rules on `program` by name, then the rules on every program.
    fn named(&self, program: &str) -> (&[usize], &[usize]) {
        match self {
            RuleIndex::Builtin => (
                BUILTIN_BY_PROGRAM
                    .binary_search_by(|(p, _)| (*p).cmp(program))
                    .map(|i| BUILTIN_BY_PROGRAM[i].1)
                    .unwrap_or(&[]),
                BUILTIN_EVERY_PROGRAM,
            ),
            RuleIndex::Layered {
                by_program,
                every_program,
            } => (
                by_program.get(program).map(Vec::as_slice).unwrap_or(&[]),
                every_program,
            ),
        }
    }
}

impl PolicyFile {
    /// Parses policy TOML; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<PolicyFile, PolicyError> {
        toml::from_str(text).map_err(|e| PolicyError::Toml {
            origin: origin.to_string(),
            message: e.to_string(),
        })
    }
}

impl Policy {
    /// The built-in default policy. Its examples are checked by the test
    /// suite (and by `holdpoint policy test`), not at every start.
    pub fn builtin() -> Result<Policy, PolicyError> {
        Policy::compile(Vec::new())
    }

    /// The built-in policy with a user policy layered over it. The user
    /// file's own examples are checked against the result; a failing example
    /// means the policy does not load.
    pub fn with_user(user: PolicyFile, origin: &str) -> Result<Policy, PolicyError> {
        let user_ids: Vec<String> = user.rules.iter().map(|r| r.id.clone()).collect();
        for d in &user.disable {
            if !BUILTIN_RULES.iter().any(|(id, _, _)| id == d) {
                return Err(PolicyError::UnknownDisable {
                    origin: origin.to_string(),
                    rule: d.clone(),
                });
            }
        }
        let policy = Policy::compile(vec![(user, origin.into())])?;
        let failures = policy.check_examples(Some(&user_ids));
        if !failures.is_empty() {
            return Err(PolicyError::Examples(failures));
        }
        Ok(policy)
    }

    /// The built-in rules, then each layer over them.
    fn compile(layers: Vec<(PolicyFile, String)>) -> Result<Policy, PolicyError> {
        let layers_empty = layers.is_empty();
        let mut rules: Vec<Rule> = BUILTIN_RULES
            .iter()
            .map(|(id, programs, json)| Rule::builtin(id, programs, json))
            .collect();
        let mut programs: HashMap<Cow<'static, str>, Program, Fnv> = BUILTIN_PROGRAMS
            .iter()
            .map(|(name, json)| {
                (
                    Cow::Borrowed(*name),
                    Program {
                        json: Some(json),
                        spec: OnceLock::new(),
                    },
                )
            })
            .collect();
        let mut tools = Toolbox {
            builtin: (0..BUILTIN_TOOLS.len()).map(|_| OnceLock::new()).collect(),
            user: HashMap::default(),
        };
        for (mut file, origin) in layers {
            file.expand_sets(&origin)?;
            for (name, over) in file.tools {
                // A user entry adds to the entry of the same name below it.
                let spec = match tools.spec(&name) {
                    Some(mut base) => {
                        base.merge(over);
                        base
                    }
                    None => over,
                };
                let tool = Tool::compile(&spec, None)
                    .and_then(|t| t.check_globs().map(|()| t))
                    .map_err(|message| PolicyError::Tool {
                        origin: origin.clone(),
                        tool: name.clone(),
                        message,
                    })?;
                tools.user.insert(name, (spec, tool));
            }
            let mut seen = std::collections::HashSet::new();
            for d in &file.disable {
                rules.retain(|r| r.id != d.as_str());
            }
            for (name, spec) in file.programs {
                programs.insert(
                    Cow::Owned(name),
                    Program {
                        json: None,
                        spec: OnceLock::from(Box::new(spec)),
                    },
                );
            }
            for spec in file.rules {
                if !seen.insert(spec.id.clone()) {
                    return Err(PolicyError::Duplicate {
                        origin,
                        rule: spec.id,
                    });
                }
                let rule = Rule::from_spec(spec, &origin)?;
                match rules.iter().position(|r| r.id == rule.id) {
                    Some(i) => rules[i] = rule,
                    None => rules.push(rule),
                }
            }
        }
        let (index, by_glob) = if layers_empty {
            (RuleIndex::Builtin, builtin_globs(&rules)?)
        } else {
            index_rules(&rules)?
        };
        Ok(Policy {
            rules,
            programs,
            tools,
            index,
            by_glob,
            limits: Limits::default(),
        })
    }

    /// Replaces the limits on the work one classification may do.
    pub fn with_limits(mut self, limits: Limits) -> Policy {
        self.limits = limits;
        self
    }

    /// Classifies a command line. Never fails: at worst the verdict is
    /// `review`, with the reason the gate could not decide.
    pub fn classify(&self, line: &str, ctx: &Context) -> Verdict {
        // Classification never panics outward: a bug becomes a review.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.classify_inner(line, ctx)
        })) {
            Ok(v) => v,
            Err(_) => Verdict::from_hits(vec![Hit {
                rule: "gate.internal-error".into(),
                decision: Decision::Review,
                risk: Risk::High,
                reason: "the gate failed while examining this command; a human must decide".into(),
                part: shell::shorten(line, 300),
            }]),
        }
    }

    /// The paths the deletions in a line name (`rm`, `rmdir`, `unlink`,
    /// `shred`, `find … -delete`, and those reached through wrappers and
    /// `find -exec`), absolute and normalised exactly as classification
    /// resolves them, at most [`MAX_DELETION_PATHS`]. A front end looks at
    /// each before classifying and hands what it found in
    /// [`Context::links`]; this reads no file.
    pub fn deletion_paths(&self, line: &str, ctx: &Context) -> Vec<String> {
        const DELETERS: &[&str] = &["rm", "rmdir", "unlink", "shred", "find"];
        let analysis = shell::analyse(line, ctx, &self.limits);
        let empty = ProgramSpec::default();
        let mut out: Vec<String> = Vec::new();
        for inv in &analysis.invocations {
            if !DELETERS.contains(&inv.program.as_str()) {
                continue;
            }
            if inv.program == "find" && !inv.args.iter().any(|a| a.text == "-delete") {
                continue;
            }
            let spec = self
                .programs
                .get(inv.program.as_str())
                .map(Program::get)
                .unwrap_or(&empty);
            let tool = self.tools.get(inv.program.as_str()).and_then(Result::ok);
            let parsed = ParsedArgs::new(inv, spec, tool);
            for p in matcher::deletion_paths(inv, &parsed, &ctx.home) {
                if out.len() >= MAX_DELETION_PATHS {
                    return out;
                }
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }

    fn classify_inner(&self, line: &str, ctx: &Context) -> Verdict {
        let analysis = shell::analyse(line, ctx, &self.limits);
        let mut hits = analysis.findings;
        if analysis.invocations.is_empty() && hits.is_empty() {
            hits.push(Hit {
                rule: "gate.nothing-runs".into(),
                decision: Decision::Allow,
                risk: Risk::Low,
                reason: "the line runs no program".into(),
                part: String::new(),
            });
        }
        let empty = ProgramSpec::default();
        let mut broken: Vec<Hit> = Vec::new();
        let mut candidates: Vec<usize> = Vec::new();
        for inv in &analysis.invocations {
            let spec = self
                .programs
                .get(inv.program.as_str())
                .map(Program::get)
                .unwrap_or(&empty);
            let tool = self.tools.get(inv.program.as_str()).and_then(Result::ok);
            let parsed = ParsedArgs::new(inv, spec, tool);
            candidates.clear();
            let (named, every) = self.index.named(inv.program.as_str());
            candidates.extend_from_slice(named);
            for (g, i) in &self.by_glob {
                if g.matches(&inv.program) {
                    candidates.push(*i);
                }
            }
            candidates.extend_from_slice(every);
            candidates.sort_unstable();
            candidates.dedup();
            let mut matched = false;
            let mut part: Option<String> = None;
            // Whether the toolbox accounts for every word: asked once, and
            // only when an allow rule would match.
            let mut closed: Option<Result<(), Unaccounted>> = None;
            for &i in &candidates {
                let r = &self.rules[i];
                let (spec, matcher) = match r.get() {
                    Ok(c) => c,
                    Err(e) => {
                        // A rule that cannot be read fails closed.
                        broken.push(Hit {
                            rule: "gate.rule-error".into(),
                            decision: Decision::Review,
                            risk: Risk::High,
                            reason: format!(
                                "rule `{}` could not be read ({e}); a human must decide",
                                r.id
                            ),
                            part: inv.display(),
                        });
                        continue;
                    }
                };
                if matcher.matches(inv, &parsed, ctx) {
                    if spec.decision == Decision::Allow
                        && !PSEUDO_PROGRAMS.contains(&inv.program.as_str())
                        && closed
                            .get_or_insert_with(|| toolbox::account(self, inv, ctx))
                            .is_err()
                    {
                        continue;
                    }
                    // Rules on every program (`*`) do not make a program known.
                    matched |= !r.programs.iter().any(|p| p == "*");
                    let part = part.get_or_insert_with(|| inv.display()).clone();
                    // A denial that rests on a word the gate could not see is
                    // for a human to judge, not final.
                    let assumed =
                        spec.decision == Decision::Deny && !matcher.matches_seen(inv, &parsed, ctx);
                    hits.push(Hit {
                        rule: spec.id.clone(),
                        decision: if assumed {
                            Decision::Review
                        } else {
                            spec.decision
                        },
                        risk: spec.risk,
                        reason: if assumed {
                            format!(
                                "{} (if the words the gate cannot see are what they may be)",
                                spec.reason
                            )
                        } else {
                            spec.reason.clone()
                        },
                        part,
                    });
                }
            }
            if !matched && let Some(Err(u)) = &closed {
                hits.push(Hit {
                    rule: "gate.unaccounted".into(),
                    decision: Decision::Review,
                    risk: Risk::Medium,
                    reason: format!(
                        "`{}` in this `{}` command is {}; only commands whose every word is known to be harmless run at once",
                        u.word,
                        shell::shorten(&inv.program, 60),
                        u.why
                    ),
                    part: part.unwrap_or_else(|| inv.display()),
                });
            } else if !matched {
                hits.push(Hit {
                    rule: "gate.unknown".into(),
                    decision: Decision::Review,
                    risk: Risk::Medium,
                    reason: format!(
                        "no rule vouches for `{}`; a human must decide",
                        shell::shorten(&inv.program, 60)
                    ),
                    part: part.unwrap_or_else(|| inv.display()),
                });
            }
        }
        hits.extend(broken);
        Verdict::from_hits(hits)
    }

    /// Checks rule examples (all rules, or only the given ids) with the fixed
    /// example context: working directory `/home/dev/project`, home
    /// `/home/dev`, a project on a file system without links.
    pub fn check_examples(&self, only: Option<&[String]>) -> Vec<ExampleFailure> {
        let fixed = Context::fixed();
        let mut failures = Vec::new();
        for r in &self.rules {
            if only.is_some_and(|ids| !ids.iter().any(|i| *i == r.id)) {
                continue;
            }
            let spec = match r.get() {
                Ok((spec, _)) => spec,
                Err(e) => {
                    failures.push(ExampleFailure {
                        rule: r.id.to_string(),
                        command: format!("(the rule does not load: {e})"),
                        expected_match: true,
                        fired: Vec::new(),
                    });
                    continue;
                }
            };
            for (cmds, expect) in [
                (&spec.examples.matching, true),
                (&spec.examples.not_matching, false),
            ] {
                for cmd in cmds {
                    // The example directory is a project on a file system
                    // without links: what a front end would find there.
                    let ctx = Context::fixed_project(self.deletion_paths(cmd, &fixed));
                    let v = self.classify(cmd, &ctx);
                    let fired: Vec<String> = v.hits.iter().map(|h| h.rule.clone()).collect();
                    if fired.iter().any(|f| *f == r.id) != expect {
                        failures.push(ExampleFailure {
                            rule: r.id.to_string(),
                            command: cmd.clone(),
                            expected_match: expect,
                            fired,
                        });
                    }
                }
            }
        }
        failures
    }

    /// The effective policy as a TOML document (what `holdpoint policy show`
    /// prints).
    pub fn to_toml(&self) -> String {
        let mut programs: Vec<(&Cow<'static, str>, &Program)> = self.programs.iter().collect();
        programs.sort_by(|a, b| a.0.cmp(b.0));
        let file = PolicyFile {
            tools: self
                .tools
                .names()
                .into_iter()
                .filter_map(|k| self.tools.spec(k).map(|spec| (k.to_string(), spec)))
                .collect(),
            disable: Vec::new(),
            sets: BTreeMap::new(),
            programs: programs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.get().clone()))
                .collect(),
            rules: self
                .rules
                .iter()
                .filter_map(|r| r.get().ok().map(|(spec, _)| spec.clone()))
                .collect(),
        };
        toml::to_string(&file).unwrap_or_else(|e| format!("# could not render the policy: {e}\n"))
    }

    /// The programs some allow rule names (literal names only, without the
    /// walk's pseudo-programs), sorted: what the closed-world search covers.
    pub fn allowed_programs(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .rules
            .iter()
            .filter_map(|r| r.get().ok())
            .filter(|(spec, _)| spec.decision == Decision::Allow)
            .flat_map(|(spec, _)| spec.when.program.iter())
            .filter(|p| !PSEUDO_PROGRAMS.contains(&p.as_str()) && !p.contains(['*', '?']))
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// A program's toolbox entry as a whole tree, if it has one.
    pub fn tool(&self, name: &str) -> Option<ToolSpec> {
        self.tools.spec(name)
    }

    /// The ids of all rules, with their origin.
    pub fn rule_origins(&self) -> Vec<(&str, &str)> {
        self.rules
            .iter()
            .map(|r| (r.id.as_ref(), r.origin.as_ref()))
            .collect()
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the policy has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The build script's rule index finds, for every program, the rules the
    /// index a layered policy builds finds.
    #[test]
    fn the_static_rule_index_matches_the_built_one() {
        let policy = Policy::builtin().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(policy.index, RuleIndex::Builtin));
        let (built, globs) = index_rules(&policy.rules).unwrap_or_else(|e| panic!("{e}"));
        let RuleIndex::Layered { by_program, .. } = &built else {
            panic!("index_rules builds a layered index");
        };
        assert!(
            by_program.len() > 50,
            "too few programs: {}",
            by_program.len()
        );
        let mut names: Vec<&str> = by_program.keys().map(|k| k.as_ref()).collect();
        names.extend(["no-such-program", "", "*"]);
        let sorted = |(a, b): (&[usize], &[usize])| {
            let mut v: Vec<usize> = a.iter().chain(b).copied().collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        for name in names {
            assert_eq!(
                sorted(policy.index.named(name)),
                sorted(built.named(name)),
                "rules on {name:?}"
            );
        }
        let glob_rules = |g: &[(Glob, usize)]| g.iter().map(|(_, i)| *i).collect::<Vec<_>>();
        assert_eq!(glob_rules(&policy.by_glob), glob_rules(&globs));
    }

    #[test]
    fn the_built_in_index_is_the_toml_policy() {
        let file = builtin_file().unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<&str> = file.rules.iter().map(|r| r.id.as_str()).collect();
        let indexed: Vec<&str> = BUILTIN_RULES.iter().map(|(id, _, _)| *id).collect();
        assert_eq!(ids, indexed);
        let policy = Policy::builtin().unwrap_or_else(|e| panic!("{e}"));
        // Every level of every entry compiles, globs included.
        let mut broken: Vec<String> = Vec::new();
        let mut levels = 0;
        for name in policy.tools.names() {
            match policy.tools.get(name) {
                Some(Ok(t)) => match t.check_all(name) {
                    Ok(n) => levels += n,
                    Err(e) => broken.push(e),
                },
                Some(Err(e)) => broken.push(format!("{name}: {e}")),
                None => broken.push(format!("{name}: listed but not found")),
            }
        }
        assert!(levels >= BUILTIN_TOOLS.len() + BUILTIN_TOOL_LEVELS.len());
        assert!(
            broken.is_empty(),
            "toolbox entries that do not load:\n{}",
            broken.join("\n")
        );
        let shown = PolicyFile::parse(&policy.to_toml(), "shown").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(toml::to_string(&shown).ok(), toml::to_string(&file).ok());
        for r in &policy.rules {
            match r.get() {
                Ok((_, m)) => {
                    if let Err(e) = m.check() {
                        panic!("rule {}: {e}", r.id);
                    }
                }
                Err(e) => panic!("rule {} does not load: {e}", r.id),
            }
        }
    }

    /// An allow rule on a program with no toolbox entry could never match:
    /// every program a built-in allow rule names has one, and every entry a
    /// `tool` hand-over names exists.
    #[test]
    fn every_allowed_program_has_a_toolbox_entry() {
        let policy = Policy::builtin().unwrap_or_else(|e| panic!("{e}"));
        let mut missing = Vec::new();
        for r in &policy.rules {
            let Ok((spec, _)) = r.get() else { continue };
            if spec.decision != Decision::Allow {
                continue;
            }
            for p in &spec.when.program {
                if PSEUDO_PROGRAMS.contains(&p.as_str()) || p.contains(['*', '?']) {
                    continue;
                }
                if policy.tools.get(p).is_none() {
                    missing.push(format!("{p} (rule {})", spec.id));
                }
            }
        }
        fn delegates(spec: &ToolSpec, out: &mut Vec<String>) {
            out.extend(spec.tool.iter().cloned());
            for kind in spec.options.values().chain(spec.args.iter().flatten()) {
                if let Some(list) = kind.trim_end_matches("...").strip_prefix("tool:") {
                    out.extend(list.split('|').map(str::to_string));
                }
            }
            for s in spec.sub.values() {
                delegates(s, out);
            }
        }
        for name in policy.tools.names() {
            let Some(spec) = policy.tools.spec(name) else {
                missing.push(format!("{name} (its entry does not assemble)"));
                continue;
            };
            let mut d = Vec::new();
            delegates(&spec, &mut d);
            for n in d {
                if policy.tools.get(&n).is_none() {
                    missing.push(format!("{n} (handed over to by {name})"));
                }
            }
        }
        missing.sort();
        missing.dedup();
        assert!(
            missing.is_empty(),
            "no toolbox entry for: {}",
            missing.join(", ")
        );
    }
}

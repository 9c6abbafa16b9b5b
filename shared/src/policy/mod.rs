//! Rules in TOML, compiled into a [`Policy`] that classifies command lines.
//!
//! Every invocation the shell walk finds is matched against every rule for
//! its program; all rules that match contribute a hit, the strictest hit
//! decides, and an invocation no rule matches is `review`. A user policy is
//! layered over the built-in one: a user rule with the same id replaces the
//! built-in rule, `disable` removes built-in rules, and every other rule
//! applies alongside. Because the strictest hit wins, a user allow rule
//! cannot loosen a built-in review or deny without replacing or disabling it
//! by id, which shows up in `holdpoint policy show`.

mod glob;
mod matcher;

use crate::context::Context;
use crate::shell::{self, Limits};
use crate::verdict::{Decision, Hit, Risk, Verdict};
pub use glob::Glob;
use matcher::{Matcher, ParsedArgs};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The built-in default policy, compiled into the binary.
pub const BUILTIN_POLICY: &str = include_str!("default.toml");

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

/// A compiled rule.
#[derive(Debug, Clone)]
struct Rule {
    spec: RuleSpec,
    matcher: Matcher,
    /// Where the rule came from (`built-in` or a file path).
    origin: String,
}

/// A compiled policy, ready to classify.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
    programs: HashMap<String, ProgramSpec>,
    by_program: HashMap<String, Vec<usize>>,
    by_glob: Vec<(Glob, usize)>,
    limits: Limits,
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
        let file = PolicyFile::parse(BUILTIN_POLICY, "built-in policy")?;
        Policy::compile(vec![(file, "built-in".to_string())])
    }

    /// The built-in policy with a user policy layered over it. The user
    /// file's own examples are checked against the result; a failing example
    /// means the policy does not load.
    pub fn with_user(user: PolicyFile, origin: &str) -> Result<Policy, PolicyError> {
        let builtin = PolicyFile::parse(BUILTIN_POLICY, "built-in policy")?;
        let user_ids: Vec<String> = user.rules.iter().map(|r| r.id.clone()).collect();
        for d in &user.disable {
            if !builtin.rules.iter().any(|r| &r.id == d) {
                return Err(PolicyError::UnknownDisable {
                    origin: origin.to_string(),
                    rule: d.clone(),
                });
            }
        }
        let policy = Policy::compile(vec![(builtin, "built-in".into()), (user, origin.into())])?;
        let failures = policy.check_examples(Some(&user_ids));
        if !failures.is_empty() {
            return Err(PolicyError::Examples(failures));
        }
        Ok(policy)
    }

    fn compile(layers: Vec<(PolicyFile, String)>) -> Result<Policy, PolicyError> {
        let mut rules: Vec<Rule> = Vec::new();
        let mut programs: HashMap<String, ProgramSpec> = HashMap::new();
        for (file, origin) in layers {
            let mut seen = std::collections::HashSet::new();
            for d in &file.disable {
                rules.retain(|r| &r.spec.id != d);
            }
            for (name, spec) in file.programs {
                programs.insert(name, spec);
            }
            for spec in file.rules {
                if !seen.insert(spec.id.clone()) {
                    return Err(PolicyError::Duplicate {
                        origin,
                        rule: spec.id,
                    });
                }
                let matcher = Matcher::compile(&spec.when, spec.decision != Decision::Allow)
                    .map_err(|message| PolicyError::Rule {
                        origin: origin.clone(),
                        rule: spec.id.clone(),
                        message,
                    })?;
                let rule = Rule {
                    spec,
                    matcher,
                    origin: origin.clone(),
                };
                match rules.iter().position(|r| r.spec.id == rule.spec.id) {
                    Some(i) => rules[i] = rule,
                    None => rules.push(rule),
                }
            }
        }
        let mut by_program: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_glob = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            for p in &r.spec.when.program {
                if !p.contains(['*', '?']) {
                    by_program.entry(p.clone()).or_default().push(i);
                    continue;
                }
                let g = Glob::new(p, false, false).map_err(|message| PolicyError::Rule {
                    origin: r.origin.clone(),
                    rule: r.spec.id.clone(),
                    message,
                })?;
                by_glob.push((g, i));
            }
        }
        Ok(Policy {
            rules,
            programs,
            by_program,
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
        let mut candidates: Vec<usize> = Vec::new();
        for inv in &analysis.invocations {
            let spec = self.programs.get(&inv.program).unwrap_or(&empty);
            let parsed = ParsedArgs::new(inv, spec);
            candidates.clear();
            if let Some(v) = self.by_program.get(&inv.program) {
                candidates.extend_from_slice(v);
            }
            for (g, i) in &self.by_glob {
                if g.matches(&inv.program) {
                    candidates.push(*i);
                }
            }
            candidates.sort_unstable();
            candidates.dedup();
            let mut matched = false;
            let mut part: Option<String> = None;
            for &i in &candidates {
                let r = &self.rules[i];
                if r.matcher.matches(inv, &parsed, ctx) {
                    // Rules on every program (`*`) do not make a program known.
                    matched |= !r.spec.when.program.iter().any(|p| p == "*");
                    let part = part.get_or_insert_with(|| inv.display()).clone();
                    // A denial that rests on a word the gate could not see is
                    // for a human to judge, not final.
                    let assumed = r.spec.decision == Decision::Deny
                        && !r.matcher.matches_seen(inv, &parsed, ctx);
                    hits.push(Hit {
                        rule: r.spec.id.clone(),
                        decision: if assumed {
                            Decision::Review
                        } else {
                            r.spec.decision
                        },
                        risk: r.spec.risk,
                        reason: if assumed {
                            format!(
                                "{} (if the words the gate cannot see are what they may be)",
                                r.spec.reason
                            )
                        } else {
                            r.spec.reason.clone()
                        },
                        part,
                    });
                }
            }
            if !matched {
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
        Verdict::from_hits(hits)
    }

    /// Checks rule examples (all rules, or only the given ids) with the fixed
    /// example context: working directory `/home/dev/project`, home
    /// `/home/dev`.
    pub fn check_examples(&self, only: Option<&[String]>) -> Vec<ExampleFailure> {
        let ctx = Context::fixed();
        let mut failures = Vec::new();
        for r in &self.rules {
            if only.is_some_and(|ids| !ids.contains(&r.spec.id)) {
                continue;
            }
            for (cmds, expect) in [
                (&r.spec.examples.matching, true),
                (&r.spec.examples.not_matching, false),
            ] {
                for cmd in cmds {
                    let v = self.classify(cmd, &ctx);
                    let fired: Vec<String> = v.hits.iter().map(|h| h.rule.clone()).collect();
                    if fired.contains(&r.spec.id) != expect {
                        failures.push(ExampleFailure {
                            rule: r.spec.id.clone(),
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
        let mut programs: Vec<(&String, &ProgramSpec)> = self.programs.iter().collect();
        programs.sort_by(|a, b| a.0.cmp(b.0));
        let file = PolicyFile {
            disable: Vec::new(),
            programs: programs
                .into_iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            rules: self.rules.iter().map(|r| r.spec.clone()).collect(),
        };
        toml::to_string(&file).unwrap_or_else(|e| format!("# could not render the policy: {e}\n"))
    }

    /// The ids of all rules, with their origin.
    pub fn rule_origins(&self) -> Vec<(&str, &str)> {
        self.rules
            .iter()
            .map(|r| (r.spec.id.as_str(), r.origin.as_str()))
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

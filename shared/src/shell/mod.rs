//! From a command line to every simple command it would run.
//!
//! The line is parsed with a real shell parser (brush-parser) and walked:
//! lists, pipelines, subshells, groups, loops, conditionals, function bodies,
//! command and process substitutions, here-documents fed to shells, and the
//! payloads of `sh -c`, wrappers (`sudo`, `env`, `timeout`, `xargs`,
//! `find -exec`, …) and interpreters. Each simple command becomes an
//! [`Invocation`] with literal words after quote removal; whatever the walk
//! cannot resolve statically becomes a finding ([`Hit`]) that is at least
//! `review`.
//!
//! Invariant: analysis never fails and never panics outward. A parse error,
//! a size, depth or time limit adds a `review` finding; it never removes one.

mod programs;
pub mod word;

use crate::context::{Context, normalize};
use crate::verdict::{Decision, Hit, Risk};
use brush_parser::ast;
use brush_parser::{ParserOptions, word as bword};
pub use programs::plain_substitution;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use word::{Inner, Seen, Vars};
pub use word::{UNKNOWN, Word};

/// One simple command the line would run, after unwrapping.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The program, normalised: basename, quotes and escapes removed.
    /// Redirections appear as the pseudo-programs `>`, `>>` and `<`, SQL
    /// statements as `sql`.
    pub program: String,
    /// The arguments after quote removal and static expansion.
    pub args: Vec<Word>,
    /// Assignments placed before the command (`FOO=1 cmd`).
    pub env: Vec<(String, Word)>,
    /// The directory the command runs in, when it can be known.
    pub cwd: Option<String>,
    /// The wrappers and shells this command was reached through, outermost first.
    pub via: Vec<String>,
}

impl Invocation {
    /// The invocation as one line, for explanations and reviewers.
    pub fn display(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.env {
            s.push_str(k);
            s.push('=');
            s.push_str(&v.text);
            s.push(' ');
        }
        s.push_str(&self.program);
        for a in &self.args {
            s.push(' ');
            if a.text.is_empty() || a.text.contains(char::is_whitespace) {
                s.push('\'');
                s.push_str(&a.text);
                s.push('\'');
            } else {
                s.push_str(&a.text);
            }
        }
        shorten(&s, 300)
    }
}

/// Shortens text for display, on a character boundary.
pub fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Everything the walk found.
#[derive(Debug, Default)]
pub struct Analysis {
    pub invocations: Vec<Invocation>,
    /// Findings of the walk itself (unresolvable words, parse errors, limits).
    pub findings: Vec<Hit>,
}

/// Bounds on the work one classification may do. Reaching any of them adds a
/// `review` finding.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest command line parsed, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of shells inside shells (`bash -c 'bash -c …'`).
    pub max_depth: usize,
    /// Most simple commands looked at.
    pub max_invocations: usize,
    /// Deepest bracket nesting handed to the parser.
    pub max_brackets: usize,
    /// Wall-clock budget.
    pub time_budget: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 256 * 1024,
            max_depth: 12,
            max_invocations: 4096,
            max_brackets: 48,
            time_budget: Duration::from_millis(250),
        }
    }
}

/// Splits a command line into invocations.
pub fn analyse(line: &str, ctx: &Context, limits: &Limits) -> Analysis {
    let mut a = Analyzer {
        ctx,
        limits,
        opts: ParserOptions::default(),
        out: Analysis::default(),
        functions: HashSet::new(),
        defining: Vec::new(),
        started: Instant::now(),
        stopped: false,
    };
    let mut scope = Scope {
        cwd: ctx.cwd.clone(),
        vars: Vec::new(),
    };
    a.script(line, &mut scope, 0, &[]);
    a.out
}

/// Shell state that changes as a script runs: the directory and the
/// variables assigned so far.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub cwd: Option<String>,
    /// Variables set in the script. `None` means set to something unknown.
    pub vars: Vec<(String, Option<String>)>,
}

struct View<'a> {
    scope: &'a Scope,
    ctx: &'a Context,
}

impl Vars for View<'_> {
    fn lookup(&self, name: &str) -> Option<Option<&str>> {
        if let Some((_, v)) = self.scope.vars.iter().rev().find(|(n, _)| n == name) {
            return Some(v.as_deref());
        }
        if name == "PWD" {
            return Some(self.scope.cwd.as_deref());
        }
        self.ctx.env.get(name).map(|v| Some(v.as_str()))
    }
    fn home(&self) -> &str {
        match self.lookup("HOME") {
            Some(Some(h)) => h,
            _ => &self.ctx.home,
        }
    }
}

impl Scope {
    pub fn set(&mut self, name: &str, value: Option<String>) {
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.to_string(), value));
    }
}

/// How a command's standard input is fed.
#[derive(Debug, Clone)]
pub(crate) enum Stdin {
    /// Inherited from the caller (a terminal, or nothing).
    Inherit,
    /// Text the gate can read: a here-document, here-string or `echo` output.
    Literal(String),
    /// Output of another command, or text with unknown parts.
    Unknown { producer: String },
    /// A file.
    File(String),
}

/// What a command writes to its standard output, for the next pipeline stage.
#[derive(Debug, Clone)]
pub(crate) enum Output {
    Literal(String),
    From(String),
}

impl Output {
    fn into_stdin(self) -> Stdin {
        match self {
            Output::Literal(s) => Stdin::Literal(s),
            Output::From(p) => Stdin::Unknown { producer: p },
        }
    }
}

pub(crate) struct Analyzer<'a> {
    pub ctx: &'a Context,
    pub limits: &'a Limits,
    pub opts: ParserOptions,
    pub out: Analysis,
    pub functions: HashSet<String>,
    /// The functions whose bodies are being walked (to see recursion).
    defining: Vec<String>,
    started: Instant,
    stopped: bool,
}

/// A character that can hide or reorder what a command does (the control
/// characters have their own finding).
fn is_invisible(c: char) -> bool {
    !c.is_control() && crate::text::hidden(c) == Some(crate::text::Hidden::Format)
}

/// Whether a run of 10 or more digits stands right before `<` or `>`: a file
/// descriptor number the parser cannot hold (it would panic).
fn has_huge_fd_number(line: &str) -> bool {
    let mut run = 0;
    for b in line.bytes() {
        if b.is_ascii_digit() {
            run += 1;
        } else {
            if run >= 10 && (b == b'<' || b == b'>') {
                return true;
            }
            run = 0;
        }
    }
    false
}

/// The longest run of `(` with only blanks between them: each one doubles
/// the parser's work when it tries `((` as arithmetic and as subshells.
fn paren_run(line: &str) -> usize {
    let (mut run, mut max) = (0, 0);
    for b in line.bytes() {
        match b {
            b'(' => {
                run += 1;
                max = max.max(run);
            }
            b' ' | b'\t' => {}
            _ => run = 0,
        }
    }
    max
}

/// The deepest nesting of brackets, ignoring quotes (an over-estimate).
fn bracket_depth(line: &str) -> usize {
    let mut depth: usize = 0;
    let mut max = 0;
    for b in line.bytes() {
        match b {
            b'(' | b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b')' | b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

impl<'a> Analyzer<'a> {
    /// Records a finding of the walk.
    pub fn flag(&mut self, rule: &str, decision: Decision, risk: Risk, reason: &str, part: &str) {
        if self
            .out
            .findings
            .iter()
            .any(|h| h.rule == rule && h.part == part)
        {
            return;
        }
        self.out.findings.push(Hit {
            rule: rule.to_string(),
            decision,
            risk,
            reason: reason.to_string(),
            part: shorten(part, 300),
        });
    }

    fn over_budget(&mut self) -> bool {
        if self.stopped {
            return true;
        }
        if self.out.invocations.len() >= self.limits.max_invocations {
            self.stopped = true;
            self.flag(
                "gate.limit",
                Decision::Review,
                Risk::High,
                "the command line has more parts than the gate examines; a human must look at it",
                "",
            );
            return true;
        }
        if self.started.elapsed() > self.limits.time_budget {
            self.stopped = true;
            self.flag(
                "gate.limit",
                Decision::Review,
                Risk::High,
                "examining the command line took longer than the gate allows; a human must look at it",
                "",
            );
            return true;
        }
        false
    }

    /// Analyses a piece of shell code (the whole line, a `-c` payload, a
    /// substitution body) in the given scope.
    pub fn script(&mut self, text: &str, scope: &mut Scope, depth: usize, via: &[String]) {
        if self.over_budget() {
            return;
        }
        if depth > self.limits.max_depth {
            self.flag(
                "gate.limit",
                Decision::Review,
                Risk::High,
                "shells are nested deeper than the gate follows",
                text,
            );
            return;
        }
        if text.len() > self.limits.max_bytes {
            self.flag(
                "gate.limit",
                Decision::Review,
                Risk::High,
                "the command is longer than the gate parses",
                text,
            );
            return;
        }
        if let Some(c) = text
            .chars()
            .find(|&c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{7f}')
        {
            self.flag(
                "gate.control-char",
                Decision::Review,
                Risk::High,
                "the command holds a control character; terminals and shells may not show or read it as it looks",
                &format!("U+{:04X}", c as u32),
            );
        }
        if let Some(c) = text.chars().find(|&c| is_invisible(c)) {
            self.flag(
                "gate.invisible-char",
                Decision::Review,
                Risk::High,
                "the command holds an invisible or bidirectional-override character that can hide what it does",
                &format!("U+{:04X}", c as u32),
            );
        }
        if has_huge_fd_number(text) {
            self.flag(
                "gate.limit",
                Decision::Review,
                Risk::High,
                "a redirection names a file descriptor number out of range; the gate does not parse it",
                text,
            );
            return;
        }
        // Many unclosed `(` make the parser backtrack exponentially (it tries
        // `((` as arithmetic and as nested subshells at every level).
        let opens = text.bytes().filter(|&b| b == b'(').count();
        let closes = text.bytes().filter(|&b| b == b')').count();
        if opens.saturating_sub(closes) > 8 || paren_run(text) > 12 {
            self.flag(
                "gate.limit",
                Decision::Review,
                Risk::High,
                "the command has many unclosed or stacked parentheses; the gate does not parse it",
                text,
            );
            return;
        }
        if bracket_depth(text) > self.limits.max_brackets {
            self.flag(
                "gate.limit",
                Decision::Review,
                Risk::High,
                "the command nests brackets deeper than the gate parses",
                text,
            );
            return;
        }
        let opts = self.opts.clone();
        let parsed = std::panic::catch_unwind(|| {
            let mut p = brush_parser::Parser::new(std::io::BufReader::new(text.as_bytes()), &opts);
            p.parse_program()
        });
        match parsed {
            Ok(Ok(program)) => {
                for list in &program.complete_commands {
                    self.compound_list(list, scope, depth, via);
                }
            }
            Ok(Err(e)) => self.flag(
                "gate.parse-error",
                Decision::Review,
                Risk::High,
                "the gate could not parse this as shell; a human must read it",
                &format!("{e}: {}", shorten(text, 200)),
            ),
            Err(_) => self.flag(
                "gate.parse-error",
                Decision::Review,
                Risk::High,
                "the shell parser failed on this input; a human must read it",
                text,
            ),
        }
    }

    fn compound_list(
        &mut self,
        list: &ast::CompoundList,
        scope: &mut Scope,
        depth: usize,
        via: &[String],
    ) {
        for item in &list.0 {
            match item.1 {
                ast::SeparatorOperator::Sequence => self.and_or(&item.0, scope, depth, via),
                ast::SeparatorOperator::Async => {
                    let mut sub = scope.clone();
                    self.and_or(&item.0, &mut sub, depth, via);
                }
            }
        }
    }

    fn and_or(&mut self, list: &ast::AndOrList, scope: &mut Scope, depth: usize, via: &[String]) {
        let before = scope.cwd.clone();
        self.pipeline(&list.first, scope, depth, via);
        for next in &list.additional {
            match next {
                ast::AndOr::And(p) => self.pipeline(p, scope, depth, via),
                ast::AndOr::Or(p) => {
                    // The right side runs when the left failed: a `cd` on the left
                    // may or may not have happened.
                    if scope.cwd != before {
                        scope.cwd = None;
                    }
                    self.pipeline(p, scope, depth, via)
                }
            }
        }
    }

    fn pipeline(&mut self, p: &ast::Pipeline, scope: &mut Scope, depth: usize, via: &[String]) {
        if p.seq.len() == 1 {
            self.command(&p.seq[0], scope, Stdin::Inherit, depth, via);
            return;
        }
        let mut stdin = Stdin::Inherit;
        for cmd in &p.seq {
            let mut sub = scope.clone();
            let out = self.command(cmd, &mut sub, stdin, depth, via);
            stdin = out.into_stdin();
        }
    }

    fn command(
        &mut self,
        cmd: &ast::Command,
        scope: &mut Scope,
        stdin: Stdin,
        depth: usize,
        via: &[String],
    ) -> Output {
        if self.over_budget() {
            return Output::From("(limit)".into());
        }
        match cmd {
            ast::Command::Simple(sc) => self.simple(sc, scope, stdin, depth, via),
            ast::Command::Compound(c, redirs) => {
                if let Some(r) = redirs {
                    let mut ignored = Stdin::Inherit;
                    for io in &r.0 {
                        self.redirect(io, scope, &mut ignored, depth, via);
                    }
                }
                let before = self.out.invocations.len();
                self.compound(c, scope, depth, via);
                // A group's output comes from the commands inside it.
                let remote = self.out.invocations[before.min(self.out.invocations.len())..]
                    .iter()
                    .find(|i| programs::is_remote(&i.program))
                    .map(|i| i.program.clone());
                Output::From(remote.unwrap_or_else(|| "(compound command)".into()))
            }
            ast::Command::Function(f) => {
                self.functions.insert(f.fname.value.clone());
                self.defining.push(f.fname.value.clone());
                let mut sub = scope.clone();
                if let Some(r) = &f.body.1 {
                    let mut ignored = Stdin::Inherit;
                    for io in &r.0 {
                        self.redirect(io, &mut sub, &mut ignored, depth, via);
                    }
                }
                self.compound(&f.body.0, &mut sub, depth, via);
                self.defining.pop();
                Output::From("(function)".into())
            }
            ast::Command::ExtendedTest(t, redirs) => {
                if let Some(r) = redirs {
                    let mut ignored = Stdin::Inherit;
                    for io in &r.0 {
                        self.redirect(io, scope, &mut ignored, depth, via);
                    }
                }
                self.test_expr(&t.expr, scope, depth, via);
                Output::From("[[".into())
            }
        }
    }

    fn test_expr(
        &mut self,
        e: &ast::ExtendedTestExpr,
        scope: &mut Scope,
        depth: usize,
        via: &[String],
    ) {
        match e {
            ast::ExtendedTestExpr::And(a, b) | ast::ExtendedTestExpr::Or(a, b) => {
                self.test_expr(a, scope, depth, via);
                self.test_expr(b, scope, depth, via);
            }
            ast::ExtendedTestExpr::Not(a) | ast::ExtendedTestExpr::Parenthesized(a) => {
                self.test_expr(a, scope, depth, via)
            }
            ast::ExtendedTestExpr::UnaryTest(op, w) => {
                let r = self.word(&w.value, scope, depth, via);
                // `-v NAME` and `-R NAME` evaluate a subscript in the name.
                if matches!(
                    op,
                    ast::UnaryPredicate::ShellVariableIsSetAndAssigned
                        | ast::UnaryPredicate::ShellVariableIsSetAndNameRef
                ) && r.text.contains('[')
                {
                    self.arithmetic(&r.text, scope, depth, via);
                }
            }
            ast::ExtendedTestExpr::BinaryTest(op, a, b) => {
                let arith = matches!(
                    op,
                    ast::BinaryPredicate::ArithmeticEqualTo
                        | ast::BinaryPredicate::ArithmeticNotEqualTo
                        | ast::BinaryPredicate::ArithmeticLessThan
                        | ast::BinaryPredicate::ArithmeticLessThanOrEqualTo
                        | ast::BinaryPredicate::ArithmeticGreaterThan
                        | ast::BinaryPredicate::ArithmeticGreaterThanOrEqualTo
                );
                for w in [a, b] {
                    let r = self.word(&w.value, scope, depth, via);
                    if arith && r.dynamic {
                        self.flag(
                            "gate.arithmetic",
                            Decision::Review,
                            Risk::Medium,
                            "arithmetic on a value the gate cannot see can run commands through array subscripts",
                            &w.value,
                        );
                    } else if arith && r.text.contains(['[', '$', '`']) {
                        // A quoted operand is still evaluated as arithmetic.
                        self.arithmetic(&r.text, scope, depth, via);
                    }
                }
            }
        }
    }

    /// An arithmetic expression (`$((…))`, `((…))`, subscripts). Bash
    /// evaluates array subscripts in it, and in the values of the variables
    /// it names, as commands can hide there; and `((…))` that is not valid
    /// arithmetic is re-read by bash as two nested subshells.
    fn arithmetic(&mut self, text: &str, scope: &mut Scope, depth: usize, via: &[String]) {
        if text.contains("$(") || text.contains('`') || text.contains('[') {
            self.flag(
                "gate.arithmetic",
                Decision::Review,
                Risk::Medium,
                "arithmetic that holds a substitution or subscript can run commands",
                text,
            );
            let mut sub = scope.clone();
            for body in substitution_bodies(text) {
                self.script(&body, &mut sub, depth + 1, via);
            }
        }
        let mut names = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|n| n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'));
        let view = View {
            scope,
            ctx: self.ctx,
        };
        let tainted = names.find(|n| match view.lookup(n) {
            Some(Some(v)) => v.contains("$(") || v.contains('`') || v.contains('['),
            _ => false,
        });
        if let Some(name) = tainted {
            self.flag(
                "gate.arithmetic",
                Decision::Review,
                Risk::High,
                "arithmetic on a variable whose value holds a subscript or substitution runs commands",
                name,
            );
        }
    }

    fn compound(
        &mut self,
        c: &ast::CompoundCommand,
        scope: &mut Scope,
        depth: usize,
        via: &[String],
    ) {
        match c {
            ast::CompoundCommand::BraceGroup(g) => self.compound_list(&g.list, scope, depth, via),
            ast::CompoundCommand::Subshell(s) => {
                let mut sub = scope.clone();
                self.compound_list(&s.list, &mut sub, depth, via);
            }
            ast::CompoundCommand::Arithmetic(a) => {
                self.arithmetic(&a.expr.value, scope, depth, via);
                if brush_parser::arithmetic::parse(&a.expr.value).is_err() {
                    // Bash reads `((…))` that is not arithmetic as nested subshells.
                    let mut sub = scope.clone();
                    self.script(&a.expr.value, &mut sub, depth + 1, via);
                }
            }
            ast::CompoundCommand::ArithmeticForClause(f) => {
                for e in [&f.initializer, &f.condition, &f.updater]
                    .into_iter()
                    .flatten()
                {
                    self.arithmetic(&e.value, scope, depth, via);
                }
                self.branch(&f.body.list, scope, depth, via);
            }
            ast::CompoundCommand::ForClause(f) => {
                let mut words = Vec::new();
                if let Some(values) = &f.values {
                    for v in values {
                        self.push_word(&v.value, scope, depth, via, &mut words);
                    }
                }
                // Walk the body once for each value the gate can see, so that
                // `for f in ~/.aws/credentials; do cat "$f"; done` is seen.
                if !words.is_empty() && words.len() <= 16 && words.iter().all(|w| !w.dynamic) {
                    for w in &words {
                        let mut sub = scope.clone();
                        sub.set(&f.variable_name, Some(w.text.clone()));
                        self.branch(&f.body.list, &mut sub, depth, via);
                    }
                }
                scope.set(&f.variable_name, None);
                self.branch(&f.body.list, scope, depth, via);
            }
            ast::CompoundCommand::CaseClause(c) => {
                self.word(&c.value.value, scope, depth, via);
                for item in &c.cases {
                    for p in &item.patterns {
                        self.word(&p.value, scope, depth, via);
                    }
                    if let Some(cmd) = &item.cmd {
                        self.branch(cmd, scope, depth, via);
                    }
                }
            }
            ast::CompoundCommand::IfClause(i) => {
                self.compound_list(&i.condition, scope, depth, via);
                self.branch(&i.then, scope, depth, via);
                for e in i.elses.iter().flatten() {
                    if let Some(cond) = &e.condition {
                        self.compound_list(cond, scope, depth, via);
                    }
                    self.branch(&e.body, scope, depth, via);
                }
            }
            ast::CompoundCommand::WhileClause(w) | ast::CompoundCommand::UntilClause(w) => {
                let until = matches!(c, ast::CompoundCommand::UntilClause(_));
                let cond = w.0.to_string();
                let cond = cond.trim().trim_end_matches(';').trim();
                if (!until && matches!(cond, "true" | ":")) || (until && cond == "false") {
                    self.flag(
                        "gate.endless-loop",
                        Decision::Review,
                        Risk::Medium,
                        "a loop that never ends on its own ties up the agent and can exhaust the machine",
                        cond,
                    );
                }
                self.compound_list(&w.0, scope, depth, via);
                self.branch(&w.1.list, scope, depth, via);
            }
            ast::CompoundCommand::Coprocess(c) => {
                let mut sub = scope.clone();
                self.command(&c.body, &mut sub, Stdin::Inherit, depth, via);
            }
        }
    }

    /// A list that may or may not run: its `cd` leaves the directory unknown.
    fn branch(
        &mut self,
        list: &ast::CompoundList,
        scope: &mut Scope,
        depth: usize,
        via: &[String],
    ) {
        let mut sub = scope.clone();
        self.compound_list(list, &mut sub, depth, via);
        if sub.cwd != scope.cwd {
            scope.cwd = None;
        }
        for (name, value) in sub.vars {
            let known = scope.vars.iter().any(|(n, v)| *n == name && *v == value);
            if !known {
                scope.set(&name, None);
            }
        }
    }

    /// Resolves a word and classifies whatever it runs inside.
    pub(crate) fn word(
        &mut self,
        raw: &str,
        scope: &mut Scope,
        depth: usize,
        via: &[String],
    ) -> Word {
        let mut seen = Seen::default();
        let mut w = {
            let view = View {
                scope,
                ctx: self.ctx,
            };
            word::resolve(raw, &view, &self.opts, &mut seen)
        };
        w.secret = seen.params.iter().any(|n| is_secret_name(n));
        self.seen(seen, raw, scope, depth, via);
        w
    }

    fn seen(&mut self, seen: Seen, raw: &str, scope: &mut Scope, depth: usize, via: &[String]) {
        if seen.malformed {
            self.flag(
                "gate.parse-error",
                Decision::Review,
                Risk::High,
                "the gate could not read this word; a human must read it",
                raw,
            );
        }
        for inner in seen.inner {
            match inner {
                Inner::Command(body) => {
                    let mut sub = scope.clone();
                    self.script(&body, &mut sub, depth + 1, via);
                }
                Inner::Arithmetic(text) => {
                    self.arithmetic(&text, scope, depth, via);
                }
                Inner::PromptExpansion(name) => {
                    self.flag(
                        "gate.prompt-expansion",
                        Decision::Review,
                        Risk::High,
                        "`${NAME@P}` expands a variable as a prompt, which runs the commands inside its value",
                        &format!("${{{name}@P}}"),
                    );
                }
            }
        }
    }

    fn heredoc(
        &mut self,
        doc: &ast::IoHereDocument,
        scope: &mut Scope,
        depth: usize,
        via: &[String],
    ) -> Stdin {
        if !doc.requires_expansion {
            return Stdin::Literal(doc.doc.value.clone());
        }
        let mut seen = Seen::default();
        let w = match bword::parse_heredoc(&doc.doc.value, &self.opts) {
            Ok(pieces) => {
                let view = View {
                    scope,
                    ctx: self.ctx,
                };
                let mut text = String::new();
                let mut dynamic = false;
                for p in pieces {
                    let raw = match &p.piece {
                        bword::WordPiece::Text(t) => {
                            text.push_str(t);
                            continue;
                        }
                        bword::WordPiece::EscapeSequence(s) => {
                            text.push_str(&s[1..]);
                            continue;
                        }
                        _ => &doc.doc.value[p.start_index..p.end_index],
                    };
                    let r = word::resolve(&format!("\"{raw}\""), &view, &self.opts, &mut seen);
                    dynamic |= r.dynamic;
                    text.push_str(&r.text);
                }
                Some((text, dynamic))
            }
            Err(_) => None,
        };
        self.seen(seen, &doc.doc.value, scope, depth, via);
        match w {
            Some((text, false)) => Stdin::Literal(text),
            Some((_, true)) => Stdin::Unknown {
                producer: "a here-document with expansions".into(),
            },
            None => {
                self.flag(
                    "gate.parse-error",
                    Decision::Review,
                    Risk::High,
                    "the gate could not read this here-document",
                    &doc.doc.value,
                );
                Stdin::Unknown {
                    producer: "an unreadable here-document".into(),
                }
            }
        }
    }

    /// Handles one redirection: writes and reads become pseudo-invocations,
    /// here-documents and here-strings become the command's stdin.
    fn redirect(
        &mut self,
        io: &ast::IoRedirect,
        scope: &mut Scope,
        stdin: &mut Stdin,
        depth: usize,
        via: &[String],
    ) {
        use ast::{IoFileRedirectKind as K, IoFileRedirectTarget as T, IoRedirect as R};
        match io {
            R::File(_, kind, target) => {
                let op = match kind {
                    K::Read => "<",
                    K::Append => ">>",
                    K::Write | K::Clobber | K::ReadAndWrite => ">",
                    K::DuplicateInput => "<",
                    K::DuplicateOutput => ">",
                };
                match target {
                    T::Filename(w) | T::Duplicate(w) => {
                        let dup = matches!(kind, K::DuplicateInput | K::DuplicateOutput)
                            || matches!(target, T::Duplicate(_));
                        if dup && (w.value == "-" || w.value.bytes().all(|b| b.is_ascii_digit())) {
                            return;
                        }
                        let r = self.word(&w.value, scope, depth, via);
                        if op == "<" {
                            *stdin = if r.dynamic {
                                Stdin::Unknown {
                                    producer: "a file the gate cannot name".into(),
                                }
                            } else {
                                Stdin::File(r.text.clone())
                            };
                        }
                        self.push(Invocation {
                            program: op.to_string(),
                            args: vec![r],
                            env: Vec::new(),
                            cwd: scope.cwd.clone(),
                            via: via.to_vec(),
                        });
                    }
                    T::Fd(_) => {}
                    T::ProcessSubstitution(_, sub) => {
                        let mut s = scope.clone();
                        self.compound_list(&sub.list, &mut s, depth, via);
                        if op == "<" {
                            *stdin = Stdin::Unknown {
                                producer: "a process substitution".into(),
                            };
                        }
                    }
                }
            }
            R::OutputAndError(w, append) => {
                let r = self.word(&w.value, scope, depth, via);
                self.push(Invocation {
                    program: if *append { ">>" } else { ">" }.to_string(),
                    args: vec![r],
                    env: Vec::new(),
                    cwd: scope.cwd.clone(),
                    via: via.to_vec(),
                });
            }
            R::HereDocument(_, doc) => *stdin = self.heredoc(doc, scope, depth, via),
            R::HereString(_, w) => {
                let r = self.word(&w.value, scope, depth, via);
                *stdin = if r.dynamic {
                    Stdin::Unknown {
                        producer: "a here-string with unknown parts".into(),
                    }
                } else {
                    Stdin::Literal(format!("{}\n", r.text))
                };
            }
        }
    }

    pub(crate) fn push(&mut self, inv: Invocation) {
        if self.over_budget() {
            return;
        }
        self.out.invocations.push(inv);
    }

    fn simple(
        &mut self,
        sc: &ast::SimpleCommand,
        scope: &mut Scope,
        mut stdin: Stdin,
        depth: usize,
        via: &[String],
    ) -> Output {
        use ast::CommandPrefixOrSuffixItem as I;
        let mut env: Vec<(String, Word)> = Vec::new();
        let mut words: Vec<Word> = Vec::new();

        for item in sc.prefix.iter().flat_map(|p| p.0.iter()) {
            match item {
                I::AssignmentWord(a, w) => {
                    let value_raw = w.value.split_once('=').map(|(_, v)| v).unwrap_or("");
                    let name = match &a.name {
                        ast::AssignmentName::VariableName(n) => n.clone(),
                        ast::AssignmentName::ArrayElementName(n, index) => {
                            self.arithmetic(index, scope, depth, via);
                            n.clone()
                        }
                    };
                    let value = match &a.value {
                        ast::AssignmentValue::Scalar(_) => self.word(value_raw, scope, depth, via),
                        ast::AssignmentValue::Array(items) => {
                            for (k, v) in items {
                                if let Some(k) = k {
                                    self.word(&k.value, scope, depth, via);
                                }
                                self.word(&v.value, scope, depth, via);
                            }
                            Word::unknown("(array)")
                        }
                    };
                    env.push((name, value));
                }
                I::IoRedirect(io) => self.redirect(io, scope, &mut stdin, depth, via),
                I::ProcessSubstitution(_, sub) => {
                    let mut s = scope.clone();
                    self.compound_list(&sub.list, &mut s, depth, via);
                }
                I::Word(w) => words.push(self.word(&w.value, scope, depth, via)),
            }
        }

        let mut name_raw = None;
        if let Some(name) = &sc.word_or_name {
            name_raw = Some(name.value.clone());
            self.push_word(&name.value, scope, depth, via, &mut words);
        }
        if let Some(suffix) = &sc.suffix {
            for item in &suffix.0 {
                match item {
                    I::Word(w) => self.push_word(&w.value, scope, depth, via, &mut words),
                    I::AssignmentWord(_, w) => {
                        self.push_word(&w.value, scope, depth, via, &mut words)
                    }
                    I::IoRedirect(io) => self.redirect(io, scope, &mut stdin, depth, via),
                    I::ProcessSubstitution(kind, sub) => {
                        let mut s = scope.clone();
                        let before = self.out.invocations.len();
                        self.compound_list(&sub.list, &mut s, depth, via);
                        let producer = self.out.invocations[before..]
                            .iter()
                            .find(|i| !matches!(i.program.as_str(), ">" | ">>" | "<"))
                            .map(|i| i.program.clone())
                            .unwrap_or_else(|| "a command".into());
                        let mut w = Word::unknown(match kind {
                            ast::ProcessSubstitutionKind::Read => "<(…)",
                            ast::ProcessSubstitutionKind::Write => ">(…)",
                        });
                        w.text = format!("{UNKNOWN}<({producer})");
                        words.push(w);
                    }
                }
            }
        }

        if words.is_empty() {
            // Assignments only: they change the shell's own state.
            for (name, value) in env {
                self.check_assignment(&name, &value, true);
                scope.set(&name, (!value.dynamic).then(|| value.text.clone()));
            }
            return Output::From("(assignment)".into());
        }
        for (name, value) in &env {
            self.check_assignment(name, value, false);
        }

        let argv0 = words.remove(0);
        let raw0 = name_raw.unwrap_or_default();
        let Some(program) = self.program_name(&argv0, &raw0) else {
            return Output::From("(unknown)".into());
        };
        if self.defining.contains(&program) {
            self.flag(
                "gate.recursive-function",
                Decision::Review,
                Risk::High,
                "a function that calls itself can exhaust the machine (a fork bomb)",
                &program,
            );
        }
        if self.functions.contains(&program) && !argv0.dynamic {
            // Its body was classified where it was defined.
            return Output::From(program);
        }
        let inv = Invocation {
            program,
            args: words,
            env,
            cwd: scope.cwd.clone(),
            via: via.to_vec(),
        };
        self.dispatch(inv, &stdin, scope, depth)
    }

    /// Resolves a word in argument position, expanding unquoted braces into
    /// several words.
    fn push_word(
        &mut self,
        raw: &str,
        scope: &mut Scope,
        depth: usize,
        via: &[String],
        out: &mut Vec<Word>,
    ) {
        if raw.contains('{')
            && !raw.contains(['\'', '"', '\\', '$', '`'])
            && let Some(alts) = word::expand_braces(raw, 256)
        {
            if alts.is_empty() {
                self.flag(
                    "gate.limit",
                    Decision::Review,
                    Risk::Medium,
                    "a brace expansion produces more words than the gate follows",
                    raw,
                );
                out.push(Word::unknown("{…}"));
                return;
            }
            if out.is_empty() {
                self.flag(
                    "gate.dynamic-command",
                    Decision::Review,
                    Risk::High,
                    "brace expansion in command position hides which program runs",
                    raw,
                );
            }
            for a in alts {
                let w = self.word(&a, scope, depth, via);
                out.push(w);
            }
            return;
        }
        let w = self.word(raw, scope, depth, via);
        // An unquoted expansion is split into words: `cmd='rm -rf'; $cmd /`.
        if w.expanded
            && !w.dynamic
            && !raw.contains(['\'', '"'])
            && w.text.contains([' ', '\t', '\n'])
        {
            for part in w.text.split([' ', '\t', '\n']).filter(|p| !p.is_empty()) {
                out.push(Word {
                    text: part.to_string(),
                    ..w.clone()
                });
            }
            return;
        }
        out.push(w);
    }

    fn check_assignment(&mut self, name: &str, value: &Word, standalone: bool) {
        let dangerous = matches!(
            name,
            "PATH"
                | "IFS"
                | "BASH_ENV"
                | "ENV"
                | "SHELLOPTS"
                | "BASHOPTS"
                | "PROMPT_COMMAND"
                | "GIT_SSH"
                | "GIT_SSH_COMMAND"
                | "GIT_EXTERNAL_DIFF"
                | "GIT_PAGER"
                | "PAGER"
                | "GIT_EDITOR"
                | "EDITOR"
                | "VISUAL"
                | "GIT_CONFIG_GLOBAL"
                | "GIT_CONFIG_SYSTEM"
                | "GIT_CONFIG_PARAMETERS"
                | "GIT_CONFIG_COUNT"
                | "GIT_DIR"
                | "GIT_WORK_TREE"
                | "NODE_OPTIONS"
                | "PYTHONPATH"
                | "PYTHONSTARTUP"
                | "PERL5OPT"
                | "PERL5LIB"
                | "RUBYOPT"
                | "PS4"
                | "HISTFILE"
                | "HOME"
        ) || DANGEROUS_ENV.contains(&name)
            || name.ends_with("_WRAPPER")
            || name.ends_with("ASKPASS")
            || name.ends_with("_COMMAND")
            || name.ends_with("_LINKER")
            || name.ends_with("_RUNNER")
            || name.starts_with("RUSTC")
            || name.starts_with("LD_")
            || name.starts_with("DYLD_")
            || name.starts_with("GIT_CONFIG_KEY_")
            || name.starts_with("GIT_CONFIG_VALUE_")
            || name.starts_with("BASH_FUNC_")
            || tool_config_variable(name);
        if dangerous {
            self.flag(
                "gate.env-injection",
                Decision::Review,
                Risk::High,
                "sets a variable that changes which program runs or what it executes",
                &format!("{name}={}", value.text),
            );
        } else if standalone && value.dynamic && is_secret_name(name) {
            // Storing a secret is fine; it is its use that is checked.
        }
    }

    /// Normalises the program word, flagging names the gate cannot resolve.
    fn program_name(&mut self, w: &Word, raw: &str) -> Option<String> {
        if w.dynamic {
            self.flag(
                "gate.dynamic-command",
                Decision::Review,
                Risk::High,
                "the program to run comes from a variable or substitution the gate cannot resolve",
                raw,
            );
            return None;
        }
        if w.expanded {
            self.flag(
                "gate.dynamic-command",
                Decision::Review,
                Risk::High,
                "the program to run comes from a variable",
                raw,
            );
        }
        let text = w.text.as_str();
        if text.is_empty() {
            self.flag(
                "gate.dynamic-command",
                Decision::Review,
                Risk::Medium,
                "the program name is empty",
                raw,
            );
            return None;
        }
        if w.glob && (w.text.contains(['*', '?']) || w.text.contains("[") && w.text.len() > 1) {
            self.flag(
                "gate.dynamic-command",
                Decision::Review,
                Risk::High,
                "the program name is a glob pattern; the files present decide what runs",
                raw,
            );
        }
        let (dir, base) = match text.rfind('/') {
            Some(i) => (Some(&text[..i]), &text[i + 1..]),
            None => (None, text),
        };
        if let Some(dir) = dir {
            let dir = if dir.is_empty() { "/" } else { dir };
            let abs = if dir.starts_with('/') {
                normalize(dir)
            } else {
                String::new()
            };
            if !SYSTEM_BIN_DIRS.contains(&abs.as_str()) {
                self.flag(
                    "gate.local-program",
                    Decision::Review,
                    Risk::Medium,
                    "runs a program by path from outside the system directories",
                    text,
                );
            }
        }
        if base.is_empty() {
            return None;
        }
        Some(base.to_string())
    }

    /// Resolves a relative path against the scope's directory; `None` when the
    /// directory is unknown.
    pub(crate) fn absolute(&self, path: &str, cwd: Option<&str>) -> Option<String> {
        if path.starts_with('/') {
            return Some(normalize(path));
        }
        cwd.map(|c| normalize(&format!("{c}/{path}")))
    }
}

/// Environment variables that name a program to run or change how one runs.
/// Variables that make a tool load code, read another configuration, use
/// another package index or write somewhere else. Assigned alone they
/// matter once exported (or when the agent's environment already exports
/// them), so they are held wherever they appear.
fn tool_config_variable(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "GOFLAGS",
        "GOPROXY",
        "GONOSUMDB",
        "GONOSUMCHECK",
        "GOINSECURE",
        "GOTOOLCHAIN",
        "GOENV",
        "MAKEFILES",
        "MAKEFLAGS",
        "MFLAGS",
        "LESS",
        "LESSOPEN",
        "LESSCLOSE",
        "LESSKEY",
        "MAVEN_OPTS",
        "MAVEN_ARGS",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "GRADLE_OPTS",
        "KUBECTL_EXTERNAL_DIFF",
        "KUBE_EDITOR",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "WGETRC",
        "CURL_HOME",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "CC",
        "CXX",
        "LD",
        "AR",
        "CFLAGS",
        "CXXFLAGS",
        "LDFLAGS",
        "CPPFLAGS",
        "PERL5DB",
        "PERLLIB",
        "RUBYLIB",
        "NODE_PATH",
        "PYTHONHOME",
        "PYTHONUSERBASE",
        "TAR_OPTIONS",
        "GNUPGHOME",
        "DOCKER_HOST",
        "DOCKER_CONFIG",
        "TF_CLI_CONFIG_FILE",
        "BROWSER",
        "MANPAGER",
        "MANOPT",
        "SYSTEMD_PAGER",
        "SYSTEMD_EDITOR",
        "PSQL_PAGER",
        "PSQLRC",
        "MYSQL_HOME",
        "INPUTRC",
        "XDG_CONFIG_HOME",
        "TMPDIR",
        "SHELL",
        "CDPATH",
    ];
    const PREFIXES: &[&str] = &[
        "npm_config_",
        "NPM_CONFIG_",
        "YARN_",
        "PNPM_",
        "PIP_",
        "UV_",
        "POETRY_",
        "PDM_",
        "CONDA_",
        "CARGO_HOME",
        "CARGO_TARGET_",
        "CARGO_BUILD_",
        "CARGO_REGISTR",
        "CARGO_SOURCE_",
        "CARGO_ENCODED_",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "TF_CLI_ARGS",
        "GIT_TRACE",
        "HELM_",
        "BUNDLE_",
        "GEM_",
        "COMPOSER_",
    ];
    NAMES.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

const DANGEROUS_ENV: &[&str] = &[
    "GIT_PROXY_COMMAND",
    "GIT_EXEC_PATH",
    "GIT_TEMPLATE_DIR",
    "GIT_SEQUENCE_EDITOR",
    "SSH_ASKPASS",
    "CC",
    "CXX",
    "LD",
    "AR",
    "CARGO",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_HOME",
    "CARGO_BUILD_TARGET_DIR",
    "MAKEFLAGS",
    "MAKE",
    "LESSOPEN",
    "LESSCLOSE",
    "MANPAGER",
    "MANOPT",
    "BROWSER",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "PERL5DB",
    "PYTHONINSPECT",
    "PYTHONHOME",
    "PYTHONUSERBASE",
    "NODE_PATH",
    "NPM_CONFIG_SCRIPT_SHELL",
    "npm_config_script_shell",
    "NPM_CONFIG_PREFIX",
    "npm_config_prefix",
    "RUBYLIB",
    "GEM_HOME",
    "GEM_PATH",
    "TAR_OPTIONS",
    "XDG_CONFIG_HOME",
    "ZDOTDIR",
    "INPUTRC",
    "TERMINFO",
    "SHELL",
    "KUBECONFIG",
    "DOCKER_HOST",
    "GNUPGHOME",
    "SUDO_ASKPASS",
    "PAGER",
    "GIT_DIFF_OPTS",
    "GCONV_PATH",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    "RESOLV_HOST_CONF",
    "MALLOC_CHECK_",
    "TMPDIR",
];

/// Directories whose programs are taken by their basename.
const SYSTEM_BIN_DIRS: &[&str] = &[
    "/bin",
    "/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/opt/homebrew/bin",
    "/snap/bin",
    "/usr/libexec",
];

/// Whether a variable name looks like it holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    const PARTS: &[&str] = &[
        "SECRET",
        "TOKEN",
        "PASSWORD",
        "PASSWD",
        "PRIVATE_KEY",
        "API_KEY",
        "APIKEY",
        "ACCESS_KEY",
        "CREDENTIAL",
        "AUTH",
        "SESSION_KEY",
        "SIGNING_KEY",
        "DATABASE_URL",
        "CONN_STR",
        "CONNECTION_STRING",
        "PASSPHRASE",
        "WEBHOOK",
        "COOKIE",
        "BEARER",
        "JWT",
        "DSN",
        "HMAC",
        "PRIVATE",
    ];
    PARTS.iter().any(|p| n.contains(p))
        || n.ends_with("_KEY")
        || n.ends_with("_PASS")
        || n.ends_with("_PAT")
        || (n.ends_with("_PWD") && n != "OLDPWD")
        || n == "PGPASSWORD"
}

/// Extracts `$(…)` bodies from text (for arithmetic and parameter operands).
fn substitution_bodies(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'$' && bytes[i + 1] == b'(' {
            let start = i + 2;
            let mut depth = 1;
            let mut j = start;
            while j < bytes.len() && depth > 0 {
                match bytes[j] {
                    b'(' => depth += 1,
                    b')' => depth -= 1,
                    _ => {}
                }
                j += 1;
            }
            let end = if depth == 0 { j - 1 } else { bytes.len() };
            out.push(text[start..end].to_string());
            i = end;
        } else if bytes[i] == b'`' {
            if let Some(k) = text[i + 1..].find('`') {
                out.push(text[i + 1..i + 1 + k].to_string());
                i += k + 2;
                continue;
            }
            out.push(text[i + 1..].to_string());
            break;
        } else {
            i += 1;
        }
    }
    out
}

//! Quote removal and static expansion of one shell word.
//!
//! A word becomes the literal text the program would receive, as far as that
//! can be known without running anything. What cannot be known (an unset
//! variable, a command substitution, arithmetic) makes the word `dynamic`; the
//! bodies of command substitutions are handed back so the caller classifies
//! them as commands of their own.

use brush_parser::ParserOptions;
use brush_parser::word::{self as bword, Parameter, ParameterExpr, TildeExpr, WordPiece};

/// A word after quote removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The literal text, with unknown parts replaced by `\u{FFFD}`.
    pub text: String,
    /// Some part could not be resolved statically.
    pub dynamic: bool,
    /// Some part came from a parameter expansion (even a resolved one).
    pub expanded: bool,
    /// The word holds unquoted glob characters (`*`, `?`, `[`).
    pub glob: bool,
    /// The word expands a variable whose name looks like a secret.
    pub secret: bool,
}

impl Word {
    /// A literal word.
    pub fn lit(text: impl Into<String>) -> Word {
        Word {
            text: text.into(),
            dynamic: false,
            expanded: false,
            glob: false,
            secret: false,
        }
    }

    /// A word whose value the gate cannot know.
    pub fn unknown(hint: &str) -> Word {
        Word {
            text: format!("{UNKNOWN}{hint}"),
            dynamic: true,
            expanded: true,
            glob: false,
            secret: false,
        }
    }
}

/// Marks a part of a word the gate could not resolve.
pub const UNKNOWN: char = '\u{FFFD}';

/// Something found inside a word that must be classified too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inner {
    /// The body of `$(…)` or a backquoted substitution: a command line.
    Command(String),
    /// An arithmetic expression: it can run commands through array
    /// subscripts, also in the values of the variables it names.
    Arithmetic(String),
    /// A variable's value expanded as a prompt string (`${x@P}`), which
    /// runs the command substitutions inside that value.
    PromptExpansion(String),
}

/// What resolving a word needs from the surrounding shell state.
pub trait Vars {
    /// The value of a variable, `Some(None)` if it is known to be unknowable,
    /// `None` if it was never set here.
    fn lookup(&self, name: &str) -> Option<Option<&str>>;
    /// The home directory (for `~`).
    fn home(&self) -> &str;
}

/// What resolution saw besides the text.
#[derive(Debug, Default)]
pub struct Seen {
    /// Command substitutions and other inner code.
    pub inner: Vec<Inner>,
    /// Names of the parameters expanded (for secret-variable checks).
    pub params: Vec<String>,
    /// The word could not be parsed as a word.
    pub malformed: bool,
}

fn plain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'_' | b'.' | b'/' | b':' | b'=' | b'@' | b'%' | b'+' | b',' | b'-' | b'^'
        )
}

fn glob_byte(b: u8) -> bool {
    matches!(b, b'*' | b'?' | b'[' | b']')
}

/// Resolves one raw word as it appears in the command line.
pub fn resolve(raw: &str, vars: &dyn Vars, opts: &ParserOptions, seen: &mut Seen) -> Word {
    // Fast path: nothing to remove or expand.
    let bytes = raw.as_bytes();
    if bytes.iter().all(|&b| plain_byte(b) || glob_byte(b)) {
        return Word {
            text: raw.to_string(),
            dynamic: false,
            expanded: false,
            glob: bytes.iter().any(|&b| glob_byte(b)),
            secret: false,
        };
    }
    if let Some(rest) = raw.strip_prefix('~')
        && (rest.is_empty() || rest.starts_with('/'))
        && rest.bytes().all(|b| plain_byte(b) || glob_byte(b))
    {
        return Word {
            text: format!("{}{}", vars.home(), rest),
            dynamic: false,
            expanded: false,
            glob: rest.bytes().any(glob_byte),
            secret: false,
        };
    }
    // The word parser panics on some inputs (a tilde with a huge number);
    // such a word is malformed, never a crash.
    let parsed = if has_huge_tilde_number(raw) {
        None
    } else {
        std::panic::catch_unwind(|| bword::parse(raw, opts)).ok()
    };
    match parsed {
        Some(Ok(pieces)) => {
            let mut w = Word::lit(String::with_capacity(raw.len()));
            for p in &pieces {
                piece(&p.piece, false, vars, opts, seen, &mut w);
            }
            w
        }
        _ => {
            seen.malformed = true;
            Word {
                text: raw.to_string(),
                dynamic: true,
                expanded: false,
                glob: false,
                secret: false,
            }
        }
    }
}

/// A `~+N` or `~-N` whose number does not fit the parser.
fn has_huge_tilde_number(raw: &str) -> bool {
    raw.match_indices('~').any(|(i, _)| {
        let rest = raw[i + 1..].trim_start_matches(['+', '-']);
        rest.bytes().take_while(u8::is_ascii_digit).count() >= 10
    })
}

fn piece(
    p: &WordPiece,
    in_dquote: bool,
    vars: &dyn Vars,
    opts: &ParserOptions,
    seen: &mut Seen,
    w: &mut Word,
) {
    match p {
        WordPiece::Text(t) => {
            if !in_dquote && t.bytes().any(glob_byte) {
                w.glob = true;
            }
            w.text.push_str(t);
        }
        WordPiece::SingleQuotedText(t) => w.text.push_str(t),
        WordPiece::AnsiCQuotedText(t) => w.text.push_str(&ansi_c(t)),
        WordPiece::DoubleQuotedSequence(ps) | WordPiece::GettextDoubleQuotedSequence(ps) => {
            for q in ps {
                piece(&q.piece, true, vars, opts, seen, w);
            }
        }
        WordPiece::EscapeSequence(s) => {
            let mut chars = s.chars();
            chars.next();
            let rest: String = chars.collect();
            if rest != "\n" {
                w.text.push_str(&rest);
            }
        }
        WordPiece::TildeExpansion(t) => match t {
            TildeExpr::Home => w.text.push_str(vars.home()),
            TildeExpr::UserHome(u) if u == "root" => w.text.push_str("/root"),
            TildeExpr::UserHome(u) => {
                w.text.push_str("/home/");
                w.text.push_str(u);
            }
            _ => unknown(w, "~"),
        },
        WordPiece::ParameterExpansion(expr) => parameter(expr, vars, opts, seen, w),
        WordPiece::CommandSubstitution(body) => {
            seen.inner.push(Inner::Command(body.clone()));
            unknown(w, "$(…)");
        }
        WordPiece::BackquotedCommandSubstitution(body) => {
            seen.inner.push(Inner::Command(unescape_backquoted(body)));
            unknown(w, "`…`");
        }
        WordPiece::ArithmeticExpression(e) => {
            seen.inner.push(Inner::Arithmetic(e.value.clone()));
            unknown(w, "$((…))");
        }
    }
}

fn unknown(w: &mut Word, _hint: &str) {
    w.text.push(UNKNOWN);
    w.dynamic = true;
    w.expanded = true;
}

fn parameter(
    expr: &ParameterExpr,
    vars: &dyn Vars,
    opts: &ParserOptions,
    seen: &mut Seen,
    w: &mut Word,
) {
    w.expanded = true;
    match expr {
        ParameterExpr::Parameter {
            parameter: Parameter::Named(name),
            indirect: false,
        } => {
            seen.params.push(name.clone());
            match vars.lookup(name) {
                Some(Some(v)) => w.text.push_str(v),
                _ => unknown(w, name),
            }
        }
        ParameterExpr::Parameter {
            parameter: Parameter::Positional(n),
            indirect: false,
        } => match vars.lookup(&n.to_string()) {
            Some(Some(v)) => w.text.push_str(v),
            _ => unknown(w, "$n"),
        },
        ParameterExpr::UseDefaultValues {
            parameter: Parameter::Named(name),
            indirect: false,
            default_value,
            ..
        } => {
            seen.params.push(name.clone());
            match vars.lookup(name) {
                Some(Some(v)) if !v.is_empty() => w.text.push_str(v),
                Some(None) => unknown(w, name),
                _ => {
                    // Unset here: the default applies. It is a word of its own.
                    let d = default_value.as_deref().unwrap_or("");
                    let inner = resolve(d, vars, opts, seen);
                    w.text.push_str(&inner.text);
                    w.dynamic |= inner.dynamic;
                    w.glob |= inner.glob;
                }
            }
        }
        other => {
            // Anything fancier is unknown; still note the name for secret checks,
            // and look for command substitutions in its operands.
            let shown = format!("{other:?}");
            if shown.contains("PromptExpand") {
                seen.inner.push(Inner::PromptExpansion(
                    param_name(other).unwrap_or_else(|| "?".into()),
                ));
            }
            if shown.contains("$(") || shown.contains('`') {
                seen.inner.push(Inner::Arithmetic(shown.clone()));
            }
            if let Some(name) = param_name(other) {
                seen.params.push(name);
            }
            unknown(w, "${…}");
        }
    }
}

fn param_name(expr: &ParameterExpr) -> Option<String> {
    let shown = format!("{expr:?}");
    let start = shown.find("Named(\"")? + "Named(\"".len();
    let name: String = shown[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Removes the backslashes a backquoted substitution uses to escape `\`, `` ` ``
/// and `$`.
fn unescape_backquoted(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&n) = chars.peek()
            && matches!(n, '\\' | '`' | '$')
        {
            out.push(n);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out
}

/// Decodes the escapes of `$'…'` quoting.
pub fn ansi_c(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            out.push('\\');
            break;
        };
        match e {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'e' | 'E' => out.push('\u{1b}'),
            'f' => out.push('\u{c}'),
            'v' => out.push('\u{b}'),
            '\\' | '\'' | '"' | '?' => out.push(e),
            'c' => {
                if let Some(x) = chars.next() {
                    out.push(char::from((x as u32 as u8) & 0x1f));
                }
            }
            '0'..='7' => {
                let mut v = e.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match chars.peek().and_then(|c| c.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(v & 0xff).unwrap_or(UNKNOWN));
            }
            'x' | 'u' | 'U' => {
                let max = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let mut v: u32 = 0;
                let mut n = 0;
                while n < max {
                    match chars.peek().and_then(|c| c.to_digit(16)) {
                        Some(d) => {
                            v = v.wrapping_mul(16).wrapping_add(d);
                            chars.next();
                            n += 1;
                        }
                        None => break,
                    }
                }
                if n == 0 {
                    out.push('\\');
                    out.push(e);
                } else {
                    out.push(char::from_u32(v).unwrap_or(UNKNOWN));
                }
            }
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    out
}

/// Expands the brace expressions of a plain, unquoted word (`/{etc,usr}`,
/// `{a..c}`), or returns `None` when the word has none. Gives up (returns an
/// empty list) past `limit` results.
pub fn expand_braces(raw: &str, limit: usize) -> Option<Vec<String>> {
    if !raw.contains('{') || !raw.contains('}') {
        return None;
    }
    match expand(raw, limit, 0) {
        Ok(out) if out.len() == 1 && out[0] == raw => None,
        Ok(out) => Some(out),
        Err(()) => Some(Vec::new()),
    }
}

/// Expands the first brace group, then the alternatives and the rest on their
/// own, so the size of the product is known before it is built. `Err` means
/// more than `limit` words (or nesting deeper than the gate follows).
fn expand(s: &str, limit: usize, depth: usize) -> Result<Vec<String>, ()> {
    if depth > 32 {
        return Err(());
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'{' {
            i += 1;
            continue;
        }
        let mut level = 0;
        let mut commas = Vec::new();
        let mut end = None;
        for (j, &b) in bytes.iter().enumerate().skip(i) {
            match b {
                b'{' => level += 1,
                b'}' => {
                    level -= 1;
                    if level == 0 {
                        end = Some(j);
                        break;
                    }
                }
                b',' if level == 1 => commas.push(j),
                _ => {}
            }
        }
        let Some(end) = end else { break };
        let prefix = &s[..i];
        let suffix = &s[end + 1..];
        let body = &s[i + 1..end];
        let alts: Vec<String> = if !commas.is_empty() {
            let mut alts = Vec::new();
            let mut start = i + 1;
            for c in commas.iter().copied().chain(std::iter::once(end)) {
                alts.push(s[start..c].to_string());
                start = c + 1;
            }
            alts
        } else {
            match sequence(body, limit) {
                Some(seq) if seq.is_empty() => return Err(()),
                Some(seq) => seq,
                None => {
                    i += 1;
                    continue;
                }
            }
        };
        let mut heads = Vec::new();
        for alt in &alts {
            heads.extend(expand(alt, limit, depth + 1)?);
            if heads.len() > limit {
                return Err(());
            }
        }
        let tails = expand(suffix, limit, depth + 1)?;
        if heads.len().saturating_mul(tails.len()) > limit {
            return Err(());
        }
        let mut out = Vec::with_capacity(heads.len() * tails.len());
        for h in &heads {
            for t in &tails {
                out.push(format!("{prefix}{h}{t}"));
            }
        }
        return Ok(out);
    }
    Ok(vec![s.to_string()])
}

fn sequence(body: &str, limit: usize) -> Option<Vec<String>> {
    let mut parts = body.split("..");
    let a = parts.next()?;
    let b = parts.next()?;
    let step: i64 = match parts.next() {
        Some(s) => s.parse().ok()?,
        None => 1,
    };
    let step = step.unsigned_abs().max(1) as usize;
    if let (Ok(x), Ok(y)) = (a.parse::<i64>(), b.parse::<i64>()) {
        let n = (x.abs_diff(y) as usize) / step + 1;
        if n > limit {
            return Some(Vec::new());
        }
        let mut out = Vec::with_capacity(n);
        let mut v = x;
        for _ in 0..n {
            out.push(v.to_string());
            if x <= y {
                v += step as i64;
            } else {
                v -= step as i64;
            }
        }
        return Some(out);
    }
    let (ca, cb) = (single_char(a)?, single_char(b)?);
    let (lo, hi) = (ca.min(cb) as u32, ca.max(cb) as u32);
    let mut out: Vec<String> = (lo..=hi)
        .step_by(step)
        .filter_map(char::from_u32)
        .map(String::from)
        .collect();
    if ca > cb {
        out.reverse();
    }
    Some(out)
}

fn single_char(s: &str) -> Option<char> {
    let mut it = s.chars();
    let c = it.next()?;
    (it.next().is_none() && c.is_ascii_alphabetic()).then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct V;
    impl Vars for V {
        fn lookup(&self, name: &str) -> Option<Option<&str>> {
            match name {
                "HOME" => Some(Some("/home/dev")),
                "X" => Some(None),
                _ => None,
            }
        }
        fn home(&self) -> &str {
            "/home/dev"
        }
    }

    fn r(raw: &str) -> (Word, Seen) {
        let mut seen = Seen::default();
        let w = resolve(raw, &V, &ParserOptions::default(), &mut seen);
        (w, seen)
    }

    #[test]
    fn quotes_and_escapes_are_removed() {
        assert_eq!(r("'r'\"m\"").0.text, "rm");
        assert_eq!(r("r\\m").0.text, "rm");
        assert_eq!(r("$'\\x72\\155'").0.text, "rm");
        assert!(!r("'r'm").0.dynamic);
    }

    #[test]
    fn home_is_resolved() {
        assert_eq!(r("~/.ssh/id_rsa").0.text, "/home/dev/.ssh/id_rsa");
        assert_eq!(r("\"$HOME\"/.aws").0.text, "/home/dev/.aws");
        assert_eq!(r("${HOME}/.aws").0.text, "/home/dev/.aws");
        assert_eq!(r("'~'/x").0.text, "~/x");
    }

    #[test]
    fn unknowns_and_substitutions() {
        let (w, s) = r("\"$(rm -rf /)\"");
        assert!(w.dynamic);
        assert_eq!(s.inner, vec![Inner::Command("rm -rf /".into())]);
        assert!(r("$X").0.dynamic);
        assert!(r("$UNSET").0.dynamic);
        assert_eq!(r("${UNSET:-/tmp}/b").0.text, "/tmp/b");
        let (_, s) = r("`echo \\`id\\``");
        assert_eq!(s.inner, vec![Inner::Command("echo `id`".into())]);
        let (w, s) = r("$((x+1))");
        assert!(w.dynamic);
        assert_eq!(s.inner, vec![Inner::Arithmetic("x+1".into())]);
    }

    #[test]
    fn braces_expand() {
        assert_eq!(
            expand_braces("/{etc,usr}/x", 10).unwrap(),
            vec!["/etc/x", "/usr/x"]
        );
        assert_eq!(
            expand_braces("{rm,-rf,/}", 10).unwrap(),
            vec!["rm", "-rf", "/"]
        );
        assert_eq!(
            expand_braces("f{1..3}", 10).unwrap(),
            vec!["f1", "f2", "f3"]
        );
        assert_eq!(
            expand_braces("{a,b}{c,d}", 2).unwrap(),
            Vec::<String>::new()
        );
        assert!(expand_braces("{}", 10).is_none());
        let many = "{a,b}".repeat(19);
        assert_eq!(expand_braces(&many, 256).unwrap(), Vec::<String>::new());
    }
}

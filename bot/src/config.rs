//! The bot's configuration: a TOML file, then `HOLDPOINT_*` environment
//! variables over it, then defaults that work on a laptop with nothing set.

use holdpoint_shared::Risk;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{var}={value:?} is not valid: {message}")]
    Env {
        var: &'static str,
        value: String,
        message: String,
    },
    #[error("no data directory: set HOLDPOINT_DATA_DIR or HOME")]
    NoDataDir,
}

/// The file's shape. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    public_url: Option<String>,
    log_format: Option<String>,
    #[serde(default)]
    expiry: ExpiryFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpiryFile {
    default: Option<String>,
    low: Option<String>,
    medium: Option<String>,
    high: Option<String>,
    critical: Option<String>,
}

/// How long a request waits for a decision before it expires as denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    pub low: Duration,
    pub medium: Duration,
    pub high: Duration,
    pub critical: Duration,
}

impl Expiry {
    /// The same wait for every risk.
    pub fn uniform(d: Duration) -> Expiry {
        Expiry {
            low: d,
            medium: d,
            high: d,
            critical: d,
        }
    }

    /// The wait for a request of this risk.
    pub fn for_risk(&self, risk: Risk) -> Duration {
        match risk {
            Risk::Low => self.low,
            Risk::Medium => self.medium,
            Risk::High => self.high,
            Risk::Critical => self.critical,
        }
    }
}

/// The default wait: ten minutes.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(600);

/// The default address: loopback only, so a fresh bot is not reachable from
/// the network until someone decides it should be.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8470";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// The URL reviewers and runners use to reach the bot, if it differs from
    /// `http://LISTEN` (a reverse proxy, TLS).
    pub public_url: Option<String>,
    pub expiry: Expiry,
    pub log_format: LogFormat,
}

/// Parses `90s`, `10m`, `2h`, `1d` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90s, 10m, 2h or 1d"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" | "sec" | "secs" => n,
        "m" | "min" | "mins" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86400),
        _ => return Err(format!("`{s}` has an unknown unit (use ms, s, m, h or d)")),
    };
    if secs == 0 && n == 0 {
        return Err("a wait of zero would deny every request at once".into());
    }
    Ok(Duration::from_secs(secs))
}

fn env(var: &'static str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let p = base.join("holdpoint").join("bot.toml");
    p.is_file().then_some(p)
}

fn default_data_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("share"))
        })?;
    Some(base.join("holdpoint"))
}

impl Config {
    /// Loads the file (`explicit`, else `HOLDPOINT_CONFIG`, else
    /// `~/.config/holdpoint/bot.toml` if it exists), then the environment.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let path = explicit
            .map(Path::to_path_buf)
            .or_else(|| env("HOLDPOINT_CONFIG").map(PathBuf::from))
            .or_else(default_config_path);
        let file = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                toml::from_str::<File>(&text).map_err(|e| ConfigError::Parse {
                    path: p.clone(),
                    message: e.to_string(),
                })?
            }
            None => File::default(),
        };
        let file_path = path.unwrap_or_default();
        let bad_file = |message: String| ConfigError::Parse {
            path: file_path.clone(),
            message,
        };

        let listen_text = env("HOLDPOINT_LISTEN")
            .or(file.listen.clone())
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_text.parse().map_err(|_| ConfigError::Env {
            var: "HOLDPOINT_LISTEN",
            value: listen_text.clone(),
            message: "expected ADDRESS:PORT, e.g. 127.0.0.1:8470".into(),
        })?;
        let data_dir = env("HOLDPOINT_DATA_DIR")
            .map(PathBuf::from)
            .or(file.data_dir.clone())
            .or_else(default_data_dir)
            .ok_or(ConfigError::NoDataDir)?;
        let database_url = env("HOLDPOINT_DATABASE_URL")
            .or(file.database_url.clone())
            .unwrap_or_else(|| {
                format!(
                    "sqlite://{}?mode=rwc",
                    data_dir.join("holdpoint.db").display()
                )
            });
        let public_url = env("HOLDPOINT_PUBLIC_URL")
            .or(file.public_url.clone())
            .map(|u| u.trim_end_matches('/').to_string());
        let log_format = match env("HOLDPOINT_LOG_FORMAT")
            .or(file.log_format.clone())
            .as_deref()
        {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Env {
                    var: "HOLDPOINT_LOG_FORMAT",
                    value: other.to_string(),
                    message: "expected text or json".into(),
                });
            }
        };

        let mut expiry = Expiry::uniform(DEFAULT_EXPIRY);
        let from_file = |v: &Option<String>| -> Result<Option<Duration>, ConfigError> {
            v.as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(&bad_file)
        };
        let from_env = |var: &'static str| -> Result<Option<Duration>, ConfigError> {
            env(var)
                .map(|v| {
                    parse_duration(&v).map_err(|message| ConfigError::Env {
                        var,
                        value: v.clone(),
                        message,
                    })
                })
                .transpose()
        };
        if let Some(d) = from_env("HOLDPOINT_EXPIRY")?.or(from_file(&file.expiry.default)?) {
            expiry = Expiry::uniform(d);
        }
        let per_risk = [
            (&mut expiry.low, "HOLDPOINT_EXPIRY_LOW", &file.expiry.low),
            (
                &mut expiry.medium,
                "HOLDPOINT_EXPIRY_MEDIUM",
                &file.expiry.medium,
            ),
            (&mut expiry.high, "HOLDPOINT_EXPIRY_HIGH", &file.expiry.high),
            (
                &mut expiry.critical,
                "HOLDPOINT_EXPIRY_CRITICAL",
                &file.expiry.critical,
            ),
        ];
        for (slot, var, value) in per_risk {
            if let Some(d) = from_env(var)?.or(from_file(value)?) {
                *slot = d;
            }
        }

        Ok(Config {
            listen,
            data_dir,
            database_url,
            public_url,
            expiry,
            log_format,
        })
    }

    /// The base URL runners and reviewers use.
    pub fn base_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }

    /// The database URL with any password hidden, for logs.
    pub fn database_display(&self) -> String {
        holdpoint_shared::redact::redact(&self.database_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("").is_err());
    }
}

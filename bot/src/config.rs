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
    #[serde(default)]
    slack: SlackFile,
    #[serde(default)]
    matrix: MatrixFile,
    #[serde(default)]
    runners: std::collections::BTreeMap<String, RunnerFile>,
    #[serde(default)]
    limits: LimitsFile,
    metrics_token: Option<String>,
    #[serde(default)]
    tls: TlsFile,
    #[serde(default)]
    escalation: EscalationFile,
    #[serde(default)]
    quorum: QuorumFile,
    #[serde(default)]
    people: std::collections::BTreeMap<String, PersonFile>,
    #[serde(default)]
    groups: std::collections::BTreeMap<String, GroupFile>,
    #[serde(default)]
    digest: DigestFile,
    trusted_proxies: Option<Vec<String>>,
    #[serde(default)]
    pagerduty: PagerDutyFile,
    #[serde(default)]
    opsgenie: OpsgenieFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PagerDutyFile {
    routing_key: Option<String>,
    routing_key_file: Option<PathBuf>,
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpsgenieFile {
    api_key: Option<String>,
    api_key_file: Option<PathBuf>,
    url: Option<String>,
    responders: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuorumFile {
    low: Option<u32>,
    medium: Option<u32>,
    high: Option<u32>,
    critical: Option<u32>,
    #[serde(default)]
    rules: Vec<QuorumRuleFile>,
}

/// `[[quorum.rules]]`: the quorum of the requests of one route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuorumRuleFile {
    name: Option<String>,
    runner: Option<String>,
    agent: Option<String>,
    min_risk: Option<Risk>,
    approvals: Option<u32>,
    #[serde(default)]
    from: std::collections::BTreeMap<String, u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DigestFile {
    schedule: Option<String>,
    timezone: Option<String>,
    period: Option<String>,
    slack_channels: Option<Vec<String>>,
    matrix_rooms: Option<Vec<String>>,
}

/// `[digest]`: when the audit digest is sent, what it covers and where it
/// goes.
#[derive(Debug, Clone)]
pub struct DigestConfig {
    /// The schedule as written (`0 9 * * MON`, `@weekly`).
    pub source: String,
    pub schedule: cron::Schedule,
    pub timezone: chrono_tz::Tz,
    /// How far back each digest looks from its due time.
    pub period: Duration,
    /// Slack channel ids it is posted to.
    pub slack_channels: Vec<String>,
    /// Matrix rooms (ids or aliases) it is posted to.
    pub matrix_rooms: Vec<String>,
}

impl DigestConfig {
    /// The first due time after `after_ms` (unix ms).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        use chrono::TimeZone as _;
        let after = self.timezone.timestamp_millis_opt(after_ms).single()?;
        self.schedule
            .after(&after)
            .next()
            .map(|t| t.timestamp_millis())
    }

    /// The last due time at or before `at_ms`.
    pub fn last_at_or_before(&self, at_ms: i64) -> Option<i64> {
        use chrono::TimeZone as _;
        let at = self
            .timezone
            .timestamp_millis_opt(at_ms.saturating_add(1))
            .single()?;
        self.schedule
            .after(&at)
            .next_back()
            .map(|t| t.timestamp_millis())
    }
}

/// A five-field crontab line (minute hour day-of-month month day-of-week,
/// day 0 or 7 being Sunday), the same with a seconds field first (six
/// fields), or a shorthand (`@weekly`, `@daily`, …), as the `cron` crate
/// reads it: with a seconds field, and days of the week by name (it
/// numbers them from Sunday = 1).
pub fn parse_crontab(text: &str) -> Result<cron::Schedule, String> {
    use std::str::FromStr as _;
    let text = text.trim();
    let expression = if text.starts_with('@') {
        text.to_string()
    } else {
        let mut fields: Vec<&str> = text.split_whitespace().collect();
        let seconds = match fields.len() {
            5 => "0",
            6 => fields.remove(0),
            n => {
                return Err(format!(
                    "{text:?} has {n} fields: write five (minute hour day-of-month month day-of-week, e.g. \"0 9 * * MON\"), six with seconds first, or @weekly"
                ));
            }
        };
        const DAYS: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
        let mut dow = String::new();
        let mut digits = String::new();
        let flush = |digits: &mut String, dow: &mut String| -> Result<(), String> {
            if digits.is_empty() {
                return Ok(());
            }
            let n: usize = digits
                .parse()
                .map_err(|_| format!("{digits:?} is not a day"))?;
            let day = DAYS.get(n).ok_or_else(|| {
                format!("day of the week {n} is out of range: use 0-7 or MON-SUN")
            })?;
            dow.push_str(day);
            digits.clear();
            Ok(())
        };
        let mut after_slash = false;
        for c in fields[4].chars() {
            if c.is_ascii_digit() && !after_slash {
                digits.push(c);
            } else {
                flush(&mut digits, &mut dow)?;
                after_slash = c == '/';
                dow.push(c);
            }
        }
        flush(&mut digits, &mut dow)?;
        format!(
            "{seconds} {} {} {} {} {dow}",
            fields[0], fields[1], fields[2], fields[3]
        )
    };
    cron::Schedule::from_str(&expression).map_err(|e| format!("{text:?}: {e}"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupFile {
    #[serde(default)]
    members: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonFile {
    #[serde(default)]
    ids: Vec<String>,
}

/// What one request needs before it is approved: `approvals` distinct
/// people, with at least `from[g]` of them members of group `g` ("one from
/// sre and one from security"). Any deny ends it as denied. Chosen when
/// the request is submitted and stored with it, so a configuration change
/// never lowers the bar of a request already waiting.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub approvals: u32,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub from: std::collections::BTreeMap<String, u32>,
}

impl Requirement {
    /// `n` approvals from anyone.
    pub fn of(n: u32) -> Requirement {
        Requirement {
            approvals: n.max(1),
            from: Default::default(),
        }
    }

    /// Whether more than one approval is needed, or any from a group:
    /// then every approval is a vote, counted until the quorum is met.
    pub fn counts_votes(&self) -> bool {
        self.approvals > 1 || !self.from.is_empty()
    }

    /// Per group, how many more approvals it still needs from its members,
    /// given the groups of each person who approved so far (only groups
    /// that still need some).
    pub fn missing(&self, voters: &[Vec<String>]) -> Vec<(String, u32)> {
        self.from
            .iter()
            .filter_map(|(g, need)| {
                let have = voters.iter().filter(|gs| gs.contains(g)).count();
                let have = u32::try_from(have).unwrap_or(u32::MAX);
                (have < *need).then(|| (g.clone(), need - have))
            })
            .collect()
    }

    /// Whether the approvals of people in `voters` (their groups) meet it.
    pub fn met(&self, voters: &[Vec<String>]) -> bool {
        u32::try_from(voters.len()).unwrap_or(u32::MAX) >= self.approvals
            && self.missing(voters).is_empty()
    }

    /// Whether an approval by a member of `groups` can still count, after
    /// those of `voters`: the approvals not reserved for groups that still
    /// need some are open to anyone; the reserved ones only to members.
    /// Refusing the others keeps "N approvals" from being reached before
    /// every group has its share.
    pub fn admits(&self, voters: &[Vec<String>], groups: &[String]) -> bool {
        let missing = self.missing(voters);
        if missing.iter().any(|(g, _)| groups.contains(g)) {
            return true;
        }
        let reserved: u32 = missing.iter().map(|(_, n)| *n).sum();
        let have = u32::try_from(voters.len()).unwrap_or(u32::MAX);
        have.saturating_add(reserved) < self.approvals
    }
}

/// A `[[quorum.rules]]` entry: the requests it applies to, and what they
/// need. The first rule whose every given condition holds applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumRule {
    pub name: String,
    /// The runner's name; a trailing `*` matches any suffix (`prod-*`).
    pub runner: Option<String>,
    /// The agent the runner reports.
    pub agent: Option<String>,
    /// Only requests of this risk or higher.
    pub min_risk: Option<Risk>,
    pub needs: Requirement,
}

/// `[quorum]`: how many distinct people must approve a request: by route
/// (`[[quorum.rules]]`, first match), else by risk (1 unless set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quorum {
    pub low: u32,
    pub medium: u32,
    pub high: u32,
    pub critical: u32,
    pub rules: Vec<QuorumRule>,
}

impl Default for Quorum {
    fn default() -> Quorum {
        Quorum {
            low: 1,
            medium: 1,
            high: 1,
            critical: 1,
            rules: Vec::new(),
        }
    }
}

impl Quorum {
    /// Approvals a request of this risk needs when no rule matches it.
    pub fn for_risk(&self, risk: Risk) -> u32 {
        match risk {
            Risk::Low => self.low,
            Risk::Medium => self.medium,
            Risk::High => self.high,
            Risk::Critical => self.critical,
        }
    }

    /// What a request from `runner` (reporting `agent`) of `risk` needs:
    /// the first matching rule's, else the risk's count. A rule never
    /// asks for fewer approvals than the risk alone would.
    pub fn for_request(&self, runner: &str, agent: Option<&str>, risk: Risk) -> Requirement {
        let base = self.for_risk(risk);
        match self.rules.iter().find(|r| {
            applies(
                r.runner.as_deref(),
                r.agent.as_deref(),
                r.min_risk,
                (runner, agent, risk),
            )
        }) {
            Some(rule) => Requirement {
                approvals: rule.needs.approvals.max(base),
                from: rule.needs.from.clone(),
            },
            None => Requirement::of(base),
        }
    }
}

/// Checks `[digest]`; errors name the bad key.
fn load_digest(
    file: DigestFile,
    slack: bool,
    matrix: bool,
) -> Result<Option<DigestConfig>, String> {
    let schedule = env("HOLDPOINT_DIGEST_SCHEDULE").or(file.schedule);
    let Some(source) = schedule
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
    else {
        if file.timezone.is_some()
            || file.period.is_some()
            || file.slack_channels.is_some()
            || file.matrix_rooms.is_some()
        {
            return Err("digest.schedule is missing: say when to send it, e.g. \"0 9 * * MON\" or \"@weekly\"".into());
        }
        return Ok(None);
    };
    let schedule = parse_crontab(&source).map_err(|e| format!("digest.schedule = {e}"))?;
    let tz_name = env("HOLDPOINT_DIGEST_TIMEZONE")
        .or(file.timezone)
        .unwrap_or_else(|| "UTC".into());
    let timezone: chrono_tz::Tz = tz_name.trim().parse().map_err(|_| {
        format!("digest.timezone = {tz_name:?} is not a time zone: write an IANA name like \"Europe/Berlin\" or \"UTC\"")
    })?;
    let period = match file.period {
        Some(p) => parse_duration(&p).map_err(|e| format!("digest.period: {e}"))?,
        None => Duration::from_secs(7 * 24 * 3600),
    };
    if period.is_zero() {
        return Err("digest.period must be longer than zero".into());
    }
    let clean = |v: Option<Vec<String>>| -> Vec<String> {
        v.unwrap_or_default()
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let slack_channels = clean(file.slack_channels);
    let matrix_rooms = clean(file.matrix_rooms);
    if !slack_channels.is_empty() && !slack {
        return Err("digest.slack_channels is set but Slack is not configured".into());
    }
    if !matrix_rooms.is_empty() && !matrix {
        return Err("digest.matrix_rooms is set but Matrix is not configured".into());
    }
    if let Some(bad) = slack_channels.iter().find(|c| !is_slack_id(c)) {
        return Err(format!(
            "digest.slack_channels: {bad:?} is not a channel id (C0123ABCD)"
        ));
    }
    Ok(Some(DigestConfig {
        source,
        schedule,
        timezone,
        period,
        slack_channels,
        matrix_rooms,
    }))
}

/// Checks `[[quorum.rules]]` against the declared groups; errors name the
/// bad key.
fn load_quorum_rules(
    rules: Vec<QuorumRuleFile>,
    groups: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Result<Vec<QuorumRule>, String> {
    let mut out: Vec<QuorumRule> = Vec::new();
    for (i, r) in rules.into_iter().enumerate() {
        let at = format!("quorum.rules[{i}]");
        let name = r
            .name
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("{at}.name is missing: give each rule a name"))?;
        if out.iter().any(|q| q.name == name) {
            return Err(format!("{at}.name = {name:?} is used by an earlier rule"));
        }
        check_route_keys(&at, &r.runner, &r.agent)?;
        for (g, n) in &r.from {
            if !groups.contains_key(g) {
                return Err(format!(
                    "{at}.from.{g}: no group {g:?} is declared; add [groups.{g}] members = [...]"
                ));
            }
            if *n == 0 {
                return Err(format!("{at}.from.{g} = 0: leave the group out instead"));
            }
        }
        let reserved: u32 = r.from.values().fold(0u32, |a, n| a.saturating_add(*n));
        let approvals = match r.approvals {
            Some(0) => {
                return Err(format!(
                    "{at}.approvals = 0: a request needs at least one approval"
                ));
            }
            Some(n) if n < reserved => {
                return Err(format!(
                    "{at}.approvals = {n} is fewer than the {reserved} its `from` asks for"
                ));
            }
            Some(n) => n,
            None if reserved == 0 => {
                return Err(format!(
                    "{at}.approvals is missing: say how many approvals it needs"
                ));
            }
            None => reserved,
        };
        out.push(QuorumRule {
            name,
            runner: r.runner.map(|v| v.trim().to_string()),
            agent: r.agent.map(|v| v.trim().to_string()),
            min_risk: r.min_risk,
            needs: Requirement {
                approvals,
                from: r.from,
            },
        });
    }
    Ok(out)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalationFile {
    #[serde(default)]
    policies: Vec<PolicyFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    name: Option<String>,
    runner: Option<String>,
    agent: Option<String>,
    min_risk: Option<Risk>,
    #[serde(default)]
    steps: Vec<StepFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    after: Option<String>,
    action: Option<String>,
}

/// What an escalation step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepAction {
    /// A reply in the request's thread, mentioning the reviewers.
    Remind,
    /// The request, with its buttons, posted in the pager channel,
    /// mentioning the on-call people.
    Notify,
    /// An incident on PagerDuty, an alert on Opsgenie (or Jira Service
    /// Management Operations): whichever are configured.
    Page,
}

impl StepAction {
    /// The stored and configured name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepAction::Remind => "remind",
            StepAction::Notify => "notify",
            StepAction::Page => "page",
        }
    }

    pub fn parse(s: &str) -> Option<StepAction> {
        match s {
            "remind" => Some(StepAction::Remind),
            "notify" => Some(StepAction::Notify),
            "page" => Some(StepAction::Page),
            _ => None,
        }
    }
}

/// One step of an escalation policy: its action, `after` the submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub after: Duration,
    pub action: StepAction,
}

/// `[[escalation.policies]]`: the steps a request climbs while nobody
/// answers it. The first policy whose every given condition holds applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationPolicy {
    pub name: String,
    /// The runner's name; a trailing `*` matches any suffix (`prod-*`).
    pub runner: Option<String>,
    /// The agent the runner reports (`claude-code`).
    pub agent: Option<String>,
    /// Only requests of this risk or higher.
    pub min_risk: Option<Risk>,
    /// In the order they fire; each `after` is later than the one before.
    pub steps: Vec<Step>,
}

impl EscalationPolicy {
    fn matches(&self, runner: &str, agent: Option<&str>, risk: Risk) -> bool {
        applies(
            self.runner.as_deref(),
            self.agent.as_deref(),
            self.min_risk,
            (runner, agent, risk),
        )
    }
}

/// The escalation policies, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Escalation {
    pub policies: Vec<EscalationPolicy>,
}

impl Escalation {
    /// The policy that applies to a request, by name (`default` when none
    /// written matches), and its steps that come before `expiry` (the
    /// final step, always a denial). The default reminds the reviewers at
    /// half the expiry.
    pub fn steps_for(
        &self,
        runner: &str,
        agent: Option<&str>,
        risk: Risk,
        expiry: Duration,
    ) -> (&str, Vec<Step>) {
        match self
            .policies
            .iter()
            .find(|p| p.matches(runner, agent, risk))
        {
            Some(p) => (
                p.name.as_str(),
                p.steps
                    .iter()
                    .copied()
                    .filter(|s| s.after < expiry)
                    .collect(),
            ),
            None => (
                "default",
                vec![Step {
                    after: expiry / 2,
                    action: StepAction::Remind,
                }],
            ),
        }
    }

    /// Whether any policy posts to a pager channel.
    pub fn notifies(&self) -> bool {
        self.has(StepAction::Notify)
    }

    /// Whether any policy has a step with `action`.
    pub fn has(&self, action: StepAction) -> bool {
        self.policies
            .iter()
            .any(|p| p.steps.iter().any(|s| s.action == action))
    }
}

/// Whether `name` matches `pattern`: equal, or, for a pattern with a
/// trailing `*`, starting with what comes before it.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// Checks `[[escalation.policies]]`; errors name the bad key.
fn load_escalation(file: EscalationFile) -> Result<Escalation, String> {
    let mut policies: Vec<EscalationPolicy> = Vec::new();
    for (i, p) in file.policies.into_iter().enumerate() {
        let at = format!("escalation.policies[{i}]");
        let name = p
            .name
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("{at}.name is missing: give each policy a name"))?;
        if name == "default" {
            return Err(format!(
                "{at}.name = \"default\" is the name of the built-in policy; choose another"
            ));
        }
        if policies.iter().any(|q| q.name == name) {
            return Err(format!("{at}.name = {name:?} is used by an earlier policy"));
        }
        check_route_keys(&at, &p.runner, &p.agent)?;
        let mut steps: Vec<Step> = Vec::new();
        for (j, s) in p.steps.into_iter().enumerate() {
            let at = format!("{at}.steps[{j}]");
            let after = s
                .after
                .as_deref()
                .ok_or_else(|| format!("{at}.after is missing: say how long after submission"))
                .and_then(|a| parse_duration(a).map_err(|e| format!("{at}.after: {e}")))?;
            let action = s
                .action
                .as_deref()
                .ok_or_else(|| format!("{at}.action is missing: remind, notify or page"))?;
            let action = StepAction::parse(action).ok_or_else(|| {
                format!("{at}.action = {action:?} is not an action: use remind, notify or page")
            })?;
            if let Some(prev) = steps.last()
                && after <= prev.after
            {
                return Err(format!(
                    "{at}.after must be later than steps[{}].after: steps fire in order",
                    j - 1
                ));
            }
            steps.push(Step { after, action });
        }
        policies.push(EscalationPolicy {
            name,
            runner: p.runner.map(|r| r.trim().to_string()),
            agent: p.agent.map(|a| a.trim().to_string()),
            min_risk: p.min_risk,
            steps,
        });
    }
    Ok(Escalation { policies })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

/// `[tls]`: the bot serves https and wss itself from these PEM files,
/// read again on SIGHUP (for certificates that renew).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// A value that must not appear in logs or `Debug` output (a token).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this secret. Both are hashed first, so the
    /// time the comparison takes says nothing about the secret.
    pub fn matches(&self, candidate: &str) -> bool {
        use sha2::{Digest, Sha256};
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(candidate.as_bytes());
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    pending_per_runner: Option<u32>,
    connections_per_runner: Option<u32>,
    submissions_per_second: Option<u32>,
    client_timeout: Option<String>,
}

/// What one runner may hold at once, so that no runner (a prompt-injected
/// agent among them) can crowd the others out of the queue or the bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests of one runner pending at once.
    pub pending_per_runner: u32,
    /// Open websocket connections of one runner (every waiting command
    /// holds one).
    pub connections_per_runner: u32,
    /// New submissions of one runner per second, on average (a burst of
    /// twice as many is allowed).
    pub submissions_per_second: u32,
    /// How long a client may take before it has said what it wants: the
    /// TLS handshake, a request's head, a kept-alive connection's next
    /// request, a runner websocket's hello.
    pub client_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            pending_per_runner: 200,
            connections_per_runner: 1000,
            submissions_per_second: 20,
            client_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunnerFile {
    requester: Option<String>,
}

/// What the bot knows about one runner beyond its token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunnerSettings {
    /// Whom this runner's agent works for: every request it submits is
    /// that person's (so they cannot approve it), whatever the runner says.
    pub requester: Option<crate::core::Reviewer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlackFile {
    bot_token: Option<String>,
    signing_secret: Option<String>,
    app_token: Option<String>,
    api_url: Option<String>,
    channel: Option<String>,
    reviewers: Option<Vec<String>>,
    #[serde(default)]
    routes: Vec<SlackRoute>,
    pager_channel: Option<String>,
    oncall: Option<Vec<String>>,
}

/// Sends requests that match to another Slack channel. The first route whose
/// every given condition holds wins; none means the default channel.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackRoute {
    /// The runner's name; a trailing `*` matches any suffix (`prod-*`).
    #[serde(default)]
    pub runner: Option<String>,
    /// Only requests of this risk or higher.
    #[serde(default)]
    pub min_risk: Option<Risk>,
    /// The channel id (`C0123…`).
    pub channel: String,
}

impl SlackRoute {
    /// Whether a request from `runner` with `risk` takes this route.
    pub fn matches(&self, runner: &str, risk: Risk) -> bool {
        route_matches(self.runner.as_deref(), self.min_risk, runner, risk)
    }
}

/// Whether a route for `pattern` (a runner name; a trailing `*` matches
/// any suffix) and `min_risk` takes a request from `runner` with `risk`.
fn route_matches(pattern: Option<&str>, min_risk: Option<Risk>, runner: &str, risk: Risk) -> bool {
    applies(pattern, None, min_risk, (runner, None, risk))
}

/// Whether a route's conditions (a runner name pattern with a trailing
/// `*` as a prefix, an agent, a lowest risk; each absent matches any) hold
/// for a request from `runner`, reporting `agent`, of `risk`.
fn applies(
    runner_pattern: Option<&str>,
    agent_pattern: Option<&str>,
    min_risk: Option<Risk>,
    (runner, agent, risk): (&str, Option<&str>, Risk),
) -> bool {
    runner_pattern.is_none_or(|p| name_matches(p, runner))
        && agent_pattern.is_none_or(|a| agent == Some(a))
        && min_risk.is_none_or(|m| risk >= m)
}

/// A route's `runner` and `agent` keys, if given, must say something.
fn check_route_keys(
    at: &str,
    runner: &Option<String>,
    agent: &Option<String>,
) -> Result<(), String> {
    for (key, v) in [("runner", runner), ("agent", agent)] {
        if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(format!("{at}.{key} is empty: leave it out to match any"));
        }
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatrixFile {
    homeserver: Option<String>,
    user_id: Option<String>,
    password: Option<String>,
    access_token: Option<String>,
    device_id: Option<String>,
    room: Option<String>,
    reviewers: Option<Vec<String>>,
    min_power_level: Option<i64>,
    data_dir: Option<PathBuf>,
    verified_devices_only: Option<bool>,
    pager_room: Option<String>,
    oncall: Option<Vec<String>>,
    recovery_key: Option<String>,
    recovery_key_file: Option<PathBuf>,
    device_lease: Option<String>,
    #[serde(default)]
    routes: Vec<MatrixRoute>,
}

/// Sends requests that match to another Matrix room, like [`SlackRoute`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixRoute {
    #[serde(default)]
    pub runner: Option<String>,
    #[serde(default)]
    pub min_risk: Option<Risk>,
    /// The room id (`!abc:example.org`) or alias (`#ops:example.org`).
    pub room: String,
}

impl MatrixRoute {
    /// Whether a request from `runner` with `risk` takes this route.
    pub fn matches(&self, runner: &str, risk: Risk) -> bool {
        route_matches(self.runner.as_deref(), self.min_risk, runner, risk)
    }
}

/// Matrix settings. Present only when some `[matrix]` setting is given;
/// then everything needed to log in, post and decide must be there.
#[derive(Clone)]
pub struct MatrixConfig {
    /// The homeserver's client API, e.g. `https://matrix.example.org`.
    pub homeserver: String,
    /// The bot's user id, `@holdpoint:example.org`.
    pub user_id: String,
    /// For the first login (and cross-signing's bootstrap).
    pub password: Option<Secret>,
    /// An existing session instead of a password: both or neither.
    pub access_token: Option<Secret>,
    pub device_id: Option<String>,
    /// The review room (id or alias), unless a route says otherwise.
    pub room: String,
    /// Matrix user ids that may decide.
    pub reviewers: Vec<String>,
    /// Anyone with at least this power level in the review room may decide.
    pub min_power_level: Option<i64>,
    /// The session and the crypto store.
    pub data_dir: PathBuf,
    /// In encrypted rooms, count only decisions sent from devices their
    /// owner cross-signed and the bot trusts (reactions, whose relation is
    /// never encrypted, then count for nothing: reply instead).
    pub verified_devices_only: bool,
    pub routes: Vec<MatrixRoute>,
    /// Where a `notify` step posts the request (id or alias).
    pub pager_room: Option<String>,
    /// Whom a `notify` step mentions there (the reviewers when empty).
    pub oncall: Vec<String>,
    /// The key (or passphrase) of the bot's secret storage: restores its
    /// cross-signing identity on a new device, and protects a new secret
    /// storage instead of a generated key.
    pub recovery_key: Option<Secret>,
    /// How long the replica that uses the Matrix device holds it in the
    /// database without renewing it; after that another may take over.
    pub device_lease: Duration,
}

impl MatrixConfig {
    /// The room for a request from `runner` with `risk`.
    pub fn room_for(&self, runner: &str, risk: Risk) -> &str {
        self.routes
            .iter()
            .find(|r| r.matches(runner, risk))
            .map_or(self.room.as_str(), |r| r.room.as_str())
    }
}

impl std::fmt::Debug for MatrixConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatrixConfig")
            .field("homeserver", &self.homeserver)
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("room", &self.room)
            .field("reviewers", &self.reviewers)
            .field("min_power_level", &self.min_power_level)
            .field("data_dir", &self.data_dir)
            .field("verified_devices_only", &self.verified_devices_only)
            .field("routes", &self.routes)
            .field("pager_room", &self.pager_room)
            .field("oncall", &self.oncall)
            .field("recovery_key", &self.recovery_key.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

/// The Slack API the bot talks to unless told otherwise.
pub const DEFAULT_SLACK_API_URL: &str = "https://slack.com/api";

/// Slack settings. Present only when a bot token is configured.
#[derive(Clone)]
pub struct SlackConfig {
    /// `xoxb-…`.
    pub bot_token: String,
    /// Verifies interactions posted to `/slack/interactions` (HTTP mode).
    pub signing_secret: Option<String>,
    /// `xapp-…`: receive interactions over Socket Mode instead.
    pub app_token: Option<String>,
    /// Without a trailing `/`, e.g. `https://slack.com/api`.
    pub api_url: String,
    /// Where requests go unless a route says otherwise.
    pub channel: String,
    /// Slack user ids (`U…`, `W…`) and user-group ids (`S…`) that may decide.
    pub reviewers: Vec<String>,
    pub routes: Vec<SlackRoute>,
    /// Where an escalation's `notify` step posts (`C…`).
    pub pager_channel: Option<String>,
    /// Who a `notify` step mentions: Slack user ids and user-group ids;
    /// the reviewers when none are given.
    pub oncall: Vec<String>,
}

impl SlackConfig {
    /// The channel for a request from `runner` with `risk`.
    pub fn channel_for(&self, runner: &str, risk: Risk) -> &str {
        self.routes
            .iter()
            .find(|r| r.matches(runner, risk))
            .map_or(self.channel.as_str(), |r| r.channel.as_str())
    }
}

impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens and secrets stay out of logs.
        f.debug_struct("SlackConfig")
            .field("signing_secret", &self.signing_secret.as_ref().map(|_| "…"))
            .field("app_token", &self.app_token.as_ref().map(|_| "…"))
            .field("api_url", &self.api_url)
            .field("channel", &self.channel)
            .field("reviewers", &self.reviewers)
            .field("routes", &self.routes)
            .field("pager_channel", &self.pager_channel)
            .field("oncall", &self.oncall)
            .finish_non_exhaustive()
    }
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
    /// Slack, when configured.
    pub slack: Option<SlackConfig>,
    /// Matrix, when configured.
    pub matrix: Option<MatrixConfig>,
    /// `[runners.NAME]`: per-runner settings.
    pub runners: std::collections::BTreeMap<String, RunnerSettings>,
    /// `[limits]`: what one runner may hold at once.
    pub limits: Limits,
    /// `metrics_token`: when set, `/metrics` answers only a request with
    /// `Authorization: Bearer TOKEN`.
    pub metrics_token: Option<Secret>,
    /// `[tls]`: serve TLS directly (otherwise plain http, for a proxy in
    /// front or for loopback).
    pub tls: Option<TlsConfig>,
    /// `[[escalation.policies]]`: what happens while nobody answers.
    pub escalation: Escalation,
    /// `[quorum]`: approvals needed by risk and by route.
    pub quorum: Quorum,
    /// `[groups.NAME] members`: by group, its members as people
    /// (`person:alice`) or identities (`slack:U…`), as
    /// [`Config::person_of`] names them.
    pub groups: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    /// `[people.NAME] ids`: one person's identities in several realms,
    /// by identity (`slack:U…` → `alice`).
    pub people: std::collections::BTreeMap<String, String>,
    /// `trusted_proxies`: reverse proxies whose `X-Forwarded-For` names the
    /// client (for throttling failed logins and runner tokens per client).
    pub trusted_proxies: crate::listener::TrustedProxies,
    /// `[pagerduty]` and `[opsgenie]`: where a `page` step goes.
    pub pagers: Pagers,
    /// `[digest]`, when a schedule is set.
    pub digest: Option<DigestConfig>,
}

/// `[pagerduty]`: the Events API v2 integration a `page` step triggers.
#[derive(Clone, PartialEq, Eq)]
pub struct PagerDutyConfig {
    /// The integration (routing) key of an Events API v2 integration.
    pub routing_key: Secret,
    /// The enqueue endpoint (`https://events.pagerduty.com/v2/enqueue`;
    /// `https://events.eu.pagerduty.com/v2/enqueue` for EU accounts).
    pub url: String,
}

impl std::fmt::Debug for PagerDutyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagerDutyConfig")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// `[opsgenie]`: the alert API a `page` step creates an alert on.
#[derive(Clone, PartialEq, Eq)]
pub struct OpsgenieConfig {
    /// An API integration's key (sent as `GenieKey …`).
    pub api_key: Secret,
    /// The API's base (`https://api.opsgenie.com`, `https://api.eu.opsgenie.com`,
    /// or Jira Service Management's `https://api.atlassian.com/jsm/ops/integration`).
    pub url: String,
    /// Teams the alert is for (by name); the integration's own when empty.
    pub responders: Vec<String>,
}

impl std::fmt::Debug for OpsgenieConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsgenieConfig")
            .field("url", &self.url)
            .field("responders", &self.responders)
            .finish_non_exhaustive()
    }
}

/// The pagers a `page` step uses: every one configured.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pagers {
    pub pagerduty: Option<PagerDutyConfig>,
    pub opsgenie: Option<OpsgenieConfig>,
}

impl Pagers {
    pub fn any(&self) -> bool {
        self.pagerduty.is_some() || self.opsgenie.is_some()
    }
}

/// A key given inline (`key`), in a file (`key_file`, trimmed), or by the
/// environment (`VAR`, `VAR_FILE`); the environment wins. Never logged.
fn secret_of(
    var: &'static str,
    var_file: &'static str,
    inline: Option<String>,
    file: Option<PathBuf>,
    key: &str,
    bad_file: &dyn Fn(String) -> ConfigError,
) -> Result<Option<Secret>, ConfigError> {
    let from_file = |path: PathBuf, from: &str| -> Result<Secret, ConfigError> {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| bad_file(format!("{from}: cannot read {}: {e}", path.display())))?;
        let text = text.trim();
        if text.is_empty() {
            return Err(bad_file(format!("{from}: {} is empty", path.display())));
        }
        Ok(Secret::new(text))
    };
    if let Some(v) = env(var) {
        return Ok(Some(Secret::new(v.trim())));
    }
    if let Some(p) = env(var_file) {
        return from_file(PathBuf::from(p), var_file).map(Some);
    }
    match (inline, file) {
        (Some(_), Some(_)) => Err(bad_file(format!(
            "{key} and {key}_file are both set: give one"
        ))),
        (Some(v), None) if !v.trim().is_empty() => Ok(Some(Secret::new(v.trim()))),
        (Some(_), None) => Err(bad_file(format!("{key} is empty"))),
        (None, Some(p)) => from_file(p, &format!("{key}_file")).map(Some),
        (None, None) => Ok(None),
    }
}

fn load_pagers(
    pd: PagerDutyFile,
    og: OpsgenieFile,
    bad_file: &dyn Fn(String) -> ConfigError,
) -> Result<Pagers, ConfigError> {
    let url_of = |key: &str, v: Option<String>, default: &str| -> Result<String, ConfigError> {
        let u = v.unwrap_or_else(|| default.to_string());
        let u = u.trim().trim_end_matches('/').to_string();
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            return Err(bad_file(format!("{key} = {u:?} is not an http(s) URL")));
        }
        Ok(u)
    };
    let pagerduty = match secret_of(
        "HOLDPOINT_PAGERDUTY_ROUTING_KEY",
        "HOLDPOINT_PAGERDUTY_ROUTING_KEY_FILE",
        pd.routing_key,
        pd.routing_key_file,
        "pagerduty.routing_key",
        bad_file,
    )? {
        None => {
            if pd.url.is_some() {
                return Err(bad_file(
                    "pagerduty.url is set but pagerduty.routing_key is not".into(),
                ));
            }
            None
        }
        Some(routing_key) => {
            // Events API v2 integration keys are 32 characters.
            if routing_key.expose().len() != 32
                || !routing_key
                    .expose()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric())
            {
                return Err(bad_file(
                    "pagerduty.routing_key is not an Events API v2 integration key (32 letters and digits)"
                        .into(),
                ));
            }
            Some(PagerDutyConfig {
                routing_key,
                url: url_of(
                    "pagerduty.url",
                    env("HOLDPOINT_PAGERDUTY_URL").or(pd.url),
                    "https://events.pagerduty.com/v2/enqueue",
                )?,
            })
        }
    };
    let opsgenie = match secret_of(
        "HOLDPOINT_OPSGENIE_API_KEY",
        "HOLDPOINT_OPSGENIE_API_KEY_FILE",
        og.api_key,
        og.api_key_file,
        "opsgenie.api_key",
        bad_file,
    )? {
        None => {
            if og.url.is_some() || og.responders.is_some() {
                return Err(bad_file(
                    "opsgenie is configured but opsgenie.api_key is not".into(),
                ));
            }
            None
        }
        Some(api_key) => {
            let responders: Vec<String> = og
                .responders
                .unwrap_or_default()
                .into_iter()
                .map(|r| r.trim().to_string())
                .collect();
            if responders.iter().any(String::is_empty) {
                return Err(bad_file(
                    "opsgenie.responders has an empty team name".into(),
                ));
            }
            Some(OpsgenieConfig {
                api_key,
                url: url_of(
                    "opsgenie.url",
                    env("HOLDPOINT_OPSGENIE_URL").or(og.url),
                    "https://api.opsgenie.com",
                )?,
                responders,
            })
        }
    };
    Ok(Pagers {
        pagerduty,
        opsgenie,
    })
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

        let slack = load_slack(file.slack, &bad_file)?;
        let escalation = load_escalation(file.escalation).map_err(&bad_file)?;
        if escalation.notifies()
            && let Some(s) = &slack
            && s.pager_channel.is_none()
        {
            return Err(bad_file(
                "an escalation policy has a notify step but slack.pager_channel \
                 (HOLDPOINT_SLACK_PAGER_CHANNEL) is not set: say where to post it"
                    .into(),
            ));
        }
        let matrix = load_matrix(file.matrix, &data_dir, &bad_file)?;
        if escalation.notifies()
            && let Some(m) = &matrix
            && m.pager_room.is_none()
        {
            return Err(bad_file(
                "an escalation policy has a notify step but matrix.pager_room \
                 (HOLDPOINT_MATRIX_PAGER_ROOM) is not set: say where to post it"
                    .into(),
            ));
        }
        let pagers = load_pagers(file.pagerduty, file.opsgenie, &bad_file)?;
        if escalation.has(StepAction::Page) && !pagers.any() {
            return Err(bad_file(
                "an escalation policy has a page step but neither [pagerduty] \
                 (HOLDPOINT_PAGERDUTY_ROUTING_KEY) nor [opsgenie] (HOLDPOINT_OPSGENIE_API_KEY) \
                 is configured: say where to page"
                    .into(),
            ));
        }
        let mut limits = Limits::default();
        for (slot, var, value) in [
            (
                &mut limits.pending_per_runner,
                "HOLDPOINT_LIMIT_PENDING_PER_RUNNER",
                file.limits.pending_per_runner,
            ),
            (
                &mut limits.connections_per_runner,
                "HOLDPOINT_LIMIT_CONNECTIONS_PER_RUNNER",
                file.limits.connections_per_runner,
            ),
            (
                &mut limits.submissions_per_second,
                "HOLDPOINT_LIMIT_SUBMISSIONS_PER_SECOND",
                file.limits.submissions_per_second,
            ),
        ] {
            let from_env = match env(var) {
                Some(v) => Some(v.trim().parse::<u32>().map_err(|_| ConfigError::Env {
                    var,
                    value: v.clone(),
                    message: "expected a whole number".into(),
                })?),
                None => None,
            };
            if let Some(n) = from_env.or(value) {
                if n == 0 {
                    return Err(bad_file(format!(
                        "{var} (limits): 0 would refuse every runner; give a positive number"
                    )));
                }
                *slot = n;
            }
        }
        if let Some(t) =
            from_env("HOLDPOINT_LIMIT_CLIENT_TIMEOUT")?.or(from_file(&file.limits.client_timeout)?)
        {
            limits.client_timeout = t;
        }
        let proxy_list: Option<Vec<String>> = match env("HOLDPOINT_TRUSTED_PROXIES") {
            Some(v) => Some(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            None => file.trusted_proxies,
        };
        let mut proxies = Vec::new();
        for text in proxy_list.unwrap_or_default() {
            proxies.push(
                crate::listener::IpNet::parse(&text)
                    .map_err(|e| bad_file(format!("trusted_proxies: {e}")))?,
            );
        }
        let trusted_proxies = crate::listener::TrustedProxies::new(proxies);
        let mut runners = std::collections::BTreeMap::new();
        for (name, r) in file.runners {
            let requester = match r.requester.as_deref() {
                None => None,
                Some(text) => Some(crate::core::Reviewer::parse(text).ok_or_else(|| {
                    bad_file(format!(
                        "runners.{name}.requester = {text:?} is not a reviewer: write realm:id, e.g. slack:U0123 or web:alice"
                    ))
                })?),
            };
            runners.insert(name, RunnerSettings { requester });
        }

        let mut quorum = Quorum::default();
        for (slot, key, value) in [
            (&mut quorum.low, "low", file.quorum.low),
            (&mut quorum.medium, "medium", file.quorum.medium),
            (&mut quorum.high, "high", file.quorum.high),
            (&mut quorum.critical, "critical", file.quorum.critical),
        ] {
            if let Some(n) = value {
                if n == 0 {
                    return Err(bad_file(format!(
                        "quorum.{key} = 0: a request needs at least one approval"
                    )));
                }
                *slot = n;
            }
        }
        let mut people = std::collections::BTreeMap::new();
        let file_people: std::collections::BTreeSet<String> = file.people.keys().cloned().collect();
        for (name, p) in file.people {
            for id in p.ids {
                let r = crate::core::Reviewer::parse(id.trim()).ok_or_else(|| {
                    bad_file(format!(
                        "people.{name}.ids: {id:?} is not a reviewer: write realm:id, e.g. slack:U0123 or web:alice"
                    ))
                })?;
                if let Some(other) = people.insert(r.to_string(), name.clone()) {
                    return Err(bad_file(format!(
                        "people.{name}.ids: {id:?} is also one of people.{other}.ids"
                    )));
                }
            }
        }

        let mut groups = std::collections::BTreeMap::new();
        for (name, g) in file.groups {
            let mut members = std::collections::BTreeSet::new();
            for m in g.members {
                let m = m.trim();
                let key = if let Some(r) = crate::core::Reviewer::parse(m) {
                    r.to_string()
                } else if file_people.contains(m) {
                    format!("person:{m}")
                } else {
                    return Err(bad_file(format!(
                        "groups.{name}.members: {m:?} is neither a declared person ([people.{m}]) nor an identity such as slack:U0123"
                    )));
                };
                // An identity declared for a person is that person.
                members.insert(match people.get(&key) {
                    Some(p) => format!("person:{p}"),
                    None => key,
                });
            }
            if members.is_empty() {
                return Err(bad_file(format!("groups.{name}.members is empty")));
            }
            groups.insert(name, members);
        }
        quorum.rules = load_quorum_rules(file.quorum.rules, &groups).map_err(&bad_file)?;
        let digest =
            load_digest(file.digest, slack.is_some(), matrix.is_some()).map_err(&bad_file)?;

        Ok(Config {
            listen,
            data_dir,
            database_url,
            public_url,
            expiry,
            log_format,
            slack,
            matrix,
            runners,
            limits,
            escalation,
            quorum,
            people,
            groups,
            digest,
            trusted_proxies,
            pagers,
            tls: match (
                env("HOLDPOINT_TLS_CERT")
                    .map(PathBuf::from)
                    .or(file.tls.cert_file),
                env("HOLDPOINT_TLS_KEY")
                    .map(PathBuf::from)
                    .or(file.tls.key_file),
            ) {
                (Some(cert_file), Some(key_file)) => Some(TlsConfig {
                    cert_file,
                    key_file,
                }),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(bad_file(
                        "tls.cert_file is set but tls.key_file (HOLDPOINT_TLS_KEY) is not".into(),
                    ));
                }
                (None, Some(_)) => {
                    return Err(bad_file(
                        "tls.key_file is set but tls.cert_file (HOLDPOINT_TLS_CERT) is not".into(),
                    ));
                }
            },
            metrics_token: env("HOLDPOINT_METRICS_TOKEN")
                .or(file.metrics_token)
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .map(Secret::new),
        })
    }

    /// Who `r` is for quorum and self-approval: the person their identity
    /// is declared under (`person:alice`), else the identity itself.
    pub fn person_of(&self, r: &str) -> String {
        match self.people.get(r) {
            Some(name) => format!("person:{name}"),
            None => r.to_string(),
        }
    }

    /// The groups person `person` (as [`Config::person_of`] names them) is
    /// a member of.
    pub fn groups_of(&self, person: &str) -> Vec<String> {
        self.groups
            .iter()
            .filter(|(_, members)| members.contains(person))
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// The base URL runners and reviewers use.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}", self.listen))
    }

    /// The database URL with any password hidden, for logs.
    pub fn database_display(&self) -> String {
        holdpoint_shared::redact::redact(&self.database_url)
    }
}

/// `[slack]` and `HOLDPOINT_SLACK_*`: off unless a bot token is set; once
/// it is, everything needed to post and to receive clicks must be there.
fn load_slack(
    file: SlackFile,
    bad_file: &dyn Fn(String) -> ConfigError,
) -> Result<Option<SlackConfig>, ConfigError> {
    let Some(bot_token) = env("HOLDPOINT_SLACK_BOT_TOKEN").or(file.bot_token) else {
        return Ok(None);
    };
    let missing = |what: &str| ConfigError::Env {
        var: "HOLDPOINT_SLACK_BOT_TOKEN",
        value: "…".into(),
        message: format!("Slack is configured but {what}"),
    };
    let signing_secret = env("HOLDPOINT_SLACK_SIGNING_SECRET").or(file.signing_secret);
    let app_token = env("HOLDPOINT_SLACK_APP_TOKEN").or(file.app_token);
    if signing_secret.is_none() && app_token.is_none() {
        return Err(missing(
            "neither a signing secret (HTTP mode) nor an app-level token (Socket Mode) is set",
        ));
    }
    let channel = env("HOLDPOINT_SLACK_CHANNEL")
        .or(file.channel)
        .ok_or_else(|| missing("no channel is set (HOLDPOINT_SLACK_CHANNEL)"))?;
    let reviewers: Vec<String> = match env("HOLDPOINT_SLACK_REVIEWERS") {
        Some(v) => v.split([',', ' ']).map(str::to_string).collect(),
        None => file.reviewers.unwrap_or_default(),
    }
    .into_iter()
    .map(|r| r.trim().to_string())
    .filter(|r| !r.is_empty())
    .collect();
    if reviewers.is_empty() {
        return Err(missing(
            "no reviewers are set (HOLDPOINT_SLACK_REVIEWERS: user ids U… and group ids S…)",
        ));
    }
    if let Some(bad) = reviewers.iter().find(|r| {
        !r.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    }) {
        return Err(ConfigError::Env {
            var: "HOLDPOINT_SLACK_REVIEWERS",
            value: bad.clone(),
            message: "expected Slack user ids (U…, W…) or user-group ids (S…)".into(),
        });
    }
    let mut api_url = env("HOLDPOINT_SLACK_API_URL")
        .or(file.api_url)
        .unwrap_or_else(|| DEFAULT_SLACK_API_URL.into());
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        return Err(ConfigError::Env {
            var: "HOLDPOINT_SLACK_API_URL",
            value: api_url,
            message: "expected an http(s) URL like https://slack.com/api".into(),
        });
    }
    // slack-morphism joins `URL/method`.
    while api_url.ends_with('/') {
        api_url.pop();
    }
    if let Some(r) = file.routes.iter().find(|r| r.channel.trim().is_empty()) {
        return Err(bad_file(format!(
            "a [[slack.routes]] entry has no channel: {r:?}"
        )));
    }
    let routes = file
        .routes
        .into_iter()
        .map(|mut r| {
            r.channel = r.channel.trim().to_string();
            r
        })
        .collect();
    let pager_channel = env("HOLDPOINT_SLACK_PAGER_CHANNEL")
        .or(file.pager_channel)
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    if let Some(bad) = pager_channel.as_deref().filter(|c| !is_slack_id(c)) {
        return Err(ConfigError::Env {
            var: "HOLDPOINT_SLACK_PAGER_CHANNEL",
            value: bad.to_string(),
            message: "expected a Slack channel id (C…)".into(),
        });
    }
    let oncall: Vec<String> = match env("HOLDPOINT_SLACK_ONCALL") {
        Some(v) => v.split([',', ' ']).map(str::to_string).collect(),
        None => file.oncall.unwrap_or_default(),
    }
    .into_iter()
    .map(|r| r.trim().to_string())
    .filter(|r| !r.is_empty())
    .collect();
    if let Some(bad) = oncall.iter().find(|r| !is_slack_id(r)) {
        return Err(ConfigError::Env {
            var: "HOLDPOINT_SLACK_ONCALL",
            value: bad.clone(),
            message: "expected Slack user ids (U…, W…) or user-group ids (S…)".into(),
        });
    }
    Ok(Some(SlackConfig {
        bot_token,
        signing_secret,
        app_token,
        api_url,
        channel: channel.trim().to_string(),
        reviewers,
        routes,
        pager_channel,
        oncall,
    }))
}

/// Whether `s` has the shape of a Slack id: capital letters and digits.
fn is_slack_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// `[matrix]` and `HOLDPOINT_MATRIX_*`: off unless one of them is set;
/// once one is, the bot refuses to start until everything needed to log in,
/// post and decide is there, and says what is missing.
fn load_matrix(
    file: MatrixFile,
    data_dir: &Path,
    bad_file: &dyn Fn(String) -> ConfigError,
) -> Result<Option<MatrixConfig>, ConfigError> {
    let homeserver = env("HOLDPOINT_MATRIX_HOMESERVER").or(file.homeserver);
    let user_id = env("HOLDPOINT_MATRIX_USER_ID").or(file.user_id);
    let password = env("HOLDPOINT_MATRIX_PASSWORD").or(file.password);
    let access_token = env("HOLDPOINT_MATRIX_ACCESS_TOKEN").or(file.access_token);
    let device_id = env("HOLDPOINT_MATRIX_DEVICE_ID").or(file.device_id);
    let room = env("HOLDPOINT_MATRIX_ROOM").or(file.room);
    let reviewers: Option<Vec<String>> = match env("HOLDPOINT_MATRIX_REVIEWERS") {
        Some(v) => Some(v.split([',', ' ']).map(str::to_string).collect()),
        None => file.reviewers,
    };
    let min_power_level = match env("HOLDPOINT_MATRIX_MIN_POWER_LEVEL") {
        Some(v) => Some(v.trim().parse::<i64>().map_err(|_| ConfigError::Env {
            var: "HOLDPOINT_MATRIX_MIN_POWER_LEVEL",
            value: v.clone(),
            message: "expected a whole number, e.g. 50".into(),
        })?),
        None => file.min_power_level,
    };
    let own_dir = env("HOLDPOINT_MATRIX_DATA_DIR")
        .map(PathBuf::from)
        .or(file.data_dir);
    let verified = match env("HOLDPOINT_MATRIX_VERIFIED_DEVICES_ONLY") {
        Some(v) => Some(match v.trim() {
            "1" | "true" | "yes" => true,
            "0" | "false" | "no" => false,
            _ => {
                return Err(ConfigError::Env {
                    var: "HOLDPOINT_MATRIX_VERIFIED_DEVICES_ONLY",
                    value: v,
                    message: "expected true or false".into(),
                });
            }
        }),
        None => file.verified_devices_only,
    };
    let recovery_key = secret_of(
        "HOLDPOINT_MATRIX_RECOVERY_KEY",
        "HOLDPOINT_MATRIX_RECOVERY_KEY_FILE",
        file.recovery_key,
        file.recovery_key_file,
        "matrix.recovery_key",
        bad_file,
    )?;
    let device_lease = match env("HOLDPOINT_MATRIX_DEVICE_LEASE").or(file.device_lease) {
        Some(v) => {
            let d = parse_duration(&v).map_err(|e| ConfigError::Env {
                var: "HOLDPOINT_MATRIX_DEVICE_LEASE",
                value: v.clone(),
                message: e,
            })?;
            if d < Duration::from_secs(2) {
                return Err(bad_file(format!(
                    "matrix.device_lease = {v:?} is too short: at least 2s"
                )));
            }
            d
        }
        None => Duration::from_secs(30),
    };
    let pager_room = env("HOLDPOINT_MATRIX_PAGER_ROOM")
        .or(file.pager_room)
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    let oncall: Vec<String> = match env("HOLDPOINT_MATRIX_ONCALL") {
        Some(v) => v.split([',', ' ']).map(str::to_string).collect(),
        None => file.oncall.unwrap_or_default(),
    }
    .into_iter()
    .map(|r| r.trim().to_string())
    .filter(|r| !r.is_empty())
    .collect();
    let anything = homeserver.is_some()
        || user_id.is_some()
        || password.is_some()
        || access_token.is_some()
        || device_id.is_some()
        || room.is_some()
        || reviewers.is_some()
        || min_power_level.is_some()
        || own_dir.is_some()
        || verified.is_some()
        || !file.routes.is_empty();
    if !anything {
        return Ok(None);
    }
    let mut missing: Vec<&str> = Vec::new();
    if homeserver.is_none() {
        missing.push("the homeserver URL (matrix.homeserver, HOLDPOINT_MATRIX_HOMESERVER)");
    }
    if user_id.is_none() {
        missing.push("the bot's user id (matrix.user_id, HOLDPOINT_MATRIX_USER_ID)");
    }
    match (&access_token, &device_id) {
        (Some(_), None) => missing.push(
            "the device id that goes with the access token (matrix.device_id, HOLDPOINT_MATRIX_DEVICE_ID)",
        ),
        (None, Some(_)) => missing.push(
            "the access token that goes with the device id (matrix.access_token, HOLDPOINT_MATRIX_ACCESS_TOKEN)",
        ),
        _ => {}
    }
    if password.is_none() && access_token.is_none() && device_id.is_none() {
        missing.push(
            "a way to log in: a password (matrix.password, HOLDPOINT_MATRIX_PASSWORD) or an access token and device id",
        );
    }
    if room.is_none() {
        missing.push(
            "the review room (matrix.room, HOLDPOINT_MATRIX_ROOM: !id:server or #alias:server)",
        );
    }
    let reviewers: Vec<String> = reviewers
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect();
    if reviewers.is_empty() && min_power_level.is_none() {
        missing.push(
            "who may decide: reviewers (matrix.reviewers, HOLDPOINT_MATRIX_REVIEWERS: @user:server) or a power level (matrix.min_power_level)",
        );
    }
    if !missing.is_empty() {
        return Err(bad_file(format!(
            "Matrix is configured but {} {} missing",
            missing.join("; "),
            if missing.len() == 1 { "is" } else { "are" }
        )));
    }
    let (Some(homeserver), Some(user_id), Some(room)) = (homeserver, user_id, room) else {
        return Err(bad_file("Matrix is configured but incomplete".into()));
    };
    let homeserver = homeserver.trim().trim_end_matches('/').to_string();
    if !(homeserver.starts_with("https://") || homeserver.starts_with("http://")) {
        return Err(ConfigError::Env {
            var: "HOLDPOINT_MATRIX_HOMESERVER",
            value: homeserver,
            message: "expected an http(s) URL like https://matrix.example.org".into(),
        });
    }
    let is_user = |s: &str| s.starts_with('@') && s.len() > 3 && s[1..].contains(':');
    let user_id = user_id.trim().to_string();
    if !is_user(&user_id) {
        return Err(ConfigError::Env {
            var: "HOLDPOINT_MATRIX_USER_ID",
            value: user_id,
            message: "expected a full Matrix user id like @holdpoint:example.org".into(),
        });
    }
    if let Some(bad) = reviewers.iter().find(|r| !is_user(r)) {
        return Err(ConfigError::Env {
            var: "HOLDPOINT_MATRIX_REVIEWERS",
            value: bad.clone(),
            message: "expected full Matrix user ids like @alice:example.org".into(),
        });
    }
    if let Some(bad) = oncall.iter().find(|r| !is_user(r)) {
        return Err(ConfigError::Env {
            var: "HOLDPOINT_MATRIX_ONCALL",
            value: bad.clone(),
            message: "expected full Matrix user ids like @alice:example.org".into(),
        });
    }
    // Room ids from room version 12 on have no server part.
    let is_room = |s: &str| {
        (s.starts_with('!') && s.len() > 1 && !s.contains(char::is_whitespace))
            || (s.starts_with('#') && s[1..].contains(':'))
    };
    let room = room.trim().to_string();
    if !is_room(&room) {
        return Err(ConfigError::Env {
            var: "HOLDPOINT_MATRIX_ROOM",
            value: room,
            message: "expected a room id (!abc:example.org) or alias (#ops:example.org)".into(),
        });
    }
    if let Some(r) = pager_room.as_deref().filter(|r| !is_room(r)) {
        return Err(ConfigError::Env {
            var: "HOLDPOINT_MATRIX_PAGER_ROOM",
            value: r.to_string(),
            message: "expected a room id (!abc:example.org) or alias (#oncall:example.org)".into(),
        });
    }
    if let Some(r) = file.routes.iter().find(|r| !is_room(r.room.trim())) {
        return Err(bad_file(format!(
            "a [[matrix.routes]] entry has no room id or alias: {r:?}"
        )));
    }
    let routes = file
        .routes
        .into_iter()
        .map(|mut r| {
            r.room = r.room.trim().to_string();
            r
        })
        .collect();
    Ok(Some(MatrixConfig {
        homeserver,
        user_id,
        password: password.map(Secret::new),
        access_token: access_token.map(Secret::new),
        device_id: device_id.map(|d| d.trim().to_string()),
        room,
        reviewers,
        min_power_level,
        data_dir: own_dir.unwrap_or_else(|| data_dir.join("matrix")),
        verified_devices_only: verified.unwrap_or(false),
        routes,
        pager_room,
        oncall,
        recovery_key,
        device_lease,
    }))
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

//! Prometheus metrics, written by hand in the text exposition format: a few
//! counters do not need a metrics framework.

use crate::config::StepAction;
use holdpoint_shared::Decision;
use holdpoint_shared::protocol::Status;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds of the decision latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 10] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Counters kept by this process.
#[derive(Default)]
pub struct Metrics {
    /// Verdicts reported by runners, by decision.
    commands: [AtomicU64; 3],
    /// Requests submitted.
    submitted: AtomicU64,
    /// Requests ended, by final status (approved, denied, expired, cancelled).
    ended: [AtomicU64; 4],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ms: AtomicU64,
    /// Frames refused as malformed, oversized or out of order.
    bad_frames: AtomicU64,
    /// Connections refused for a bad or revoked token.
    auth_failures: AtomicU64,
    /// Chat calls that failed after their retries, by adapter and kind.
    chat_failures: [[AtomicU64; CHAT_FAILURES.len()]; CHAT_ADAPTERS.len()],
    /// Slack interactions refused: bad signature, stale or replayed.
    slack_refused: AtomicU64,
    auth_throttled: AtomicU64,
    metrics_refused: AtomicU64,
    /// Runner requests refused at a per-runner limit, by limit.
    limit_refusals: [AtomicU64; LIMITS.len()],
    /// Escalation steps fired by this process's sweep, by action.
    escalated: [AtomicU64; ESCALATIONS.len()],
    /// Escalation steps delivered to a chat by this process, by action.
    escalations_sent: [AtomicU64; ESCALATIONS.len()],
    /// Pages by pager and outcome.
    pages: [[AtomicU64; PAGE_OUTCOMES.len()]; PAGERS.len()],
}

/// The escalation actions counted.
const ESCALATIONS: [StepAction; 3] = [StepAction::Remind, StepAction::Notify, StepAction::Page];

/// The pagers whose pages are counted.
pub const PAGERS: [&str; 2] = ["pagerduty", "opsgenie"];

/// What happened to a page: `sent` (an incident or alert opened),
/// `resolved` (closed when its request ended), `retried` (429, 5xx or no
/// answer: tried again later), `failed` (refused as invalid: never retried).
pub const PAGE_OUTCOMES: [&str; 4] = ["sent", "resolved", "retried", "failed"];

/// The per-runner limits whose refusals are counted.
const LIMITS: [&str; 3] = ["pending", "connections", "submissions"];

/// The chat adapters whose failures are counted, each as
/// `holdpoint_<adapter>_failures_total{kind=…}`.
pub const CHAT_ADAPTERS: [&str; 2] = ["slack", "matrix"];

/// The kinds of chat failure counted.
const CHAT_FAILURES: [&str; 13] = [
    "post",
    "update",
    "thread",
    "ephemeral",
    "modal",
    "usergroups",
    "socket",
    "remind",
    "notify",
    "dm",
    "login",
    "sync",
    "power_levels",
];

fn status_index(s: Status) -> Option<usize> {
    Some(match s {
        Status::Approved => 0,
        Status::Denied => 1,
        Status::Expired => 2,
        Status::Cancelled => 3,
        Status::Pending => return None,
    })
}

const ENDED: [Status; 4] = [
    Status::Approved,
    Status::Denied,
    Status::Expired,
    Status::Cancelled,
];

impl Metrics {
    pub fn command(&self, d: Decision) {
        let i = match d {
            Decision::Allow => 0,
            Decision::Review => 1,
            Decision::Deny => 2,
        };
        self.commands[i].fetch_add(1, Relaxed);
    }

    pub fn submitted(&self) {
        self.submitted.fetch_add(1, Relaxed);
    }

    /// A request reached a final state after `latency_ms`.
    pub fn ended(&self, s: Status, latency_ms: i64) {
        if let Some(i) = status_index(s) {
            self.ended[i].fetch_add(1, Relaxed);
        }
        if matches!(s, Status::Approved | Status::Denied) {
            let secs = latency_ms.max(0) as f64 / 1000.0;
            for (b, bound) in LATENCY_BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    self.latency_buckets[b].fetch_add(1, Relaxed);
                }
            }
            self.latency_count.fetch_add(1, Relaxed);
            self.latency_sum_ms
                .fetch_add(latency_ms.max(0) as u64, Relaxed);
        }
    }

    pub fn bad_frame(&self) {
        self.bad_frames.fetch_add(1, Relaxed);
    }

    pub fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Relaxed);
    }

    /// A call of this kind (`post`, `update`, `thread`, `ephemeral`,
    /// `modal`, `usergroups`, `socket`) by chat adapter `adapter` failed for
    /// good.
    pub fn chat_failure(&self, adapter: &str, kind: &str) {
        if let Some(a) = CHAT_ADAPTERS.iter().position(|k| *k == adapter)
            && let Some(i) = CHAT_FAILURES.iter().position(|k| *k == kind)
        {
            self.chat_failures[a][i].fetch_add(1, Relaxed);
        }
    }

    /// A runner was refused at one of its limits (`pending`, `connections`,
    /// `submissions`).
    pub fn limit_refused(&self, limit: &str) {
        if let Some(i) = LIMITS.iter().position(|l| *l == limit) {
            self.limit_refusals[i].fetch_add(1, Relaxed);
        }
    }

    /// The sweep fired an escalation step.
    pub fn escalated(&self, a: StepAction) {
        if let Some(i) = ESCALATIONS.iter().position(|k| *k == a) {
            self.escalated[i].fetch_add(1, Relaxed);
        }
    }

    /// An escalation step reached a chat.
    pub fn escalation_sent(&self, a: StepAction) {
        if let Some(i) = ESCALATIONS.iter().position(|k| *k == a) {
            self.escalations_sent[i].fetch_add(1, Relaxed);
        }
    }

    /// A page to `pager` had `outcome` (one of [`PAGE_OUTCOMES`]).
    pub fn page(&self, pager: &str, outcome: &str) {
        if let (Some(p), Some(o)) = (
            PAGERS.iter().position(|x| *x == pager),
            PAGE_OUTCOMES.iter().position(|x| *x == outcome),
        ) {
            self.pages[p][o].fetch_add(1, Relaxed);
        }
    }

    /// How many pages to `pager` had `outcome`.
    pub fn pages(&self, pager: &str, outcome: &str) -> u64 {
        match (
            PAGERS.iter().position(|x| *x == pager),
            PAGE_OUTCOMES.iter().position(|x| *x == outcome),
        ) {
            (Some(p), Some(o)) => self.pages[p][o].load(Relaxed),
            _ => 0,
        }
    }

    /// A Slack interaction was refused (signature, timestamp or replay).
    pub fn slack_refused(&self) {
        self.slack_refused.fetch_add(1, Relaxed);
    }

    /// An address that failed authentication too often was answered 429.
    pub fn auth_throttled(&self) {
        self.auth_throttled.fetch_add(1, Relaxed);
    }

    /// A scrape of `/metrics` came without the metrics token.
    pub fn metrics_refused(&self) {
        self.metrics_refused.fetch_add(1, Relaxed);
    }

    /// The exposition text. `pending` and `connected` are read at scrape time.
    pub fn render(&self, pending: u64, connected: usize) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP holdpoint_commands_total Commands the runners classified, by verdict.\n# TYPE holdpoint_commands_total counter"
        );
        for (i, d) in ["allow", "review", "deny"].iter().enumerate() {
            let _ = writeln!(
                o,
                "holdpoint_commands_total{{verdict=\"{d}\"}} {}",
                self.commands[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP holdpoint_requests_total Review requests, by outcome (submitted counts every new request).\n# TYPE holdpoint_requests_total counter"
        );
        let _ = writeln!(
            o,
            "holdpoint_requests_total{{outcome=\"submitted\"}} {}",
            self.submitted.load(Relaxed)
        );
        for (i, s) in ENDED.iter().enumerate() {
            let _ = writeln!(
                o,
                "holdpoint_requests_total{{outcome=\"{s}\"}} {}",
                self.ended[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP holdpoint_requests_pending Requests waiting for a decision.\n# TYPE holdpoint_requests_pending gauge\nholdpoint_requests_pending {pending}"
        );
        let _ = writeln!(
            o,
            "# HELP holdpoint_decision_latency_seconds Time from submission to a reviewer's decision.\n# TYPE holdpoint_decision_latency_seconds histogram"
        );
        for (b, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "holdpoint_decision_latency_seconds_bucket{{le=\"{bound}\"}} {}",
                self.latency_buckets[b].load(Relaxed)
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(
            o,
            "holdpoint_decision_latency_seconds_bucket{{le=\"+Inf\"}} {count}\nholdpoint_decision_latency_seconds_sum {}\nholdpoint_decision_latency_seconds_count {count}",
            self.latency_sum_ms.load(Relaxed) as f64 / 1000.0
        );
        let _ = writeln!(
            o,
            "# HELP holdpoint_runners_connected Open runner connections.\n# TYPE holdpoint_runners_connected gauge\nholdpoint_runners_connected {connected}"
        );
        let _ = writeln!(
            o,
            "# HELP holdpoint_bad_frames_total Runner frames refused as malformed, oversized or out of order.\n# TYPE holdpoint_bad_frames_total counter\nholdpoint_bad_frames_total {}",
            self.bad_frames.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP holdpoint_auth_failures_total Runner connections refused for a bad or revoked token.\n# TYPE holdpoint_auth_failures_total counter\nholdpoint_auth_failures_total {}",
            self.auth_failures.load(Relaxed)
        );
        for (a, adapter) in CHAT_ADAPTERS.iter().enumerate() {
            let _ = writeln!(
                o,
                "# HELP holdpoint_{adapter}_failures_total {adapter} calls that failed after retries, by kind.\n# TYPE holdpoint_{adapter}_failures_total counter"
            );
            for (i, k) in CHAT_FAILURES.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "holdpoint_{adapter}_failures_total{{kind=\"{k}\"}} {}",
                    self.chat_failures[a][i].load(Relaxed)
                );
            }
        }
        let _ = writeln!(
            o,
            "# HELP holdpoint_slack_interactions_refused_total Slack interactions refused for a bad signature, a stale timestamp or a replay.\n# TYPE holdpoint_slack_interactions_refused_total counter\nholdpoint_slack_interactions_refused_total {}",
            self.slack_refused.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP holdpoint_auth_throttled_total Runner-token and login attempts answered 429 because their address failed too often.\n# TYPE holdpoint_auth_throttled_total counter\nholdpoint_auth_throttled_total {}",
            self.auth_throttled.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP holdpoint_metrics_refused_total Scrapes of /metrics refused for a missing or wrong token.\n# TYPE holdpoint_metrics_refused_total counter\nholdpoint_metrics_refused_total {}",
            self.metrics_refused.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP holdpoint_runner_limit_refusals_total Runner connections and submissions refused at a per-runner limit.\n# TYPE holdpoint_runner_limit_refusals_total counter"
        );
        for (i, l) in LIMITS.iter().enumerate() {
            let _ = writeln!(
                o,
                "holdpoint_runner_limit_refusals_total{{limit=\"{l}\"}} {}",
                self.limit_refusals[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP holdpoint_escalations_total Escalation steps fired by this process's sweep, by action.\n# TYPE holdpoint_escalations_total counter"
        );
        for (i, a) in ESCALATIONS.iter().enumerate() {
            let _ = writeln!(
                o,
                "holdpoint_escalations_total{{action=\"{}\"}} {}",
                a.as_str(),
                self.escalated[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP holdpoint_escalations_sent_total Escalation steps this process delivered to a chat, by action.\n# TYPE holdpoint_escalations_sent_total counter"
        );
        for (i, a) in ESCALATIONS.iter().enumerate() {
            let _ = writeln!(
                o,
                "holdpoint_escalations_sent_total{{action=\"{}\"}} {}",
                a.as_str(),
                self.escalations_sent[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP holdpoint_pages_total Pages (PagerDuty incidents, Opsgenie alerts) by pager and outcome: sent, resolved, retried, failed (refused as invalid, never retried).\n# TYPE holdpoint_pages_total counter"
        );
        for (p, pager) in PAGERS.iter().enumerate() {
            for (k, outcome) in PAGE_OUTCOMES.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "holdpoint_pages_total{{pager=\"{pager}\",outcome=\"{outcome}\"}} {}",
                    self.pages[p][k].load(Relaxed)
                );
            }
        }
        o
    }
}

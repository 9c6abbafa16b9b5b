//! The digest's numbers against an independent computation: a generated
//! audit log with known contents (verdicts of every kind, requests
//! approved, denied, expired and cancelled by several reviewers after known
//! waits, escalations, a command approved again and again) over two weeks,
//! on the injected clock, on SQLite and on PostgreSQL. The test keeps its
//! own record of what it generated and computes every number from that.

use holdpoint_bot::config::Config;
use holdpoint_bot::core::digest::{Period, Report};
use holdpoint_bot::core::{ManualClock, NewEvent, RunnerId};
use holdpoint_bot::{Bot, Intent, Reviewer};
use holdpoint_testkit::{PgDatabase, TempDir, random_hex, review};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

const DAY: i64 = 86_400_000;
const START: i64 = 1_800_000_000_000;
const RULES: [&str; 5] = [
    "git.push.force",
    "fs.rm.recursive",
    "cloud.aws.resize",
    "db.psql.drop",
    "k8s.delete",
];
const AGENTS: [&str; 3] = ["claude-code", "codex", "aider"];
const RUNNERS: [&str; 3] = ["ci-1", "dev-2", "prod-3"];
const REVIEWERS: [&str; 3] = ["web:alice", "web:bob", "slack:U0CAROL01"];
const REPEATED: &str = "terraform apply -auto-approve sandbox";

/// A small deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// One verdict the test generated.
struct Verdict {
    at: i64,
    decision: &'static str,
    rules: Vec<&'static str>,
    agent: Option<&'static str>,
    runner: &'static str,
    request: Option<String>,
}

/// One request the test generated and how it ended.
struct Ended {
    id: String,
    command: String,
    runner: &'static str,
    status: &'static str,
    by: Option<&'static str>,
    reason: Option<String>,
    decided_at: i64,
    waited: i64,
}

#[derive(Default)]
struct World {
    verdicts: Vec<Verdict>,
    ended: Vec<Ended>,
    escalations: Vec<(i64, &'static str)>,
}

fn config(dir: &TempDir, database_url: &str) -> Config {
    let file = dir.join("bot.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\ndatabase_url = {:?}\n[expiry]\ndefault = \"10m\"\n",
            dir.path().display().to_string(),
            database_url
        ),
    )
    .expect("config");
    Config::load(Some(&file)).expect("config")
}

fn verdict_event(v: &Verdict) -> NewEvent {
    NewEvent {
        event_id: format!("1:{}", random_hex(16)),
        at: v.at,
        kind: "verdict".into(),
        runner: Some(v.runner.into()),
        request_id: v.request.clone(),
        body: json!({
            "id": random_hex(16),
            "at": v.at,
            "command": "generated",
            "decision": v.decision,
            "risk": "high",
            "rules": v.rules,
            "host": "h",
            "cwd": "/",
            "agent": v.agent,
            "front_end": "sh",
            "action": if v.request.is_some() { "submitted" } else { "ran" },
            "request_id": v.request,
        }),
    }
}

/// Two weeks from START: free-standing verdicts, and a run of requests
/// one after another, each with its own verdict.
async fn generate(bot: &Bot, clock: &ManualClock, seed: u64) -> World {
    let mut rng = Lcg(seed);
    let mut w = World::default();
    for _ in 0..300 {
        let at = START + rng.next(14 * DAY as u64) as i64;
        let decision = match rng.next(20) {
            0 => "deny",
            1..=4 => "review",
            _ => "allow",
        };
        let rules = (0..=rng.next(2))
            .map(|_| RULES[rng.next(RULES.len() as u64) as usize])
            .collect();
        let agent = match rng.next(4) {
            3 => None,
            i => Some(AGENTS[i as usize]),
        };
        w.verdicts.push(Verdict {
            at,
            decision,
            rules,
            agent,
            runner: RUNNERS[rng.next(3) as usize],
            request: None,
        });
    }
    let events: Vec<NewEvent> = w.verdicts.iter().map(verdict_event).collect();
    bot.audit(&events).await.expect("audit");

    // Requests, in time order so the clock only moves forward.
    let mut t = START + 1_000;
    let mut k = 0usize;
    while t < START + 14 * DAY - DAY / 2 {
        clock.advance(t - bot.now_ms());
        let runner_name = RUNNERS[rng.next(3) as usize];
        let runner = RunnerId::new(100 + k as i64 % 3, runner_name);
        // The fifth of every eight in the second week is the same command.
        let command = if t >= START + 7 * DAY && k % 8 == 4 {
            REPEATED.to_string()
        } else {
            format!("git push --force origin feature-{k}")
        };
        let rule = RULES[rng.next(RULES.len() as u64) as usize];
        let req = review(&command).agent(AGENTS[k % 3]).build();
        bot.submit(&runner, &req).await.expect("submit");
        let submitted = bot.now_ms();
        let v = Verdict {
            at: submitted,
            decision: "review",
            rules: vec![rule],
            agent: Some(AGENTS[k % 3]),
            runner: runner_name,
            request: Some(req.id.clone()),
        };
        bot.audit(&[verdict_event(&v)]).await.expect("audit");
        w.verdicts.push(v);
        let outcome = if command == REPEATED { 0 } else { rng.next(10) };
        let waited = 1_000 + rng.next(9 * 60_000) as i64;
        let by = REVIEWERS[rng.next(3) as usize];
        let (status, by, reason) = match outcome {
            0..=4 => {
                clock.advance(waited);
                let r = Reviewer::parse(by).expect("reviewer");
                bot.decide(&r, &req.id, None, Intent::Approve { reason: None })
                    .await
                    .expect("approve");
                ("approved", Some(by), None)
            }
            5..=7 => {
                clock.advance(waited);
                let r = Reviewer::parse(by).expect("reviewer");
                let why = format!("not now <{k}>");
                bot.decide(
                    &r,
                    &req.id,
                    None,
                    Intent::Deny {
                        reason: Some(why.clone()),
                    },
                )
                .await
                .expect("deny");
                ("denied", Some(by), Some(why))
            }
            8 => {
                clock.advance(10 * 60_000 + 1);
                bot.expire_due().await.expect("expire");
                ("expired", None, None)
            }
            _ => {
                clock.advance(waited);
                bot.cancel(&runner, &req.id).await.expect("cancel");
                ("cancelled", None, None)
            }
        };
        let decided_at = bot.now_ms();
        w.ended.push(Ended {
            id: req.id.clone(),
            command,
            runner: runner_name,
            status,
            by,
            reason,
            decided_at,
            waited: decided_at - submitted,
        });
        if rng.next(3) == 0 {
            let action = ["remind", "notify", "page"][rng.next(3) as usize];
            let at = decided_at - 500;
            w.escalations.push((at, action));
            bot.audit(&[NewEvent::at(
                at,
                "request.escalated",
                Some(runner_name),
                Some(&req.id),
                json!({"step": 1, "action": action}),
            )])
            .await
            .expect("audit");
        }
        k += 1;
        t = decided_at + DAY / 8 + rng.next((DAY / 4) as u64) as i64;
    }
    w
}

fn within(p: Period, at: i64) -> bool {
    at >= p.from && at < p.until
}

/// The nearest-rank percentile of `sorted`.
fn nearest(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Most first, then by name; at most ten.
fn top(counts: BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(10);
    v
}

fn check_counts(w: &World, p: Period, got: &holdpoint_bot::core::digest::Counts, which: &str) {
    let vs: Vec<&Verdict> = w.verdicts.iter().filter(|v| within(p, v.at)).collect();
    let n = |d: &str| vs.iter().filter(|v| v.decision == d).count() as u64;
    assert_eq!(got.seen, vs.len() as u64, "{which}: seen");
    assert_eq!(got.allowed, n("allow"), "{which}: allowed");
    assert_eq!(got.held, n("review"), "{which}: held");
    assert_eq!(got.refused, n("deny"), "{which}: refused");
    let ended: Vec<&Ended> = w.ended.iter().filter(|e| within(p, e.decided_at)).collect();
    let s = |st: &str| ended.iter().filter(|e| e.status == st).count() as u64;
    assert_eq!(got.approved, s("approved"), "{which}: approved");
    assert_eq!(got.denied, s("denied"), "{which}: denied");
    assert_eq!(got.expired, s("expired"), "{which}: expired");
    assert_eq!(got.cancelled, s("cancelled"), "{which}: cancelled");
    let mut waits: Vec<i64> = ended
        .iter()
        .filter(|e| e.status == "approved" || e.status == "denied")
        .map(|e| e.waited)
        .collect();
    waits.sort();
    assert_eq!(got.decision_p50_ms, nearest(&waits, 0.5), "{which}: p50");
    assert_eq!(got.decision_p90_ms, nearest(&waits, 0.9), "{which}: p90");
    let mut esc: BTreeMap<String, u64> = BTreeMap::new();
    for (at, a) in &w.escalations {
        if within(p, *at) {
            *esc.entry(a.to_string()).or_default() += 1;
        }
    }
    assert_eq!(got.escalations, esc, "{which}: escalations");
}

fn check(w: &World, r: &Report) {
    let p = r.period;
    assert_eq!(
        r.previous_period,
        Period {
            from: START,
            until: START + 7 * DAY
        }
    );
    check_counts(w, p, &r.current, "this week");
    // The generated week exercises every count.
    let c = &r.current;
    for (what, n) in [
        ("allowed", c.allowed),
        ("held", c.held),
        ("refused", c.refused),
        ("approved", c.approved),
        ("denied", c.denied),
        ("expired", c.expired),
        ("cancelled", c.cancelled),
    ] {
        assert!(n > 0, "the generator made no {what} this week");
    }
    assert!(c.escalations.len() >= 2, "{:?}", c.escalations);
    check_counts(w, r.previous_period, &r.previous, "the week before");

    let vs: Vec<&Verdict> = w.verdicts.iter().filter(|v| within(p, v.at)).collect();
    let mut rules: BTreeMap<String, u64> = BTreeMap::new();
    let mut agents: BTreeMap<String, u64> = BTreeMap::new();
    let mut runners: BTreeMap<String, u64> = BTreeMap::new();
    for v in &vs {
        for rule in &v.rules {
            *rules.entry(rule.to_string()).or_default() += 1;
        }
        if let Some(a) = v.agent {
            *agents.entry(a.to_string()).or_default() += 1;
        }
        *runners.entry(v.runner.to_string()).or_default() += 1;
    }
    assert_eq!(r.top_rules, top(rules), "top rules by hits");
    assert_eq!(r.top_agents, top(agents), "top agents");
    assert_eq!(r.top_runners, top(runners), "top runners");

    let ended: Vec<&Ended> = w.ended.iter().filter(|e| within(p, e.decided_at)).collect();
    let mut denied_rules: BTreeMap<String, u64> = BTreeMap::new();
    for e in ended.iter().filter(|e| e.status == "denied") {
        for v in w
            .verdicts
            .iter()
            .filter(|v| v.request.as_deref() == Some(&e.id))
        {
            for rule in &v.rules {
                *denied_rules.entry(rule.to_string()).or_default() += 1;
            }
        }
    }
    assert_eq!(
        r.top_denied_rules,
        top(denied_rules),
        "top rules by denials"
    );

    let mut load: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for e in &ended {
        if let Some(by) = e.by {
            let l = load.entry(by.to_string()).or_default();
            match e.status {
                "approved" => l.0 += 1,
                "denied" => l.1 += 1,
                _ => {}
            }
        }
    }
    let mut want: Vec<(String, u64, u64)> = load.into_iter().map(|(k, (a, d))| (k, a, d)).collect();
    want.sort_by(|a, b| (b.1 + b.2).cmp(&(a.1 + a.2)).then(a.0.cmp(&b.0)));
    let got: Vec<(String, u64, u64)> = r
        .reviewers
        .iter()
        .map(|l| (l.reviewer.clone(), l.approved, l.denied))
        .collect();
    assert_eq!(got, want, "decisions per reviewer");

    let mut denied: Vec<&&Ended> = ended.iter().filter(|e| e.status == "denied").collect();
    denied.sort_by(|a, b| a.decided_at.cmp(&b.decided_at).then(a.id.cmp(&b.id)));
    let got: Vec<(String, String, Option<String>, Option<String>)> = r
        .denied
        .iter()
        .map(|d| {
            (
                d.id.clone(),
                d.command.clone(),
                d.decided_by.clone(),
                d.reason.clone(),
            )
        })
        .collect();
    let want: Vec<(String, String, Option<String>, Option<String>)> = denied
        .iter()
        .map(|e| {
            (
                e.id.clone(),
                e.command.clone(),
                e.by.map(str::to_string),
                e.reason.clone(),
            )
        })
        .collect();
    assert_eq!(got, want, "every denied command, in order");
    assert_eq!(r.denied_more, 0);
    let runners_of: Vec<&str> = denied.iter().map(|e| e.runner).collect();
    let got_runners: Vec<&str> = r.denied.iter().map(|d| d.runner.as_str()).collect();
    assert_eq!(got_runners, runners_of, "the runner of each denied command");

    let mut slow: Vec<&&Ended> = ended
        .iter()
        .filter(|e| e.status == "approved" || e.status == "denied")
        .collect();
    slow.sort_by(|a, b| b.waited.cmp(&a.waited).then(a.id.cmp(&b.id)));
    let got: Vec<(String, i64)> = r
        .slowest
        .iter()
        .map(|s| (s.id.clone(), s.waited_ms))
        .collect();
    let want: Vec<(String, i64)> = slow
        .iter()
        .take(5)
        .map(|e| (e.id.clone(), e.waited))
        .collect();
    assert_eq!(got, want, "the slowest decisions");

    let repeats = ended
        .iter()
        .filter(|e| e.status == "approved" && e.command == REPEATED)
        .count() as u64;
    assert!(repeats >= 3, "the generator repeats a command: {repeats}");
    assert_eq!(r.repeated.len(), 1, "{:?}", r.repeated);
    assert_eq!(
        (r.repeated[0].command.as_str(), r.repeated[0].approvals),
        (REPEATED, repeats)
    );
    // Per day, and by time to decision.
    let mut days = vec![(0u64, 0u64, 0u64, 0u64); 7];
    for e in &ended {
        let d = ((e.decided_at - p.from) / DAY) as usize;
        match e.status {
            "approved" => days[d].0 += 1,
            "denied" => days[d].1 += 1,
            "expired" => days[d].2 += 1,
            _ => days[d].3 += 1,
        }
    }
    let got: Vec<(i64, (u64, u64, u64, u64))> = r
        .per_day
        .iter()
        .map(|d| (d.start, (d.approved, d.denied, d.expired, d.cancelled)))
        .collect();
    let want: Vec<(i64, (u64, u64, u64, u64))> = days
        .into_iter()
        .enumerate()
        .map(|(i, d)| (p.from + i as i64 * DAY, d))
        .collect();
    assert_eq!(got, want, "requests per day by outcome");
    let bounds = [60_000, 300_000, 900_000, 3_600_000, 14_400_000, i64::MAX];
    let mut buckets = vec![0u64; bounds.len()];
    for e in ended
        .iter()
        .filter(|e| e.status == "approved" || e.status == "denied")
    {
        let i = bounds
            .iter()
            .position(|b| e.waited < *b)
            .unwrap_or(bounds.len() - 1);
        buckets[i] += 1;
    }
    assert_eq!(r.waits, buckets, "time to decision by bucket");
    assert_eq!(r.chain.broken, None, "the chain verifies over the period");
    assert!(r.chain.rows > 0);
}

async fn scenario(database_url: &str, seed: u64) {
    let dir = TempDir::new("digest");
    let clock = Arc::new(ManualClock::starting_at(START));
    let bot = Bot::open_with_clock(config(&dir, database_url), clock.clone())
        .await
        .expect("bot");
    let w = generate(&bot, &clock, seed).await;
    let period = Period {
        from: START + 7 * DAY,
        until: START + 14 * DAY,
    };
    let r = bot.digest(period).await.expect("digest");
    check(&w, &r);
    // The chain's head over a period that ends after everything is the
    // whole log's head.
    let all = bot
        .digest(Period {
            from: START,
            until: bot.now_ms() + 1,
        })
        .await
        .expect("digest");
    let v = bot.verify_audit().await.expect("verify");
    assert_eq!(all.chain.head, v.head);
    assert_eq!(all.chain.broken, None);
    // Every renderer says the same numbers; the text quotes the counts.
    let text = holdpoint_bot::digest::render(&r, holdpoint_bot::digest::Format::Text, "http://q");
    assert!(
        text.contains(&format!("seen: {} (", r.current.seen)),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&holdpoint_bot::digest::render(
        &r,
        holdpoint_bot::digest::Format::Json,
        "http://q",
    ))
    .expect("json");
    assert_eq!(json["current"]["approved"], r.current.approved);
    assert!(
        json["allow_rules"][0]
            .as_str()
            .is_some_and(|s| s.contains("[[rule]]"))
    );
    // The charts decode as PNGs of the size they announce.
    for chart in holdpoint_bot::chart::charts(&r) {
        let decoder = png::Decoder::new(std::io::Cursor::new(chart.png.clone()));
        let mut reader = decoder.read_info().expect("a PNG");
        let mut buf = vec![0; reader.output_buffer_size().expect("size")];
        let info = reader.next_frame(&mut buf).expect("a frame");
        assert_eq!(
            (info.width, info.height),
            (chart.width, chart.height),
            "{}",
            chart.name
        );
        // Not a blank image: the bars and the text are drawn.
        let inked = buf.chunks(3).filter(|p| p != &[255, 255, 255]).count();
        assert!(inked > 2_000, "{}: {inked} pixels drawn", chart.name);
        assert!(
            chart.alt.contains("approved") || chart.alt.contains("decision"),
            "{}",
            chart.alt
        );
    }
    let html = holdpoint_bot::digest::render(&r, holdpoint_bot::digest::Format::Html, "http://q");
    assert!(
        !html.contains("<0>") && html.contains("not now &lt;"),
        "reasons escaped"
    );
}

#[tokio::test]
async fn every_number_of_the_digest_matches_an_independent_count_on_sqlite() {
    let dir = TempDir::new("digest-db");
    let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
    scenario(&url, 7).await;
}

#[tokio::test]
async fn every_number_of_the_digest_matches_an_independent_count_on_postgres() {
    let Some(pg) = PgDatabase::create() else {
        eprintln!(
            "skipped: every_number_of_the_digest_matches_an_independent_count_on_postgres: no PostgreSQL (set HOLDPOINT_E2E_POSTGRES=required to fail instead)"
        );
        return;
    };
    scenario(&pg.url(), 11).await;
}

#[test]
fn a_five_field_schedule_reads_like_crontab_in_its_time_zone() {
    use holdpoint_bot::config::parse_crontab;
    for bad in ["0 9 * *", "0 9 * * 8", "every monday"] {
        assert!(parse_crontab(bad).is_err(), "{bad}");
    }
    let dir = TempDir::new("digest");
    let file = dir.join("bot.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\n[digest]\nschedule = \"0 9 * * 1\"\ntimezone = \"Europe/Berlin\"\n",
            dir.path().display().to_string()
        ),
    )
    .expect("config");
    let cfg = Config::load(Some(&file)).expect("config");
    let d = cfg.digest.expect("a digest");
    // Thursday 2026-12-03 12:00 UTC → Monday 2026-12-07 09:00 in Berlin
    // (08:00 UTC); 0 and 7 are Sunday, as in crontab.
    let thursday = 1_796_299_200_000;
    assert_eq!(
        holdpoint_bot::time::rfc3339(d.next_after(thursday).expect("next")),
        "2026-12-07T08:00:00.000Z"
    );
    assert_eq!(
        holdpoint_bot::time::rfc3339(d.last_at_or_before(thursday).expect("last")),
        "2026-11-30T08:00:00.000Z"
    );
    for (sunday, expr) in [
        ("0", "0 9 * * 0"),
        ("7", "0 9 * * 7"),
        ("SUN", "0 9 * * SUN"),
    ] {
        let s = parse_crontab(expr).expect(sunday);
        let next = s
            .after(&chrono::DateTime::from_timestamp_millis(thursday).expect("time"))
            .next()
            .expect("next");
        assert_eq!(next.to_rfc3339(), "2026-12-06T09:00:00+00:00", "{expr}");
    }
    for (toml, key) in [
        ("[digest]\nschedule = \"0 9 * *\"\n", "digest.schedule"),
        (
            "[digest]\nschedule = \"@weekly\"\ntimezone = \"Mars/Olympus\"\n",
            "digest.timezone",
        ),
        ("[digest]\nperiod = \"7d\"\n", "digest.schedule is missing"),
        (
            "[digest]\nschedule = \"@weekly\"\nslack_channels = [\"C0123ABCD\"]\n",
            "Slack is not configured",
        ),
    ] {
        std::fs::write(&file, toml).expect("config");
        let err = Config::load(Some(&file)).expect_err(toml).to_string();
        assert!(err.contains(key), "{toml}: {err}");
    }
}

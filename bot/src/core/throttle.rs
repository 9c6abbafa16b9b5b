//! Failed authentication per source address: runner tokens and login
//! links. Each address may fail a few times in a burst and then about once
//! every few seconds; beyond that it is answered 429 before its attempt is
//! even checked. Only failures count, and only the failing address is
//! slowed, so an attacker elsewhere cannot lock a real runner out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Failures an address may make at once.
const BURST: f64 = 10.0;
/// Failures an address may make per second on average afterwards.
const PER_SECOND: f64 = 0.2;
/// Addresses remembered at most; beyond, those that have recovered go.
const MAX_ADDRESSES: usize = 100_000;

#[derive(Default)]
pub(super) struct Throttle {
    buckets: Mutex<HashMap<IpAddr, (f64, i64)>>,
}

impl Throttle {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<IpAddr, (f64, i64)>) -> T) -> T {
        match self.buckets.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Seconds until `ip` may try again, if it is throttled now.
    pub(super) fn wait(&self, ip: IpAddr, now: i64) -> Option<u64> {
        self.with(|b| {
            let (tokens, at) = b.get(&ip).copied()?;
            let tokens = refill(tokens, at, now);
            (tokens < 1.0).then(|| ((1.0 - tokens) / PER_SECOND).ceil().max(1.0) as u64)
        })
    }

    /// Records a failed attempt from `ip`.
    pub(super) fn failed(&self, ip: IpAddr, now: i64) {
        self.with(|b| {
            if b.len() >= MAX_ADDRESSES {
                b.retain(|_, (t, at)| refill(*t, *at, now) < BURST);
            }
            let (tokens, at) = b.entry(ip).or_insert((BURST, now));
            *tokens = (refill(*tokens, *at, now) - 1.0).max(0.0);
            *at = now;
        })
    }
}

fn refill(tokens: f64, at: i64, now: i64) -> f64 {
    let secs = (now.saturating_sub(at)).max(0) as f64 / 1000.0;
    (tokens + secs * PER_SECOND).min(BURST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_failing_address_waits_and_it_recovers() {
        let t = Throttle::default();
        let bad: IpAddr = "203.0.113.9".parse().unwrap();
        let good: IpAddr = "198.51.100.7".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(t.wait(bad, 0), None);
            t.failed(bad, 0);
        }
        assert_eq!(t.wait(bad, 0), Some(5));
        assert_eq!(t.wait(good, 0), None);
        assert_eq!(t.wait(bad, 5_000), None, "one more try after five seconds");
        t.failed(bad, 5_000);
        assert!(t.wait(bad, 5_000).is_some());
    }
}

//! The runner hub: which runner connections are open, and which connection
//! waits for which request. It holds no state that matters after a restart;
//! a runner that reconnects re-submits its requests and the database answers.

use holdpoint_shared::protocol::{BotMessage, DecisionMessage};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::mpsc;

/// Something to do on one connection.
#[derive(Debug)]
pub enum Outbound {
    Send(BotMessage),
    /// Close with this code and reason.
    Close(u16, String),
}

/// One open runner connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

struct Conn {
    /// The runner identity (`runners.id`).
    runner: i64,
    tx: mpsc::UnboundedSender<Outbound>,
}

/// A wait that [`Hub::wait`] replaced.
pub(super) struct Waiting(Waiter);

struct Waiter {
    conn: ConnId,
    /// The decision was sent on this connection (waiting for the ack).
    sent: bool,
}

#[derive(Default)]
struct Inner {
    next: u64,
    conns: HashMap<ConnId, Conn>,
    waiting: HashMap<String, Waiter>,
    /// Open connections per runner identity.
    per_runner: HashMap<i64, usize>,
}

/// The open connections.
#[derive(Default)]
pub(super) struct Hub {
    inner: Mutex<Inner>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain maps behind, still
        // consistent enough to route messages; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection unless `runner` already has `cap` open.
    pub(super) fn register(
        &self,
        runner: i64,
        tx: mpsc::UnboundedSender<Outbound>,
        cap: usize,
    ) -> Option<ConnId> {
        let mut g = self.lock();
        if g.per_runner.get(&runner).copied().unwrap_or(0) >= cap {
            return None;
        }
        g.next += 1;
        let id = ConnId(g.next);
        *g.per_runner.entry(runner).or_default() += 1;
        g.conns.insert(id, Conn { runner, tx });
        Some(id)
    }

    /// Forgets a closed connection and what it waited for.
    pub(super) fn unregister(&self, conn: ConnId) {
        let mut g = self.lock();
        if let Some(c) = g.conns.remove(&conn)
            && let Some(n) = g.per_runner.get_mut(&c.runner)
        {
            *n -= 1;
            if *n == 0 {
                g.per_runner.remove(&c.runner);
            }
        }
        g.waiting.retain(|_, w| w.conn != conn);
    }

    /// Notes that `conn` waits for the decision on `request_id` (replacing
    /// an older connection of the same runner, e.g. after a reconnect).
    /// Returns what it replaced, for [`Hub::restore`].
    pub(super) fn wait(&self, request_id: &str, conn: ConnId) -> Option<Waiting> {
        self.lock()
            .waiting
            .insert(request_id.to_string(), Waiter { conn, sent: false })
            .map(Waiting)
    }

    /// Undoes a [`Hub::wait`] whose submission was refused, so a refused
    /// submission cannot take over another connection's wait.
    pub(super) fn restore(&self, request_id: &str, previous: Option<Waiting>) {
        let mut g = self.lock();
        match previous {
            Some(Waiting(w)) => {
                g.waiting.insert(request_id.to_string(), w);
            }
            None => {
                g.waiting.remove(request_id);
            }
        }
    }

    /// The runner has the decision.
    pub(super) fn acked(&self, request_id: &str, conn: ConnId) {
        let mut g = self.lock();
        if g.waiting.get(request_id).is_some_and(|w| w.conn == conn) {
            g.waiting.remove(request_id);
        }
    }

    /// Sends a decision to the connection waiting for it, if any. Returns
    /// whether one was waiting.
    pub(super) fn deliver(&self, decision: &DecisionMessage) -> bool {
        let mut g = self.lock();
        let Some(w) = g.waiting.get(&decision.request_id) else {
            return false;
        };
        if w.sent {
            // Already on its way (the sweep and the decider can both try).
            return true;
        }
        let conn = w.conn;
        let ok = g
            .conns
            .get(&conn)
            .map(|c| {
                c.tx.send(Outbound::Send(BotMessage::Decision(decision.clone())))
                    .is_ok()
            })
            .unwrap_or(false);
        if let Some(w) = g.waiting.get_mut(&decision.request_id) {
            w.sent = ok;
        }
        ok
    }

    /// Whether a connection waits for `request_id` and has not been sent
    /// its decision.
    pub(super) fn waits_for(&self, request_id: &str) -> bool {
        self.lock().waiting.get(request_id).is_some_and(|w| !w.sent)
    }

    /// Closes every connection of these runner identities.
    pub(super) fn close_runners(&self, runners: &[i64], code: u16, reason: &str) -> usize {
        let g = self.lock();
        let mut n = 0;
        for c in g.conns.values() {
            if runners.contains(&c.runner) {
                let _ = c.tx.send(Outbound::Close(code, reason.to_string()));
                n += 1;
            }
        }
        n
    }

    /// Closes every connection (shutdown).
    pub(super) fn close_all(&self, code: u16, reason: &str) {
        for c in self.lock().conns.values() {
            let _ = c.tx.send(Outbound::Close(code, reason.to_string()));
        }
    }

    /// How many connections of this runner identity are open.
    pub(super) fn connections_of(&self, runner: i64) -> usize {
        self.lock().per_runner.get(&runner).copied().unwrap_or(0)
    }

    /// The runner identities with connections open.
    pub(super) fn connected_runners(&self) -> Vec<i64> {
        self.lock().per_runner.keys().copied().collect()
    }

    /// How many connections are open.
    pub(super) fn connections(&self) -> usize {
        self.lock().conns.len()
    }
}

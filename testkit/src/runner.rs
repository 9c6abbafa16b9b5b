//! A well-behaved runner on the bot's websocket: the runner's own client.

use crate::bot::Bot;
use holdpoint_runner::bot::{BotConfig, Connection};
use holdpoint_shared::protocol::{BotMessage, DecisionMessage, ReviewRequest, RunnerMessage};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a submission may take to be stored.
const SUBMIT_WITHIN: Duration = Duration::from_secs(10);

/// A runner connected to a bot through `holdpoint_runner::bot::Connection`
/// (the code the `holdpoint` binary waits with): it says hello, answers
/// pings, sends its own, and acknowledges every decision it reads.
/// Decisions that arrive while it waits for something else are kept for
/// [`Runner::decision`] and [`Runner::decision_for`].
pub struct Runner {
    conn: Connection,
    stash: VecDeque<DecisionMessage>,
}

impl Runner {
    /// Connects with the bot's `local` runner token.
    pub fn connect(bot: &Bot) -> Runner {
        Runner::connect_as(bot, &bot.token)
    }

    /// Connects with the token of another registered runner.
    pub fn connect_as(bot: &Bot, token: &str) -> Runner {
        Runner::connect_to(&bot.url(), token)
    }

    /// Connects to the bot at `url` (`http://host:port`).
    pub fn connect_to(url: &str, token: &str) -> Runner {
        let cfg = BotConfig {
            url: url.to_string(),
            token: token.to_string(),
            connect_timeout: Duration::from_secs(10),
            ca_file: None,
        };
        let conn = Connection::open(&cfg, Instant::now() + cfg.connect_timeout)
            .unwrap_or_else(|e| panic!("the runner could not connect to {url}: {e}"));
        Runner {
            conn,
            stash: VecDeque::new(),
        }
    }

    /// The runner's name, as the bot's welcome said.
    pub fn name(&self) -> &str {
        self.conn.runner()
    }

    pub fn send(&mut self, m: &RunnerMessage) {
        self.conn
            .send(m)
            .unwrap_or_else(|e| panic!("send to the bot: {e}"));
    }

    /// The next message within `within` (pings are answered, not returned);
    /// a decision is acknowledged as it is read.
    pub fn recv(&mut self, within: Duration) -> Option<BotMessage> {
        let m = self
            .conn
            .recv_until(Instant::now() + within)
            .unwrap_or_else(|e| panic!("websocket error: {e}"))?;
        if let BotMessage::Decision(d) = &m {
            self.send(&RunnerMessage::Ack {
                request_id: d.request_id.clone(),
            });
        }
        Some(m)
    }

    /// Submits `req` and waits until the bot says it is pending. A
    /// rejection, or any other message but a decision, is a panic.
    pub fn submit(&mut self, req: &ReviewRequest) {
        self.send(&RunnerMessage::Submit {
            request: Box::new(req.clone()),
        });
        let deadline = Instant::now() + SUBMIT_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some(BotMessage::Pending { request_id, .. }) if request_id == req.id => return,
                Some(BotMessage::Decision(d)) => self.stash.push_back(d),
                other => panic!("expected pending for {}, got {other:?}", req.id),
            }
        }
    }

    /// The next decision, if one arrives within `within`. Any other
    /// message is a panic.
    pub fn decision(&mut self, within: Duration) -> Option<DecisionMessage> {
        if let Some(d) = self.stash.pop_front() {
            return Some(d);
        }
        match self.recv(within) {
            Some(BotMessage::Decision(d)) => Some(d),
            None => None,
            Some(other) => panic!("expected a decision, got {other:?}"),
        }
    }

    /// The decision on `id`, which must arrive within `within`; decisions
    /// on other requests are kept for later.
    pub fn decision_for(&mut self, id: &str, within: Duration) -> DecisionMessage {
        if let Some(i) = self.stash.iter().position(|d| d.request_id == id) {
            return self.stash.remove(i).expect("a stashed decision");
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some(BotMessage::Decision(d)) if d.request_id == id => return d,
                Some(BotMessage::Decision(d)) => self.stash.push_back(d),
                None => panic!("no decision on {id} within {within:?}"),
                Some(other) => panic!("expected the decision on {id}, got {other:?}"),
            }
        }
    }
}

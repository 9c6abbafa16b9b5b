//! The sealed core: the only part of the bot that holds the database.
//!
//! It owns the request lifecycle, the hash-chained audit log, the change
//! feed, runner tokens, web sessions, the chat deliveries table, reviewer
//! identities and their authorisation, and the clock. Everything else (the
//! runner websocket, the web queue, the CLI, chat adapters) holds a
//! [`Bot`], whose fields are private: it can list and read requests, submit
//! a reviewer's [`Intent`], subscribe to the [`Change`] feed and claim chat
//! deliveries, and nothing more. The entities and the connection are not
//! reachable from outside this module.
//!
//! What the core guarantees:
//!
//! - A transition (submission, decision, cancellation, expiry), its audit
//!   row and its change row are one transaction; the runner hears a
//!   decision only after that transaction committed.
//! - Transitions are serialised with audit appends (a mutex in process, an
//!   advisory lock on PostgreSQL, the single writer of SQLite), so the
//!   feed's sequence numbers are in commit order and a reader that has
//!   seen `seq` has seen everything before it.
//! - The first decision wins, a decision after the deadline does not count,
//!   and the requester never approves their own request.

mod audit;
pub mod clock;
mod db;
mod deliveries;
pub mod digest;
mod entity;
mod escalation;
mod feed;
mod hub;
mod leases;
mod lifecycle;
pub mod reviewer;
mod runners;
mod sessions;
mod throttle;
mod writer;

pub use audit::{
    Format as ExportFormat, GENESIS, NewEvent, Verification, csv_field as audit_csv_field,
    link_hash,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use db::{DbErr, OpenError, random_hex, sha256_hex};
pub use deliveries::{Claim, Delivery, DeliveryState};
pub use escalation::{EscalationStep, PageSeen, PageState, StepClaim, StepPost};
pub use feed::{Change, FeedError, Subscription};
pub use hub::{ConnId, Outbound};
pub use lifecycle::{Decided, LifecycleError, PendingQueue, RunnerQueue, StoredRequest, Submitted};
pub use reviewer::{Directory, Intent, Realm, Refusal, Reviewer, groups_needed};
pub use runners::{Auth, RunnerError, RunnerId, RunnerInfo, TOKEN_PREFIX};
pub use sessions::{
    LOGIN_LINK_TTL_MS, LOGIN_SECRET_HEX, LoginUse, SESSION_SECRET_HEX, SESSION_TTL_MS, Session,
};

use crate::config::Config;
use crate::metrics::Metrics;
use sea_orm::DatabaseConnection;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::Mutex;

/// The bot's core, shared behind an `Arc` by every door.
pub struct Bot {
    db: DatabaseConnection,
    config: Config,
    hub: hub::Hub,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    /// Serialises transitions and audit appends within this process.
    write_lock: Arc<Mutex<()>>,
    /// Commits the lifecycle's writes and audit appends, many at a time.
    writer: writer::Writer,
    feed: feed::Feed,
    rate: lifecycle::Rate,
    throttle: throttle::Throttle,
    directories: RwLock<HashMap<Realm, Arc<dyn Directory>>>,
}

impl Bot {
    /// Opens (and migrates) the configured database.
    pub async fn open(config: Config) -> Result<Bot, OpenError> {
        Bot::open_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Opens the configured database, with a clock of the caller's.
    pub async fn open_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Bot, OpenError> {
        let db = db::open_and_migrate(&config.database_url).await?;
        let write_lock = Arc::new(Mutex::new(()));
        Ok(Bot {
            writer: writer::Writer::start(db.clone(), write_lock.clone()),
            write_lock,
            db,
            config,
            hub: hub::Hub::default(),
            metrics: Metrics::default(),
            clock,
            feed: feed::Feed::new(),
            rate: lifecycle::Rate::default(),
            throttle: throttle::Throttle::default(),
            directories: RwLock::new(HashMap::new()),
        })
    }

    /// Seconds until `ip` may try a token or login link again, when it
    /// failed too often; the door answers 429 without checking.
    pub fn auth_throttled(&self, ip: std::net::IpAddr) -> Option<u64> {
        let wait = self.throttle.wait(ip, self.now_ms());
        if wait.is_some() {
            self.metrics.auth_throttled();
        }
        wait
    }

    /// Records a failed token or login link from `ip`.
    pub fn auth_failed_from(&self, ip: std::net::IpAddr) {
        self.throttle.failed(ip, self.now_ms());
    }

    /// Applies the migrations to the configured database and closes it.
    pub async fn migrate(config: &Config) -> Result<(), OpenError> {
        db::open_and_migrate(&config.database_url).await.map(drop)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The core's time, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.db.ping().await
    }

    /// Makes `directory` the judge of who in `realm` is a reviewer.
    pub fn set_directory(&self, realm: Realm, directory: Arc<dyn Directory>) {
        let mut d = match self.directories.write() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        d.insert(realm, directory);
    }

    fn directory(&self, realm: Realm) -> Option<Arc<dyn Directory>> {
        match self.directories.read() {
            Ok(d) => d.get(&realm).cloned(),
            Err(p) => p.into_inner().get(&realm).cloned(),
        }
    }

    /// Appends events the bot did not make itself (runners' verdicts) to the
    /// audit log; returns, for each, whether it was new.
    pub async fn audit(&self, events: &[NewEvent]) -> Result<Vec<bool>, DbErr> {
        if events.is_empty() {
            return Ok(vec![]);
        }
        match self
            .writer
            .write(writer::Write::Append {
                events: events.to_vec(),
                at: self.now_ms(),
            })
            .await?
        {
            writer::Written::Append(fresh) => Ok(fresh),
            _ => Err(DbErr::Custom("an audit append had no result".into())),
        }
    }

    /// Walks the audit chain.
    pub async fn verify_audit(&self) -> Result<Verification, DbErr> {
        audit::verify(&self.db).await
    }

    /// Writes the audit rows at or after `since`.
    pub async fn export_audit(
        &self,
        since: i64,
        format: ExportFormat,
        out: &mut dyn std::io::Write,
    ) -> anyhow::Result<u64> {
        audit::export(&self.db, since, format, out).await
    }

    /// How many rows the audit log holds.
    pub async fn audit_rows(&self) -> Result<u64, DbErr> {
        audit::count(&self.db).await
    }

    /// How many connections of `runner` are open here.
    pub fn connections_of(&self, runner: &RunnerId) -> usize {
        self.hub.connections_of(runner.id)
    }

    /// How many runner connections are open here.
    pub fn connections(&self) -> usize {
        self.hub.connections()
    }

    /// Registers a runner connection that sends through `tx`; `None` when
    /// the runner already has as many open as `limits.connections_per_runner`.
    pub fn connect(
        &self,
        runner: &RunnerId,
        tx: tokio::sync::mpsc::UnboundedSender<Outbound>,
    ) -> Option<ConnId> {
        let cap = self.config.limits.connections_per_runner as usize;
        let conn = self.hub.register(runner.id, tx, cap);
        if conn.is_none() {
            self.metrics.limit_refused("connections");
        }
        conn
    }

    /// Forgets a closed connection and what it waited for.
    pub fn disconnect(&self, conn: ConnId) {
        self.hub.unregister(conn);
    }

    /// Closes every runner connection (shutdown).
    pub fn close_all(&self, code: u16, reason: &str) {
        self.hub.close_all(code, reason);
    }
}

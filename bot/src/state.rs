//! The bot's shared state: one value, behind an `Arc`, used by every part
//! of the server and by the CLI.

use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use sea_orm::DatabaseConnection;
use tokio::sync::{Mutex, broadcast};

/// Something about a request changed. Chat adapters and the web page
/// subscribe to these; a subscriber that lags behind re-reads the pending
/// list from the database, which stays the source of truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new request waits for a reviewer.
    Submitted(String),
    /// A request reached a final state.
    Decided(String),
}

/// The bot.
pub struct Bot {
    pub db: DatabaseConnection,
    pub config: Config,
    pub hub: Hub,
    pub metrics: Metrics,
    pub(crate) audit_lock: Mutex<()>,
    changes: broadcast::Sender<Change>,
}

impl Bot {
    pub fn new(db: DatabaseConnection, config: Config) -> Bot {
        let (changes, _) = broadcast::channel(1024);
        Bot {
            db,
            config,
            hub: Hub::default(),
            metrics: Metrics::default(),
            audit_lock: Mutex::new(()),
            changes,
        }
    }

    /// Subscribes to request changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    pub(crate) fn notify(&self, c: Change) {
        // No subscriber is fine.
        let _ = self.changes.send(c);
    }

    /// Appends events to the audit log.
    pub async fn audit(
        &self,
        events: &[crate::audit::NewEvent],
    ) -> Result<Vec<bool>, sea_orm::DbErr> {
        crate::audit::append(&self.db, &self.audit_lock, events).await
    }
}

//! `holdpoint-bot`: the server that holds risky commands until a human
//! decides. Runners connect over a websocket and submit requests; reviewers
//! approve or deny them on the web queue, the CLI or chat; the decision
//! travels back to the runner that waits for it. It stores requests and a
//! hash-chained audit log in SQLite or PostgreSQL.
//!
//! It must never let a command run because something failed: no decision in
//! time is a denial, a decision after the deadline does not count, a
//! database error refuses the submission, and a malformed frame closes the
//! connection without touching any request. Everything a runner sends is
//! untrusted (the agent may be prompt-injected) and is treated as data.
//!
//! Only [`core`] holds the database; every door holds a [`Bot`] and goes
//! through its methods. Its entities and connection are out of reach:
//!
//! ```compile_fail
//! // The entities are private to the core.
//! use holdpoint_bot::core::entity::request;
//! ```
//!
//! ```compile_fail
//! // So is the connection.
//! fn reach(bot: &holdpoint_bot::Bot) -> &sea_orm::DatabaseConnection {
//!     &bot.db
//! }
//! ```
//!
//! ```compile_fail
//! // And the hub of runner connections, which only the core relays on.
//! fn reach(bot: &holdpoint_bot::Bot) {
//!     let _ = &bot.hub;
//! }
//! ```

#![forbid(unsafe_code)]

pub mod chart;
pub mod chat;
pub mod config;
pub mod core;
pub mod digest;
pub mod listener;
pub mod matrix;
pub mod metrics;
pub mod pager;
pub mod server;
pub mod slack;
pub mod time;
pub mod view;
pub mod web;
pub mod welcome;
pub mod ws;

pub use config::Config;
pub use core::{Bot, Change, Decided, Intent, Realm, Refusal, Reviewer, StoredRequest, Submitted};

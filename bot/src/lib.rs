//! `holdpoint-bot`: the server that holds risky commands until a human
//! decides. Runners connect over a websocket and submit requests; reviewers
//! approve or deny them on the web queue, the CLI or (later) chat; the
//! decision travels back to the runner that waits for it. It stores
//! requests and a hash-chained audit log in SQLite or PostgreSQL.
//!
//! It must never let a command run because something failed: no decision in
//! time is a denial, a decision after the deadline does not count, a
//! database error refuses the submission, and a malformed frame closes the
//! connection without touching any request. Everything a runner sends is
//! untrusted (the agent may be prompt-injected) and is treated as data.

#![forbid(unsafe_code)]

pub mod audit;
pub mod config;
pub mod db;
pub mod entity;
pub mod hub;
pub mod lifecycle;
pub mod metrics;
pub mod runners;
pub mod server;
pub mod slack;
pub mod state;
pub mod time;
pub mod web;
pub mod welcome;
pub mod ws;

pub use config::Config;
pub use lifecycle::{Decided, Reviewer, StoredRequest, Submitted};
pub use state::{Bot, Change};

//! The one test kit for holdpoint's tests and benches. It starts the real
//! `holdpoint-bot` and `holdpoint` binaries (never the bot as a library: the
//! bot dev-depends on this crate) and plays every part around them: the
//! database, a runner on the bot's websocket, an agent running the real
//! runner, a reviewer on the CLI or the web API, Slack.
//!
//! - [`Bot`] launches `holdpoint-bot serve` on SQLite or PostgreSQL (with
//!   [`BotOptions`] for its environment), restarts and kills it, runs its
//!   CLI ([`Cli`]) and keeps its log.
//! - [`Runner`] is a well-behaved runner on the websocket: the runner's own
//!   client (`holdpoint_runner::bot::Connection`). [`raw`] is a bare socket
//!   for tests that send what no runner would.
//! - [`runner`], [`Agent`] and [`Workspace`] run the real runner binary the
//!   way an agent does, in a git repository with a remote; [`recorder`] is
//!   a real shell for it that only writes down what it was given.
//! - [`fixtures`] builds review requests and verdicts.
//! - [`slack`] signs interactions (the one HMAC-SHA256 here), builds Slack
//!   payloads, and starts the local Slack server that validates every
//!   payload with Slack's own SDK.
//! - [`TempDir`], [`free_port`], [`random_hex`], [`eventually`], [`http`]:
//!   the small things every test needs.
//! - `load` (feature `load`): thousands of runners on one runtime, a
//!   keep-alive HTTP client and an in-process Slack Web API, for benches.
//!
//! It must never make a test pass that should fail: every wait has a bound
//! and ends in a panic that says what did not happen. It never hands a test
//! command to a shell: commands reach the binaries as argv or data.

#![forbid(unsafe_code)]

mod agent;
mod bins;
mod bot;
pub mod fixtures;
mod http;
#[cfg(feature = "load")]
pub mod load;
pub mod matrix;
pub mod pager;
mod pg;
mod proxy;
pub mod raw;
mod runner;
pub mod slack;
mod util;

pub use agent::{Agent, NetNs, Workspace, recorder, runner};
pub use bins::{bin, target_dir};
pub use bot::{Bot, BotOptions, Cli, Database};
pub use fixtures::{RequestBuilder, review};
pub use http::{Response, connect_from, http, http_get, try_http, try_http_from};
pub use pg::{Backend, PgCluster, PgDatabase};
pub use proxy::Proxy;
pub use runner::Runner;
pub use util::{TempDir, eventually, free_port, now, random_hex, text};

/// The websocket library the kit's sockets are made with.
pub use tungstenite;

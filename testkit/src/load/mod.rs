//! Load: the asynchronous parts of the kit, for benches that drive the bot
//! with thousands of connections from one process (feature `load`).
//!
//! - [`fleet`]: runners on the websocket, one task each, that report when
//!   a decision reached them.
//! - [`http`]: HTTP/1.1 over one keep-alive connection, and the web login.
//! - [`slack_api`]: an in-process stand-in for the Slack Web API that
//!   answers at once and records when each request's message arrived. It
//!   validates nothing: payloads are checked by the local Slack server of
//!   [`crate::slack`] (Slack's own SDK) in the tests, which would be the
//!   bottleneck under load.

pub mod fleet;
pub mod http;
pub mod slack_api;

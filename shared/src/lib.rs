//! holdpoint's policy engine: what both the runner and the bot must agree on
//! about a command line.
//!
//! It parses a command with a real shell parser into every simple command the
//! line would run ([`shell`]), matches each against the rules of a [`Policy`]
//! (TOML, with a built-in default), and returns one [`Verdict`]: `allow`,
//! `review` or `deny`, with the rules and reasons. It also redacts secrets
//! from anything that leaves the runner ([`redact`]), and defines the
//! runner–bot wire protocol ([`protocol`]).
//!
//! It must never let a failure loosen a verdict: a parse error, an unknown
//! program, a word it cannot resolve statically, or any limit reached is
//! `review` at least. It knows nothing about sockets, databases or chat, and
//! never touches the file system while classifying.

#![forbid(unsafe_code)]

pub mod annotation;
pub mod context;
pub mod policy;
pub mod protocol;
pub mod redact;
pub mod shell;
pub mod sql;
pub mod text;
pub mod verdict;

pub use context::Context;
pub use policy::{Policy, PolicyError, PolicyFile};
pub use verdict::{Decision, Hit, Risk, Verdict};

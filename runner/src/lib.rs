//! holdpoint's runner, the program that sits next to an agent: every
//! command the agent wants to run is classified by the policy engine;
//! allowed commands run at once, the rest wait for a reviewer on the bot
//! (or are refused with the reason). The `holdpoint` binary is a thin
//! command line over these modules; tests use [`bot`] as a well-behaved
//! runner on the bot's websocket.
//!
//! It must never execute a command whose verdict it does not hold: every
//! error (bad policy, bad input, a failure to classify, an unreachable bot,
//! a decision for another command) ends in a refusal.

#![forbid(unsafe_code)]

pub mod annotate;
pub mod bot;
pub mod config;
pub mod front;
pub mod gate;
pub mod hooks;
pub mod mcp;
pub mod pending;
pub mod project;
pub mod spool;

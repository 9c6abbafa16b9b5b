//! holdpoint's MCP server (`holdpoint mcp`): for agents that call tools
//! over the Model Context Protocol instead of running a shell. It serves,
//! over stdio, a `run_command` tool that goes through the same gate as
//! every other front end (allowed commands run at once; held ones wait for
//! a reviewer on the bot, with progress notifications to the client while
//! they wait; denied ones are tool errors carrying the reason) and a
//! `check_command` tool that only classifies.
//!
//! It must never run a command whose verdict it does not hold: a malformed
//! call, a directory that does not exist, a policy that does not load and
//! every refusal of the gate end without running anything. It never starts
//! with a policy that does not load. It lives in its own crate so that the
//! `holdpoint` gate binary, which starts for every command, carries no
//! async runtime.

#![forbid(unsafe_code)]

pub mod exec;
pub mod server;

pub use server::Gate;

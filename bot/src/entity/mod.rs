//! sea-orm entities, one per table of `holdpoint-migrations`.

pub mod audit_log;
pub mod request;
pub mod runner;
pub mod slack_message;
pub mod web_token;

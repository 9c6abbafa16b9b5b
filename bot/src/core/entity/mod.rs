//! sea-orm entities, one per table of `holdpoint-migrations`. Private to
//! the core: no adapter can name them.

pub(super) mod audit_log;
pub(super) mod change;
pub(super) mod delivery;
pub(super) mod digest;
pub(super) mod escalation_send;
pub(super) mod escalation_step;
pub(super) mod lease;
pub(super) mod request;
pub(super) mod runner;
pub(super) mod vote;
pub(super) mod web_token;

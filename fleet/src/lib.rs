//! The fleet: the tenant domain and the one service layer that the worker runtime, the `wafleet`
//! CLI, the admin API and the console all call, so their semantics cannot drift.
//!
//! It owns the capability types and the tenant repository, accounts, the send budget, the
//! outbox, lifecycle and offboarding, retention, audit, admin tokens, the DLQ, queue depth and
//! broker topology. It must not parse arguments, print, or read the environment outside a config
//! constructor; and it must never read a bridge key from anything but a tenant row.

pub mod accounts;
pub mod admin_tokens;
pub mod audit;
pub mod bot_settings;
pub mod bridge_client;
pub mod bridge_recheck;
pub mod budget;
pub mod clock;
pub mod console;
pub mod db;
pub mod depth;
pub mod dlq;
pub mod endpoints;
pub mod error;
pub mod labels;
pub mod lifecycle;
pub mod locks;
pub mod metric;
pub mod offboard;
pub mod outbox;
pub mod paging;
pub mod retention;
pub mod rules;
pub mod service;
pub mod tenant;
pub mod topology;

pub use error::{Error, Result};

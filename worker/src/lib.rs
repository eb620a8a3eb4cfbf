//! The wafleet worker runtime: consumes every tenant queue, resolves the tenant through the
//! fleet's repository, runs its bot in a fresh scope, and sends replies only on the tenant's own
//! bridge. The service layer it calls lives in [`wafleet_fleet`].
//!
//! It must never read a bridge key from anything but a tenant row.

pub mod bots;
pub mod canary;
pub mod config;
pub mod consumer;
pub mod metric;
pub mod process;
pub mod reconciler;
pub mod sender;
pub mod ssrf;
pub mod startup;

pub use wafleet_fleet::{Error, Result};

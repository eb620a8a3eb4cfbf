//! The wafleet worker: consumes every tenant queue, resolves the tenant in Postgres, runs its
//! bot in a fresh scope, and sends replies only on the tenant's own bridge. Also the service
//! layer of the operator CLI (`wafleet`).
//!
//! It must never read a bridge key from anything but a tenant row.

pub mod bots;
pub mod bridge_client;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod db;
pub mod dlq;
pub mod error;
pub mod ops;
pub mod process;
pub mod reconciler;
pub mod sender;
pub mod startup;
pub mod tenant;
pub mod topology;

pub use error::{Error, Result};

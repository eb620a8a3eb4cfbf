//! The wafleet worker: consumes every tenant queue, resolves the tenant in Postgres, runs its
//! bot in a fresh scope, and sends replies only on the tenant's own bridge. Also the service
//! layer of the operator CLI (`wafleet`).
//!
//! It must never read a bridge key from anything but a tenant row.

pub mod accounts;
pub mod admin_tokens;
pub mod audit;
pub mod bot_settings;
pub mod bots;
pub mod bridge_client;
pub mod budget;
pub mod canary;
pub mod cli;
pub mod cli_fleet;
pub mod clock;
pub mod config;
pub mod consumer;
pub mod db;
pub mod depth;
pub mod dlq;
pub mod error;
pub mod labels;
pub mod lifecycle;
pub mod offboard;
pub mod ops;
pub mod outbox;
pub mod process;
pub mod reconciler;
pub mod retention;
pub mod sender;
pub mod service;
pub mod ssrf;
pub mod startup;
pub mod tenant;
pub mod topology;

pub use error::{Error, Result};

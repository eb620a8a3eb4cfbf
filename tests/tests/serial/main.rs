//! Tests that stop, restart or join shared services (a RabbitMQ cluster on loopback) or run extra
//! Postgres clusters and fail over. They are heavy and disruptive, so they live apart from the
//! parallel `it` binary (cargo runs test binaries one after another) and run one at a time under
//! [`SERIAL`]. Each restores what it changed even when it fails (a Drop guard) and targets
//! loopback only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod failover;

/// Held by every test of this binary for its whole run, so they never overlap.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

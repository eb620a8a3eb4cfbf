//! Tests that run extra Postgres clusters or fail over (issue #15): heavy and disruptive, so they
//! live apart from the parallel `it` binary and run one at a time under [`SERIAL`]. Each restores
//! what it changed even when it fails (a Drop guard) and targets loopback only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod failover;

/// Held by every test of this binary for its whole run, so they never overlap.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

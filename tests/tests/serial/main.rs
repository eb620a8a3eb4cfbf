//! Tests that stop, restart or join shared services (a RabbitMQ cluster on loopback). They run
//! one at a time (a process-wide lock), in their own binary, so they never overlap the parallel
//! `it` suite either (cargo runs test binaries one after another). Each restores what it
//! changed, even when it fails, through a Drop guard.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;

/// Held by every test of this binary for its whole run.
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

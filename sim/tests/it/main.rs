//! Integration tests for the WA Bridges simulator: one test binary that starts simulators on
//! port 0 and talks to them over HTTP exactly as wafleet's worker and ingest would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod control;
mod faults;
mod helpers;
mod limits;
mod open_points;
mod strict;
mod webhooks;

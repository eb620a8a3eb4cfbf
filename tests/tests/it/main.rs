//! One integration-test binary for the whole stack (one link instead of one per file).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod crash;
mod docs;
mod failures;
mod isolation;
mod property;
mod rls;
mod routing;
mod sending;

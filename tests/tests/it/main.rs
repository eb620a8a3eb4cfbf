//! One integration-test binary for the whole stack (one link instead of one per file).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod adversarial;
mod broker_outage;
mod broker_users;
mod budget;
mod canary;
mod cli;
mod crash;
mod db_guard;
mod docs;
mod endpoints;
mod failures;
mod http_bot;
mod isolation;
mod lifecycle;
mod parsers;
mod property;
mod rls;
mod routing;
mod sending;

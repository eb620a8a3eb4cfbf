//! One integration-test binary for the whole stack (one link instead of one per file).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod adversarial;
mod bridge_recheck;
mod broker_outage;
mod broker_users;
mod budget;
mod canary;
mod claims;
mod cli;
mod cli_surface;
mod consumer_cancel;
mod crash;
mod db_guard;
mod docs;
mod endpoints;
mod failures;
mod flood;
mod http_bot;
mod isolation;
mod lifecycle;
mod manifest_permissions;
mod message_types;
mod parsers;
mod pg_tls;
mod property;
mod rls;
mod roles;
mod routing;
mod sending;

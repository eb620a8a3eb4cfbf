//! Ingest's test binary: router tests over the fake publisher, and tests against the local
//! RabbitMQ (one vhost per test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod broker;
mod drain_folder;
mod health;
mod helpers;
mod in_flight;
mod logs;
mod open;
mod shutdown;
mod slow_headers;
mod spool;
mod spool_broker;
mod webhook;

#![warn(missing_docs)]
//! wafleet ingest: the HTTP edge that authenticates webhook events from the WA Bridges fleet,
//! validates them and publishes them durably to `wa.inbound`, routed by tenant.
//!
//! This crate must not touch Postgres, call the bridge API or run bots. Its one tenant decision
//! (which `customer_ref` an event belongs to) lives in [`event`], fed by [`auth`] from the URL.

pub mod accept;
pub mod auth;
pub mod body;
pub mod config;
pub mod drain_folder;
pub mod error;
pub mod event;
pub mod metric;
pub mod payload;
pub mod publisher;
pub mod routes;
pub mod spool;
pub mod startup;

pub use config::Config;
pub use error::{Error, Result};
pub use publisher::{FakeMode, FakePublisher, LapinPublisher, PublishError, Publisher};
pub use routes::{ops_router, router, AppState};
pub use spool::{Spool, SpoolError, SpoolSettings, SpoolStatus};
pub use startup::Application;

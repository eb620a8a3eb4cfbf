//! `wafleet-admin`: the internal admin HTTP API of wafleet. It exposes the operator
//! CLI's commands over HTTP with the same semantics and audit records, by calling the same
//! service functions (`wafleet_fleet::service` and `wafleet_fleet::service`); it implements no
//! business rule of its own.
//!
//! It is a separate deployable, listening on `WAFLEET_ADMIN_ADDR` (loopback by default), and must
//! never be served next to the public webhook edge. It connects as the administration role and
//! refuses unsafe roles like the CLI.

pub mod auth;
pub mod config;
pub mod console;
pub mod dto;
pub mod edge;
pub mod idempotency;
pub mod metric;
pub mod openapi;
pub mod operations;
pub mod problem;
pub mod routes;
pub mod scopes;
pub mod startup;
pub mod state;

pub use config::Config;
pub use startup::{router, Application};
pub use state::{AppState, ConsoleSettings, RateLimit};

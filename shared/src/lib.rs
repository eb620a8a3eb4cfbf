//! Types and names that every wafleet binary agrees on: validated ids, the webhook token scheme,
//! the versioned queue envelope, broker topology names, one confirmed publish, and telemetry setup.
//!
//! This crate must not depend on axum, database pools or the other wafleet crates, so that the
//! queue contract can be shared by old and new binaries during a rolling upgrade.

pub mod amqp;
pub mod config;
pub mod envelope;
pub mod ids;
pub mod publish;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod token;
pub mod topology;
pub mod trace;

pub use envelope::{AuthMode, DecodeError, Envelope, EnvelopeV1};
pub use ids::{CustomerRef, Generation, IngestId, InvalidRef};
pub use token::{Keyring, KeyringError, TokenError};

//! The defaults of the external-contract settings, and the error of a setting that is missing or
//! invalid. The binaries parse the environment with `clap` ([`crate::settings`]); nothing here
//! reads it.
//!
//! Every error names the variable and never echoes a value that could be a secret.

/// A setting that is missing or cannot be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("{name} is required")]
    Missing {
        /// The variable.
        name: &'static str,
    },
    /// A variable's value does not parse.
    #[error("{name} is not valid: {reason}")]
    Invalid {
        /// The variable.
        name: String,
        /// What is wrong with it (never the value itself).
        reason: String,
    },
}

impl ConfigError {
    /// A value of `name` that is refused for `reason`.
    pub fn invalid(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { name: name.into(), reason: reason.into() }
    }
}

/// Default `DATABASE_URL` (the worker's role).
pub const DEFAULT_DATABASE_URL: &str = "postgres://wafleet_worker@127.0.0.1:5432/wafleet";
/// Default `ADMIN_DATABASE_URL` (the administration role of the CLI and the admin API).
pub const DEFAULT_ADMIN_DATABASE_URL: &str = "postgres://wafleet_admin@127.0.0.1:5432/wafleet";
/// Default `MIGRATE_DATABASE_URL` (the owner).
pub const DEFAULT_MIGRATE_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/wafleet";
/// Default of `WAFLEET_SECRETS_DIR`: the one folder `file:` account key references may name.
pub const DEFAULT_SECRETS_DIR: &str = "/run/secrets/wafleet";
/// Default of `WAFLEET_WA_API_HOSTS`: the documented WA Bridges host.
pub const DEFAULT_WA_API_HOSTS: &str = "wabridges.com";
/// Default `AMQP_URL`.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default `RABBITMQ_API_URL`.
pub const DEFAULT_RABBITMQ_API_URL: &str = "http://guest:guest@127.0.0.1:15672";
/// Default `WA_API_BASE_URL`.
pub const DEFAULT_WA_API_BASE_URL: &str = "https://wabridges.com";

//! Reading settings from the environment, for the binaries' config constructors only: a library
//! function takes its settings as arguments and never calls these.
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

/// Reads `name`, or `default` when unset or empty.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

/// Reads and parses `name`, or `default` when unset; a bad value is an error naming the variable.
pub fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> Result<T, ConfigError> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.parse().map_err(|_| ConfigError::invalid(name, "cannot be parsed")),
        _ => Ok(default),
    }
}

/// Reads a boolean (`true`/`false`/`1`/`0`); unset is false.
pub fn env_bool(name: &str) -> Result<bool, ConfigError> {
    match std::env::var(name).as_deref() {
        Ok("true") | Ok("1") => Ok(true),
        Ok("false") | Ok("0") | Ok("") | Err(_) => Ok(false),
        Ok(_) => Err(ConfigError::invalid(name, "use true or false")),
    }
}

/// Default `DATABASE_URL` (the application role).
pub const DEFAULT_DATABASE_URL: &str = "postgres://wafleet_app@127.0.0.1:5432/wafleet";
/// Default `MIGRATE_DATABASE_URL` (the owner).
pub const DEFAULT_MIGRATE_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/wafleet";
/// Default `AMQP_URL`.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default `RABBITMQ_API_URL`.
pub const DEFAULT_RABBITMQ_API_URL: &str = "http://guest:guest@127.0.0.1:15672";
/// Default `WA_API_BASE_URL`.
pub const DEFAULT_WA_API_BASE_URL: &str = "https://wabridges.com";

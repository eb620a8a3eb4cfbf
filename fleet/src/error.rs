//! The worker crate's error type. Variants are nouns; the message processor maps them to a
//! disposition (ack, hold, drop) in one place.

/// Errors of the worker, CLI and their shared service layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Postgres failed or is unreachable.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The broker failed or is unreachable.
    #[error("broker error")]
    Broker(#[from] lapin::Error),
    /// A confirmed publish failed: broker error, timeout, nack or returned message.
    #[error("broker publish failed")]
    Publish(#[from] wafleet_shared::publish::PublishError),
    /// The RabbitMQ management API failed.
    #[error("RabbitMQ management API: {0}")]
    Management(String),
    /// An HTTP call failed before a response arrived.
    #[error("http error")]
    Http(#[from] reqwest::Error),
    /// The database role is allowed to bypass row-level security.
    #[error("unsafe database role: {0}")]
    UnsafeRole(String),
    /// Bad operator input; the message says what to change.
    #[error("{0}")]
    Invalid(String),
    /// The named tenant does not exist.
    #[error("no tenant with customer_ref {0}")]
    UnknownTenant(String),
    /// The request conflicts with existing state; the message says which.
    #[error("{0}")]
    Conflict(String),
    /// Configuration is missing or invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// A setting read from the environment is missing or invalid.
    #[error("configuration")]
    Setting(#[from] wafleet_shared::config::ConfigError),
    /// A WA Bridges management or status call failed.
    #[error(transparent)]
    BridgeApi(#[from] crate::bridge_client::ApiError),
    /// No budget token became available in time (the account is paused or exhausted).
    #[error("{0}")]
    BudgetWait(String),
}

/// Result with the crate's error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the database is unreachable (as opposed to a query or constraint error), so the
    /// worker should hold its consumers instead of recording a failure.
    pub fn is_database_unavailable(&self) -> bool {
        match self {
            Error::Database(e) => is_connection_error(e),
            _ => false,
        }
    }

    /// True for serialization failures and deadlocks, which succeed when tried again later.
    pub fn is_serialization_failure(&self) -> bool {
        matches!(self, Error::Database(sqlx::Error::Database(db)) if matches!(db.code().as_deref(), Some("40001") | Some("40P01")))
    }
}

/// Whether a sqlx error means "Postgres is not reachable right now".
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now, 08xxx connection exceptions.
            db.code().map(|c| c.starts_with("08") || c.starts_with("57P")).unwrap_or(false)
        }
        _ => false,
    }
}

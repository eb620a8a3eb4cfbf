//! The fleet's error type. Variants are nouns; the message processor maps them to a
//! disposition (ack, hold, drop) in one place, and the admin API to a problem kind.
//!
//! Every refusal is a typed value: callers match on variants, never on text, and a cause stays
//! in `source()`. The texts are the ones operators and tests already know.

use std::path::PathBuf;
use std::time::Duration;

use wafleet_shared::{CustomerRef, InvalidRef, KeyringError};

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
    /// No AMQP endpoint could be connected to, or `AMQP_URL` cannot be used.
    /// (Boxed: it holds the last endpoint's broker error, and every `Result` carries it.)
    #[error(transparent)]
    BrokerConnect(Box<wafleet_shared::amqp::ConnectError>),
    /// A confirmed publish failed: broker error, timeout, nack or returned message.
    #[error("broker publish failed")]
    Publish(#[from] wafleet_shared::publish::PublishError),
    /// The AMQP connection closed under a consumer.
    #[error("AMQP connection lost")]
    ConnectionLost,
    /// The RabbitMQ management API failed.
    #[error("RabbitMQ management API: {0}")]
    Management(#[from] ManagementError),
    /// An HTTP call failed before a response arrived.
    #[error("http error")]
    Http(#[from] reqwest::Error),
    /// The database role is allowed to bypass row-level security.
    #[error("unsafe database role: {0}. {advice}", advice = UnsafeRole::advice())]
    UnsafeRole(Box<UnsafeRole>),
    /// Bad operator input; the message says what to change.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The named tenant does not exist.
    #[error("no tenant with customer_ref {0}")]
    UnknownTenant(String),
    /// The request conflicts with existing state; the message says which.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// A setting checked at start (from the environment) is missing or invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// Something the process was given or needs at run time is missing or unusable.
    #[error("configuration: {0}")]
    Setup(#[from] SetupError),
    /// A setting read from the environment is missing or invalid.
    #[error("configuration")]
    Setting(#[from] wafleet_shared::config::ConfigError),
    /// A WA Bridges management or status call failed.
    #[error(transparent)]
    BridgeApi(#[from] crate::bridge_client::ApiError),
    /// No budget token became available in time (the account is paused or exhausted).
    #[error(
        "account {account}: no {bucket} token within {}s (paused or exhausted); try again later",
        waited.as_secs()
    )]
    BudgetWait {
        /// The WA Bridges account's name.
        account: String,
        /// The bucket that had no token (`send`, `provision`, ...).
        bucket: &'static str,
        /// How long the caller was willing to wait.
        waited: Duration,
    },
}

/// Operator input the fleet refuses; each text says what to change.
#[derive(Debug, thiserror::Error)]
pub enum InvalidInput {
    /// A `customer_ref` that does not parse.
    #[error("customer_ref {raw:?} is invalid")]
    CustomerRef {
        /// What was given.
        raw: String,
        /// Why it does not parse.
        #[source]
        source: InvalidRef,
    },
    /// A stored tenant status no release knows.
    #[error("unknown tenant status {0}")]
    TenantStatus(String),
    /// A bot kind other than echo, rules or http.
    #[error("unknown bot kind {0:?}: use echo, rules or http")]
    BotKind(String),
    /// A stored queue type no release knows.
    #[error("unknown queue type {0:?}")]
    QueueType(String),
    /// A stored auth mode no release knows.
    #[error("unknown auth mode {0}")]
    AuthMode(String),
    /// `--auth` other than token or open.
    #[error("unknown --auth {0:?}: use token or open")]
    AuthOption(String),
    /// `--queue-type` other than quorum or classic.
    #[error("unknown --queue-type {0:?}: use quorum or classic")]
    QueueTypeOption(String),
    /// A negative stored generation.
    #[error("negative generation")]
    Generation(i64),
    /// A bridge key that is empty, too long or has control characters.
    #[error("bridge key must be 1-256 printable characters")]
    BridgeKey,
    /// A bridge key other than the tenant's own ref. WA Bridges repeats the bridge's
    /// `customer_ref` in every webhook body, and ingest (which has no database) refuses a body whose
    /// `customer_ref` is not the URL's ref, so such a tenant would lose every event.
    #[error(
        "bridge key {bridge:?} differs from the tenant's ref {customer_ref}: WA Bridges puts the bridge's \
         customer_ref in every webhook body and ingest refuses a body whose customer_ref is not the URL's \
         ref, so every event of this tenant would be lost. Give the tenant its bridge's \
         customer_ref as its ref, or leave the bridge key out (it defaults to the ref)"
    )]
    BridgeDiffersFromRef {
        /// The tenant's ref.
        customer_ref: CustomerRef,
        /// The bridge key given for it.
        bridge: String,
    },
    /// An admin token name outside `[a-z0-9_.-]{1,64}`.
    #[error("token name {0:?}: use 1-64 characters [a-z0-9_.-], starting with a letter or digit")]
    TokenName(String),
    /// No live admin token has this name.
    #[error("no live admin token named {0}")]
    NoLiveToken(String),
    /// An unknown scope name, or no scope at all.
    #[error("scopes {0:?}: give one or more of read, credentials, pii, write, admin (comma-separated)")]
    TokenScopes(String),
    /// `tenants limits` values out of range.
    #[error("--weight must be 1-100 and caps at least 1")]
    TenantLimits,
    /// `--queue-max-bytes` out of range.
    #[error("--queue-max-bytes must be a positive number of bytes")]
    QueueBound,
    /// A page cursor this release did not hand out (or one of another listing).
    #[error("cursor is not one this listing returned; start again without it")]
    Cursor,
    /// A rule keyword that is empty or too long.
    #[error("keyword must be 1-200 characters")]
    RuleKeyword,
    /// A rule without reply text.
    #[error("reply must not be empty")]
    RuleReply,
    /// `rules remove` of a rule the tenant does not have.
    #[error("tenant {customer_ref} has no rule {rule:?} (see `wafleet rules list {customer_ref}`)")]
    UnknownRule {
        /// The tenant.
        customer_ref: String,
        /// The id or keyword that was given.
        rule: String,
    },
    /// `tenants limits` without any limit to change.
    #[error("say which limit to change: --weight, --max-per-min, --max-per-day or --queue-max-bytes")]
    NoLimitGiven,
    /// A `--bot-url` the fleet will not store.
    #[error("--bot-url {0}")]
    BotUrl(#[from] BadBotUrl),
    /// `--bot http` without `--bot-url`.
    #[error("--bot http needs --bot-url https://…")]
    HttpBotWithoutUrl,
    /// `--bot-url` with another bot than http.
    #[error("--bot-url is only for --bot http")]
    BotUrlWithoutHttp,
    /// `--allow-other-chats` with another bot than http.
    #[error("--allow-other-chats is only for --bot http")]
    AllowOtherChatsWithoutHttp,
    /// http-only options when switching to another bot.
    #[error("--bot-url, --rotate-secret and --allow-other-chats are only for --bot http")]
    HttpOptionsWithoutHttp,
    /// Switching to the http bot with no URL given or stored.
    #[error("--bot-url is required to switch to the http bot")]
    BotUrlRequired,
    /// The public base URL of ingest (`--base`) is not a plain http(s) URL.
    #[error("base must be an http(s) URL such as https://hooks.example.com")]
    BaseUrl(#[source] Option<url::ParseError>),
    /// `--base` of a URL rotation is not http(s).
    #[error("--base must be an http(s) URL such as https://hooks.example.com")]
    BaseOption,
    /// An outbox status filter other than the ones that need attention.
    #[error("status {0:?}: use unknown or failed")]
    OutboxStatus(String),
    /// A retention period that does not fit the database's integer.
    #[error("retention days too large")]
    RetentionDays(u32),
    /// A contact that is not a phone number or its JID.
    #[error("--contact must be a phone number with country code (6-20 digits) or its JID")]
    Contact,
    /// The export file could not be created.
    #[error("cannot create {}", path.display())]
    ExportFile {
        /// The file asked for.
        path: PathBuf,
        /// Why it could not be created.
        #[source]
        source: std::io::Error,
    },
    /// The export could not be written.
    #[error("cannot write the export")]
    ExportWrite(#[source] std::io::Error),
    /// A key reference other than `env:WA_API_KEY[_SUFFIX]` or `file:/absolute/path`.
    #[error("key reference {0:?}: use env:WA_API_KEY, env:WA_API_KEY_<SUFFIX> or file:/absolute/path")]
    KeyRef(String),
    /// A `file:` key reference outside `WAFLEET_SECRETS_DIR` (after `..` and symlinks).
    #[error("key file {path:?} is outside the secrets folder {dir:?} (WAFLEET_SECRETS_DIR)")]
    KeyFileOutsideSecretsDir {
        /// The file named.
        path: std::path::PathBuf,
        /// The configured secrets folder.
        dir: std::path::PathBuf,
    },
    /// An account `base_url` outside the allow-list.
    #[error("base URL {url:?} refused: {why}")]
    AccountBaseUrlRefused {
        /// The URL given.
        url: String,
        /// Why (not https, host not allowed, loopback without --test-account).
        why: String,
    },
    /// `accounts add --base-url` is not http(s).
    #[error("--base-url must be an http(s) URL")]
    AccountBaseUrl,
    /// `accounts add` rates below 1.
    #[error("--rate-per-min and --burst must be at least 1")]
    AccountRates,
    /// The account row fails a check constraint (its name, most often).
    #[error("invalid account: {0} (names are [a-z0-9][a-z0-9_.-]{{0,63}})")]
    Account(String),
    /// No account has this id.
    #[error("no account with id {0}")]
    UnknownAccount(i64),
    /// `dlq replay` needs `--all` or ids, not both and not neither.
    #[error("say --all or --id <ingest_id> (repeatable)")]
    ReplaySelection,
    /// `dlq purge` without `--yes`.
    #[error("purging deletes dead letters for good: add --yes")]
    PurgeUnconfirmed,
    /// An irreversible command (`tenants offboard`, `tenants erase`) run without `--yes` and
    /// without a terminal to confirm on.
    #[error("{action} cannot be undone: add --yes")]
    Unconfirmed {
        /// What the command does, e.g. "offboarding tenant acme".
        action: String,
    },
    /// The ref typed at the confirmation prompt was not the command's.
    #[error("confirmation did not match {expected:?}: nothing done")]
    ConfirmationMismatch {
        /// The ref that had to be typed.
        expected: String,
    },
}

/// Why a `--bot-url` is refused.
#[derive(Debug, thiserror::Error)]
pub enum BadBotUrl {
    /// Longer than 2048 bytes, or has whitespace.
    #[error("must be at most 2048 bytes without spaces")]
    Shape,
    /// Not a URL at all.
    #[error("is not a valid URL")]
    Unparsable(#[source] url::ParseError),
    /// Not http(s), or no host.
    #[error("must be an http(s) URL with a host, e.g. https://bot.example.com/hook")]
    NotHttp,
    /// Carries credentials or a fragment.
    #[error("must not carry credentials or a fragment (requests are signed instead)")]
    Credentials,
}

/// A failed call of the RabbitMQ management API.
#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    /// The API answered with an error status.
    #[error("{method} {path} -> {status}{}", body.as_deref().map(|b| format!(": {b}")).unwrap_or_default())]
    Status {
        /// `GET`, `PUT` or `DELETE`.
        method: &'static str,
        /// The API path after `/api/`.
        path: String,
        /// The answer's status.
        status: reqwest::StatusCode,
        /// The answer's body, when it explains the refusal.
        body: Option<String>,
    },
    /// The policies could not be applied; the source says why.
    #[error(
        "the policies could not be applied. Policies are applied through the management API: enable it with \
         `rabbitmq-plugins enable rabbitmq_management` and check RABBITMQ_API_URL"
    )]
    Policies(#[source] Box<Error>),
}

/// Something the process was given or needs at run time is missing or unusable.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `DATABASE_URL` and `ADMIN_DATABASE_URL` name one role: the duty split needs two.
    #[error("DATABASE_URL and ADMIN_DATABASE_URL both connect as {0}; the worker and the administration surface need a role each (defaults wafleet_worker and wafleet_admin)")]
    OneRoleForTwoDuties(String),
    /// A SECURITY DEFINER function has no row in `wafleet_function_grants`.
    #[error("SECURITY DEFINER functions without a row in wafleet_function_grants (a migration must say which duty may execute each): {}", .0.join(", "))]
    UngrantedFunctions(Vec<String>),
    /// A row of `wafleet_function_grants` names a function that does not exist.
    #[error("wafleet_function_grants names {0}, which does not exist (fix the row in the migration that changed the function)")]
    GrantOfMissingFunction(String),
    /// `WAFLEET_SIGNING_KEY` does not parse (the error never echoes key material).
    #[error("WAFLEET_SIGNING_KEY cannot be used")]
    Keyring(#[source] KeyringError),
    /// This server has no signing key, so it cannot sign webhook URLs.
    #[error("WAFLEET_SIGNING_KEY is not set on this server; webhook URLs cannot be signed")]
    NoSigningKey,
    /// An account's `env:` key reference names an unset variable.
    #[error("key reference {reference}: {variable} is not set")]
    KeyUnset {
        /// The reference (`env:NAME`).
        reference: String,
        /// The variable.
        variable: String,
    },
    /// An account's `file:` key reference cannot be read.
    #[error("key reference {reference}: cannot read the file")]
    KeyUnreadable {
        /// The reference (`file:/path`).
        reference: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An account's key reference resolves to an empty key.
    #[error("key reference {0} is empty")]
    KeyEmpty(String),
    /// A thread panicked while holding the account cache.
    #[error("account cache poisoned")]
    AccountCachePoisoned,
    /// A retry was asked for with no retry tier configured.
    #[error("no retry tiers")]
    NoRetryTiers,
    /// `RABBITMQ_API_URL` does not parse.
    #[error("RABBITMQ_API_URL is not a valid URL")]
    ManagementUrl(#[source] url::ParseError),
    /// `RABBITMQ_API_URL` cannot be used as a base for API paths.
    #[error("RABBITMQ_API_URL must be an http(s) URL")]
    ManagementUrlBase,
    /// The worker's health address cannot be bound.
    #[error("cannot bind WAFLEET_WORKER_ADDR {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The health server stopped with an error.
    #[error("health server")]
    HealthServer(#[source] std::io::Error),
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

    /// True when no pooled connection was free in time: back-pressure, not an outage, unless a
    /// health probe ([`crate::db::probe_writable`]) fails too.
    pub fn is_pool_timeout(&self) -> bool {
        matches!(self, Error::Database(sqlx::Error::PoolTimedOut))
    }

    /// True for serialization failures and deadlocks, which succeed when tried again later.
    pub fn is_serialization_failure(&self) -> bool {
        matches!(self, Error::Database(sqlx::Error::Database(db)) if matches!(db.code().as_deref(), Some("40001") | Some("40P01")))
    }
}

/// Whether a sqlx error means "Postgres is not reachable right now", or not writable here (a
/// failover in progress). A pool timeout is not one: the pool may only be busy (see
/// [`Error::is_pool_timeout`]).
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now, 08xxx
            // connection exceptions, 25006 read_only_sql_transaction (a standby not yet promoted,
            // or a demoted primary behind the read-write Service during a switchover).
            db.code().map(|c| c.starts_with("08") || c.starts_with("57P") || c == "25006").unwrap_or(false)
        }
        _ => false,
    }
}

impl From<wafleet_shared::amqp::ConnectError> for Error {
    fn from(e: wafleet_shared::amqp::ConnectError) -> Self {
        Self::BrokerConnect(Box::new(e))
    }
}

impl From<BadBotUrl> for Error {
    fn from(e: BadBotUrl) -> Self {
        Self::Invalid(InvalidInput::BotUrl(e))
    }
}

mod conflict;
mod role;
#[cfg(test)]
mod tests;

pub use conflict::Conflict;
pub use role::UnsafeRole;

impl From<UnsafeRole> for Error {
    fn from(role: UnsafeRole) -> Self {
        // Boxed: the refusal names up to two roles, and every Result of the fleet carries Error.
        Error::UnsafeRole(Box::new(role))
    }
}

//! Worker configuration, from the environment only, validated once at start.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;

use crate::consumer::ConsumerConfig;
use crate::process::ProcessConfig;
use crate::reconciler::ReconcilerConfig;
use crate::sender::SenderConfig;
use wafleet_fleet::error::{Error, Result};
pub use wafleet_shared::config::{env_bool, env_or, env_parse};

pub use wafleet_shared::config::{
    DEFAULT_AMQP_URL, DEFAULT_DATABASE_URL, DEFAULT_MIGRATE_DATABASE_URL, DEFAULT_RABBITMQ_API_URL,
    DEFAULT_WA_API_BASE_URL,
};

/// Everything the worker reads from the environment.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// `DATABASE_URL`: the application role (never a superuser or table owner).
    pub database_url: String,
    /// `AMQP_URL`: broker URL; its path is the vhost.
    pub amqp_url: String,
    /// `RABBITMQ_API_URL`: management API, used to check that policies exist.
    pub rabbitmq_api_url: String,
    /// `WA_API_KEY`: the WA Bridges account key.
    pub wa_api_key: SecretString,
    /// `WA_API_BASE_URL`: WA Bridges base URL.
    pub wa_api_base_url: String,
    /// `WAFLEET_WORKER_ADDR`: health and metrics listener (default 127.0.0.1:8081).
    pub addr: SocketAddr,
    /// `WAFLEET_DB_POOL_SIZE`: connections in the application pool (default 10).
    pub pool_size: u32,
    /// `WAFLEET_ALLOW_UNSAFE_DB_ROLE`: run even if the role can bypass RLS (local experiments only).
    pub allow_unsafe_db_role: bool,
    /// `WAFLEET_SEND_TIMEOUT_MS`: bound of one send request (default 10000).
    pub send_timeout: Duration,
    /// `WAFLEET_METRICS_TOP_TENANTS`: tenants with their own metric label (default 50); the rest
    /// are reported as `other`.
    pub metrics_top_tenants: usize,
    /// Consumption settings: `WAFLEET_PREFETCH` (8), `WAFLEET_TENANT_IN_FLIGHT` (4),
    /// `WAFLEET_MAX_IN_FLIGHT` (64), `WAFLEET_TENANT_REFRESH_SECS` (30), `WAFLEET_RETRY_TIERS`
    /// (`5s,30s,2m,10m`), `WAFLEET_PUBLISH_TIMEOUT_MS` (5000).
    pub consumer: ConsumerConfig,
    /// Processing settings: `WAFLEET_BOT_TIMEOUT_MS` (10000), `WAFLEET_REPLY_TTL_SECS` (3600),
    /// `WAFLEET_STALE_AFTER_SECS` (900).
    pub process: ProcessConfig,
    /// Sender settings: `WAFLEET_SENDER_BATCH` (32), `WAFLEET_STALE_SENDING_SECS` (120),
    /// `WAFLEET_SENDER_CONCURRENCY` (4), `WAFLEET_SENDER_DB_POOL_SIZE` (3), and the
    /// budget of the default account: `WAFLEET_SEND_RATE_PER_MIN` (110), `WAFLEET_SEND_BURST` (5),
    /// `WAFLEET_BUDGET_WINDOW_SECS` (60).
    pub sender: SenderConfig,
    /// Reconciler settings: `WAFLEET_UNROUTED_SWEEP_SECS` (60), `WAFLEET_UNROUTED_RETENTION`
    /// (seconds, 3600), and `WAFLEET_PUBLISH_TIMEOUT_MS` as for consumption.
    pub reconciler: ReconcilerConfig,
    /// Data retention: `WAFLEET_RETENTION_DAYS` (30), `WAFLEET_RETENTION_INTERVAL_SECS` (3600).
    pub retention: wafleet_fleet::retention::RetentionConfig,
    /// The `http` bot's client: `WAFLEET_HTTP_BOT_TIMEOUT_MS` (5000),
    /// `WAFLEET_HTTP_BOT_MAX_RESPONSE_BYTES` (65536), `WAFLEET_HTTP_BOT_PORTS` (`443,80`),
    /// `WAFLEET_HTTP_BOT_ALLOW_PRIVATE` (false, development only).
    pub http_bot: crate::bots::HttpBotConfig,
    /// The isolation canary, when `WAFLEET_CANARY_TENANTS` is set (see [`crate::canary`]).
    pub canary: Option<crate::canary::CanaryConfig>,
}

/// The retry tiers from `WAFLEET_RETRY_TIERS` (default `5s,30s,2m,10m`).
pub fn retry_tiers_from_env() -> Result<Vec<wafleet_fleet::topology::RetryTier>> {
    wafleet_fleet::topology::RetryTier::parse_tiers(&env_or(
        "WAFLEET_RETRY_TIERS",
        wafleet_fleet::topology::DEFAULT_RETRY_TIERS,
    ))
}

impl WorkerConfig {
    /// Reads the environment.
    pub fn from_env() -> Result<Self> {
        let process = ProcessConfig {
            bot_timeout: Duration::from_millis(env_parse("WAFLEET_BOT_TIMEOUT_MS", 10_000)?),
            reply_ttl: Duration::from_secs(env_parse("WAFLEET_REPLY_TTL_SECS", 3600)?),
            stale_after: Duration::from_secs(env_parse("WAFLEET_STALE_AFTER_SECS", 900)?),
        };
        let consumer = ConsumerConfig {
            prefetch: env_parse("WAFLEET_PREFETCH", 8)?,
            tenant_in_flight: env_parse("WAFLEET_TENANT_IN_FLIGHT", 4)?,
            max_in_flight: env_parse("WAFLEET_MAX_IN_FLIGHT", 64)?,
            refresh_interval: Duration::from_secs(env_parse("WAFLEET_TENANT_REFRESH_SECS", 30)?),
            retry_tiers: retry_tiers_from_env()?,
            publish_timeout: Duration::from_millis(env_parse("WAFLEET_PUBLISH_TIMEOUT_MS", 5000)?),
        };
        let publish_timeout = consumer.publish_timeout;
        let sender = SenderConfig {
            batch: env_parse("WAFLEET_SENDER_BATCH", 32)?,
            stale_sending_after: Duration::from_secs(env_parse("WAFLEET_STALE_SENDING_SECS", 120)?),
            concurrency: env_parse("WAFLEET_SENDER_CONCURRENCY", 4)?,
            db_pool_size: env_parse("WAFLEET_SENDER_DB_POOL_SIZE", 3)?,
            budget: wafleet_fleet::budget::BudgetConfig::from_env()?,
            ..SenderConfig::default()
        };
        if sender.concurrency == 0 || sender.db_pool_size == 0 {
            return Err(Error::Config("WAFLEET_SENDER_CONCURRENCY and WAFLEET_SENDER_DB_POOL_SIZE must be > 0".into()));
        }
        if consumer.prefetch == 0 || consumer.tenant_in_flight == 0 || consumer.max_in_flight == 0 {
            return Err(Error::Config(
                "WAFLEET_PREFETCH, WAFLEET_TENANT_IN_FLIGHT and WAFLEET_MAX_IN_FLIGHT must be > 0".into(),
            ));
        }
        Ok(Self {
            database_url: env_or("DATABASE_URL", DEFAULT_DATABASE_URL),
            amqp_url: env_or("AMQP_URL", DEFAULT_AMQP_URL),
            rabbitmq_api_url: env_or("RABBITMQ_API_URL", DEFAULT_RABBITMQ_API_URL),
            wa_api_key: SecretString::from(
                std::env::var("WA_API_KEY").map_err(|_| Error::Config("WA_API_KEY is required".into()))?,
            ),
            wa_api_base_url: env_or("WA_API_BASE_URL", DEFAULT_WA_API_BASE_URL),
            addr: env_parse("WAFLEET_WORKER_ADDR", SocketAddr::from(([127, 0, 0, 1], 8081)))?,
            pool_size: env_parse("WAFLEET_DB_POOL_SIZE", 10)?,
            allow_unsafe_db_role: env_bool("WAFLEET_ALLOW_UNSAFE_DB_ROLE")?,
            send_timeout: Duration::from_millis(env_parse("WAFLEET_SEND_TIMEOUT_MS", 10_000)?),
            metrics_top_tenants: env_parse("WAFLEET_METRICS_TOP_TENANTS", 50)?,
            consumer,
            process,
            sender,
            reconciler: ReconcilerConfig {
                sweep_interval: Duration::from_secs(env_parse("WAFLEET_UNROUTED_SWEEP_SECS", 60)?),
                retention: Duration::from_secs(env_parse("WAFLEET_UNROUTED_RETENTION", 3600)?),
                publish_timeout,
            },
            retention: wafleet_fleet::retention::RetentionConfig::from_env()?,
            http_bot: crate::bots::HttpBotConfig::from_env()?,
            canary: crate::canary::CanaryConfig::from_env()?,
        })
    }
}

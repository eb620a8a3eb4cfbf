//! Configuration of `wafleet-admin`, from the environment only, validated once at start. The
//! service endpoints and secrets are the CLI's (same variables, same defaults); the rest starts
//! with `WAFLEET_ADMIN_`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::SecretString;
use wafleet_fleet::ops::Endpoints;
use wafleet_shared::config::{
    env_bool, env_or, env_parse, DEFAULT_AMQP_URL, DEFAULT_DATABASE_URL, DEFAULT_RABBITMQ_API_URL,
};
use wafleet_shared::Keyring;

/// Default listen address: loopback only. Expose it through an internal ingress, never together
/// with the public webhook edge.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8082";

/// Largest request body (64 KiB); larger ones get 413.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// Everything `wafleet-admin` reads from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    /// `WAFLEET_ADMIN_ADDR`: listen address (default 127.0.0.1:8082).
    pub addr: SocketAddr,
    /// `DATABASE_URL`, `AMQP_URL`, `RABBITMQ_API_URL`: the CLI's services (application role).
    pub endpoints: Endpoints,
    /// `WAFLEET_SIGNING_KEY`: signs webhook URLs (webhook-url, rotate-url, provision). Optional:
    /// those endpoints answer 503 `not-configured` without it.
    pub signing_key: Option<SecretString>,
    /// `WAFLEET_ALLOW_UNSAFE_DB_ROLE`: run even if `DATABASE_URL` can bypass RLS (local only).
    pub allow_unsafe_db_role: bool,
    /// `WAFLEET_ADMIN_DB_POOL_SIZE`: connections in the application pool (default 5).
    pub pool_size: u32,
    /// `WAFLEET_ADMIN_RATE_PER_SEC`: sustained requests per second per token (default 10).
    pub rate_per_sec: NonZeroU32,
    /// `WAFLEET_ADMIN_RATE_BURST`: requests a token may make at once (default 20).
    pub rate_burst: NonZeroU32,
    /// `WAFLEET_ADMIN_BUDGET_WAIT_SECS`: longest wait for a WA Bridges budget token inside one
    /// request (provision, bridge status) before answering 503 `budget-exhausted` (default 10).
    pub max_budget_wait: Duration,
}

fn non_zero(name: &str, value: u32) -> anyhow::Result<NonZeroU32> {
    NonZeroU32::new(value).with_context(|| format!("{name} must be greater than 0"))
}

impl Config {
    /// Reads and validates the environment. WA_API_KEY, WA_API_BASE_URL and the budget settings
    /// are read where the CLI reads them (the fleet context, per account).
    pub fn from_env() -> anyhow::Result<Self> {
        let addr = env_or("WAFLEET_ADMIN_ADDR", DEFAULT_ADDR);
        let addr: SocketAddr = addr.parse().with_context(|| format!("WAFLEET_ADMIN_ADDR={addr:?} is not host:port"))?;
        let signing_key = std::env::var("WAFLEET_SIGNING_KEY").ok().filter(|k| !k.is_empty()).map(SecretString::from);
        if let Some(key) = &signing_key {
            Keyring::parse(key).context("WAFLEET_SIGNING_KEY")?;
        }
        Ok(Self {
            addr,
            endpoints: Endpoints {
                database_url: env_or("DATABASE_URL", DEFAULT_DATABASE_URL),
                amqp_url: env_or("AMQP_URL", DEFAULT_AMQP_URL),
                rabbitmq_api_url: env_or("RABBITMQ_API_URL", DEFAULT_RABBITMQ_API_URL),
            },
            signing_key,
            allow_unsafe_db_role: env_bool("WAFLEET_ALLOW_UNSAFE_DB_ROLE")?,
            pool_size: env_parse("WAFLEET_ADMIN_DB_POOL_SIZE", 5)?,
            rate_per_sec: non_zero("WAFLEET_ADMIN_RATE_PER_SEC", env_parse("WAFLEET_ADMIN_RATE_PER_SEC", 10)?)?,
            rate_burst: non_zero("WAFLEET_ADMIN_RATE_BURST", env_parse("WAFLEET_ADMIN_RATE_BURST", 20)?)?,
            max_budget_wait: Duration::from_secs(env_parse("WAFLEET_ADMIN_BUDGET_WAIT_SECS", 10)?),
        })
    }
}

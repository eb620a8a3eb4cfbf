//! Configuration of `wafleet-admin`: [`AdminArgs`] declares every setting for `clap` (so
//! `--help` lists each variable and its default), `main` parses them once at start, and
//! [`AdminArgs::into_config`] validates them. The service endpoints, secrets, WA Bridges client
//! and budget are the shared groups the CLI also uses (same variables, same defaults); the rest
//! starts with `WAFLEET_ADMIN_`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use secrecy::{ExposeSecret as _, SecretString};
use wafleet_fleet::accounts::{AccountPolicy, DirectorySettings};
use wafleet_fleet::budget::BudgetConfig;
use wafleet_fleet::service::Endpoints;
use wafleet_shared::settings::{
    AdminDatabaseSettings, BrokerSettings, BudgetSettings, SigningSettings, TelemetrySettings, WaApiSettings,
};
use wafleet_shared::Keyring;

/// Default listen address: loopback only. Expose it through an internal ingress, never together
/// with the public webhook edge.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8082";

/// Default ops address (`/metrics`, `/healthz`): loopback only; never the API port, so a
/// scraper needs no token and the API's NetworkPolicy need not admit it.
pub const DEFAULT_OPS_ADDR: &str = "127.0.0.1:9082";

/// Largest request body (64 KiB); larger ones get 413.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// Everything `wafleet-admin` runs with, validated.
#[derive(Clone)]
pub struct Config {
    /// `WAFLEET_ADMIN_ADDR`: listen address (default 127.0.0.1:8082).
    pub addr: SocketAddr,
    /// `WAFLEET_ADMIN_OPS_ADDR`: ops address for `/metrics` and `/healthz` (default 127.0.0.1:9082).
    pub ops_addr: SocketAddr,
    /// `WAFLEET_ADMIN_HEADER_TIMEOUT_MS`: a client must send its request headers within this
    /// time, or its connection is closed (default 5000).
    pub header_timeout: Duration,
    /// `WAFLEET_ADMIN_MAX_CONNECTIONS`: open connections at most; further clients wait in the
    /// kernel's accept backlog (default 256).
    pub max_connections: usize,
    /// `WAFLEET_ADMIN_ADDR_RATE_PER_SEC` and `WAFLEET_ADMIN_ADDR_RATE_BURST`: requests per client
    /// address, checked before the token (defaults 50 and 100).
    pub address_rate: crate::state::RateLimit,
    /// `ADMIN_DATABASE_URL`, `AMQP_URL`, `RABBITMQ_API_URL`: the CLI's services (administration role).
    pub endpoints: Endpoints,
    /// `WAFLEET_SIGNING_KEY`: signs webhook URLs (webhook-url, rotate-url, provision). Optional:
    /// those endpoints answer 503 `not-configured` without it.
    pub signing_key: Option<SecretString>,
    /// `WAFLEET_ALLOW_UNSAFE_DB_ROLE`: run even if `ADMIN_DATABASE_URL` can bypass RLS or is not the administration role (local only).
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
    /// How accounts reach WA Bridges: `WA_API_BASE_URL`, `WAFLEET_SEND_TIMEOUT_MS`, `WA_API_KEY`
    /// (the default account's key, when set here) and the budget (`WAFLEET_SEND_RATE_PER_MIN`,
    /// `WAFLEET_SEND_BURST`, `WAFLEET_BUDGET_WINDOW_SECS`).
    pub directory: DirectorySettings,
    /// `WAFLEET_ADMIN_CONSOLE_SESSION_MINS`: how long a console sign-in lasts (default 30).
    pub console_session: Duration,
}

/// `wafleet-admin`: the admin HTTP API and fleet console. Every setting is a flag and an
/// environment variable (see docs/admin-api.md).
#[derive(Parser, Clone, Debug)]
#[command(name = "wafleet-admin", version, about)]
pub struct AdminArgs {
    /// Print the OpenAPI 3.1 document and exit.
    #[arg(long)]
    pub print_openapi: bool,
    /// The administration role's database.
    #[command(flatten)]
    pub database: AdminDatabaseSettings,
    /// The broker.
    #[command(flatten)]
    pub broker: BrokerSettings,
    /// WA Bridges.
    #[command(flatten)]
    pub wa_api: WaApiSettings,
    /// The send budget.
    #[command(flatten)]
    pub budget: BudgetSettings,
    /// The webhook keyring (optional here).
    #[command(flatten)]
    pub signing: SigningSettings,
    /// Logs and traces.
    #[command(flatten)]
    pub telemetry: TelemetrySettings,
    /// Listen address; expose it only on an internal network.
    #[arg(long, env = "WAFLEET_ADMIN_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: SocketAddr,
    /// Connections of the admin API's pool.
    #[arg(long, env = "WAFLEET_ADMIN_DB_POOL_SIZE", default_value_t = 5)]
    pub db_pool_size: u32,
    /// Requests per second per admin token.
    #[arg(long, env = "WAFLEET_ADMIN_RATE_PER_SEC", default_value_t = NonZeroU32::MIN.saturating_add(9))]
    pub rate_per_sec: NonZeroU32,
    /// Burst per admin token.
    #[arg(long, env = "WAFLEET_ADMIN_RATE_BURST", default_value_t = NonZeroU32::MIN.saturating_add(19))]
    pub rate_burst: NonZeroU32,
    /// Ops address (`/metrics`, `/healthz`); never exposed outside the cluster.
    #[arg(long, env = "WAFLEET_ADMIN_OPS_ADDR", default_value = DEFAULT_OPS_ADDR)]
    pub ops_addr: SocketAddr,
    /// Milliseconds a client has to send its request headers.
    #[arg(long, env = "WAFLEET_ADMIN_HEADER_TIMEOUT_MS", default_value_t = 5000)]
    pub header_timeout_ms: u64,
    /// Open connections at most.
    #[arg(long, env = "WAFLEET_ADMIN_MAX_CONNECTIONS", default_value_t = 256)]
    pub max_connections: usize,
    /// Requests per second per client address, before authentication.
    #[arg(long, env = "WAFLEET_ADMIN_ADDR_RATE_PER_SEC", default_value_t = NonZeroU32::MIN.saturating_add(49))]
    pub addr_rate_per_sec: NonZeroU32,
    /// Burst per client address.
    #[arg(long, env = "WAFLEET_ADMIN_ADDR_RATE_BURST", default_value_t = NonZeroU32::MIN.saturating_add(99))]
    pub addr_rate_burst: NonZeroU32,
    /// How long (seconds) a request that calls WA Bridges waits for send budget.
    #[arg(long, env = "WAFLEET_ADMIN_BUDGET_WAIT_SECS", default_value_t = 10)]
    pub budget_wait_secs: u64,
    /// Minutes a console sign-in lasts; signing out or revoking its token ends it sooner.
    #[arg(long, env = "WAFLEET_ADMIN_CONSOLE_SESSION_MINS", default_value_t = 30)]
    pub console_session_mins: u64,
}

impl AdminArgs {
    /// Validates the parsed settings. Errors name the variable and never echo a secret.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let signing_key = self.signing.signing_key.filter(|k| !k.expose_secret().is_empty());
        if let Some(key) = &signing_key {
            Keyring::parse(key).context("WAFLEET_SIGNING_KEY")?;
        }
        let budget = BudgetConfig::from(&self.budget);
        budget.validate()?;
        // A list must name one cluster's vhost; the error never quotes a URL.
        wafleet_shared::amqp::AmqpEndpoints::parse(&self.broker.amqp.amqp_url)?;
        let policy = AccountPolicy::from_settings(&self.wa_api);
        let mut key_overrides = HashMap::new();
        // Without it here, `env:WA_API_KEY` is still resolved when an account is used, and its
        // error names the reference.
        if let Some(key) = self.wa_api.wa_api_key.filter(|k| !k.expose_secret().is_empty()) {
            key_overrides.insert("env:WA_API_KEY".to_owned(), key);
        }
        if !(1..=24 * 60).contains(&self.console_session_mins) {
            anyhow::bail!("WAFLEET_ADMIN_CONSOLE_SESSION_MINS must be 1-1440");
        }
        if self.header_timeout_ms == 0 || self.max_connections == 0 {
            anyhow::bail!("WAFLEET_ADMIN_HEADER_TIMEOUT_MS and WAFLEET_ADMIN_MAX_CONNECTIONS must be positive");
        }
        Ok(Config {
            addr: self.addr,
            ops_addr: self.ops_addr,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            max_connections: self.max_connections,
            address_rate: crate::state::RateLimit { per_second: self.addr_rate_per_sec, burst: self.addr_rate_burst },
            endpoints: Endpoints {
                database_url: self.database.admin_database_url,
                amqp_url: self.broker.amqp.amqp_url,
                rabbitmq_api_url: self.broker.rabbitmq_api_url,
            },
            signing_key,
            allow_unsafe_db_role: self.database.allow_unsafe_db_role,
            pool_size: self.db_pool_size,
            rate_per_sec: self.rate_per_sec,
            rate_burst: self.rate_burst,
            max_budget_wait: Duration::from_secs(self.budget_wait_secs),
            directory: DirectorySettings {
                policy,
                default_base_url: self.wa_api.wa_api_base_url,
                key_overrides,
                timeout: Duration::from_millis(self.wa_api.send_timeout_ms),
                budget,
            },
            console_session: Duration::from_secs(self.console_session_mins * 60),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = AdminArgs::try_parse_from(["wafleet-admin"]).unwrap().into_config().unwrap();
        assert_eq!(config.addr.to_string(), DEFAULT_ADDR);
        assert_eq!((config.pool_size, config.rate_per_sec.get(), config.rate_burst.get()), (5, 10, 20));
        assert_eq!(config.max_budget_wait, Duration::from_secs(10));
        assert_eq!(config.ops_addr.to_string(), DEFAULT_OPS_ADDR);
        assert_eq!((config.header_timeout, config.max_connections), (Duration::from_secs(5), 256));
        assert_eq!((config.address_rate.per_second.get(), config.address_rate.burst.get()), (50, 100));
        assert_eq!(config.directory.budget, BudgetConfig::default());
    }

    #[test]
    fn a_zero_rate_names_its_variable() {
        let e = wafleet_shared::settings::try_parse_from::<AdminArgs, _, _>(["wafleet-admin", "--rate-per-sec=0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("WAFLEET_ADMIN_RATE_PER_SEC"), "{e}");
        let e = AdminArgs::try_parse_from(["wafleet-admin", "--max-connections=0"]).unwrap().into_config();
        assert!(e.err().unwrap().to_string().contains("WAFLEET_ADMIN_MAX_CONNECTIONS"));
    }
}

//! Worker settings: [`WorkerArgs`] declares every variable for `clap` (so `--help` lists each
//! one with its default), `main` parses them once at start, and [`WorkerArgs::into_config`]
//! validates them into the [`WorkerConfig`] the runtime takes. Only `main` and `startup` use this
//! module; the runtime's modules take their own config types and never read the environment.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use secrecy::{ExposeSecret as _, SecretString};
use wafleet_fleet::accounts::AccountPolicy;
use wafleet_fleet::budget::BudgetConfig;
use wafleet_fleet::error::{Error, Result};
use wafleet_fleet::retention::RetentionConfig;
use wafleet_fleet::topology::RetryTier;
use wafleet_shared::settings::{
    bool_parser, BrokerSettings, BudgetSettings, DatabaseSettings, RetentionSettings, RetrySettings, SigningSettings,
    TelemetrySettings, WaApiSettings,
};

use crate::bots::HttpBotConfig;
use crate::canary::CanaryConfig;
use crate::consumer::ConsumerConfig;
use crate::process::ProcessConfig;
use crate::reconciler::ReconcilerConfig;
use crate::sender::SenderConfig;

/// Everything the worker runs with, validated.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// `DATABASE_URL`: the worker's role (never a superuser or table owner).
    pub database_url: String,
    /// `AMQP_URL`: broker URL, or a comma-separated list of one cluster's node URLs; the path is
    /// the vhost.
    pub amqp_url: String,
    /// `RABBITMQ_API_URL`: management API (one URL or a comma-separated list), used to check that
    /// policies exist.
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
    /// Consumption settings (see [`WorkerArgs`]).
    pub consumer: ConsumerConfig,
    /// Processing settings (see [`WorkerArgs`]).
    pub process: ProcessConfig,
    /// Sender settings and the default account's budget (see [`WorkerArgs`]).
    pub sender: SenderConfig,
    /// Reconciler settings (see [`WorkerArgs`]).
    pub reconciler: ReconcilerConfig,
    /// Data retention (see [`WorkerArgs`]).
    pub retention: RetentionConfig,
    /// The `http` bot's client (see [`WorkerArgs`]).
    pub http_bot: HttpBotConfig,
    /// The isolation canary, when `WAFLEET_CANARY_TENANTS` is set (see [`crate::canary`]).
    pub canary: Option<CanaryConfig>,
    /// `WAFLEET_SECRETS_DIR` and `WAFLEET_WA_API_HOSTS`: what an account may name.
    pub account_policy: AccountPolicy,
}

/// `wafleet-worker`: consumes every tenant queue, runs bots, sends replies. Every setting is a
/// flag and an environment variable.
#[derive(Parser, Clone, Debug)]
#[command(name = "wafleet-worker", version, about)]
pub struct WorkerArgs {
    /// The worker's database role.
    #[command(flatten)]
    pub database: DatabaseSettings,
    /// The broker.
    #[command(flatten)]
    pub broker: BrokerSettings,
    /// WA Bridges (WA_API_KEY is required here).
    #[command(flatten)]
    pub wa_api: WaApiSettings,
    /// The send budget.
    #[command(flatten)]
    pub budget: BudgetSettings,
    /// The retry tiers.
    #[command(flatten)]
    pub retry: RetrySettings,
    /// Retention.
    #[command(flatten)]
    pub retention: RetentionSettings,
    /// The webhook keyring (only the canary uses it).
    #[command(flatten)]
    pub signing: SigningSettings,
    /// Logs and traces.
    #[command(flatten)]
    pub telemetry: TelemetrySettings,
    /// `/healthz`, `/readyz` and `/metrics` listener.
    #[arg(long, env = "WAFLEET_WORKER_ADDR", default_value = "127.0.0.1:8081")]
    pub addr: SocketAddr,
    /// Connections of the message path per worker.
    #[arg(long, env = "WAFLEET_DB_POOL_SIZE", default_value_t = 10)]
    pub db_pool_size: u32,
    /// Unacked messages per tenant queue (keeps a backlog visible in its own queue).
    #[arg(long, env = "WAFLEET_PREFETCH", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Concurrent messages per tenant.
    #[arg(long, env = "WAFLEET_TENANT_IN_FLIGHT", default_value_t = 4, value_parser = positive)]
    pub tenant_in_flight: usize,
    /// Concurrent messages per worker.
    #[arg(long, env = "WAFLEET_MAX_IN_FLIGHT", default_value_t = 64, value_parser = positive)]
    pub max_in_flight: usize,
    /// Seconds between re-reads of the tenant list without a notification.
    #[arg(long, env = "WAFLEET_TENANT_REFRESH_SECS", default_value_t = 30)]
    pub tenant_refresh_secs: u64,
    /// Seconds between checks that every consumed tenant queue still has this worker's consumer
    /// (one passive declare per queue); a lost consumer is subscribed again.
    #[arg(long, env = "WAFLEET_CONSUMER_CHECK_SECS", default_value_t = 5, value_parser = positive)]
    pub consumer_check_secs: usize,
    /// Bound of one bot run (milliseconds); a timeout goes to the next retry tier.
    #[arg(long, env = "WAFLEET_BOT_TIMEOUT_MS", default_value_t = 10_000)]
    pub bot_timeout_ms: u64,
    /// One deadline around a retry, dead-letter or quarantine publish and its confirm (milliseconds).
    #[arg(long, env = "WAFLEET_PUBLISH_TIMEOUT_MS", default_value_t = 5000)]
    pub publish_timeout_ms: u64,
    /// A reply not sent within this many seconds expires instead of arriving late.
    #[arg(long, env = "WAFLEET_REPLY_TTL_SECS", default_value_t = 3600)]
    pub reply_ttl_secs: u64,
    /// Messages older than this many seconds are recorded without an auto-reply.
    #[arg(long, env = "WAFLEET_STALE_AFTER_SECS", default_value_t = 900)]
    pub stale_after_secs: u64,
    /// Tenants with their own `tenant` metric label; the rest are `other`.
    #[arg(long, env = "WAFLEET_METRICS_TOP_TENANTS", default_value_t = 50)]
    pub metrics_top_tenants: usize,
    /// Due outbox rows taken per pass.
    #[arg(long, env = "WAFLEET_SENDER_BATCH", default_value_t = 32)]
    pub sender_batch: i32,
    /// Seconds after which a row still `sending` was cut by a crash and becomes `unknown`.
    #[arg(long, env = "WAFLEET_STALE_SENDING_SECS", default_value_t = 120)]
    pub stale_sending_secs: u64,
    /// Seconds a silent (black-holed) worker keeps its send claims and open transactions before
    /// Postgres ends its sessions; a crashed worker's claims are released at once.
    #[arg(long, env = "WAFLEET_CLAIM_LEASE_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(2..))]
    pub claim_lease_secs: u64,
    /// Seconds a send answered 503 (or a 5xx other than 500/502/504) waits for the bridge's
    /// `from_me` echo before it is resent; an echo within the window marks it sent.
    #[arg(long, env = "WAFLEET_SENDER_ECHO_WINDOW_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub sender_echo_window_secs: u64,
    /// Seconds before a disconnected bridge whose replies wait is asked for its status again
    /// (connection events can be lost); each answer that is still not `connected` doubles it.
    #[arg(long, env = "WAFLEET_BRIDGE_RECHECK_SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub bridge_recheck_secs: u64,
    /// The longest wait between two status re-checks of one disconnected bridge (seconds).
    #[arg(long, env = "WAFLEET_BRIDGE_RECHECK_MAX_SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub bridge_recheck_max_secs: u64,
    /// Sends in flight per account and worker.
    #[arg(long, env = "WAFLEET_SENDER_CONCURRENCY", default_value_t = 4, value_parser = positive)]
    pub sender_concurrency: usize,
    /// The sender's own connections, apart from the message path's pool.
    #[arg(long, env = "WAFLEET_SENDER_DB_POOL_SIZE", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub sender_db_pool_size: u32,
    /// Sweep interval of `wa.unrouted` in seconds (also swept on every tenant change).
    #[arg(long, env = "WAFLEET_UNROUTED_SWEEP_SECS", default_value_t = 60)]
    pub unrouted_sweep_secs: u64,
    /// Seconds an unrouted event waits for its tenant before it is dropped.
    #[arg(long, env = "WAFLEET_UNROUTED_RETENTION", default_value_t = 3600)]
    pub unrouted_retention: u64,
    /// How often (seconds) each worker tries to run retention (one runs at a time).
    #[arg(long, env = "WAFLEET_RETENTION_INTERVAL_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_interval_secs: u64,
    /// Bound of one request of the `http` bot (milliseconds), answer included.
    #[arg(long, env = "WAFLEET_HTTP_BOT_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub http_bot_timeout_ms: u64,
    /// Larger bot answers are refused (permanent failure).
    #[arg(long, env = "WAFLEET_HTTP_BOT_MAX_RESPONSE_BYTES", default_value_t = 65_536, value_parser = positive)]
    pub http_bot_max_response_bytes: usize,
    /// Ports a bot URL may use (comma-separated).
    #[arg(long, env = "WAFLEET_HTTP_BOT_PORTS", default_value = "443,80", value_delimiter = ',', value_parser = port)]
    pub http_bot_ports: Vec<u16>,
    /// Development only: let bot URLs reach loopback, private, CGNAT and link-local addresses.
    #[arg(long, env = "WAFLEET_HTTP_BOT_ALLOW_PRIVATE", action = clap::ArgAction::Set, num_args = 0..=1,
          default_value_t = false, default_missing_value = "true", value_parser = bool_parser())]
    pub http_bot_allow_private: bool,
    /// Comma-separated refs of the isolation canary's tenants; unset, no canary runs.
    #[arg(long, env = "WAFLEET_CANARY_TENANTS")]
    pub canary_tenants: Option<String>,
    /// Seconds between canary rounds.
    #[arg(long, env = "WAFLEET_CANARY_INTERVAL_SECS", default_value_t = 300)]
    pub canary_interval_secs: u64,
    /// Public base URL of ingest, as WA Bridges calls it (required with the canary).
    #[arg(long, env = "WAFLEET_CANARY_INGEST_URL")]
    pub canary_ingest_url: Option<String>,
    /// Chat of the canary event: 6-20 digits of a number you control, or a group JID (required with the canary).
    #[arg(long, env = "WAFLEET_CANARY_CHAT")]
    pub canary_chat: Option<String>,
    /// Seconds after which a probe that has not passed fails.
    #[arg(long, env = "WAFLEET_CANARY_TIMEOUT_SECS", default_value_t = 120)]
    pub canary_timeout_secs: u64,
    /// Also require the bridge's own `from_me` copy of the reply to come back.
    #[arg(long, env = "WAFLEET_CANARY_REQUIRE_ECHO", action = clap::ArgAction::Set, num_args = 0..=1,
          default_value_t = false, default_missing_value = "true", value_parser = bool_parser())]
    pub canary_require_echo: bool,
}

/// A count that must be at least 1 (a zero would stall the worker).
fn positive(raw: &str) -> std::result::Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(0) | Err(_) => Err("must be a whole number > 0".into()),
        Ok(n) => Ok(n),
    }
}

/// One TCP port, 1-65535.
fn port(raw: &str) -> std::result::Result<u16, String> {
    raw.trim().parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| "must be a comma-separated list of ports".into())
}

impl WorkerArgs {
    /// Validates the parsed settings into the runtime's config. Errors name the variable.
    pub fn into_config(self) -> Result<WorkerConfig> {
        let retry_tiers = RetryTier::parse_tiers(&self.retry.retry_tiers)
            .map_err(|e| Error::Config(format!("WAFLEET_RETRY_TIERS: {e}")))?;
        let wa_api_key = self
            .wa_api
            .wa_api_key
            .clone()
            .filter(|k| !k.expose_secret().is_empty())
            .ok_or_else(|| Error::Config("WA_API_KEY is required".into()))?;
        let budget = BudgetConfig::from(&self.budget);
        budget.validate()?;
        let retention = RetentionConfig {
            days: self.retention.retention_days,
            interval: Duration::from_secs(self.retention_interval_secs),
        };
        retention.validate()?;
        let canary = self.canary()?;
        // A list must name one cluster's vhost; refused here rather than at the first connect.
        wafleet_shared::amqp::AmqpEndpoints::parse(&self.broker.amqp.amqp_url)
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(WorkerConfig {
            database_url: self.database.database_url,
            amqp_url: self.broker.amqp.amqp_url,
            rabbitmq_api_url: self.broker.rabbitmq_api_url,
            wa_api_key,
            account_policy: AccountPolicy::from_settings(&self.wa_api),
            wa_api_base_url: self.wa_api.wa_api_base_url,
            addr: self.addr,
            pool_size: self.db_pool_size,
            allow_unsafe_db_role: self.database.allow_unsafe_db_role,
            send_timeout: Duration::from_millis(self.wa_api.send_timeout_ms),
            metrics_top_tenants: self.metrics_top_tenants,
            consumer: ConsumerConfig {
                prefetch: self.prefetch,
                tenant_in_flight: self.tenant_in_flight,
                max_in_flight: self.max_in_flight,
                refresh_interval: Duration::from_secs(self.tenant_refresh_secs),
                consumer_check_interval: Duration::from_secs(self.consumer_check_secs as u64),
                retry_tiers,
                publish_timeout: Duration::from_millis(self.publish_timeout_ms),
            },
            process: ProcessConfig {
                bot_timeout: Duration::from_millis(self.bot_timeout_ms),
                reply_ttl: Duration::from_secs(self.reply_ttl_secs),
                stale_after: Duration::from_secs(self.stale_after_secs),
            },
            sender: SenderConfig {
                batch: self.sender_batch,
                stale_sending_after: Duration::from_secs(self.stale_sending_secs),
                concurrency: self.sender_concurrency,
                echo_window: Duration::from_secs(self.sender_echo_window_secs),
                recheck: wafleet_fleet::bridge_recheck::RecheckPolicy {
                    base: Duration::from_secs(self.bridge_recheck_secs),
                    max: Duration::from_secs(self.bridge_recheck_max_secs.max(self.bridge_recheck_secs)),
                },
                db_pool_size: self.sender_db_pool_size,
                claim_lease: Duration::from_secs(self.claim_lease_secs),
                budget,
                ..SenderConfig::default()
            },
            reconciler: ReconcilerConfig {
                sweep_interval: Duration::from_secs(self.unrouted_sweep_secs),
                retention: Duration::from_secs(self.unrouted_retention),
                publish_timeout: Duration::from_millis(self.publish_timeout_ms),
            },
            retention,
            http_bot: HttpBotConfig {
                timeout: Duration::from_millis(self.http_bot_timeout_ms),
                max_response_bytes: self.http_bot_max_response_bytes,
                ports: self.http_bot_ports,
                allow_private: self.http_bot_allow_private,
            },
            canary,
        })
    }

    /// The canary's settings; `None` unless `WAFLEET_CANARY_TENANTS` names a tenant.
    fn canary(&self) -> Result<Option<CanaryConfig>> {
        let Some(raw) = self.canary_tenants.as_deref().filter(|r| !r.trim().is_empty()) else { return Ok(None) };
        let required = |name: &str, value: Option<String>| {
            value
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| Error::Config(format!("{name} is required when WAFLEET_CANARY_TENANTS is set")))
        };
        let signing_key = self.signing.signing_key.as_ref().map(|k| k.expose_secret().to_owned());
        let config = CanaryConfig {
            tenants: crate::canary::parse_tenants(raw)?,
            interval: Duration::from_secs(self.canary_interval_secs),
            ingest_url: required("WAFLEET_CANARY_INGEST_URL", self.canary_ingest_url.clone())?,
            signing_key: SecretString::from(required("WAFLEET_SIGNING_KEY", signing_key)?),
            chat: required("WAFLEET_CANARY_CHAT", self.canary_chat.clone())?,
            timeout: Duration::from_secs(self.canary_timeout_secs),
            require_echo: self.canary_require_echo,
            poll_interval: Duration::from_millis(500),
        };
        config.validate()?;
        Ok(Some(config))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<WorkerArgs, clap::Error> {
        wafleet_shared::settings::try_parse_from(std::iter::once("wafleet-worker").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = parse(&["--wa-api-key", "k"]).unwrap().into_config().unwrap();
        assert_eq!(config.addr.to_string(), "127.0.0.1:8081");
        assert_eq!(
            (config.consumer.prefetch, config.consumer.tenant_in_flight, config.consumer.max_in_flight),
            (8, 4, 64)
        );
        assert_eq!(config.consumer.retry_tiers.len(), 4);
        assert_eq!(config.consumer.publish_timeout, Duration::from_millis(5000));
        assert_eq!((config.sender.concurrency, config.sender.db_pool_size), (4, 3));
        assert_eq!(config.sender.budget, BudgetConfig::default());
        assert_eq!(config.retention, RetentionConfig::default());
        assert_eq!(config.http_bot, HttpBotConfig::default());
        assert!(config.canary.is_none());
    }

    #[test]
    fn help_needs_no_setting() {
        let e = parse(&["--help"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
    }

    #[test]
    fn a_missing_api_key_names_the_variable() {
        let e = parse(&[]).unwrap().into_config().unwrap_err().to_string();
        assert!(e.contains("WA_API_KEY"), "{e}");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (flag, var) in [
            ("--sender-concurrency=0", "WAFLEET_SENDER_CONCURRENCY"),
            ("--sender-db-pool-size=0", "WAFLEET_SENDER_DB_POOL_SIZE"),
            ("--prefetch=0", "WAFLEET_PREFETCH"),
            ("--max-in-flight=x", "WAFLEET_MAX_IN_FLIGHT"),
            ("--http-bot-ports=80,http", "WAFLEET_HTTP_BOT_PORTS"),
            ("--addr=localhost", "WAFLEET_WORKER_ADDR"),
        ] {
            let e = parse(&["--wa-api-key", "k", flag]).unwrap_err().to_string();
            assert!(e.contains(var), "{flag}: {e}");
        }
        let e = parse(&["--wa-api-key", "k", "--retry-tiers", "5x"]).unwrap().into_config().unwrap_err().to_string();
        assert!(e.contains("WAFLEET_RETRY_TIERS"), "{e}");
        let e = parse(&["--wa-api-key", "k", "--canary-tenants", "c1"]).unwrap().into_config().unwrap_err().to_string();
        assert!(e.contains("WAFLEET_CANARY_INGEST_URL"), "{e}");
    }
}

//! The CLI's settings that are not arguments of one command: global flags, each with its
//! environment variable, parsed once with the command line (so `wafleet tenants add ...` runs
//! from the environment alone, and `wafleet --help` lists every variable). The groups shared
//! with the other binaries come from [`wafleet_shared::settings`].

use std::collections::HashMap;
use std::time::Duration;

use clap::Args;
use secrecy::{ExposeSecret as _, SecretString};
use wafleet_fleet::accounts::{AccountPolicy, DirectorySettings};
use wafleet_fleet::audit::Actor;
use wafleet_fleet::budget::BudgetConfig;
use wafleet_fleet::error::{Error, Result};
use wafleet_fleet::service::Endpoints;
use wafleet_fleet::topology::{RetryTier, DEFAULT_TENANT_QUEUE_MAX_BYTES};
use wafleet_shared::config::{DEFAULT_DATABASE_URL, DEFAULT_MIGRATE_DATABASE_URL};
use wafleet_shared::settings::{
    AdminDatabaseSettings, BrokerSettings, BudgetSettings, RetentionSettings, RetrySettings, SigningSettings,
    TelemetrySettings, WaApiSettings,
};

/// Every setting of the CLI (global flags, so they may follow any subcommand).
#[derive(Args, Clone, Debug)]
pub struct Settings {
    /// The administration role's database, which every command but `migrate` uses.
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
    /// The retry tiers `migrate` declares.
    #[command(flatten)]
    pub retry: RetrySettings,
    /// Retention (`retention run` without `--days`).
    #[command(flatten)]
    pub retention: RetentionSettings,
    /// The webhook keyring (`webhook-url`, `provision`, `tenants rotate-url`).
    #[command(flatten)]
    pub signing: SigningSettings,
    /// Logs.
    #[command(flatten)]
    pub telemetry: TelemetrySettings,
    /// `migrate` only: the worker's role (the user of this URL), which `migrate` creates and grants.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true, global = true)]
    pub database_url: String,
    /// Postgres as the owner role, for `migrate` only.
    #[arg(long, env = "MIGRATE_DATABASE_URL", default_value = DEFAULT_MIGRATE_DATABASE_URL,
          hide_env_values = true, global = true)]
    pub migrate_database_url: String,
    /// `migrate`: bound of every tenant queue without an override (`tenants limits --queue-max-bytes`); a full queue refuses publishes.
    #[arg(long, env = "WAFLEET_TENANT_QUEUE_MAX_BYTES", default_value_t = DEFAULT_TENANT_QUEUE_MAX_BYTES,
          value_parser = clap::value_parser!(u64).range(1..), global = true)]
    pub tenant_queue_max_bytes: u64,
    /// Who the audit log records for commands [default: the OS user].
    #[arg(long, env = "WAFLEET_OPERATOR", global = true)]
    pub operator: Option<String>,
}

impl Settings {
    /// The services, as the administration role.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            database_url: self.database.admin_database_url.clone(),
            amqp_url: self.broker.amqp.amqp_url.clone(),
            rabbitmq_api_url: self.broker.rabbitmq_api_url.clone(),
        }
    }

    /// The operator named in the audit log: `WAFLEET_OPERATOR`, else the OS user, else `unknown`.
    pub fn actor(&self) -> Actor {
        // The OS user is the login's identity, not a wafleet setting, so it is read here as a
        // fallback rather than declared as a flag.
        let name = self
            .operator
            .clone()
            .filter(|s| !s.trim().is_empty())
            .or_else(|| {
                ["USER", "LOGNAME", "USERNAME"]
                    .iter()
                    .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
            })
            .unwrap_or_default();
        Actor::operator(&name)
    }

    /// `WAFLEET_SIGNING_KEY`, required by the commands that sign webhook URLs.
    pub fn signing_key(&self) -> Result<SecretString> {
        self.signing
            .signing_key
            .clone()
            .filter(|k| !k.expose_secret().is_empty())
            .ok_or_else(|| Error::Config("WAFLEET_SIGNING_KEY is required to sign webhook URLs".into()))
    }

    /// The default account's budget and the window of every bucket.
    pub fn budget(&self) -> Result<BudgetConfig> {
        let budget = BudgetConfig::from(&self.budget);
        budget.validate()?;
        Ok(budget)
    }

    /// The retry tiers of `WAFLEET_RETRY_TIERS`.
    pub fn retry_tiers(&self) -> Result<Vec<RetryTier>> {
        RetryTier::parse_tiers(&self.retry.retry_tiers)
    }

    /// What `accounts add` may name: `WAFLEET_SECRETS_DIR` and `WAFLEET_WA_API_HOSTS`.
    pub fn account_policy(&self) -> AccountPolicy {
        AccountPolicy::from_settings(&self.wa_api)
    }

    /// How the CLI reaches WA Bridges accounts: `WA_API_BASE_URL`, `WAFLEET_SEND_TIMEOUT_MS`,
    /// `WA_API_KEY` (the default account's key, when set) and the default account's budget.
    pub fn directory_settings(&self) -> Result<DirectorySettings> {
        let mut key_overrides = HashMap::new();
        if let Some(key) = self.wa_api.wa_api_key.clone().filter(|k| !k.expose_secret().is_empty()) {
            key_overrides.insert("env:WA_API_KEY".to_owned(), key);
        }
        Ok(DirectorySettings {
            default_base_url: self.wa_api.wa_api_base_url.clone(),
            key_overrides,
            timeout: Duration::from_millis(self.wa_api.send_timeout_ms),
            budget: self.budget()?,
            policy: self.account_policy(),
        })
    }
}

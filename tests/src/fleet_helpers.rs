//! Helpers for accounts, budget, fair scheduling and lifecycle, over a [`TestEnv`]: the
//! `wafleet` CLI against the environment, key files, queued replies, senders and the lifecycle
//! context for in-process calls.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use wafleet_fleet::service;
use wafleet_fleet::tenant::{BotKind, NewTenant};
use wafleet_shared::topology::QueueType;
use wafleet_shared::{AuthMode, CustomerRef};
use wafleet_worker::sender::SenderConfig;

use crate::{TestEnv, TEST_API_KEY, TEST_SIGNING_KEY};

/// The CLI binary built next to the test binary (`target/debug/wafleet`).
pub fn wafleet_cli_path() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    dir.join("wafleet")
}

/// The account allow-lists of the tests: key files from [`key_file`] (the temp folder) and no
/// https host; the simulator is reached through `WA_API_BASE_URL`, which accounts inherit.
pub fn test_account_policy() -> wafleet_fleet::accounts::AccountPolicy {
    wafleet_fleet::accounts::AccountPolicy::new(std::env::temp_dir(), Vec::new())
}

/// An egress group far above the simulator's (unlimited) default, for suites that are not about
/// the per-IP limit; the budget suite keeps the production group.
pub fn lifted_egress() -> wafleet_fleet::budget::EgressConfig {
    wafleet_fleet::budget::EgressConfig { rate_per_window: 60_000, burst: 1_000, ..Default::default() }
}

/// Writes `key` to a fresh file and returns its path, for `file:` key references.
pub fn key_file(key: &str) -> std::path::PathBuf {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let path = std::env::temp_dir().join(format!("wafleet-test-key-{id}"));
    std::fs::write(&path, format!("{key}\n")).expect("write key file");
    path
}

impl TestEnv {
    /// Runs one statement as the owner (bypasses RLS): for states only an older release could
    /// have written.
    pub async fn owner_exec(&self, sql: &str) {
        sqlx::query(sql).execute(&self.owner_pool).await.expect("owner statement");
    }

    /// Runs the `wafleet` CLI against this environment: its database, broker, simulator (as
    /// `WA_API_BASE_URL` with `WA_API_KEY`), signing key, and `WAFLEET_OPERATOR=test-operator`.
    pub fn wafleet(&self, args: &[&str]) -> std::process::Output {
        let path = wafleet_cli_path();
        assert!(
            path.exists(),
            "{} missing: run `scripts/test.sh`, or `cargo build --workspace --bins` before `cargo test`",
            path.display()
        );
        std::process::Command::new(path)
            .args(args)
            .env("ADMIN_DATABASE_URL", &self.endpoints.database_url)
            .env("DATABASE_URL", &self.worker_url)
            .env("AMQP_URL", &self.amqp_url)
            .env("RABBITMQ_API_URL", &self.endpoints.rabbitmq_api_url)
            .env("WAFLEET_SIGNING_KEY", TEST_SIGNING_KEY)
            .env("WA_API_KEY", TEST_API_KEY)
            .env("WA_API_BASE_URL", self.sim.base_url())
            .env("WAFLEET_OPERATOR", "test-operator")
            // Key files of the tests are written by `key_file` into the temp folder.
            .env("WAFLEET_SECRETS_DIR", std::env::temp_dir())
            .env_remove("WAFLEET_WA_API_HOSTS")
            .env_remove("WAFLEET_ALLOW_UNSAFE_DB_ROLE")
            .output()
            .expect("run wafleet")
    }

    /// The database id of a tenant (owner view).
    pub async fn tenant_id(&self, customer_ref: &str) -> i64 {
        sqlx::query_scalar("select tenant_id from tenants where customer_ref = $1")
            .bind(customer_ref)
            .fetch_one(&self.owner_pool)
            .await
            .expect("tenant id")
    }

    /// Adds a tenant in `account` without touching the simulator.
    pub async fn add_tenant_in(&self, customer_ref: &str, bridge: &str, account: &str) -> anyhow::Result<()> {
        let new = NewTenant {
            customer_ref: CustomerRef::parse(customer_ref)?,
            bridge: bridge.into(),
            bot_kind: BotKind::Echo,
            auth_mode: AuthMode::Token,
            queue_type: QueueType::Quorum,
        };
        service::add_tenant_in_account(&self.admin_pool, &self.endpoints, &new, account).await?;
        Ok(())
    }

    /// Adds an echo tenant whose bridge is its ref, of `queue_type`, through `endpoints` (another
    /// broker user, another node), and points the simulator's bridge at its webhook URL.
    pub async fn add_tenant_through(
        &self,
        endpoints: &service::Endpoints,
        customer_ref: &str,
        queue_type: QueueType,
    ) -> anyhow::Result<String> {
        let new = NewTenant {
            customer_ref: CustomerRef::parse(customer_ref)?,
            bridge: customer_ref.into(),
            bot_kind: BotKind::Echo,
            auth_mode: AuthMode::Token,
            queue_type,
        };
        service::add_tenant(&self.admin_pool, endpoints, &new).await?;
        let url = self.webhook_url(customer_ref).await?;
        self.sim.add_bridge(customer_ref, Some(&url), None);
        Ok(url)
    }

    /// Queues one pending reply per body for `customer_ref` (as the owner: test setup), created
    /// at `created_at` (default: now), expiring after `ttl`. Returns the outbox ids in order.
    pub async fn queue_replies(
        &self,
        customer_ref: &str,
        chat: &str,
        bodies: &[String],
        created_at: Option<chrono::DateTime<chrono::Utc>>,
        ttl: Duration,
    ) -> Vec<i64> {
        let tenant = self.tenant_id(customer_ref).await;
        let created_at = created_at.unwrap_or_else(chrono::Utc::now);
        let expires_at = created_at + chrono::Duration::from_std(ttl).expect("ttl");
        let mut ids = Vec::with_capacity(bodies.len());
        for body in bodies {
            let id: i64 = sqlx::query_scalar(
                "insert into outbox (tenant_id, ingest_id, chat, body, created_at, next_attempt_at, expires_at) \
                 values ($1, gen_random_uuid(), $2, $3, $4, $4, $5) returning outbox_id",
            )
            .bind(tenant)
            .bind(chat)
            .bind(body)
            .bind(created_at)
            .bind(expires_at)
            .fetch_one(&self.owner_pool)
            .await
            .expect("queue reply");
            ids.push(id);
        }
        ids
    }

    /// Account settings resolving `env:WA_API_KEY` to the simulator's default key.
    pub fn directory_settings(
        &self,
        budget: wafleet_fleet::budget::BudgetConfig,
    ) -> wafleet_fleet::accounts::DirectorySettings {
        let mut key_overrides = std::collections::HashMap::new();
        key_overrides.insert("env:WA_API_KEY".to_owned(), SecretString::from(TEST_API_KEY));
        wafleet_fleet::accounts::DirectorySettings {
            default_base_url: self.sim.base_url(),
            key_overrides,
            timeout: Duration::from_secs(3),
            budget,
            policy: test_account_policy(),
        }
    }

    /// A sender with its own pool (a replica of its own) on this environment, with `config`
    /// and, when given, a manual clock.
    pub fn sender(
        &self,
        config: SenderConfig,
        clock: Option<Arc<dyn wafleet_fleet::clock::Clock>>,
    ) -> Arc<wafleet_worker::sender::Sender> {
        let pool = wafleet_fleet::db::app_pool(&self.worker_url, 3).expect("pool");
        let accounts = Arc::new(wafleet_fleet::accounts::AccountDirectory::new(
            pool.clone(),
            self.directory_settings(config.budget.clone()),
        ));
        let sender = wafleet_worker::sender::Sender::new(pool, accounts, config, Arc::new(tokio::sync::Notify::new()));
        Arc::new(match clock {
            Some(clock) => sender.with_clock(clock),
            None => sender,
        })
    }

    /// The lifecycle context for in-process `service` calls, with `budget`.
    pub fn fleet(&self, budget: wafleet_fleet::budget::BudgetConfig) -> service::Fleet {
        let accounts = Arc::new(wafleet_fleet::accounts::AccountDirectory::new(
            self.admin_pool.clone(),
            self.directory_settings(budget),
        ));
        service::Fleet {
            pool: self.admin_pool.clone(),
            accounts,
            endpoints: self.endpoints.clone(),
            clock: Arc::new(wafleet_fleet::clock::DatabaseClock),
            max_budget_wait: Duration::from_secs(60),
        }
    }
}

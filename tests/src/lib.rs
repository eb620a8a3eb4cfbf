//! Test harness for the end-to-end and isolation suites: each [`TestEnv`] gets its own Postgres
//! database, its own RabbitMQ vhost, a WA Bridges simulator on port 0, and in-process ingest and
//! worker instances wired to them. Service URLs come from the environment, else the local services
//! when they answer, else containers on a Docker engine ([`wafleet_test_services`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod events;
pub use events::{message_event, post_json, test_envelope};
pub mod fault_proxy;
mod fleet_helpers;
pub mod poison;

pub use fleet_helpers::{key_file, lifted_egress, test_account_policy, wafleet_cli_path};

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wafleet_fleet::bridge_recheck::RecheckPolicy;
use wafleet_fleet::service::{self, Endpoints};
use wafleet_fleet::tenant::{BotKind, NewTenant};
use wafleet_fleet::topology::RetryTier;
use wafleet_shared::topology::QueueType;
use wafleet_shared::{AuthMode, CustomerRef, Keyring};
use wafleet_sim::{SimConfig, Simulator};
use wafleet_worker::config::WorkerConfig;
use wafleet_worker::consumer::ConsumerConfig;
use wafleet_worker::process::ProcessConfig;
use wafleet_worker::reconciler::ReconcilerConfig;
use wafleet_worker::sender::SenderConfig;

/// Signing key used by every test ingest.
pub const TEST_SIGNING_KEY: &str = "test:0123456789abcdef0123456789abcdef-wafleet";
/// API key the simulator accepts.
pub const TEST_API_KEY: &str = "sk_test_default";

/// Admin Postgres URL (a role that may create databases): `WAFLEET_TEST_PG_ADMIN_URL`, else the
/// local server when it answers, else a container on a Docker engine (see
/// [`wafleet_test_services`]). Resolved once per test binary; panics with what to start when
/// nothing provides it.
pub fn pg_admin_url() -> String {
    wafleet_test_services::postgres().admin_url.clone()
}
/// AMQP base URL without vhost: `WAFLEET_TEST_AMQP_BASE`, else the local broker, else a container.
pub fn amqp_base() -> String {
    wafleet_test_services::rabbitmq().amqp_base.clone()
}
/// Management API URL: `RABBITMQ_API_URL`, else the local broker, else a container.
pub fn rabbit_api() -> String {
    wafleet_test_services::rabbitmq().api_url.clone()
}
/// Postgres' TCP address, for a [`fault_proxy::FaultProxy`] in front of it.
pub fn pg_addr() -> std::net::SocketAddr {
    wafleet_test_services::postgres().socket_addr()
}
/// The broker's AMQP TCP address, for a [`fault_proxy::FaultProxy`] in front of it.
pub fn amqp_addr() -> std::net::SocketAddr {
    wafleet_test_services::rabbitmq().amqp_socket_addr()
}

/// `amqp_base()` with its host and port replaced by a proxy on loopback, and `vhost`.
fn amqp_via(proxy: std::net::SocketAddr, vhost: &str) -> anyhow::Result<String> {
    let mut u = url::Url::parse(&amqp_base())?;
    u.set_ip_host(proxy.ip()).map_err(|_| anyhow::anyhow!("amqp url host"))?;
    u.set_port(Some(proxy.port())).map_err(|_| anyhow::anyhow!("amqp url port"))?;
    Ok(format!("{}/{vhost}", u.as_str().trim_end_matches('/')))
}

/// A comma-separated `AMQP_URL` of `nodes`, each with `vhost`.
pub fn amqp_list(nodes: &[std::net::SocketAddr], vhost: &str) -> anyhow::Result<String> {
    Ok(nodes.iter().map(|node| amqp_via(*node, vhost)).collect::<anyhow::Result<Vec<_>>>()?.join(","))
}

fn with_database(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("postgres url");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// Installs a process-wide Prometheus recorder once and returns its handle, so tests can read
/// counters.
pub fn metrics_handle() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Through libtest's capture, so passing tests stay quiet; RUST_LOG overrides.
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,lapin=off"));
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
            wafleet_shared::telemetry::install_metrics().expect("metrics recorder")
        })
        .clone()
}

/// Sums the samples of `name` whose labels contain every `label=value` pair in `labels`.
pub fn counter_value(name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = metrics_handle().render();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One isolated environment: database, vhost, simulator, ingest and worker.
pub struct TestEnv {
    /// Unique name of the database and vhost.
    pub name: String,
    /// Pool as the administration role (what the CLI and the admin API act as).
    pub admin_pool: PgPool,
    /// Pool as the worker's role.
    pub worker_pool: PgPool,
    /// The worker's `DATABASE_URL` (the in-process worker may go through a proxy instead).
    pub worker_url: String,
    /// Pool as the owner (for assertions only; bypasses RLS).
    pub owner_pool: PgPool,
    /// Endpoints for `service` calls.
    pub endpoints: Endpoints,
    /// Owner URL of the test database.
    pub owner_url: String,
    /// The simulator.
    pub sim: Simulator,
    /// Base URL of ingest's webhook port.
    pub ingest_url: String,
    /// Base URL of ingest's ops port (`/healthz`, `/readyz`, `/spoolz`, `/metrics`).
    pub ingest_ops_url: String,
    /// The AMQP URL with this env's vhost.
    pub amqp_url: String,
    shutdown: CancellationToken,
    worker_stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    worker: Option<JoinHandle<()>>,
    /// The in-process worker's configuration (tests may adjust it before `start_worker`).
    pub worker_config: WorkerConfig,
    bots: Arc<dyn wafleet_worker::bots::BotFactory>,
}

/// Options of a test environment.
#[derive(Clone, Default)]
pub struct EnvOptions {
    /// Do not start the worker (tests that start it later).
    pub no_worker: bool,
    /// Accept the open webhook route.
    pub open_webhook: bool,
    /// Simulator config (defaults to unlimited).
    pub sim: Option<SimConfig>,
    /// Bot timeout.
    pub bot_timeout: Option<Duration>,
    /// Bots to run instead of the built-ins (to inject panics or hangs).
    pub bots: Option<Arc<dyn wafleet_worker::bots::BotFactory>>,
    /// Route the worker's Postgres connections through this proxy (outage tests).
    pub worker_db_via: Option<std::net::SocketAddr>,
    /// Route the worker's AMQP connections through this proxy (outage tests).
    pub worker_amqp_via: Option<std::net::SocketAddr>,
    /// Create the database on this Postgres (an admin URL, e.g. through a switch in front of a
    /// primary and its standby) instead of the shared one.
    pub pg_admin_url: Option<String>,
    /// Ingest's `AMQP_URL` as a list of these nodes (cluster and endpoint-list tests).
    pub ingest_amqp_nodes: Option<Vec<std::net::SocketAddr>>,
    /// The worker's `AMQP_URL` as a list of these nodes (cluster and endpoint-list tests).
    pub worker_amqp_nodes: Option<Vec<std::net::SocketAddr>>,
    /// Ingest body deadline instead of the default 5 s (slowloris tests).
    pub ingest_body_timeout: Option<Duration>,
    /// Route ingest's AMQP connection through this proxy (broker outage tests).
    pub ingest_amqp_via: Option<std::net::SocketAddr>,
    /// Ingest's per-tenant share of the spool instead of the default (flood tests).
    pub ingest_spool_tenant_max_bytes: Option<u64>,
    /// The `http` bot's client settings instead of the production defaults (tests with a local
    /// bot set `allow_private` and their bot's port; the SSRF tests leave `allow_private` off).
    pub http_bot: Option<wafleet_worker::bots::HttpBotConfig>,
}

impl TestEnv {
    /// A fresh environment with defaults.
    pub async fn new() -> anyhow::Result<Self> {
        Self::with(EnvOptions::default()).await
    }

    /// A fresh environment.
    // layout: starts the whole stack in dependency order (database, broker, simulator, ingest,
    // worker), each EnvOptions knob applied at its step; the locals flow from step to step.
    pub async fn with(options: EnvOptions) -> anyhow::Result<Self> {
        metrics_handle();
        // The tail of a UUIDv7 is random; its head is a timestamp shared by parallel tests.
        let id = uuid::Uuid::now_v7().simple().to_string();
        let name = format!("wf_t_{}", &id[id.len() - 14..]);
        let admin_url = options.pg_admin_url.clone().unwrap_or_else(pg_admin_url);
        let admin = PgPoolOptions::new().max_connections(1).connect(&admin_url).await.context(
            "cannot reach Postgres: start it or set WAFLEET_TEST_PG_ADMIN_URL (see docs/testing.md, Running the tests)",
        )?;
        sqlx::query(&format!("create database {name}")).execute(&admin).await?;
        admin.close().await;
        let owner_url = with_database(&admin_url, &name);
        let worker_url = as_role(&owner_url, wafleet_fleet::db::Duty::Worker.default_role())?;
        let admin_url = as_role(&owner_url, wafleet_fleet::db::Duty::Admin.default_role())?;
        let amqp_url = format!("{}/{name}", amqp_base());
        let endpoints =
            Endpoints { database_url: admin_url.clone(), amqp_url: amqp_url.clone(), rabbitmq_api_url: rabbit_api() };
        endpoints.management()?.create_vhost("guest").await.context(
            "cannot create a vhost: is rabbitmq_management enabled? (rabbitmq-plugins enable rabbitmq_management)",
        )?;
        let tiers = wafleet_fleet::topology::RetryTier::parse_tiers(wafleet_fleet::topology::DEFAULT_RETRY_TIERS)?;
        let roles = wafleet_fleet::db::DutyRoles::from_urls(&worker_url, &admin_url)?;
        service::migrate(&owner_url, &roles, &endpoints, &tiers).await.context("migrate")?;
        let admin_pool = wafleet_fleet::db::app_pool(&admin_url, 5)?;
        let worker_pool = wafleet_fleet::db::app_pool(&worker_url, 3)?;
        let owner_pool = PgPoolOptions::new().max_connections(2).connect(&owner_url).await?;

        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let sim_config = options.sim.clone().unwrap_or(SimConfig {
            api_keys: vec![TEST_API_KEY.into()],
            unlimited: true,
            ..SimConfig::default()
        });
        let (sim, sim_task) = Simulator::start(sim_config, "127.0.0.1:0".parse()?).await?;
        tasks.push(sim_task);

        let keyring = Keyring::parse(&SecretString::from(TEST_SIGNING_KEY))?;
        let mut ingest_config = wafleet_ingest::config::Config::new(keyring);
        ingest_config.amqp_url = SecretString::from(match (options.ingest_amqp_via, &options.ingest_amqp_nodes) {
            (Some(proxy), _) => amqp_via(proxy, &name)?,
            (None, Some(nodes)) => amqp_list(nodes, &name)?,
            (None, None) => amqp_url.clone(),
        });
        ingest_config.addr = "127.0.0.1:0".parse()?;
        ingest_config.ops_addr = "127.0.0.1:0".parse()?;
        ingest_config.open_webhook = options.open_webhook;
        ingest_config.ready_recheck = Duration::from_millis(200);
        // The spool is on in production; every environment gets its own folder.
        let spool_dir = std::env::temp_dir().join(format!("wafleet-spool-{name}"));
        ingest_config.spool_enabled = true;
        ingest_config.spool_dir = spool_dir.clone();
        if let Some(timeout) = options.ingest_body_timeout {
            ingest_config.body_timeout = timeout;
        }
        ingest_config.spool_tenant_max_bytes = options.ingest_spool_tenant_max_bytes;
        let ingest = wafleet_ingest::startup::Application::build(ingest_config).await?;
        let ingest_url = format!("http://127.0.0.1:{}", ingest.port());
        let ingest_ops_url = format!("http://127.0.0.1:{}", ingest.ops_port());
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let _ = ingest.run_until_stopped(stop).await;
        }));

        let worker_database_url = match options.worker_db_via {
            Some(proxy) => {
                let mut u = url::Url::parse(&worker_url)?;
                u.set_ip_host(proxy.ip()).map_err(|_| anyhow::anyhow!("url"))?;
                u.set_port(Some(proxy.port())).map_err(|_| anyhow::anyhow!("url"))?;
                u.to_string()
            }
            None => worker_url.clone(),
        };
        let worker_amqp_url = match (options.worker_amqp_via, &options.worker_amqp_nodes) {
            (Some(proxy), _) => amqp_via(proxy, &name)?,
            (None, Some(nodes)) => amqp_list(nodes, &name)?,
            (None, None) => amqp_url.clone(),
        };
        let worker_config = WorkerConfig {
            database_url: worker_database_url,
            amqp_url: worker_amqp_url,
            rabbitmq_api_url: rabbit_api(),
            wa_api_key: SecretString::from(TEST_API_KEY),
            wa_api_base_url: sim.base_url(),
            account_policy: fleet_helpers::test_account_policy(),
            addr: "127.0.0.1:0".parse()?,
            pool_size: 5,
            allow_unsafe_db_role: false,
            send_timeout: Duration::from_secs(3),
            metrics_top_tenants: 50,
            consumer: ConsumerConfig {
                refresh_interval: Duration::from_secs(2),
                consumer_check_interval: Duration::from_secs(1),
                // Short tiers keep retry tests fast; production defaults are 5s,30s,2m,10m.
                retry_tiers: RetryTier::parse_list("100ms,200ms,300ms")?,
                ..ConsumerConfig::default()
            },
            process: ProcessConfig {
                bot_timeout: options.bot_timeout.unwrap_or(Duration::from_secs(5)),
                ..ProcessConfig::default()
            },
            sender: SenderConfig {
                poll_interval: Duration::from_millis(100),
                // Room for the simulator's from_me echo to come back; short for the 503 tests.
                echo_window: Duration::from_secs(3),
                recheck: RecheckPolicy { base: Duration::from_secs(1), max: Duration::from_secs(2) },
                // Lifted (the simulator is unlimited); the budget suites set production values.
                budget: wafleet_fleet::budget::BudgetConfig {
                    rate_per_window: 60_000,
                    burst: 1_000,
                    egress: fleet_helpers::lifted_egress(),
                    ..Default::default()
                },
                ..SenderConfig::default()
            },
            reconciler: ReconcilerConfig { sweep_interval: Duration::from_millis(500), ..ReconcilerConfig::default() },
            retention: wafleet_fleet::retention::RetentionConfig::default(),
            http_bot: options.http_bot.clone().unwrap_or_default(),
            canary: None,
        };
        let mut env = Self {
            name,
            admin_pool,
            worker_pool,
            worker_url,
            owner_pool,
            endpoints,
            owner_url,
            sim,
            ingest_url,
            ingest_ops_url,
            amqp_url,
            worker_stop: shutdown.child_token(),
            shutdown,
            tasks,
            worker: None,
            worker_config,
            bots: options.bots.clone().unwrap_or_else(|| Arc::new(wafleet_worker::bots::BuiltinBots)),
        };
        env.wait_ingest_ready().await?;
        if !options.no_worker {
            env.start_worker().await?;
        }
        Ok(env)
    }

    /// The duty roles this environment migrated with.
    pub fn roles(&self) -> wafleet_fleet::db::DutyRoles {
        wafleet_fleet::db::DutyRoles::from_urls(&self.worker_url, &self.endpoints.database_url)
            .expect("the roles parsed at start")
    }

    async fn wait_ingest_ready(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let url = format!("{}/readyz", self.ingest_ops_url);
        wait_until(Duration::from_secs(20), || async {
            client.get(&url).send().await.map(|r| r.status().is_success()).unwrap_or(false)
        })
        .await
        .context("ingest never became ready")
    }

    /// Starts (or restarts) the in-process worker.
    pub async fn start_worker(&mut self) -> anyhow::Result<()> {
        self.worker_stop = self.shutdown.child_token();
        let app = wafleet_worker::startup::Application::build_with_bots(
            self.worker_config.clone(),
            Some(metrics_handle()),
            self.bots.clone(),
        )
        .await?;
        let stop = self.worker_stop.clone();
        self.worker = Some(tokio::spawn(async move {
            let _ = app.run_until_stopped(stop).await;
        }));
        Ok(())
    }

    /// Stops the in-process worker and waits for it to finish.
    pub async fn stop_worker(&mut self) {
        self.worker_stop.cancel();
        if let Some(w) = self.worker.take() {
            let _ = w.await;
        }
    }

    /// Adds a tenant with an `echo` bot on bridge `bridge`, registers the bridge at the
    /// simulator with the tenant's signed webhook URL, and returns that URL.
    pub async fn add_tenant(&self, customer_ref: &str, bridge: &str) -> anyhow::Result<String> {
        self.add_tenant_with(customer_ref, bridge, BotKind::Echo, AuthMode::Token).await
    }

    /// Adds a tenant with the given bot and auth mode.
    pub async fn add_tenant_with(
        &self,
        customer_ref: &str,
        bridge: &str,
        bot: BotKind,
        auth: AuthMode,
    ) -> anyhow::Result<String> {
        let new = NewTenant {
            customer_ref: CustomerRef::parse(customer_ref)?,
            bridge: bridge.into(),
            bot_kind: bot,
            auth_mode: auth,
            queue_type: QueueType::Quorum,
        };
        service::add_tenant(&self.admin_pool, &self.endpoints, &new).await?;
        let url = self.webhook_url(customer_ref).await?;
        self.sim.add_bridge(bridge, Some(&url), None);
        Ok(url)
    }

    /// The tenant's current signed webhook URL.
    pub async fn webhook_url(&self, customer_ref: &str) -> anyhow::Result<String> {
        let (url, _) = service::webhook_url(
            &self.admin_pool,
            &SecretString::from(TEST_SIGNING_KEY),
            &CustomerRef::parse(customer_ref)?,
            &self.ingest_url,
        )
        .await?;
        Ok(url)
    }

    /// Count of rows in `table` for all tenants (owner view, bypasses RLS).
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql).fetch_one(&self.owner_pool).await.expect("count query")
    }

    /// Waits until the tenant queues and the outbox are drained and no reply is pending.
    pub async fn wait_idle(&self, expected_processed: i64) -> anyhow::Result<()> {
        wait_until(Duration::from_secs(30), || async {
            let processed = self.count("select count(*) from processed_events").await;
            let pending = self.count("select count(*) from outbox where status in ('pending','sending')").await;
            processed >= expected_processed && pending == 0
        })
        .await
        .with_context(|| format!("not idle: expected {expected_processed} processed events"))
    }

    /// Tears everything down: tasks, database and vhost.
    pub async fn cleanup(mut self) {
        self.stop_worker().await;
        self.shutdown.cancel();
        self.sim.shutdown();
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        self.admin_pool.close().await;
        self.worker_pool.close().await;
        self.owner_pool.close().await;
        if let Ok(admin) = PgPoolOptions::new().max_connections(1).connect(&pg_admin_url()).await {
            let _ = sqlx::query(&format!("drop database if exists {} with (force)", self.name)).execute(&admin).await;
        }
        if let Ok(m) = self.endpoints.management() {
            let _ = m.delete_vhost().await;
        }
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("wafleet-spool-{}", self.name)));
    }
}

impl TestEnv {
    /// Publishes raw bytes to `exchange` with confirms, as guest, bypassing ingest.
    pub async fn publish_raw(&self, exchange: &str, routing_key: &str, bytes: &[u8]) {
        let conn = wafleet_shared::amqp::connect(&self.amqp_url, "test").await.expect("amqp");
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(Default::default()).await.expect("confirms");
        let properties = lapin::BasicProperties::default().with_delivery_mode(2);
        ch.basic_publish(exchange, routing_key, lapin::options::BasicPublishOptions::default(), bytes, properties)
            .await
            .expect("publish")
            .await
            .expect("confirm");
        let _ = conn.close(200, "done").await;
    }

    /// Ready messages in `queue` (0 when the queue does not exist).
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        let conn = wafleet_shared::amqp::connect(&self.amqp_url, "test").await.expect("amqp");
        let ch = conn.create_channel().await.expect("channel");
        let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        let q = ch.queue_declare(queue, passive, lapin::types::FieldTable::default()).await;
        let _ = conn.close(200, "done").await;
        q.map(|q| q.message_count()).unwrap_or(0)
    }
}

/// Polls `check` every 50 ms until it is true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `url` with `role` as its user and no password (the local test cluster trusts loopback).
pub fn as_role(url: &str, role: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(url)?;
    url.set_username(role).map_err(|_| anyhow::anyhow!("url"))?;
    url.set_password(None).map_err(|_| anyhow::anyhow!("url"))?;
    Ok(url.to_string())
}

//! Worker startup: build every part, serve health and metrics, run until cancelled.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bots::{BotFactory, BuiltinBots};
use crate::config::WorkerConfig;
use crate::consumer::ConsumerSupervisor;
use crate::process::Processor;
use crate::reconciler;
use crate::sender::Sender;
use wafleet_fleet::error::{Result, SetupError};
use wafleet_fleet::labels::TenantLabels;
use wafleet_fleet::{db, topology};

/// A built worker, bound to its health port.
pub struct Application {
    listener: tokio::net::TcpListener,
    pool: PgPool,
    supervisor: Arc<ConsumerSupervisor>,
    sender: Arc<Sender>,
    config: WorkerConfig,
    metrics: Option<PrometheusHandle>,
}

#[derive(Clone)]
struct HealthState {
    pool: PgPool,
    supervisor: Arc<ConsumerSupervisor>,
    metrics: Option<PrometheusHandle>,
}

impl Application {
    /// Checks the database role, builds the pool, client, processor and sender, and binds.
    pub async fn build(config: WorkerConfig, metrics: Option<PrometheusHandle>) -> Result<Self> {
        Self::build_with_bots(config, metrics, Arc::new(BuiltinBots)).await
    }

    /// Like [`Application::build`], with the bots made by `bots` (tests inject failing bots).
    pub async fn build_with_bots(
        config: WorkerConfig,
        metrics: Option<PrometheusHandle>,
        bots: Arc<dyn BotFactory>,
    ) -> Result<Self> {
        let pool = db::app_pool(&config.database_url, config.pool_size)?;
        db::check_role(&pool, db::Duty::Worker, config.allow_unsafe_db_role).await?;
        // The drop counter starts at 0 for every reason, so the first drop after a start shows
        // in `rate()` (a series that appears at 1 has no earlier sample to differ from).
        for rejection in wafleet_fleet::tenant::Rejection::ALL {
            metrics::counter!(crate::metric::WORKER_DROPPED_TOTAL, "reason" => rejection.as_str()).increment(0);
        }
        let outbox_ready = Arc::new(Notify::new());
        let labels = Arc::new(TenantLabels::new(config.metrics_top_tenants, std::time::Duration::from_secs(15 * 60)));
        // One SSRF-guarded client for every tenant's `http` bot, built once here.
        let http_bot = crate::bots::HttpBotClient::new(&config.http_bot)?;
        let processor =
            Processor::new(pool.clone(), config.process.clone(), outbox_ready.clone(), bots, labels.clone())
                .with_http_bot_client(http_bot);
        let supervisor = Arc::new(ConsumerSupervisor::new(
            config.amqp_url.clone(),
            pool.clone(),
            processor,
            config.consumer.clone(),
        ));
        // One send loop per WA Bridges account, each under its account's budget.
        let mut key_overrides = std::collections::HashMap::new();
        key_overrides.insert("env:WA_API_KEY".to_owned(), config.wa_api_key.clone());
        let directory = wafleet_fleet::accounts::DirectorySettings {
            default_base_url: config.wa_api_base_url.clone(),
            key_overrides,
            timeout: config.send_timeout,
            budget: config.sender.budget.clone(),
            policy: config.account_policy.clone(),
        };
        let sender = Sender::for_worker(&config.database_url, directory, config.sender.clone(), outbox_ready)?;
        let sender = Arc::new(sender.with_labels(labels));
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|source| SetupError::Bind { addr: config.addr, source })?;
        Ok(Self { listener, pool, supervisor, sender, config, metrics })
    }

    /// The bound health/metrics port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a: SocketAddr| a.port()).unwrap_or(0)
    }

    /// Runs consumers, sender and the health server until `shutdown` fires.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<()> {
        self.warn_if_policies_missing().await;
        let tenants_changed = Arc::new(Notify::new());
        let unrouted_sweep = Arc::new(Notify::new());
        tokio::spawn(listen_for_tenant_changes(
            self.config.database_url.clone(),
            vec![tenants_changed.clone(), unrouted_sweep.clone()],
            shutdown.clone(),
        ));
        let reconciler = tokio::spawn(reconciler::run(
            self.config.database_url.clone(),
            self.pool.clone(),
            self.config.amqp_url.clone(),
            self.config.reconciler.clone(),
            unrouted_sweep,
            shutdown.clone(),
        ));
        let consumers = tokio::spawn(self.supervisor.clone().run(shutdown.clone(), tenants_changed));
        let sender = tokio::spawn(self.sender.clone().run(shutdown.clone()));
        // Every replica runs retention; an advisory lock lets one run at a time.
        let retention = tokio::spawn(wafleet_fleet::retention::run_periodically(
            self.pool.clone(),
            self.config.database_url.clone(),
            self.config.retention.clone(),
            shutdown.clone(),
        ));
        // The isolation canary, if configured; an advisory lock lets one replica run it.
        let canary = self.config.canary.clone().map(|config| {
            tokio::spawn(crate::canary::run(
                self.config.database_url.clone(),
                self.pool.clone(),
                config,
                shutdown.clone(),
            ))
        });
        let state = HealthState { pool: self.pool.clone(), supervisor: self.supervisor.clone(), metrics: self.metrics };
        let router = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(render_metrics))
            .with_state(state);
        let stop = shutdown.clone();
        axum::serve(self.listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .map_err(SetupError::HealthServer)?;
        let _ = consumers.await;
        let _ = sender.await;
        let _ = retention.await;
        let _ = reconciler.await;
        if let Some(canary) = canary {
            let _ = canary.await;
        }
        self.sender.close().await;
        self.pool.close().await;
        info!("worker stopped");
        Ok(())
    }

    async fn warn_if_policies_missing(&self) {
        let vhost = wafleet_shared::amqp::vhost_of(&self.config.amqp_url);
        let check = match topology::Management::new(&self.config.rabbitmq_api_url, &vhost) {
            Ok(m) => m.policies_present().await,
            Err(e) => Err(e),
        };
        match check {
            Ok(true) => {}
            Ok(false) => warn!(
                "tenant queue policy {} is missing: dead-lettering, delivery limit and overflow are not set. Run `wafleet migrate`",
                topology::TENANT_POLICY
            ),
            Err(e) => warn!(error = %e, "could not check broker policies through RABBITMQ_API_URL"),
        }
    }
}

async fn readyz(State(state): State<HealthState>) -> (StatusCode, &'static str) {
    if sqlx::query("select 1").execute(&state.pool).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "database unreachable");
    }
    // Ready once the broker session is up and the tenant list was read; a fleet with no
    // tenants yet is still ready (a fresh install must be able to roll out).
    if !state.supervisor.session_up.load(std::sync::atomic::Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not consuming: broker or database unavailable");
    }
    (StatusCode::OK, "ready")
}

async fn render_metrics(State(state): State<HealthState>) -> String {
    state.metrics.as_ref().map(PrometheusHandle::render).unwrap_or_default()
}

/// LISTENs on `wafleet_tenants` on a direct connection (not through a transaction pooler,
/// which would drop the LISTEN) and wakes the consumer refresh on every change.
async fn listen_for_tenant_changes(database_url: String, changed: Vec<Arc<Notify>>, shutdown: CancellationToken) {
    let notify_all = || changed.iter().for_each(|n| n.notify_one());
    let mut delay = std::time::Duration::from_millis(500);
    // A one-connection pool of its own, made like every other (db::connect_options: the URL's
    // sslmode and sslrootcert, TLS required off loopback); PgListener::connect would bypass that.
    let pool = match db::app_pool(&database_url, 1) {
        Ok(pool) => pool,
        Err(e) => return warn!(error = %e, "tenant change listener: bad DATABASE_URL"),
    };
    while !shutdown.is_cancelled() {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen("wafleet_tenants").await?;
            notify_all();
            loop {
                listener.recv().await?;
                notify_all();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = listener => if let Err(e) = result { warn!(error = %e, "tenant change listener failed; reconnecting") },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(10));
    }
}

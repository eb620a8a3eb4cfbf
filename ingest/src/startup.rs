//! Wiring: bind the listener, open the spool, start the publisher and the drain, build the
//! router, run until told to stop.
//!
//! This module owns the lifecycle and its order on shutdown: stop accepting, let in-flight
//! requests finish (they may still be publishing or spooling), stop the spool writer (everything
//! acknowledged is already fsynced), drain the spool for a bounded time, then close the broker
//! connection. It must not read the environment or install global telemetry; `main` does both.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::Config;
use crate::metric;
use crate::publisher::{LapinPublisher, Publisher};
use crate::routes::{router, AppState};
use crate::spool::Spool;
use wafleet_shared::server::ServerLimits;

/// A bound, ready-to-run ingest server.
pub struct Application {
    listener: TcpListener,
    router: Router,
    port: u16,
    /// Stops the publisher's supervisor when the application ends or is dropped unrun.
    publisher_stop: DropGuard,
    supervisor: Option<JoinHandle<()>>,
    spool: Option<SpoolRuntime>,
    limits: ServerLimits,
}

/// The open spool and its drain task.
struct SpoolRuntime {
    spool: Spool,
    drain: JoinHandle<()>,
    /// Stops the drain when the application ends or is dropped unrun.
    drain_stop: DropGuard,
    shutdown_drain: Duration,
}

impl Application {
    /// Binds `config.addr` and starts the RabbitMQ publisher; `/metrics` renders empty.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_metrics(config, None).await
    }

    /// Like [`Application::build`], with `/metrics` rendered from `metrics`.
    pub async fn build_with_metrics(config: Config, metrics: Option<PrometheusHandle>) -> anyhow::Result<Self> {
        let listener = bind(&config).await?;
        // Before the publisher: a spool that cannot open (locked, unreadable) stops startup.
        let spool = open_spool(&config).await?;
        let stop = CancellationToken::new();
        // The publisher connects in the background: ingest starts (not ready) while the broker is down.
        let (publisher, supervisor) = LapinPublisher::start(&config, stop.clone());
        Ok(Self::assemble(&config, listener, publisher, spool, metrics, stop, Some(supervisor)))
    }

    /// Binds `config.addr` and publishes through `publisher` (a fake in tests).
    pub async fn build_with_publisher(
        config: Config,
        publisher: Arc<dyn Publisher>,
        metrics: Option<PrometheusHandle>,
    ) -> anyhow::Result<Self> {
        let listener = bind(&config).await?;
        let spool = open_spool(&config).await?;
        Ok(Self::assemble(&config, listener, publisher, spool, metrics, CancellationToken::new(), None))
    }

    fn assemble(
        config: &Config,
        listener: TcpListener,
        publisher: Arc<dyn Publisher>,
        spool: Option<Spool>,
        metrics: Option<PrometheusHandle>,
        stop: CancellationToken,
        supervisor: Option<JoinHandle<()>>,
    ) -> Self {
        metric::describe();
        let port = listener.local_addr().map(|addr| addr.port()).unwrap_or_default();
        let state = AppState::new(config, Arc::clone(&publisher), metrics);
        let (state, spool) = match spool {
            None => (state, None),
            Some(spool) => {
                let drain_stop = CancellationToken::new();
                let drain = spool.start_drain(publisher, config.publish_timeout, drain_stop.clone());
                let shutdown_drain = config.shutdown_drain;
                let runtime =
                    SpoolRuntime { spool: spool.clone(), drain, drain_stop: drain_stop.drop_guard(), shutdown_drain };
                (state.with_spool(spool), Some(runtime))
            }
        };
        let router = router(state);
        let limits = ServerLimits {
            header_read_timeout: config.header_timeout,
            max_connections: config.max_connections,
            // Longer than any request can take: body timeout plus the publish deadline and an fsync.
            drain_timeout: config.body_timeout + config.publish_timeout + std::time::Duration::from_secs(5),
        };
        Self { listener, router, port, publisher_stop: stop.drop_guard(), supervisor, spool, limits }
    }

    /// The bound port (useful when `addr` asked for port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The open spool, when enabled.
    pub fn spool(&self) -> Option<&Spool> {
        self.spool.as_ref().map(|runtime| &runtime.spool)
    }

    /// Serves until `shutdown` fires, then drains in-flight requests, stops the spool (draining
    /// it for at most `shutdown_drain`) and closes the broker connection.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self { listener, router, port, publisher_stop, supervisor, spool, limits } = self;
        tracing::info!(port, "ingest listening");
        wafleet_shared::server::serve(listener, move |_| router.clone(), limits, shutdown).await;
        let served: anyhow::Result<()> = Ok(());
        if let Some(spool) = spool {
            spool.stop().await?;
        }
        tracing::info!("HTTP server stopped; closing the broker connection");
        drop(publisher_stop);
        if let Some(supervisor) = supervisor {
            supervisor.await.context("publisher supervisor panicked")?;
        }
        served
    }
}

impl SpoolRuntime {
    async fn stop(self) -> anyhow::Result<()> {
        let Self { spool, drain, drain_stop, shutdown_drain } = self;
        // No request is in flight any more, so this only seals the active segment.
        spool.close().await;
        let records = spool.status().records;
        if records > 0 && !shutdown_drain.is_zero() {
            tracing::info!(records, "draining the spool before exit");
            spool.wait_until_empty(shutdown_drain).await;
        }
        drain_stop.disarm().cancel();
        drain.await.context("spool drain panicked")?;
        let left = spool.status().records;
        if left > 0 {
            tracing::warn!(records = left, dir = %spool.dir().display(), "spool not empty at exit; drained at next start");
        }
        spool.release();
        Ok(())
    }
}

/// Opens the spool when enabled. Recovery reads every segment, so it runs off the runtime.
async fn open_spool(config: &Config) -> anyhow::Result<Option<Spool>> {
    if !config.spool_enabled {
        return Ok(None);
    }
    let settings = config.spool_settings();
    let dir = settings.dir.display().to_string();
    let spool = tokio::task::spawn_blocking(move || Spool::open(&settings))
        .await
        .context("spool recovery panicked")?
        .with_context(|| format!("cannot open the spool at {dir}"))?;
    tracing::info!(dir, records = spool.status().records, "spool open");
    Ok(Some(spool))
}

async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    TcpListener::bind(config.addr).await.with_context(|| format!("cannot listen on {}", config.addr))
}

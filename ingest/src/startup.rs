//! Wiring: bind the webhook and ops listeners, open the spool, start the publisher and the drain,
//! build the routers, run until told to stop.
//!
//! This module owns the lifecycle and its order on shutdown: stop accepting webhooks, let
//! in-flight requests finish (they may still be publishing or spooling), stop the spool writer
//! (everything acknowledged is already fsynced), drain the spool for a bounded time, close the
//! broker connection, and only then stop the ops listener (probes and `/spoolz` answer until the
//! end). Both ports are bound before the spool is read back, but nothing is served until that
//! replay is done: a startup probe on the ops port must allow for it. It must not read the environment or install global telemetry; `main` does both.

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
use crate::routes::{ops_router, router, AppState};
use crate::spool::Spool;
use wafleet_shared::server::ServerLimits;

/// A bound, ready-to-run ingest server.
pub struct Application {
    listener: TcpListener,
    router: Router,
    port: u16,
    ops_listener: TcpListener,
    ops_router: Router,
    ops_port: u16,
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
    /// Binds `config.addr` and `config.ops_addr` and starts the RabbitMQ publisher; `/metrics`
    /// renders empty.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_metrics(config, None).await
    }

    /// Like [`Application::build`], with `/metrics` rendered from `metrics`.
    pub async fn build_with_metrics(config: Config, metrics: Option<PrometheusHandle>) -> anyhow::Result<Self> {
        let listeners = bind(&config).await?;
        // Before the publisher: a spool that cannot open (locked, unreadable) stops startup.
        let spool = open_spool(&config).await?;
        let stop = CancellationToken::new();
        // The publisher connects in the background: ingest starts (not ready) while the broker is down.
        let (publisher, supervisor) = LapinPublisher::start(&config, stop.clone());
        Ok(Self::assemble(&config, listeners, publisher, spool, metrics, stop, Some(supervisor)))
    }

    /// Binds both addresses and publishes through `publisher` (a fake in tests).
    pub async fn build_with_publisher(
        config: Config,
        publisher: Arc<dyn Publisher>,
        metrics: Option<PrometheusHandle>,
    ) -> anyhow::Result<Self> {
        let listeners = bind(&config).await?;
        let spool = open_spool(&config).await?;
        Ok(Self::assemble(&config, listeners, publisher, spool, metrics, CancellationToken::new(), None))
    }

    fn assemble(
        config: &Config,
        (listener, ops_listener): (TcpListener, TcpListener),
        publisher: Arc<dyn Publisher>,
        spool: Option<Spool>,
        metrics: Option<PrometheusHandle>,
        stop: CancellationToken,
        supervisor: Option<JoinHandle<()>>,
    ) -> Self {
        metric::describe();
        let port = listener.local_addr().map(|addr| addr.port()).unwrap_or_default();
        let ops_port = ops_listener.local_addr().map(|addr| addr.port()).unwrap_or_default();
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
        let ops_router = ops_router(state.clone());
        let router = router(state);
        let limits = ServerLimits {
            header_read_timeout: config.header_timeout,
            max_connections: config.max_connections,
            // Longer than any request can take: body timeout plus the publish deadline and an fsync.
            drain_timeout: config.body_timeout + config.publish_timeout + std::time::Duration::from_secs(5),
        };
        Self {
            listener,
            router,
            port,
            ops_listener,
            ops_router,
            ops_port,
            publisher_stop: stop.drop_guard(),
            supervisor,
            spool,
            limits,
        }
    }

    /// The bound port (useful when `addr` asked for port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bound ops port (health, readiness, spool status, metrics).
    pub fn ops_port(&self) -> u16 {
        self.ops_port
    }

    /// The open spool, when enabled.
    pub fn spool(&self) -> Option<&Spool> {
        self.spool.as_ref().map(|runtime| &runtime.spool)
    }

    /// Serves until `shutdown` fires, then drains in-flight requests, stops the spool (draining
    /// it for at most `shutdown_drain`) and closes the broker connection.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            listener,
            router,
            port,
            ops_listener,
            ops_router,
            ops_port,
            publisher_stop,
            supervisor,
            spool,
            limits,
        } = self;
        tracing::info!(port, ops_port, "ingest listening");
        // The ops listener outlives the webhook one: a preStop hook polling `/spoolz` and the
        // probes keep their answers while the spool drains on the way out.
        let ops_stop = CancellationToken::new();
        let ops = tokio::spawn(wafleet_shared::server::serve(
            ops_listener,
            move |_| ops_router.clone(),
            limits,
            ops_stop.clone(),
        ));
        let _ops_stop = ops_stop.clone().drop_guard();
        wafleet_shared::server::serve(listener, move |_| router.clone(), limits, shutdown).await;
        if let Some(spool) = spool {
            spool.stop().await?;
        }
        tracing::info!("HTTP server stopped; closing the broker connection");
        drop(publisher_stop);
        if let Some(supervisor) = supervisor {
            supervisor.await.context("publisher supervisor panicked")?;
        }
        ops_stop.cancel();
        ops.await.context("ops server panicked")?;
        Ok(())
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

async fn bind(config: &Config) -> anyhow::Result<(TcpListener, TcpListener)> {
    let webhook =
        TcpListener::bind(config.addr).await.with_context(|| format!("cannot listen on {} (webhook)", config.addr))?;
    let ops = TcpListener::bind(config.ops_addr)
        .await
        .with_context(|| format!("cannot listen on {} (ops)", config.ops_addr))?;
    Ok((webhook, ops))
}

//! Wiring: bind the listener, start the publisher, build the router, run until told to stop.
//!
//! This module owns the lifecycle and its order on shutdown: stop accepting, let in-flight
//! requests finish (they may still be publishing), then close the broker connection. It must not
//! read the environment or install global telemetry; `main` does both.

use std::sync::Arc;

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

/// A bound, ready-to-run ingest server.
pub struct Application {
    listener: TcpListener,
    router: Router,
    port: u16,
    /// Stops the publisher's supervisor when the application ends or is dropped unrun.
    publisher_stop: DropGuard,
    supervisor: Option<JoinHandle<()>>,
}

impl Application {
    /// Binds `config.addr` and starts the RabbitMQ publisher; `/metrics` renders empty.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_metrics(config, None).await
    }

    /// Like [`Application::build`], with `/metrics` rendered from `metrics`.
    pub async fn build_with_metrics(config: Config, metrics: Option<PrometheusHandle>) -> anyhow::Result<Self> {
        let listener = bind(&config).await?;
        let stop = CancellationToken::new();
        // The publisher connects in the background: ingest starts (not ready) while the broker is down.
        let (publisher, supervisor) = LapinPublisher::start(&config, stop.clone());
        Ok(Self::assemble(&config, listener, publisher, metrics, stop, Some(supervisor)))
    }

    /// Binds `config.addr` and publishes through `publisher` (a fake in tests).
    pub async fn build_with_publisher(
        config: Config,
        publisher: Arc<dyn Publisher>,
        metrics: Option<PrometheusHandle>,
    ) -> anyhow::Result<Self> {
        let listener = bind(&config).await?;
        Ok(Self::assemble(&config, listener, publisher, metrics, CancellationToken::new(), None))
    }

    fn assemble(
        config: &Config,
        listener: TcpListener,
        publisher: Arc<dyn Publisher>,
        metrics: Option<PrometheusHandle>,
        stop: CancellationToken,
        supervisor: Option<JoinHandle<()>>,
    ) -> Self {
        metric::describe();
        let port = listener.local_addr().map(|addr| addr.port()).unwrap_or_default();
        let router = router(AppState::new(config, publisher, metrics));
        Self { listener, router, port, publisher_stop: stop.drop_guard(), supervisor }
    }

    /// The bound port (useful when `addr` asked for port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` fires, then drains in-flight requests and closes the broker
    /// connection.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self { listener, router, port, publisher_stop, supervisor } = self;
        tracing::info!(port, "ingest listening");
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("HTTP server failed");
        tracing::info!("HTTP server stopped; closing the broker connection");
        drop(publisher_stop);
        if let Some(supervisor) = supervisor {
            supervisor.await.context("publisher supervisor panicked")?;
        }
        served
    }
}

async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    TcpListener::bind(config.addr).await.with_context(|| format!("cannot listen on {}", config.addr))
}

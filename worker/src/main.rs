//! `wafleet-worker`: loads config, starts telemetry, installs the shutdown signal, runs.

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use wafleet_worker::config::WorkerConfig;
use wafleet_worker::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wafleet_shared::telemetry::init_tracing();
    let config = WorkerConfig::from_env().context("invalid worker configuration")?;
    let metrics = wafleet_shared::telemetry::install_metrics().context("installing the metrics recorder")?;
    wafleet_shared::telemetry::spawn_upkeep(metrics.clone());
    let app = Application::build(config, Some(metrics)).await.context("starting the worker")?;
    tracing::info!(port = app.port(), "worker health and metrics listening");
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    app.run_until_stopped(shutdown).await.context("worker failed")?;
    Ok(())
}

/// Cancels `token` on SIGTERM or Ctrl-C.
async fn signal_shutdown(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested");
    token.cancel();
}

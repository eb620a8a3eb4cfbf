//! The `wafleet-ingest` binary: configuration, telemetry, signals, then the server.

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use wafleet_ingest::{Application, Config};
use wafleet_shared::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let config = Config::from_env().context("invalid configuration")?;
    let metrics = telemetry::install_metrics().context("cannot install the metrics recorder")?;
    telemetry::spawn_upkeep(metrics.clone());

    let app = Application::build_with_metrics(config, Some(metrics)).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    app.run_until_stopped(shutdown).await
}

/// Cancels `shutdown` on SIGTERM (Kubernetes) or Ctrl-C (a terminal).
async fn cancel_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested");
    shutdown.cancel();
}

//! `wafleet-worker`: loads config, starts telemetry, installs the shutdown signal, runs.

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use wafleet_worker::config::WorkerArgs;
use wafleet_worker::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Parsed before anything starts, so `--help` works without any setting.
    let args: WorkerArgs = wafleet_shared::settings::parse();
    let _telemetry = wafleet_shared::telemetry::init_tracing_for("wafleet-worker", &args.telemetry);
    let config = args.into_config().context("invalid worker configuration")?;
    let metrics = wafleet_shared::telemetry::install_metrics().context("installing the metrics recorder")?;
    wafleet_shared::telemetry::spawn_upkeep(metrics.clone());
    let app = Application::build(config, Some(metrics)).await.context("starting the worker")?;
    tracing::info!(port = app.port(), "worker health and metrics listening");
    let shutdown = CancellationToken::new();
    tokio::spawn(wafleet_shared::shutdown::cancel_on_signal(shutdown.clone()));
    app.run_until_stopped(shutdown).await.context("worker failed")?;
    Ok(())
}

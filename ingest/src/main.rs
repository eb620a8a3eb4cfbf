//! The `wafleet-ingest` binary: configuration, telemetry, signals, then the server.

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use wafleet_ingest::config::{DrainConfig, IngestArgs, IngestCommand};
use wafleet_ingest::{Application, Config};
use wafleet_shared::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Parsed before anything starts, so `--help` works without any setting.
    let args: IngestArgs = wafleet_shared::settings::parse();
    let _telemetry = telemetry::init_tracing_for("wafleet-ingest", &args.telemetry);
    if let Some(IngestCommand::Drain(drain)) = &args.command {
        let config = DrainConfig::from_lookup(|var| args.lookup(var), drain).context("invalid configuration")?;
        let shutdown = CancellationToken::new();
        tokio::spawn(wafleet_shared::shutdown::cancel_on_signal(shutdown.clone()));
        let report = wafleet_ingest::drain_folder::drain_folder(&config, shutdown).await?;
        println!("drained {} records from {}; the folder is empty", report.drained, config.spool_dir.display());
        return Ok(());
    }
    let config = Config::from_args(&args).context("invalid configuration")?;
    let metrics = telemetry::install_metrics().context("cannot install the metrics recorder")?;
    telemetry::spawn_upkeep(metrics.clone());

    let app = Application::build_with_metrics(config, Some(metrics)).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(wafleet_shared::shutdown::cancel_on_signal(shutdown.clone()));
    app.run_until_stopped(shutdown).await
}

//! The `wafleet-admin` binary: configuration, telemetry, signals, then the server.
//! `--print-openapi` prints the OpenAPI document (to regenerate `openapi.json`) and exits.

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use wafleet_admin::config::AdminArgs;
use wafleet_admin::Application;
use wafleet_shared::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Parsed before anything starts, so `--help` works without any setting.
    let args: AdminArgs = wafleet_shared::settings::parse();
    if args.print_openapi {
        print!("{}", wafleet_admin::openapi::document_json());
        return Ok(());
    }
    let _telemetry = telemetry::init_tracing_for("wafleet-admin", &args.telemetry);
    let config = args.into_config()?;
    let metrics = telemetry::install_metrics().context("cannot install the metrics recorder")?;
    telemetry::spawn_upkeep(metrics.clone());
    let app = Application::build_with_metrics(config, Some(metrics)).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(wafleet_shared::shutdown::cancel_on_signal(shutdown.clone()));
    app.run_until_stopped(shutdown).await
}

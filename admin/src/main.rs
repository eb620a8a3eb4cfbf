//! The `wafleet-admin` binary: configuration, telemetry, signals, then the server.
//! `--print-openapi` prints the OpenAPI document (to regenerate `openapi.json`) and exits.

use anyhow::Context as _;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use wafleet_admin::{Application, Config};
use wafleet_shared::telemetry;

/// wafleet admin API. Reads DATABASE_URL (application role), AMQP_URL, RABBITMQ_API_URL,
/// WAFLEET_SIGNING_KEY, WA_API_KEY, WA_API_BASE_URL and WAFLEET_ADMIN_* (see the README, "Admin HTTP API").
#[derive(Parser, Debug)]
#[command(name = "wafleet-admin", version, about)]
struct Args {
    /// Print the OpenAPI 3.1 document and exit.
    #[arg(long)]
    print_openapi: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_openapi {
        print!("{}", wafleet_admin::openapi::document_json());
        return Ok(());
    }
    let _telemetry = telemetry::init_tracing_for("wafleet-admin");
    let config = Config::from_env().context("invalid configuration")?;
    let app = Application::build(config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(wafleet_shared::shutdown::cancel_on_signal(shutdown.clone()));
    app.run_until_stopped(shutdown).await
}

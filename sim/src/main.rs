//! `wafleet-sim` binary: parse flags, start telemetry, run the WA Bridges simulator until Ctrl-C
//! or SIGTERM. Everything else lives in the library.

use anyhow::Context as _;
use clap::Parser as _;
use tracing_subscriber::EnvFilter;
use wafleet_sim::cli::Cli;
use wafleet_sim::Simulator;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Plain text when piped (the demo script and benchmarks capture the log).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).init();

    let (sim, server) = Simulator::start(cli.sim_config(), cli.addr).await.context("starting wafleet-sim")?;
    for bridge in &cli.bridges {
        sim.add_bridge(&bridge.customer_ref, bridge.webhook_url.as_deref(), None);
    }
    tracing::info!(addr = %sim.base_url(), bridges = cli.bridges.len(), "wafleet-sim listening");

    shutdown_signal().await?;
    tracing::info!("shutting down");
    sim.shutdown();
    server.await.context("joining the server task")?;
    Ok(())
}

/// Resolve on Ctrl-C, or on SIGTERM where signals exist (containers, the demo script's `kill`).
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            ctrl_c = tokio::signal::ctrl_c() => ctrl_c.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    Ok(())
}

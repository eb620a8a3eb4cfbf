//! Logging and metrics setup. Logs are JSON in the cluster (`WAFLEET_LOG_FORMAT=json`) and
//! human-readable locally; filtering follows `RUST_LOG` (default `info`).

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber. Safe to call more than once (later calls are no-ops).
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // lapin logs the bytes of returned messages (message bodies) at WARN; never let them out.
    let filter = match "lapin::returned_messages=off".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let json = std::env::var("WAFLEET_LOG_FORMAT").map(|v| v == "json").unwrap_or(false);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}

/// Installs the Prometheus recorder and returns the handle that renders `/metrics`.
/// The caller must run [`PrometheusHandle::run_upkeep`] periodically (see [`spawn_upkeep`]).
pub fn install_metrics() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    PrometheusBuilder::new().install_recorder()
}

/// Runs histogram upkeep every 5 s on a background thread for the life of the process, so
/// summaries do not grow unbounded.
pub fn spawn_upkeep(handle: PrometheusHandle) {
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_secs(5));
        handle.run_upkeep();
    });
}

//! One consumer session's signals, and the wait for Postgres between sessions.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// What the consumers of one session signal to it. New for each session, so a signal of the
/// previous one (a late "database down" from a delivery that was still in flight when the
/// consumers stopped) cannot end the next session at once and return its deliveries again.
pub(super) struct SessionSignals {
    /// Stops every consumer of the session.
    pub(super) stop: CancellationToken,
    /// A consumer stream ended without `stop` (the broker cancelled it).
    pub(super) consumer_ended: Arc<tokio::sync::Notify>,
    /// A delivery met a database outage: the session holds its consumers until Postgres answers.
    pub(super) database_down: Arc<tokio::sync::Notify>,
}

impl SessionSignals {
    pub(super) fn new() -> Self {
        Self {
            stop: CancellationToken::new(),
            consumer_ended: Arc::new(tokio::sync::Notify::new()),
            database_down: Arc::new(tokio::sync::Notify::new()),
        }
    }
}

/// Polls Postgres with backoff (no hot loop) until it answers.
pub(super) async fn wait_for_database(pool: &PgPool, shutdown: &CancellationToken) {
    let mut delay = Duration::from_millis(250);
    loop {
        // Writable, not merely reachable: during a failover the standby answers before its
        // promotion, and resuming there would only hold (and requeue) everything again.
        if wafleet_fleet::db::probe_writable(pool, Duration::from_secs(5)).await {
            info!("database reachable again; resuming consumers");
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

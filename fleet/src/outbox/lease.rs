//! Claims bound to the claiming worker's live database session.
//!
//! Each sender holds one session-level advisory lock, `(CLAIM_LOCK_CLASS, token)`, on a dedicated
//! direct connection for as long as it runs, and stamps every row it claims with that token
//! (`outbox.claimed_by`, written by the claim's own UPDATE: no extra round trip per send). The
//! stale-sending sweep (`wafleet_outbox_stale_sending_at`) treats a `sending` row whose token
//! lock is held by nobody as cut: Postgres releases the lock the moment the holder's connection
//! ends, so a crashed worker's claims turn `unknown` on the next sweep (one second), and its
//! tenants' next replies go out. A live but slow claimer keeps its lock and is never doubled.
//!
//! A black-holed worker (process alive, traffic dropped) is bounded by the lease: the holder
//! pings every `lease / 5`, and its session runs with `idle_session_timeout = lease`, so the
//! server ends it (releasing the lock) at most `lease` after the last ping that got through,
//! whatever the network does; TCP keepalives and `tcp_user_timeout` end it sooner on a real
//! partition. The holder itself stops stamping claims as soon as a ping fails or takes longer
//! than `lease / 2`, and takes a fresh token when it reconnects.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::Result;

/// Advisory-lock class of the sender's claim tokens: the first key of the two-`int4` form
/// (`pg_try_advisory_lock(int4, int4)`), which Postgres keeps apart from the one-`bigint` keys
/// of the leader locks (`objsubid` 2 against 1). The migration `0010_claim_liveness.sql` repeats
/// it; keep the two equal.
pub const CLAIM_LOCK_CLASS: i32 = 0x5746_434c;

/// The session-level GUCs of a connection whose liveness matters: the server ends it on its own
/// when the worker goes silent, so its locks are released within `lease` however the worker
/// died. Values are milliseconds or seconds as Postgres expects them.
pub fn liveness_options(options: PgConnectOptions, lease: Duration) -> PgConnectOptions {
    let ms = lease.as_millis().max(1000).to_string();
    let keepalive = (lease.as_secs() / 4).max(1).to_string();
    options.options([
        // A transaction left open by a worker that went silent (the pick's bucket row lock).
        ("idle_in_transaction_session_timeout", ms.as_str()),
        // Dead peers on a real network: probes after lease/4 idle, three of them lease/4 apart.
        ("tcp_keepalives_idle", keepalive.as_str()),
        ("tcp_keepalives_interval", keepalive.as_str()),
        ("tcp_keepalives_count", "3"),
        // Unacknowledged data (a reply to a silent peer) gives up after the lease.
        ("tcp_user_timeout", ms.as_str()),
    ])
}

/// The sender's claim token: held while its lock connection is alive.
#[derive(Debug, Default)]
pub struct ClaimLease {
    /// The current token, 0 while none is held.
    token: AtomicI32,
}

impl ClaimLease {
    /// The token to stamp claims with, `None` while the lock is not held (then nothing may be
    /// claimed: a claim without a live token could be taken for a crashed one).
    pub fn token(&self) -> Option<i32> {
        Some(self.token.load(Ordering::Acquire)).filter(|t| *t != 0)
    }

    /// Holds a token on its own connection to `database_url` until `shutdown`, reconnecting
    /// with a fresh token whenever the connection is lost.
    pub fn start(database_url: &str, lease: Duration, shutdown: CancellationToken) -> Result<Arc<Self>> {
        let options: PgConnectOptions = database_url.parse()?;
        let ms = lease.as_millis().max(1000).to_string();
        let options = liveness_options(options.application_name("wafleet-claims"), lease)
            .options([("idle_session_timeout", ms.as_str())]);
        let this = Arc::new(Self::default());
        tokio::spawn(this.clone().hold(options, lease, shutdown));
        Ok(this)
    }

    async fn hold(self: Arc<Self>, options: PgConnectOptions, lease: Duration, shutdown: CancellationToken) {
        let ping_every = (lease / 5).max(Duration::from_millis(200));
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            match tokio::time::timeout(lease, acquire(&options)).await {
                Ok(Ok((mut conn, token))) => {
                    backoff = Duration::from_millis(100);
                    self.token.store(token, Ordering::Release);
                    info!(token, "claim lease held");
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(ping_every) => {}
                        }
                        let ping = tokio::time::timeout(lease / 2, sqlx::query("select 1").execute(&mut conn)).await;
                        if !matches!(ping, Ok(Ok(_))) {
                            // Claims stamped from here on could already look dead to the sweep.
                            self.token.store(0, Ordering::Release);
                            warn!(token, "claim lease lost; sends pause until a new one is held");
                            break;
                        }
                    }
                    self.token.store(0, Ordering::Release);
                    // Closing on shutdown releases the lock at once; a lost connection is dropped.
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
                }
                Ok(Err(e)) => warn!(error = %e, "cannot take a claim lease; retrying"),
                Err(_) => warn!("taking a claim lease timed out; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// Connects and locks a random free token (a collision only delays the sweep of the other
/// holder's rows to the backstop; a taken one is skipped).
async fn acquire(options: &PgConnectOptions) -> Result<(PgConnection, i32)> {
    let mut conn = PgConnection::connect_with(options).await?;
    loop {
        let token = rand::rng().random_range(1..i32::MAX);
        let won: bool = sqlx::query_scalar("select pg_try_advisory_lock($1, $2)")
            .bind(CLAIM_LOCK_CLASS)
            .bind(token)
            .fetch_one(&mut conn)
            .await?;
        if won {
            return Ok((conn, token));
        }
    }
}

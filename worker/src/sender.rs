//! The outbox sender: the only code that sends. It picks due rows round robin by tenant through
//! a narrow definer function (ids and timestamps only), claims each row in a transaction scoped
//! to its tenant, reads the bridge from that tenant's row, sends, and records the outcome.
//!
//! States: `pending → sending → sent | failed | unknown | expired | cancelled`. A row is never
//! resent once it may have reached the person (`unknown`): a duplicate reply is worse than a
//! visible, reconcilable one.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bridge_client::{BridgeClient, SendOutcome};
use crate::db;
use crate::error::Result;
use crate::tenant::{self, TenantId, TenantStatus};

/// Settings of the sender.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// How many due rows one pass takes.
    pub batch: i32,
    /// A row left `sending` for longer than this was cut by a crash: it becomes `unknown`.
    pub stale_sending_after: Duration,
    /// Upper bound of the retry backoff for 503 and connect errors.
    pub max_backoff: Duration,
    /// Fallback poll interval (other replicas' rows and retries coming due).
    pub poll_interval: Duration,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            batch: 32,
            stale_sending_after: Duration::from_secs(120),
            max_backoff: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// The outbox sender.
pub struct Sender {
    pool: PgPool,
    client: BridgeClient,
    config: SenderConfig,
    wake: Arc<Notify>,
    /// A 429 pauses all sending until this instant.
    paused_until: std::sync::Mutex<Option<DateTime<Utc>>>,
}

struct Claimed {
    outbox_id: i64,
    tenant: crate::tenant::Tenant,
    chat: String,
    body: String,
    attempts: i32,
}

enum Claim {
    Ready(Box<Claimed>),
    Skipped,
}

impl Sender {
    /// A sender on `pool` sending through `client`; `wake` is notified when replies are queued.
    pub fn new(pool: PgPool, client: BridgeClient, config: SenderConfig, wake: Arc<Notify>) -> Self {
        Self { pool, client, config, wake, paused_until: std::sync::Mutex::new(None) }
    }

    /// Sends until `shutdown` fires. Database outages are waited out with backoff.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut failures = 0u32;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let wait = match self.pass().await {
                Ok(sent_any) => {
                    failures = 0;
                    if sent_any {
                        continue;
                    }
                    self.config.poll_interval
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    warn!(error = %e, "sender pass failed; backing off");
                    Duration::from_millis(200u64.saturating_mul(1 << failures.min(5)))
                }
            };
            let wait = self.pause_remaining().map_or(wait, |p| p.max(Duration::from_millis(10)));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn pause_remaining(&self) -> Option<Duration> {
        let until = (*self.paused_until.lock().ok()?)?;
        (until - Utc::now()).to_std().ok()
    }

    /// One pass: mark crash leftovers `unknown`, then send one due row per tenant.
    /// Returns whether anything was attempted.
    pub async fn pass(&self) -> Result<bool> {
        self.mark_stale_sending().await?;
        if self.pause_remaining().is_some() {
            return Ok(false);
        }
        let due: Vec<(i64, i64)> = sqlx::query_as("select outbox_id, tenant_id from wafleet_outbox_due($1)")
            .bind(self.config.batch)
            .fetch_all(&self.pool)
            .await?;
        let mut attempted = false;
        for (outbox_id, tenant_id) in due {
            if self.pause_remaining().is_some() {
                break;
            }
            if let Claim::Ready(claimed) = self.claim(outbox_id, TenantId::from_db(tenant_id)).await? {
                attempted = true;
                let outcome = self.client.send_text(claimed.tenant.bridge(), &claimed.chat, &claimed.body).await;
                self.record_outcome(&claimed, outcome).await;
            }
        }
        Ok(attempted)
    }

    /// Claims a row in its tenant's scope and reads the tenant's bridge from the same scope.
    async fn claim(&self, outbox_id: i64, tenant_id: TenantId) -> Result<Claim> {
        let mut tx = db::begin_tenant(&self.pool, tenant_id).await?;
        // ISOLATION: the row is read under its own tenant's RLS scope, and the tenant_id filter
        // repeats it; a row id from the scheduler cannot pull another tenant's row.
        let row: Option<(String, String, DateTime<Utc>, i32)> = sqlx::query_as(
            "update outbox set status = 'sending', attempts = attempts + 1, updated_at = now() \
             where outbox_id = $1 and tenant_id = $2 and status = 'pending' returning chat, body, expires_at, attempts",
        )
        .bind(outbox_id)
        .bind(tenant_id.get())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((chat, body, expires_at, attempts)) = row else {
            // Another replica claimed it first.
            tx.rollback().await?;
            return Ok(Claim::Skipped);
        };
        // ISOLATION: the bridge comes from the tenant row, read now, never from the message.
        let tenant = tenant::load_in(&mut tx, tenant_id).await?;
        let final_state = match &tenant {
            Some(t) if t.status() != TenantStatus::Active => Some("cancelled"),
            None => Some("cancelled"),
            Some(_) if expires_at < Utc::now() => Some("expired"),
            Some(_) => None,
        };
        if let Some(state) = final_state {
            sqlx::query("update outbox set status = $2, updated_at = now() where outbox_id = $1")
                .bind(outbox_id)
                .bind(state)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            info!(tenant_id = %tenant_id, outbox_id, state, "reply not sent");
            metrics::counter!("wafleet_sender_sends_total", "outcome" => state).increment(1);
            return Ok(Claim::Skipped);
        }
        tx.commit().await?;
        match tenant {
            Some(tenant) => Ok(Claim::Ready(Box::new(Claimed { outbox_id, tenant, chat, body, attempts }))),
            None => Ok(Claim::Skipped),
        }
    }

    /// Writes the outcome; while Postgres is down the result is kept and the write retried, so
    /// an outage alone never turns a sent reply into `unknown`.
    async fn record_outcome(&self, claimed: &Claimed, outcome: SendOutcome) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.try_record(claimed, &outcome).await {
                Ok(()) => return,
                Err(e) => {
                    warn!(error = %e, outbox_id = claimed.outbox_id, "could not record send outcome; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn try_record(&self, claimed: &Claimed, outcome: &SendOutcome) -> Result<()> {
        let tenant_id = claimed.tenant.id();
        let mut tx = db::begin_tenant(&self.pool, tenant_id).await?;
        let label: &'static str;
        match outcome {
            SendOutcome::Sent { message_id } => {
                label = "sent";
                sqlx::query(
                    "update outbox set status = 'sent', sent_at = now(), updated_at = now(), provider_message_id = $3 \
                     where outbox_id = $1 and tenant_id = $2",
                )
                .bind(claimed.outbox_id)
                .bind(tenant_id.get())
                .bind(message_id.as_deref())
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "insert into message_log (tenant_id, direction, event_type, chat_id, body) values ($1, 'out', 'message', $2, $3)",
                )
                .bind(tenant_id.get())
                .bind(&claimed.chat)
                .bind(&claimed.body)
                .execute(&mut *tx)
                .await?;
            }
            SendOutcome::Retry { status, retry_after } => {
                label = "retry";
                let delay = if *status == Some(429) {
                    let pause = retry_after.map(Duration::from_secs).unwrap_or_else(|| self.backoff(claimed.attempts));
                    self.pause_for(pause);
                    pause
                } else {
                    self.backoff(claimed.attempts)
                };
                sqlx::query(
                    "update outbox set status = 'pending', next_attempt_at = now() + $3 * interval '1 millisecond', \
                     updated_at = now(), last_error = $4 where outbox_id = $1 and tenant_id = $2",
                )
                .bind(claimed.outbox_id)
                .bind(tenant_id.get())
                .bind(delay.as_millis() as f64)
                .bind(status.map_or_else(|| "connect error".to_owned(), |s| format!("http {s}")))
                .execute(&mut *tx)
                .await?;
            }
            SendOutcome::Unknown { reason } => {
                label = "unknown";
                self.finish(&mut tx, claimed, "unknown", reason).await?;
            }
            SendOutcome::Failed { status } => {
                label = "failed";
                self.finish(&mut tx, claimed, "failed", &format!("http {status}")).await?;
            }
        }
        tx.commit().await?;
        metrics::counter!("wafleet_sender_sends_total", "outcome" => label).increment(1);
        if label != "sent" {
            warn!(tenant = %claimed.tenant.customer_ref(), outbox_id = claimed.outbox_id, outcome = label, "send did not complete");
        }
        Ok(())
    }

    async fn finish(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        claimed: &Claimed,
        state: &str,
        error: &str,
    ) -> Result<()> {
        sqlx::query(
            "update outbox set status = $3, last_error = $4, updated_at = now() where outbox_id = $1 and tenant_id = $2",
        )
        .bind(claimed.outbox_id)
        .bind(claimed.tenant.id().get())
        .bind(state)
        .bind(error)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    fn backoff(&self, attempts: i32) -> Duration {
        let base = Duration::from_millis(500u64.saturating_mul(1u64 << attempts.clamp(0, 10) as u32));
        let capped = base.min(self.config.max_backoff);
        // Full jitter spreads replicas and tenants that failed together.
        let jitter = rand::rng().random_range(0.5..=1.0);
        capped.mul_f64(jitter)
    }

    fn pause_for(&self, pause: Duration) {
        let until = Utc::now() + chrono::Duration::from_std(pause).unwrap_or(chrono::Duration::seconds(1));
        if let Ok(mut guard) = self.paused_until.lock() {
            if guard.is_none_or(|current| current < until) {
                *guard = Some(until);
            }
        }
        warn!(pause_ms = pause.as_millis() as u64, "bridge API answered 429; pausing all sends");
        metrics::counter!("wafleet_sender_429_total").increment(1);
    }

    /// Rows found `sending` long after a crash may have reached the person: `unknown`.
    async fn mark_stale_sending(&self) -> Result<()> {
        let stale: Vec<(i64, i64)> =
            sqlx::query_as("select outbox_id, tenant_id from wafleet_outbox_stale_sending($1)")
                .bind(self.config.stale_sending_after)
                .fetch_all(&self.pool)
                .await?;
        for (outbox_id, tenant_id) in stale {
            let mut tx = db::begin_tenant(&self.pool, TenantId::from_db(tenant_id)).await?;
            sqlx::query(
                "update outbox set status = 'unknown', last_error = 'interrupted while sending', updated_at = now() \
                 where outbox_id = $1 and tenant_id = $2 and status = 'sending'",
            )
            .bind(outbox_id)
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            metrics::counter!("wafleet_sender_sends_total", "outcome" => "unknown").increment(1);
        }
        Ok(())
    }
}

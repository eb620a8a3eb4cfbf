//! Writing a send's outcome. The dispatcher writes it in the transaction of its next round (one
//! commit for the outcomes and the grants, see `grant`), or alone ([`Sender::settle_alone`]) when
//! it stops or a test drives single steps; either way the outcome is kept and written again while
//! Postgres is away, so an outage alone never turns a sent reply into `unknown`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng as _;
use sqlx::{Postgres, Transaction};
use tracing::{info, warn};
use wafleet_fleet::accounts::AccountRuntime;
use wafleet_fleet::bridge_client::SendOutcome;
use wafleet_fleet::budget::{self, Bucket};
use wafleet_fleet::db;
use wafleet_fleet::error::Result;
use wafleet_fleet::outbox;
use wafleet_fleet::tenant::Tenant;

use super::Sender;

/// A claimed reply, as the send needs it.
pub(super) struct Claimed {
    pub(super) outbox_id: i64,
    pub(super) tenant: Tenant,
    pub(super) chat: String,
    pub(super) body: String,
    pub(super) attempts: i32,
    /// The claim's lease token (`None` without a lease: tests driving single steps).
    pub(super) claimed_by: Option<i32>,
}

/// When a retried reply comes due again.
enum RetryAt {
    At(DateTime<Utc>),
    After(Duration),
}

/// A send whose outcome is not written yet.
pub(super) struct Unsettled {
    claimed: Claimed,
    outcome: SendOutcome,
    retry_at: Option<RetryAt>,
}

impl Sender {
    /// The outcome of `claimed`'s send, ready to write. A 429 pauses the whole account first, for
    /// every replica; the reply comes due with it.
    pub(super) async fn unsettled(
        &self,
        account: &AccountRuntime,
        claimed: Claimed,
        outcome: SendOutcome,
    ) -> Unsettled {
        let retry_at = match &outcome {
            SendOutcome::Retry { status: Some(429), retry_after } => {
                let pause = budget::pause(
                    &self.pool,
                    account,
                    Bucket::Proxy,
                    retry_after.map(Duration::from_secs),
                    self.clock.now(),
                )
                .await;
                Some(match pause {
                    Ok(until) => RetryAt::At(until),
                    Err(e) => {
                        warn!(error = %e, "could not store the 429 pause; backing off this reply only");
                        RetryAt::After(self.backoff(claimed.attempts))
                    }
                })
            }
            SendOutcome::Retry { .. } => Some(RetryAt::After(self.backoff(claimed.attempts))),
            _ => None,
        };
        Unsettled { claimed, outcome, retry_at }
    }

    /// Writes `unsettled` in a transaction of its own, again and again while Postgres is away.
    pub(super) async fn settle_alone(&self, unsettled: Unsettled) {
        let label = until_written(unsettled.claimed.outbox_id, "could not record send outcome; retrying", || async {
            let mut tx = self.pool.begin().await?;
            let label = self.settle_in(&mut tx, &unsettled).await?;
            tx.commit().await?;
            Ok(label)
        })
        .await;
        self.settled(&unsettled, label);
    }

    /// Gives back `claimed` when the commit of its claim failed: the connection broke, so the
    /// claim may have committed (and the row may be `sending`, or `unknown` once the sweep finds
    /// this worker's session gone) while the reply was never sent. Written again and again while
    /// Postgres is away, like an outcome; a claim that never committed matches nothing.
    pub(super) async fn release_in_doubt(&self, claimed: &Claimed) {
        let tenant = claimed.tenant.id();
        let released =
            until_written(claimed.outbox_id, "could not give back an interrupted claim; retrying", || async {
                let mut tx = db::begin_tenant(&self.pool, tenant).await?;
                let released =
                    outbox::release_unsent(&mut tx, tenant, claimed.outbox_id, claimed.claimed_by, claimed.attempts)
                        .await?;
                tx.commit().await?;
                Ok(released)
            })
            .await;
        if released {
            let tenant = claimed.tenant.customer_ref();
            info!(tenant = %tenant, outbox_id = claimed.outbox_id, "claim interrupted before its send given back; the reply goes out later");
        }
    }

    /// Counts a written outcome (call after its commit).
    pub(super) fn settled(&self, unsettled: &Unsettled, label: &'static str) {
        let claimed = &unsettled.claimed;
        let tenant_label = self.labels.label(claimed.tenant.customer_ref());
        metrics::counter!(crate::metric::SENDER_SENDS_TOTAL, "outcome" => label, "tenant" => tenant_label).increment(1);
        if label != "sent" {
            let tenant = claimed.tenant.customer_ref();
            warn!(tenant = %tenant, outbox_id = claimed.outbox_id, outcome = label, "send did not complete");
        }
    }

    /// Writes the outcome inside `tx`, scoped from here on to the reply's tenant; returns the
    /// outcome's metric label.
    pub(super) async fn settle_in(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        unsettled: &Unsettled,
    ) -> Result<&'static str> {
        let Unsettled { claimed, outcome, retry_at } = unsettled;
        let tenant_id = claimed.tenant.id();
        // ISOLATION: every statement below runs in the reply's own tenant scope and repeats the
        // tenant filter; the next outcome and the round's claims re-scope the transaction to theirs.
        db::scope_to_tenant(tx, tenant_id).await?;
        let now = self.clock.now();
        Ok(match outcome {
            SendOutcome::Sent { message_id } => {
                let updated = outbox::mark_sent(tx, tenant_id, claimed.outbox_id, message_id.as_deref(), now).await?;
                // Nothing to log if the row is gone (the contact was erased meanwhile), or it
                // was written already (a write retried after its commit went through).
                if updated > 0 {
                    sqlx::query(
                        "insert into message_log (tenant_id, direction, event_type, chat_id, body) values ($1, 'out', 'message', $2, $3)",
                    )
                    .bind(tenant_id.get())
                    .bind(&claimed.chat)
                    .bind(&claimed.body)
                    .execute(&mut **tx)
                    .await?;
                }
                "sent"
            }
            SendOutcome::Retry { status, .. } => {
                let (at, after_ms) = match retry_at {
                    Some(RetryAt::At(at)) => (Some(*at), 0.0),
                    Some(RetryAt::After(d)) => (None, d.as_millis() as f64),
                    None => (None, 0.0),
                };
                let error = status.map_or_else(|| "connect error".to_owned(), |s| format!("http {s}"));
                outbox::mark_retry(tx, tenant_id, claimed.outbox_id, at, now, after_ms, &error).await?;
                "retry"
            }
            SendOutcome::Unavailable { status } => {
                if outbox::echo_already_seen(tx, tenant_id, claimed.outbox_id).await? {
                    outbox::finish(tx, tenant_id, claimed.outbox_id, "sent", ECHO_RECONCILED).await?;
                    "sent"
                } else {
                    let error = format!("http {status}: resent after the from_me echo window unless its echo arrives");
                    outbox::await_echo(tx, tenant_id, claimed.outbox_id, now, self.config.echo_window, &error).await?;
                    "retry"
                }
            }
            SendOutcome::NotConnected => {
                wafleet_fleet::bridge_recheck::record_disconnected(tx, tenant_id).await?;
                outbox::mark_retry(tx, tenant_id, claimed.outbox_id, None, now, 0.0, "bridge not connected; held")
                    .await?;
                "held"
            }
            SendOutcome::Unknown { reason } => {
                // The bridge's from_me echo may have been processed already (it can overtake
                // this response): then the reply did arrive.
                if outbox::echo_already_seen(tx, tenant_id, claimed.outbox_id).await? {
                    outbox::finish(tx, tenant_id, claimed.outbox_id, "sent", ECHO_RECONCILED).await?;
                    "sent"
                } else {
                    outbox::finish(tx, tenant_id, claimed.outbox_id, "unknown", reason).await?;
                    "unknown"
                }
            }
            SendOutcome::Failed { status } => {
                outbox::finish(tx, tenant_id, claimed.outbox_id, "failed", &format!("http {status}")).await?;
                "failed"
            }
        })
    }

    fn backoff(&self, attempts: i32) -> Duration {
        let base = Duration::from_millis(500u64.saturating_mul(1u64 << attempts.clamp(0, 10) as u32));
        let capped = base.min(self.config.max_backoff);
        // Full jitter spreads replicas and tenants that failed together.
        let jitter = rand::rng().random_range(0.5..=1.0);
        capped.mul_f64(jitter)
    }
}

const ECHO_RECONCILED: &str = "reconciled from the bridge's from_me echo";

/// Runs `write` until it succeeds, backing off from 100 ms to 5 s while Postgres is away: what a
/// finished send leaves to record must not be dropped by an outage.
async fn until_written<T, F, Fut>(outbox_id: i64, failed: &'static str, mut write: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match write().await {
            Ok(value) => return value,
            Err(e) => {
                warn!(error = %e, outbox_id, "{failed}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

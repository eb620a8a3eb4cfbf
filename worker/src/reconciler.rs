//! The topology reconciler. One worker at a time leads (a Postgres advisory lock held on a
//! direct connection); the leader repairs the fleet-wide topology at start and sweeps
//! `wa.unrouted` on tenant changes and on a slow timer.
//!
//! Sweep rules: each message is taken with `basic.get`, bounded by the queue depth at the start
//! of the sweep so a sweep always ends. A message whose ref now names a tenant with a queue is
//! republished to `wa.inbound` (its own queue). Otherwise it is counted as `unknown_tenant` the
//! first time it is seen, dropped once older than the retention, and else moved to the tail
//! through the `wa.unrouted` exchange (publish, confirm, then ack), so nothing is lost and nothing lands in another tenant's queue.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;
use sqlx::{Connection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wafleet_shared::publish::{publish_confirmed, Target};
use wafleet_shared::topology::{QueueType, INBOUND_EXCHANGE, UNROUTED_EXCHANGE, UNROUTED_QUEUE};
use wafleet_shared::Envelope;

use wafleet_fleet::error::Result;
use wafleet_fleet::tenant::{self, TenantStatus};
use wafleet_fleet::topology;

/// Header marking a message the sweep has already counted.
const SEEN_HEADER: &str = "x-wafleet-unrouted-seen";

/// Settings of the reconciler.
#[derive(Clone, Debug)]
pub struct ReconcilerConfig {
    /// Sweep interval without notifications (`WAFLEET_UNROUTED_SWEEP_SECS`, default 60).
    pub sweep_interval: Duration,
    /// Unrouted messages older than this are dropped (`WAFLEET_UNROUTED_RETENTION`, seconds, default 3600).
    pub retention: Duration,
    /// Bound of one republish plus its confirm (`WAFLEET_PUBLISH_TIMEOUT_MS`, shared with the consumer).
    pub publish_timeout: Duration,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            sweep_interval: Duration::from_secs(60),
            retention: Duration::from_secs(3600),
            publish_timeout: Duration::from_secs(5),
        }
    }
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Republished to their tenant's queue.
    pub routed: u32,
    /// Moved to the tail, still waiting for a tenant.
    pub requeued: u32,
    /// Dropped after the retention.
    pub expired: u32,
}

/// Runs the reconciler until `shutdown`.
pub async fn run(
    database_url: String,
    pool: PgPool,
    amqp_url: String,
    config: ReconcilerConfig,
    tenants_changed: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        let leader = wafleet_fleet::db::try_lead(&database_url, wafleet_fleet::locks::RECONCILER.key);
        let conn = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = leader => r,
        };
        match conn {
            Ok(Some(conn)) => {
                info!("reconciler leadership acquired");
                if let Err(e) = lead(&pool, &amqp_url, &config, &tenants_changed, &shutdown).await {
                    warn!(error = %e, "reconciler stopped leading; will retry");
                }
                let _ = conn.close().await;
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "reconciler cannot reach Postgres"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.sweep_interval.min(Duration::from_secs(30))) => {}
        }
    }
}

async fn lead(
    pool: &PgPool,
    amqp_url: &str,
    config: &ReconcilerConfig,
    tenants_changed: &Notify,
    shutdown: &CancellationToken,
) -> Result<()> {
    let connection = wafleet_shared::amqp::connect(amqp_url, "wafleet-reconciler").await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    topology::declare_base(&channel).await?;
    loop {
        let report = sweep_unrouted(pool, &connection, &channel, config.retention, config.publish_timeout).await?;
        if report != SweepReport::default() {
            info!(routed = report.routed, requeued = report.requeued, expired = report.expired, "swept wa.unrouted");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tenants_changed.notified() => {}
            _ = tokio::time::sleep(config.sweep_interval) => {}
        }
    }
    let _ = connection.close(200, "stopping").await;
    Ok(())
}

/// One sweep of `wa.unrouted`, bounded by its depth at the start. Each republish waits for its
/// confirm within `publish_timeout`; a failure ends the sweep with the message still unacked, so
/// the broker puts it back.
pub async fn sweep_unrouted(
    pool: &PgPool,
    connection: &lapin::Connection,
    channel: &Channel,
    retention: Duration,
    publish_timeout: Duration,
) -> Result<SweepReport> {
    let depth = channel
        .queue_declare(
            UNROUTED_QUEUE,
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?
        .message_count();
    metrics::gauge!(crate::metric::UNROUTED_DEPTH).set(f64::from(depth));
    let mut report = SweepReport::default();
    for _ in 0..depth {
        let Some(message) = channel.basic_get(UNROUTED_QUEUE, BasicGetOptions { no_ack: false }).await? else { break };
        let delivery = message.delivery;
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let seen = headers.inner().contains_key(SEEN_HEADER);
        let envelope = Envelope::decode(&delivery.data).ok();
        let target = match &envelope {
            Some(e) => routable(pool, connection, channel, e).await?,
            None => false,
        };
        if target {
            let routing_key = envelope.as_ref().map(|e| e.customer_ref().as_str().to_owned()).unwrap_or_default();
            // ISOLATION: republished by its own ref to the direct exchange; the binding decides.
            let target = Target { exchange: INBOUND_EXCHANGE, routing_key: &routing_key };
            publish_confirmed(channel, target, &delivery.data, delivery.properties.clone(), publish_timeout).await?;
            report.routed += 1;
        } else {
            let received_at = envelope.as_ref().map(|e| match e {
                Envelope::V1(v1) => v1.received_at,
            });
            let expired = received_at
                .map(|at| Utc::now().signed_duration_since(at).to_std().map(|age| age > retention).unwrap_or(false))
                .unwrap_or(true);
            if !seen {
                let reason = if envelope.is_some() { "unknown_tenant" } else { "undecodable" };
                warn!(tenant = %envelope.as_ref().map(|e| e.customer_ref().to_string()).unwrap_or_default(), reason, "unrouted message");
                metrics::counter!(crate::metric::UNROUTED_TOTAL, "reason" => reason).increment(1);
            }
            if expired {
                metrics::counter!(crate::metric::WORKER_DROPPED_TOTAL, "reason" => "unrouted_expired").increment(1);
                report.expired += 1;
            } else {
                let mut headers = headers;
                headers.insert(SEEN_HEADER.into(), AMQPValue::Boolean(true));
                let properties = delivery.properties.clone().with_headers(headers);
                // Through the fanout exchange bound only to wa.unrouted, not the default exchange:
                // the worker's rights are `^wa\.` and name no `amq.default`.
                let target = Target { exchange: UNROUTED_EXCHANGE, routing_key: "" };
                publish_confirmed(channel, target, &delivery.data, properties, publish_timeout).await?;
                report.requeued += 1;
            }
        }
        delivery.acker.ack(BasicAckOptions::default()).await?;
    }
    Ok(report)
}

/// Whether the envelope's ref names a tenant that is not offboarded; its queue is (re)declared.
async fn routable(
    pool: &PgPool,
    connection: &lapin::Connection,
    channel: &Channel,
    envelope: &Envelope,
) -> Result<bool> {
    let Some(meta) = tenant::lookup(pool, envelope.customer_ref()).await? else { return Ok(false) };
    if meta.status == TenantStatus::Offboarded {
        return Ok(false);
    }
    let queue_type = tenant::list(pool)
        .await?
        .into_iter()
        .find(|t| t.tenant_id == meta.id)
        .map_or(QueueType::Quorum, |t| t.queue_type);
    topology::declare_tenant(connection, channel, envelope.customer_ref(), queue_type).await?;
    Ok(true)
}

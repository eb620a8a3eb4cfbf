//! `wafleet depth`: per-tenant queue depth for operators. Ready and unacked counts and the
//! oldest message's age come from the RabbitMQ management API (RabbitMQ's own per-queue
//! metrics); without it, passive declares give the ready count. Retrying counts come from
//! Postgres, because the retry tiers are shared by all tenants.

use std::collections::HashMap;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde::Serialize;
use sqlx::PgPool;
use wafleet_shared::topology as names;
use wafleet_shared::CustomerRef;

use crate::endpoints::Endpoints;
use crate::error::Result;
use crate::tenant::{self, TenantStatus};

/// Depth of one tenant.
#[derive(Debug, Clone, Serialize)]
pub struct TenantDepth {
    /// The tenant.
    pub customer_ref: String,
    /// Messages ready in `wa.tenant.<ref>`.
    pub ready: u64,
    /// Messages delivered to a worker and not yet acked (unknown without the management API).
    pub unacked: Option<u64>,
    /// Messages waiting in a retry tier.
    pub retrying: u64,
    /// Messages in `wa.dlq.<ref>`.
    pub dlq: u64,
    /// Age of the oldest ready message, in seconds (needs the management API).
    pub oldest_age_secs: Option<i64>,
    /// Consumers on the tenant queue.
    pub consumers: Option<u64>,
}

/// Where the numbers came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DepthSource {
    /// The management API.
    Management,
    /// Passive declares over AMQP (management API unavailable).
    PassiveDeclare,
}

#[derive(Default)]
struct QueueStats {
    ready: u64,
    unacked: Option<u64>,
    head_timestamp: Option<i64>,
    consumers: Option<u64>,
}

/// Depth of every tenant that is not offboarded, deepest first.
pub async fn depth(pool: &PgPool, endpoints: &Endpoints) -> Result<(Vec<TenantDepth>, DepthSource)> {
    let tenants: Vec<(i64, CustomerRef)> = tenant::list(pool)
        .await?
        .into_iter()
        .filter(|t| t.status != TenantStatus::Offboarded)
        .map(|t| (t.tenant_id.get(), t.customer_ref))
        .collect();
    let retrying: HashMap<i64, i64> =
        sqlx::query_as::<_, (i64, i64)>("select tenant_id, retrying from wafleet_retrying_counts()")
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    let (stats, source) = match from_management(endpoints).await {
        Ok(stats) => (stats, DepthSource::Management),
        Err(e) => {
            tracing::warn!(error = %e, "management API unavailable; falling back to passive declares");
            (from_passive_declares(endpoints, &tenants).await?, DepthSource::PassiveDeclare)
        }
    };
    let now = chrono::Utc::now().timestamp();
    let mut out: Vec<TenantDepth> = tenants
        .iter()
        .map(|(id, r)| {
            let q = stats.get(&names::tenant_queue(r));
            let d = stats.get(&names::dlq_queue(r));
            TenantDepth {
                customer_ref: r.to_string(),
                ready: q.map_or(0, |q| q.ready),
                unacked: q.and_then(|q| q.unacked),
                retrying: retrying.get(id).copied().unwrap_or(0).max(0) as u64,
                dlq: d.map_or(0, |d| d.ready + d.unacked.unwrap_or(0)),
                oldest_age_secs: q.and_then(|q| q.head_timestamp).map(|t| (now - t).max(0)),
                consumers: q.and_then(|q| q.consumers),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        let total = |d: &TenantDepth| d.ready + d.unacked.unwrap_or(0) + d.retrying;
        total(b).cmp(&total(a)).then_with(|| a.customer_ref.cmp(&b.customer_ref))
    });
    Ok((out, source))
}

async fn from_management(endpoints: &Endpoints) -> Result<HashMap<String, QueueStats>> {
    let management = endpoints.management()?;
    let vhost = wafleet_shared::amqp::vhost_of(&endpoints.amqp_url);
    let queues = management.get_json(&["queues", &vhost]).await?.unwrap_or_default();
    let mut out = HashMap::new();
    for q in queues.as_array().into_iter().flatten() {
        let Some(name) = q.get("name").and_then(|n| n.as_str()) else { continue };
        let n = |k: &str| q.get(k).and_then(serde_json::Value::as_u64);
        out.insert(
            name.to_owned(),
            QueueStats {
                ready: n("messages_ready").unwrap_or(0),
                unacked: n("messages_unacknowledged"),
                head_timestamp: q.get("head_message_timestamp").and_then(serde_json::Value::as_i64),
                consumers: n("consumers"),
            },
        );
    }
    Ok(out)
}

async fn from_passive_declares(
    endpoints: &Endpoints,
    tenants: &[(i64, CustomerRef)],
) -> Result<HashMap<String, QueueStats>> {
    let connection = wafleet_shared::amqp::connect(&endpoints.amqp_url, "wafleet-cli-depth").await?;
    let mut out = HashMap::new();
    for (_, r) in tenants {
        for queue in [names::tenant_queue(r), names::dlq_queue(r)] {
            // A missing queue closes its channel, so each declare gets its own.
            let channel = connection.create_channel().await?;
            let passive = QueueDeclareOptions { passive: true, ..Default::default() };
            if let Ok(q) = channel.queue_declare(&queue, passive, FieldTable::default()).await {
                out.insert(
                    queue,
                    QueueStats {
                        ready: u64::from(q.message_count()),
                        consumers: Some(u64::from(q.consumer_count())),
                        ..QueueStats::default()
                    },
                );
                let _ = channel.close(200, "done").await;
            }
        }
    }
    wafleet_shared::amqp::close(connection).await;
    Ok(out)
}

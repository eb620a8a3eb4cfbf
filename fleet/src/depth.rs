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
    let mut out: Vec<TenantDepth> =
        tenants.iter().map(|(id, r)| depth_of(r, &stats, retrying.get(id).copied().unwrap_or(0), now)).collect();
    out.sort_by(|a, b| {
        let total = |d: &TenantDepth| d.ready + d.unacked.unwrap_or(0) + d.retrying;
        total(b).cmp(&total(a)).then_with(|| a.customer_ref.cmp(&b.customer_ref))
    });
    Ok((out, source))
}

/// The depth of `r` from the stats of the queues by name, on the clock `now` (Unix seconds).
fn depth_of(r: &CustomerRef, stats: &HashMap<String, QueueStats>, retrying: i64, now: i64) -> TenantDepth {
    let q = stats.get(&names::tenant_queue(r));
    let d = stats.get(&names::dlq_queue(r));
    TenantDepth {
        customer_ref: r.to_string(),
        ready: q.map_or(0, |q| q.ready),
        unacked: q.and_then(|q| q.unacked),
        retrying: retrying.max(0) as u64,
        dlq: d.map_or(0, |d| d.ready + d.unacked.unwrap_or(0)),
        oldest_age_secs: q.and_then(|q| q.head_timestamp).map(|t| (now - t).max(0)),
        consumers: q.and_then(|q| q.consumers),
    }
}

/// One queue's figures as the management API reports them.
fn stats_of(q: &serde_json::Value) -> QueueStats {
    let n = |k: &str| q.get(k).and_then(serde_json::Value::as_u64);
    QueueStats {
        ready: n("messages_ready").unwrap_or(0),
        unacked: n("messages_unacknowledged"),
        head_timestamp: q.get("head_message_timestamp").and_then(serde_json::Value::as_i64),
        consumers: n("consumers"),
    }
}

/// Management API reads in flight at once when reading named tenants' queues.
const QUEUE_READS_IN_FLIGHT: usize = 8;

/// Depth of one tenant: its two queues only (two management API reads, or two passive
/// declares without it), not the whole fleet's listing, so a page that polls one tenant costs
/// the same in a fleet of ten and of ten thousand.
pub async fn one(
    pool: &PgPool,
    endpoints: &Endpoints,
    tenant_id: i64,
    customer_ref: &CustomerRef,
) -> Result<(TenantDepth, DepthSource)> {
    let (mut rows, source) = of_tenants(pool, endpoints, &[(tenant_id, customer_ref.clone())]).await?;
    let depth = rows.pop().unwrap_or_else(|| depth_of(customer_ref, &HashMap::new(), 0, 0));
    Ok((depth, source))
}

/// Depth of the named tenants `(tenant id, ref)`, in their order, from their own queues only
/// (a page of a long tenant list costs its page, not the fleet).
pub async fn of_tenants(
    pool: &PgPool,
    endpoints: &Endpoints,
    tenants: &[(i64, CustomerRef)],
) -> Result<(Vec<TenantDepth>, DepthSource)> {
    use futures::{StreamExt as _, TryStreamExt as _};
    let ids: Vec<i64> = tenants.iter().map(|(id, _)| *id).collect();
    let retrying: HashMap<i64, i64> = sqlx::query_as::<_, (i64, i64)>(
        "select tenant_id, retrying from wafleet_retrying_counts() where tenant_id = any($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let queues: Vec<String> = tenants.iter().flat_map(|(_, r)| [names::tenant_queue(r), names::dlq_queue(r)]).collect();
    let from_management = async {
        let management = std::sync::Arc::new(endpoints.management()?);
        let vhost = wafleet_shared::amqp::vhost_of(&endpoints.amqp_url);
        // Owned inputs per read: borrowed ones make the future's lifetimes too narrow for axum.
        let reads = queues.into_iter().map(|queue| {
            let (management, vhost) = (management.clone(), vhost.clone());
            async move {
                let found = management.get_json(&["queues", &vhost, &queue]).await?;
                Ok::<_, crate::error::Error>(found.map(|q| (queue, stats_of(&q))))
            }
        });
        let found: Vec<Option<(String, QueueStats)>> =
            futures::stream::iter(reads).buffer_unordered(QUEUE_READS_IN_FLIGHT).try_collect().await?;
        Ok::<_, crate::error::Error>(found.into_iter().flatten().collect::<HashMap<_, _>>())
    };
    let (stats, source) = match from_management.await {
        Ok(stats) => (stats, DepthSource::Management),
        Err(e) => {
            tracing::warn!(error = %e, "management API unavailable; falling back to passive declares");
            (from_passive_declares(endpoints, tenants).await?, DepthSource::PassiveDeclare)
        }
    };
    let now = chrono::Utc::now().timestamp();
    let rows = tenants.iter().map(|(id, r)| depth_of(r, &stats, retrying.get(id).copied().unwrap_or(0), now)).collect();
    Ok((rows, source))
}

async fn from_management(endpoints: &Endpoints) -> Result<HashMap<String, QueueStats>> {
    let management = endpoints.management()?;
    let vhost = wafleet_shared::amqp::vhost_of(&endpoints.amqp_url);
    // Only the fields read below: the full listing is ~2 KiB a queue, two queues a tenant.
    let columns = [("columns", "name,messages_ready,messages_unacknowledged,head_message_timestamp,consumers")];
    let queues = management.get_json_query(&["queues", &vhost], &columns).await?.unwrap_or_default();
    let mut out = HashMap::new();
    for q in queues.as_array().into_iter().flatten() {
        let Some(name) = q.get("name").and_then(|n| n.as_str()) else { continue };
        out.insert(name.to_owned(), stats_of(q));
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

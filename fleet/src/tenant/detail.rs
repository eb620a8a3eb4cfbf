//! One tenant as an operator sees it (`wafleet tenants show`): its row read in its own scope,
//! with its account's name and its limits. Metadata only: no bot URL or secret, no internal id,
//! and nothing here makes a [`Tenant`](super::Tenant) or a [`TenantBridge`](super::TenantBridge).

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use wafleet_shared::topology::QueueType;
use wafleet_shared::{AuthMode, CustomerRef, Generation};

use super::{auth_of, generation_of, lookup, queue_type_of, ref_of, BotKind, TenantStatus};
use crate::db;
use crate::error::{Error, Result};

/// A tenant's send limits (`tenants limits`); `None` caps are no cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Consecutive sends per round-robin turn (1-100).
    pub weight: i32,
    /// At most this many sends per budget window.
    pub max_per_min: Option<i32>,
    /// At most this many sends per 1440 budget windows.
    pub max_per_day: Option<i32>,
}

/// One tenant, whatever its status.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TenantDetail {
    /// The ref.
    pub customer_ref: CustomerRef,
    /// Row status.
    pub status: TenantStatus,
    /// Bridge key at WA Bridges.
    pub bridge: String,
    /// The bridge's id at WA Bridges, once provisioned or reconciled.
    pub instance_id: Option<i64>,
    /// Last bridge state reported by a connection event or a status call.
    pub bridge_state: String,
    /// The WA Bridges account that sends its replies.
    pub account: String,
    /// Bot kind.
    pub bot_kind: BotKind,
    /// Webhook auth mode.
    pub auth_mode: AuthMode,
    /// Queue type of `wa.tenant.<ref>`.
    #[serde(serialize_with = "queue_type_str")]
    pub queue_type: QueueType,
    /// Its own queue bound in bytes (`None`: the fleet-wide default).
    pub queue_max_bytes: Option<i64>,
    /// URL generation.
    pub generation: Generation,
    /// Send limits.
    pub limits: Limits,
    /// When the tenant was added.
    pub created_at: DateTime<Utc>,
    /// Last change of its row.
    pub updated_at: DateTime<Utc>,
}

fn queue_type_str<S: serde::Serializer>(queue_type: &QueueType, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(queue_type.as_str())
}

/// Reads one tenant. ISOLATION: its own row in its own read-only scope.
pub async fn detail(pool: &PgPool, customer_ref: &CustomerRef) -> Result<TenantDetail> {
    let meta = lookup(pool, customer_ref).await?.ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))?;
    let mut tx = db::begin_tenant_read_only(pool, meta.id).await?;
    let row = sqlx::query(
        "select t.customer_ref, t.status, t.bridge, t.instance_id, t.bridge_state, a.name as account, t.bot_kind, \
                t.auth_mode, t.queue_type, t.queue_max_bytes, t.generation, t.weight, t.max_sends_per_min, \
                t.max_sends_per_day, t.created_at, t.updated_at \
         from tenants t join accounts a on a.account_id = t.account_id where t.tenant_id = $1",
    )
    .bind(meta.id.get())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let row = row.ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))?;
    Ok(TenantDetail {
        customer_ref: ref_of(row.try_get("customer_ref")?)?,
        status: TenantStatus::parse(row.try_get("status")?)?,
        bridge: row.try_get("bridge")?,
        instance_id: row.try_get("instance_id")?,
        bridge_state: row.try_get("bridge_state")?,
        account: row.try_get("account")?,
        bot_kind: BotKind::parse(row.try_get("bot_kind")?)?,
        auth_mode: auth_of(row.try_get("auth_mode")?)?,
        queue_type: queue_type_of(row.try_get("queue_type")?)?,
        queue_max_bytes: row.try_get("queue_max_bytes")?,
        generation: generation_of(row.try_get("generation")?)?,
        limits: Limits {
            weight: row.try_get("weight")?,
            max_per_min: row.try_get("max_sends_per_min")?,
            max_per_day: row.try_get("max_sends_per_day")?,
        },
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

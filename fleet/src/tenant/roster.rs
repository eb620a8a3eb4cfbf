//! The fleet roster: the operator's list of tenants (metadata only, through the definer
//! function) and the writes of operator commands (insert, status). Nothing here makes a
//! [`Tenant`](super::Tenant) or a [`TenantBridge`](super::TenantBridge).

use sqlx::{PgPool, Postgres, Row, Transaction};
use wafleet_shared::topology::QueueType;
use wafleet_shared::{AuthMode, CustomerRef};

use super::{auth_of, generation_of, queue_type_of, ref_of, BotKind, Tenant, TenantId, TenantStatus};
use crate::error::{Conflict, Error, InvalidInput, Result};
use wafleet_shared::Generation;

/// A row of `tenants list`: metadata only, for operators and the reconciler. Every column that
/// has a type is parsed once, when the row is read; a row that does not parse is an error. The
/// JSON form (`--output json`) keeps the database spellings.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TenantSummary {
    /// Database id.
    pub tenant_id: TenantId,
    /// The ref.
    pub customer_ref: CustomerRef,
    /// Bridge key (for display; the sender never uses this value).
    pub bridge: String,
    /// Row status.
    pub status: TenantStatus,
    /// URL generation.
    pub generation: Generation,
    /// Auth mode.
    pub auth_mode: AuthMode,
    /// Queue type.
    #[serde(serialize_with = "queue_type_str")]
    pub queue_type: QueueType,
    /// Bot kind.
    pub bot_kind: BotKind,
}

fn queue_type_str<S: serde::Serializer>(queue_type: &QueueType, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(queue_type.as_str())
}

/// Lists the fleet through the definer function.
pub async fn list(pool: &PgPool) -> Result<Vec<TenantSummary>> {
    let rows = sqlx::query(
        "select tenant_id, customer_ref, bridge, status, generation, auth_mode, queue_type, bot_kind from wafleet_list_tenants()",
    )
    .fetch_all(pool)
    .await?;
    rows.iter().map(TenantSummary::from_row).collect()
}

impl TenantSummary {
    /// Reads a summary from a row of `wafleet_list_tenants()` or `wafleet_list_tenants_page()`:
    /// metadata only, never a capability type.
    pub fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self> {
        Ok(TenantSummary {
            tenant_id: TenantId::from_db(row.try_get("tenant_id")?),
            customer_ref: ref_of(row.try_get("customer_ref")?)?,
            bridge: row.try_get("bridge")?,
            status: TenantStatus::parse(row.try_get("status")?)?,
            generation: generation_of(row.try_get("generation")?)?,
            auth_mode: auth_of(row.try_get("auth_mode")?)?,
            queue_type: queue_type_of(row.try_get("queue_type")?)?,
            bot_kind: BotKind::parse(row.try_get("bot_kind")?)?,
        })
    }

    /// The summary of a tenant already read from its own row (`tenants show`).
    pub fn of(tenant: &Tenant) -> Self {
        TenantSummary {
            tenant_id: tenant.id,
            customer_ref: tenant.customer_ref.clone(),
            bridge: tenant.bridge.key.clone(),
            status: tenant.status,
            generation: tenant.generation,
            auth_mode: tenant.auth_mode,
            queue_type: tenant.queue_type,
            bot_kind: tenant.bot_kind,
        }
    }
}

/// Settings of a new tenant.
#[derive(Clone, Debug)]
pub struct NewTenant {
    /// The ref.
    pub customer_ref: CustomerRef,
    /// The bridge's `/proxy/*` key at WA Bridges.
    pub bridge: String,
    /// Bot kind.
    pub bot_kind: BotKind,
    /// Auth mode.
    pub auth_mode: AuthMode,
    /// Queue type.
    pub queue_type: QueueType,
}

/// Inserts a tenant in the default account inside `tx` (the caller declares the queue before
/// committing). Returns the id and whether the row is new (false: an identical tenant existed).
pub async fn insert(tx: &mut Transaction<'static, Postgres>, new: &NewTenant) -> Result<(TenantId, bool)> {
    insert_in_account(tx, new, crate::accounts::DEFAULT_ACCOUNT).await
}

/// Inserts a tenant in the named account inside `tx`; see [`insert`].
pub async fn insert_in_account(
    tx: &mut Transaction<'static, Postgres>,
    new: &NewTenant,
    account: &str,
) -> Result<(TenantId, bool)> {
    if new.bridge.is_empty() || new.bridge.len() > 256 || new.bridge.chars().any(char::is_control) {
        return Err(InvalidInput::BridgeKey.into());
    }
    if new.bridge != new.customer_ref.as_str() {
        return Err(InvalidInput::BridgeDiffersFromRef {
            customer_ref: new.customer_ref.clone(),
            bridge: new.bridge.clone(),
        }
        .into());
    }
    let result = sqlx::query_as::<_, (i64, bool)>(
        "select tenant_id, created from wafleet_add_tenant_in_account($1, $2, $3, $4, $5, $6)",
    )
    .bind(new.customer_ref.as_str())
    .bind(&new.bridge)
    .bind(new.bot_kind.as_str())
    .bind(new.auth_mode.as_str())
    .bind(new.queue_type.as_str())
    .bind(account)
    .fetch_one(&mut **tx)
    .await;
    match result {
        Ok((id, created)) => Ok((TenantId::from_db(id), created)),
        Err(sqlx::Error::Database(db)) if db.constraint() == Some("tenants_bridge_key") => {
            Err(Conflict::BridgeTaken(new.bridge.clone()).into())
        }
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("P0001") => Err(Conflict::Refused(db).into()),
        Err(e) => Err(e.into()),
    }
}

/// Sets a tenant active or disabled. Errors if the ref is unknown or offboarded.
pub async fn set_status(pool: &PgPool, customer_ref: &CustomerRef, status: TenantStatus) -> Result<TenantId> {
    let id: Option<i64> = sqlx::query_scalar("select wafleet_set_tenant_status($1, $2)")
        .bind(customer_ref.as_str())
        .bind(status.as_str())
        .fetch_one(pool)
        .await?;
    id.map(TenantId::from_db).ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))
}

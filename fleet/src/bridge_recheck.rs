//! Re-checking disconnected bridges. WA Bridges delivers `connected` and `disconnected` events at
//! most once, and the sender holds the replies of a bridge marked `disconnected`, so one lost
//! `connected` event would hold that tenant's replies until they expire. While replies wait, the
//! sender asks `/proxy/status` again with backoff; the backoff lives in the tenant's row, so
//! replicas share it and each due bridge is asked by one replica at a time.

use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};
use wafleet_shared::CustomerRef;

use crate::accounts::AccountId;
use crate::db;
use crate::error::{InvalidInput, Result};
use crate::tenant::TenantId;

/// How often a disconnected bridge with waiting replies is asked again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecheckPolicy {
    /// `WAFLEET_BRIDGE_RECHECK_SECS`: the first re-check comes this long after the bridge was
    /// found disconnected; each one that still finds it disconnected doubles the wait.
    pub base: Duration,
    /// `WAFLEET_BRIDGE_RECHECK_MAX_SECS`: the longest wait between two re-checks.
    pub max: Duration,
}

impl Default for RecheckPolicy {
    fn default() -> Self {
        Self { base: Duration::from_secs(15), max: Duration::from_secs(600) }
    }
}

/// Claims one bridge of `account` that is due for a re-check: disconnected, its tenant active
/// with a pending reply. Its next re-check moves out by the backoff before this returns.
pub async fn claim_due(pool: &PgPool, account: AccountId, policy: &RecheckPolicy) -> Result<Option<CustomerRef>> {
    let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    let claimed: Option<(i64, String)> =
        sqlx::query_as("select tenant_id, customer_ref from wafleet_claim_bridge_recheck($1, $2, $3)")
            .bind(account.get())
            .bind(millis(policy.base))
            .bind(millis(policy.max))
            .fetch_optional(pool)
            .await?;
    claimed
        .map(|(_, raw)| CustomerRef::parse(&raw).map_err(|source| InvalidInput::CustomerRef { raw, source }.into()))
        .transpose()
}

/// A re-check found the bridge connected: its replies may go out again.
pub async fn record_connected(pool: &PgPool, tenant: TenantId) -> Result<bool> {
    // ISOLATION: the tenant's own scope; RLS keeps the update to its own row.
    let mut tx = db::begin_tenant(pool, tenant).await?;
    let updated = sqlx::query(
        "update tenants set bridge_state = 'connected', bridge_state_at = now(), bridge_recheck_at = null, \
         bridge_recheck_failures = 0, updated_at = now() where tenant_id = $1 and bridge_state = 'disconnected'",
    )
    .bind(tenant.get())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(updated > 0)
}

/// A send was refused because the bridge is not connected: hold its replies until a re-check
/// (or a `connected` event) finds it connected. Inside the caller's tenant-scoped transaction.
pub async fn record_disconnected(tx: &mut Transaction<'static, Postgres>, tenant: TenantId) -> Result<()> {
    sqlx::query(
        "update tenants set bridge_state = 'disconnected', bridge_state_at = now(), bridge_recheck_at = null, \
         bridge_recheck_failures = 0, updated_at = now() where tenant_id = $1 and bridge_state <> 'disconnected'",
    )
    .bind(tenant.get())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

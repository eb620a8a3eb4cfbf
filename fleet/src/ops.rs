//! The service layer behind the operator CLI (and, later, the admin API): tenant and
//! operations commands with one implementation, so their semantics cannot drift.

use sqlx::PgPool;
use wafleet_shared::CustomerRef;

use crate::db::{self, DutyRoles, RoleSetup};
use crate::error::{Error, InvalidInput, ManagementError, Result};
use crate::tenant::{self, NewTenant, TenantStatus, TenantSummary};
use crate::topology;

/// `wafleet migrate`: schema and the grants of each duty's role as the owner, then the
/// fleet-wide broker topology and its policies, with the default tenant-queue bound.
pub async fn migrate(
    owner_url: &str,
    roles: &DutyRoles,
    endpoints: &Endpoints,
    retry_tiers: &[topology::RetryTier],
) -> Result<RoleSetup> {
    migrate_with(owner_url, roles, endpoints, retry_tiers, topology::DEFAULT_TENANT_QUEUE_MAX_BYTES).await
}

/// Like [`migrate`], with `tenant_queue_max_bytes` (`WAFLEET_TENANT_QUEUE_MAX_BYTES`) as the
/// bound of every tenant queue without an override of its own.
pub async fn migrate_with(
    owner_url: &str,
    roles: &DutyRoles,
    endpoints: &Endpoints,
    retry_tiers: &[topology::RetryTier],
    tenant_queue_max_bytes: u64,
) -> Result<RoleSetup> {
    let setup = db::migrate(owner_url, roles).await?;
    let connection = wafleet_shared::amqp::connect(&endpoints.amqp_url, "wafleet-cli").await?;
    let channel = connection.create_channel().await?;
    topology::declare_base(&channel).await?;
    topology::declare_retry_tiers(&channel, retry_tiers).await?;
    wafleet_shared::amqp::close(connection).await;
    let management = endpoints.management()?;
    management.apply_policies_with(tenant_queue_max_bytes).await.map_err(|e| ManagementError::Policies(Box::new(e)))?;
    // The per-tenant overrides are rebuilt too, so a release that changes a key of the
    // tenant-queue policy (delivery limit, DLX) changes it on overridden queues as well.
    let owner = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(owner_url).await?;
    let overrides: Vec<(String, i64)> = sqlx::query_as(
        "select customer_ref, queue_max_bytes from tenants where queue_max_bytes is not null and status <> 'offboarded'",
    )
    .fetch_all(&owner)
    .await?;
    owner.close().await;
    for (raw, bytes) in overrides {
        let customer_ref = CustomerRef::parse(&raw).map_err(|source| InvalidInput::CustomerRef { raw, source })?;
        let bytes = u64::try_from(bytes).map_err(|_| InvalidInput::QueueBound)?;
        management
            .set_tenant_queue_bound(&customer_ref, Some(bytes))
            .await
            .map_err(|e| ManagementError::Policies(Box::new(e)))?;
    }
    Ok(setup)
}

/// `wafleet tenants add`: declares the tenant's queue and binding before committing the row,
/// so no webhook URL can be handed out for a tenant without a queue.
pub async fn add_tenant(pool: &PgPool, endpoints: &Endpoints, new: &NewTenant) -> Result<bool> {
    add_tenant_in_account(pool, endpoints, new, crate::accounts::DEFAULT_ACCOUNT).await
}

/// `wafleet tenants add --account <name>`: like [`add_tenant`], in the named WA Bridges account
/// (its replies are sent with that account's key, under its budget).
pub async fn add_tenant_in_account(
    pool: &PgPool,
    endpoints: &Endpoints,
    new: &NewTenant,
    account: &str,
) -> Result<bool> {
    let mut tx = pool.begin().await?;
    let (_, created) = tenant::insert_in_account(&mut tx, new, account).await?;
    let connection = wafleet_shared::amqp::connect(&endpoints.amqp_url, "wafleet-cli").await?;
    let channel = connection.create_channel().await?;
    topology::declare_tenant(&connection, &channel, &new.customer_ref, new.queue_type).await?;
    wafleet_shared::amqp::close(connection).await;
    tx.commit().await?;
    Ok(created)
}

// Accounts, budget, tenant lifecycle and data commands live in their own modules; ops
// re-exports them so the CLI and the admin API share one service layer.
pub use crate::accounts::{add as add_account, list as list_accounts};
pub use crate::audit::{list as list_audit, record as record_audit};
pub use crate::endpoints::Endpoints;
pub use crate::lifecycle::{bridge_status, provision, reconcile_bridges, rotate_url, Fleet};
pub use crate::offboard::offboard;
pub use crate::outbox::summary as outbox_summary;
pub use crate::retention::{erase_contact, export as export_tenant, run_once as run_retention};
pub use crate::rules::{list as list_rules, remove as remove_rule};
pub use crate::service::webhook_url;
pub use crate::tenant::detail as show_tenant;

/// Sets all send limits at once: fair-share weight and optional per-tenant send caps (per
/// budget window and per 1440 windows); `None` = no cap.
pub async fn set_tenant_limits(
    pool: &PgPool,
    customer_ref: &CustomerRef,
    weight: i32,
    max_per_min: Option<i32>,
    max_per_day: Option<i32>,
) -> Result<()> {
    check_limits(weight, max_per_min, max_per_day)?;
    let id: Option<i64> = sqlx::query_scalar("select wafleet_set_tenant_limits($1, $2, $3, $4)")
        .bind(customer_ref.as_str())
        .bind(weight)
        .bind(max_per_min)
        .bind(max_per_day)
        .fetch_one(pool)
        .await?;
    id.map(|_| ()).ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))
}

/// A change of send limits: only the `Some` fields change. A cap of `Some(None)` removes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitsChange {
    /// New fair-share weight.
    pub weight: Option<i32>,
    /// New per-minute cap, or `Some(None)` for no cap.
    pub max_per_min: Option<Option<i32>>,
    /// New per-day cap, or `Some(None)` for no cap.
    pub max_per_day: Option<Option<i32>>,
}

impl LimitsChange {
    /// Whether the change names no limit at all.
    pub fn is_empty(&self) -> bool {
        self.weight.is_none() && self.max_per_min.is_none() && self.max_per_day.is_none()
    }

    /// The change as audit arguments: a limit not given is absent, a removed cap is `"none"`.
    pub fn audit_arguments(&self) -> serde_json::Map<String, serde_json::Value> {
        let cap = |c: Option<i32>| c.map_or_else(|| serde_json::json!("none"), |n| serde_json::json!(n));
        let mut out = serde_json::Map::new();
        if let Some(w) = self.weight {
            out.insert("weight".into(), w.into());
        }
        for (name, value) in [("max_per_min", self.max_per_min), ("max_per_day", self.max_per_day)] {
            if let Some(c) = value {
                out.insert(name.into(), cap(c));
            }
        }
        out
    }
}

/// `wafleet tenants limits`: changes only the limits `change` names and returns the limits that
/// now hold. The row is locked from the read to the write, so two partial changes at once
/// cannot undo each other.
pub async fn update_tenant_limits(
    pool: &PgPool,
    customer_ref: &CustomerRef,
    change: LimitsChange,
) -> Result<tenant::Limits> {
    let meta =
        tenant::lookup(pool, customer_ref).await?.ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))?;
    // ISOLATION: the tenant's own scope; the definer function below changes only its row.
    let mut tx = db::begin_tenant(pool, meta.id).await?;
    let current: Option<(i32, Option<i32>, Option<i32>)> = sqlx::query_as(
        "select weight, max_sends_per_min, max_sends_per_day from tenants where tenant_id = $1 for update",
    )
    .bind(meta.id.get())
    .fetch_optional(&mut *tx)
    .await?;
    let (weight, per_min, per_day) = current.ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))?;
    let limits = tenant::Limits {
        weight: change.weight.unwrap_or(weight),
        max_per_min: change.max_per_min.unwrap_or(per_min),
        max_per_day: change.max_per_day.unwrap_or(per_day),
    };
    check_limits(limits.weight, limits.max_per_min, limits.max_per_day)?;
    let id: Option<i64> = sqlx::query_scalar("select wafleet_set_tenant_limits($1, $2, $3, $4)")
        .bind(customer_ref.as_str())
        .bind(limits.weight)
        .bind(limits.max_per_min)
        .bind(limits.max_per_day)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    id.map(|_| limits).ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))
}

fn check_limits(weight: i32, max_per_min: Option<i32>, max_per_day: Option<i32>) -> Result<()> {
    if !(1..=100).contains(&weight) || max_per_min.is_some_and(|n| n < 1) || max_per_day.is_some_and(|n| n < 1) {
        return Err(InvalidInput::TenantLimits.into());
    }
    Ok(())
}

/// `wafleet tenants limits --queue-max-bytes`: the bound of the tenant's queue (`None`: back to
/// the fleet-wide default). The broker's policy is set first, so the row never claims a bound
/// the broker does not apply; a failure in between is repaired by running the command again.
pub async fn set_tenant_queue_bound(
    pool: &PgPool,
    endpoints: &Endpoints,
    customer_ref: &CustomerRef,
    max_bytes: Option<u64>,
) -> Result<()> {
    let stored = max_bytes.map(i64::try_from).transpose().map_err(|_| InvalidInput::QueueBound)?;
    if stored.is_some_and(|n| n < 1) {
        return Err(InvalidInput::QueueBound.into());
    }
    let meta =
        tenant::lookup(pool, customer_ref).await?.ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))?;
    if meta.status == TenantStatus::Offboarded {
        return Err(Error::UnknownTenant(customer_ref.to_string()));
    }
    // ISOLATION: the override's pattern is exactly this tenant's queue, anchored and escaped.
    endpoints.management()?.set_tenant_queue_bound(customer_ref, max_bytes).await?;
    let id: Option<i64> = sqlx::query_scalar("select wafleet_set_tenant_queue_bound($1, $2)")
        .bind(customer_ref.as_str())
        .bind(stored)
        .fetch_one(pool)
        .await?;
    id.map(|_| ()).ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))
}

/// `wafleet tenants list`.
pub async fn list_tenants(pool: &PgPool) -> Result<Vec<TenantSummary>> {
    tenant::list(pool).await
}

/// `wafleet tenants enable|disable`. Disabling never deletes the queue.
pub async fn set_status(pool: &PgPool, customer_ref: &CustomerRef, status: TenantStatus) -> Result<()> {
    tenant::set_status(pool, customer_ref, status).await.map(|_| ())
}

/// `wafleet rules add`: a keyword rule for the `rules` bot.
pub async fn add_rule(pool: &PgPool, customer_ref: &CustomerRef, keyword: &str, reply: &str) -> Result<()> {
    let keyword = keyword.trim();
    if keyword.is_empty() || keyword.len() > 200 {
        return Err(InvalidInput::RuleKeyword.into());
    }
    if reply.trim().is_empty() {
        return Err(InvalidInput::RuleReply.into());
    }
    let meta =
        tenant::lookup(pool, customer_ref).await?.ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))?;
    // ISOLATION: written in the tenant's own scope; RLS rejects a row for any other tenant.
    let mut tx = db::begin_tenant(pool, meta.id).await?;
    sqlx::query(
        "insert into bot_rules (tenant_id, keyword, reply) values ($1, $2, $3) \
         on conflict (tenant_id, keyword) do update set reply = excluded.reply",
    )
    .bind(meta.id.get())
    .bind(keyword)
    .bind(reply)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

//! Tenant commands: add, limits and queue bound, status, rules, lookups and the signed webhook URL.

use secrecy::SecretString;
use sqlx::PgPool;
use wafleet_shared::{CustomerRef, Generation, Keyring};

use crate::db;
use crate::endpoints::Endpoints;
use crate::error::{Error, InvalidInput, Result, SetupError};
use crate::tenant::{self, NewTenant, TenantMeta, TenantStatus, TenantSummary};
use crate::topology;

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

/// Live tenants whose bridge key is not their ref: added before the two had to be equal, they lose
/// every event (ingest refuses a body whose `customer_ref`, the bridge key, is not the URL's ref).
pub async fn tenants_with_foreign_bridge_keys(pool: &PgPool) -> Result<Vec<TenantSummary>> {
    let mut tenants = tenant::list(pool).await?;
    tenants.retain(|t| t.status != TenantStatus::Offboarded && t.bridge != t.customer_ref.as_str());
    Ok(tenants)
}

/// `wafleet tenants groups <ref> on|off`: whether the built-in bots answer in group chats.
pub async fn set_reply_in_groups(pool: &PgPool, customer_ref: &CustomerRef, reply: bool) -> Result<()> {
    let id: Option<i64> = sqlx::query_scalar("select wafleet_set_tenant_reply_in_groups($1, $2)")
        .bind(customer_ref.as_str())
        .bind(reply)
        .fetch_one(pool)
        .await?;
    id.map(|_| ()).ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))
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

/// Checks the public base URL of ingest (`--base`): an absolute http(s) URL with a host, no
/// credentials, query or fragment, so the signed webhook URL built on it is well formed.
pub fn check_base_url(base: &str) -> Result<()> {
    let url = url::Url::parse(base).map_err(|e| InvalidInput::BaseUrl(Some(e)))?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    if plain && base.len() <= 2048 {
        Ok(())
    } else {
        Err(InvalidInput::BaseUrl(None).into())
    }
}

/// The signed webhook URL of a tenant, and its status (the caller warns if not active).
pub async fn webhook_url(
    pool: &PgPool,
    signing_key: &SecretString,
    customer_ref: &CustomerRef,
    base: &str,
) -> Result<(String, TenantStatus)> {
    let meta =
        tenant::lookup(pool, customer_ref).await?.ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))?;
    Ok((signed_url(signing_key, customer_ref, meta.generation, base)?, meta.status))
}

/// The signed webhook URL of `customer_ref` for one URL `generation` (it works only while that
/// is the tenant's generation). Lets a stored answer name its URL without storing it.
pub fn signed_url(
    signing_key: &SecretString,
    customer_ref: &CustomerRef,
    generation: Generation,
    base: &str,
) -> Result<String> {
    let keyring = Keyring::parse(signing_key).map_err(SetupError::Keyring)?;
    check_base_url(base)?;
    let base = base.trim_end_matches('/');
    let token = keyring.sign(customer_ref, generation);
    Ok(format!("{base}/webhook/{customer_ref}/{token}"))
}

/// The tenant's metadata, or [`Error::UnknownTenant`].
pub async fn require_tenant(pool: &PgPool, customer_ref: &CustomerRef) -> Result<TenantMeta> {
    tenant::lookup(pool, customer_ref).await?.ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))
}

/// One tenant, whatever its status (`tenants show`).
/// ISOLATION: read from its own row in its own scope, like every tenant read.
pub async fn get_tenant(pool: &PgPool, customer_ref: &CustomerRef) -> Result<TenantSummary> {
    let t = tenant::load_by_ref(pool, customer_ref).await?;
    Ok(TenantSummary::of(&t))
}

/// Up to `limit` tenants whose ref sorts after `after`, in ref order (keyset pagination).
pub async fn list_tenants_page(pool: &PgPool, after: Option<&str>, limit: u32) -> Result<Vec<TenantSummary>> {
    let rows = sqlx::query(
        "select tenant_id, customer_ref, bridge, status, generation, auth_mode, queue_type, bot_kind \
         from wafleet_list_tenants_page($1, $2)",
    )
    .bind(after)
    .bind(i32::try_from(limit).unwrap_or(i32::MAX))
    .fetch_all(pool)
    .await?;
    rows.iter().map(TenantSummary::from_row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_is_a_plain_http_or_https_url() {
        for good in ["https://hooks.example.com", "http://127.0.0.1:8080", "https://h.example/prefix/"] {
            assert!(check_base_url(good).is_ok(), "{good}");
        }
        for bad in [
            "hooks.example.com",
            "ftp://h.example",
            "http://[",
            "https://u:p@h.example",
            "https://h.example/?a=1",
            "https://h.example/#x",
        ] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
    }
}

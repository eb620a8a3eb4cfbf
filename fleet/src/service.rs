//! Thin service functions the admin API needs and [`crate::ops`] lacks, written so the
//! CLI can call them too: audit records with an explicit actor, one tenant by ref, a keyset page
//! of the fleet, one tenant's depth, the DLQ commands with a tenant check first, and a tenant's
//! unknown and failed outbox rows. The rules themselves stay in the modules these call.

use secrecy::SecretString;
use sqlx::PgPool;
use wafleet_shared::{CustomerRef, Generation, Keyring};

use crate::db;
use crate::depth::{self, DepthSource, TenantDepth};
use crate::dlq::{self, DeadLetter, DlqSummary};
use crate::endpoints::Endpoints;
use crate::error::{Conflict, Error, InvalidInput, Result, SetupError};
use crate::outbox;
use crate::tenant::{self, TenantMeta, TenantStatus, TenantSummary};

pub use crate::audit::Actor;

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

/// One tenant's line of `wafleet depth`. An offboarded tenant has no queues: a conflict.
pub async fn tenant_depth(
    pool: &PgPool,
    endpoints: &Endpoints,
    customer_ref: &CustomerRef,
) -> Result<(TenantDepth, DepthSource)> {
    let meta = require_tenant(pool, customer_ref).await?;
    if meta.status == TenantStatus::Offboarded {
        return Err(Conflict::QueuesGone(customer_ref.clone()).into());
    }
    let (rows, source) = depth::depth(pool, endpoints).await?;
    rows.into_iter()
        .find(|d| d.customer_ref == customer_ref.as_str())
        .map(|d| (d, source))
        .ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))
}

/// `wafleet depth [<ref>...]`: the whole fleet, or only the named tenants (in the fleet's
/// deepest-first order). An unknown or offboarded ref is an error, not a missing line.
pub async fn depth_of(
    pool: &PgPool,
    endpoints: &Endpoints,
    refs: &[CustomerRef],
) -> Result<(Vec<TenantDepth>, DepthSource)> {
    for r in refs {
        if require_tenant(pool, r).await?.status == TenantStatus::Offboarded {
            return Err(Conflict::QueuesGone(r.clone()).into());
        }
    }
    let (mut rows, source) = depth::depth(pool, endpoints).await?;
    if !refs.is_empty() {
        rows.retain(|d| refs.iter().any(|r| r.as_str() == d.customer_ref));
    }
    Ok((rows, source))
}

/// `dlq list`, refusing an unknown tenant instead of reporting an empty queue for it.
pub async fn dlq_list(pool: &PgPool, amqp_url: &str, only: Option<&CustomerRef>) -> Result<Vec<DlqSummary>> {
    if let Some(r) = only {
        require_tenant(pool, r).await?;
    }
    dlq::list(pool, amqp_url, only).await
}

/// `dlq show` of a known tenant.
pub async fn dlq_show(
    pool: &PgPool,
    amqp_url: &str,
    customer_ref: &CustomerRef,
    limit: u32,
    with_body: bool,
) -> Result<Vec<DeadLetter>> {
    require_tenant(pool, customer_ref).await?;
    dlq::show(amqp_url, customer_ref, limit, with_body).await
}

/// `dlq purge` of a known tenant; returns how many messages were deleted.
pub async fn dlq_purge(pool: &PgPool, amqp_url: &str, customer_ref: &CustomerRef) -> Result<u32> {
    require_tenant(pool, customer_ref).await?;
    dlq::purge(amqp_url, customer_ref).await
}

/// Outbox statuses an operator resolves by hand.
pub const ATTENTION_STATUSES: &[&str] = &["unknown", "failed"];

pub use crate::outbox::OutboxRow;

/// A tenant's outbox rows in `statuses` (each one of [`ATTENTION_STATUSES`]), newest first.
pub async fn outbox_rows(
    pool: &PgPool,
    customer_ref: &CustomerRef,
    statuses: &[String],
    limit: u32,
    with_body: bool,
) -> Result<Vec<OutboxRow>> {
    if let Some(bad) = statuses.iter().find(|s| !ATTENTION_STATUSES.contains(&s.as_str())) {
        return Err(InvalidInput::OutboxStatus(bad.clone()).into());
    }
    let meta = require_tenant(pool, customer_ref).await?;
    // ISOLATION: read in the tenant's own scope; RLS hides every other tenant's rows.
    let mut tx = db::begin_tenant_read_only(pool, meta.id).await?;
    let rows = outbox::attention_rows(&mut tx, meta.id, statuses, limit, with_body).await?;
    tx.commit().await?;
    Ok(rows)
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

    #[test]
    fn admin_api_callers_are_named_by_their_token_in_the_audit_log() {
        assert_eq!(Actor::admin_token("ci").as_str(), "admin-token:ci");
        assert_eq!(Actor::operator("  "), Actor::operator("unknown"));
    }
}

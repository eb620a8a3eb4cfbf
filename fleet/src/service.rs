//! Thin service functions the admin API needs and [`crate::ops`] lacks (issue #9), written so the
//! CLI can call them too: audit records with an explicit actor, one tenant by ref, a keyset page
//! of the fleet, one tenant's depth, the DLQ commands with a tenant check first, and a tenant's
//! unknown and failed outbox rows. The rules themselves stay in the modules these call.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Serialize;
use sqlx::{PgPool, Row};
use wafleet_shared::{CustomerRef, Keyring};

use crate::db;
use crate::depth::{self, DepthSource, TenantDepth};
use crate::dlq::{self, DeadLetter, DlqSummary};
use crate::endpoints::Endpoints;
use crate::error::{Error, Result};
use crate::tenant::{self, TenantMeta, TenantStatus, TenantSummary};

pub use crate::audit::Actor;

/// Checks the public base URL of ingest (`--base`): an absolute http(s) URL with a host, no
/// credentials, query or fragment, so the signed webhook URL built on it is well formed.
pub fn check_base_url(base: &str) -> Result<()> {
    let invalid = || Error::Invalid("base must be an http(s) URL such as https://hooks.example.com".into());
    let url = url::Url::parse(base).map_err(|_| invalid())?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    if plain && base.len() <= 2048 {
        Ok(())
    } else {
        Err(invalid())
    }
}

/// The signed webhook URL of a tenant, and its status (the caller warns if not active).
pub async fn webhook_url(
    pool: &PgPool,
    signing_key: &SecretString,
    customer_ref: &CustomerRef,
    base: &str,
) -> Result<(String, TenantStatus)> {
    let keyring = Keyring::parse(signing_key).map_err(|e| Error::Config(e.to_string()))?;
    let meta =
        tenant::lookup(pool, customer_ref).await?.ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))?;
    check_base_url(base)?;
    let base = base.trim_end_matches('/');
    let token = keyring.sign(customer_ref, meta.generation);
    Ok((format!("{base}/webhook/{customer_ref}/{token}"), meta.status))
}

/// The tenant's metadata, or [`Error::UnknownTenant`].
pub async fn require_tenant(pool: &PgPool, customer_ref: &CustomerRef) -> Result<TenantMeta> {
    tenant::lookup(pool, customer_ref).await?.ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))
}

/// One tenant, whatever its status (`tenants show`).
/// ISOLATION: read from its own row in its own scope, like every tenant read.
pub async fn get_tenant(pool: &PgPool, customer_ref: &CustomerRef) -> Result<TenantSummary> {
    let t = tenant::load_by_ref(pool, customer_ref).await?;
    Ok(TenantSummary {
        tenant_id: t.id().get(),
        customer_ref: t.customer_ref().to_string(),
        bridge: t.bridge().key().to_owned(),
        status: t.status().as_str().to_owned(),
        generation: t.generation().to_db(),
        auth_mode: t.auth_mode().as_str().to_owned(),
        queue_type: t.queue_type().as_str().to_owned(),
        bot_kind: t.bot_kind().as_str().to_owned(),
    })
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
        return Err(Error::Conflict(format!("tenant {customer_ref} was offboarded; its queues are gone")));
    }
    let (rows, source) = depth::depth(pool, endpoints).await?;
    rows.into_iter()
        .find(|d| d.customer_ref == customer_ref.as_str())
        .map(|d| (d, source))
        .ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))
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

/// One outbox row for an operator: metadata and the chat; the reply text only when asked for.
#[derive(Clone, Debug, Serialize)]
pub struct OutboxRow {
    /// Row id.
    pub outbox_id: i64,
    /// The event that produced the reply.
    pub ingest_id: uuid::Uuid,
    /// Chat the reply was for.
    pub chat: String,
    /// `unknown` or `failed`.
    pub status: String,
    /// Send attempts made.
    pub attempts: i32,
    /// Last error text.
    pub last_error: Option<String>,
    /// When the reply was queued.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The reply text (personal data), only when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// A tenant's outbox rows in `statuses` (each one of [`ATTENTION_STATUSES`]), newest first.
pub async fn outbox_rows(
    pool: &PgPool,
    customer_ref: &CustomerRef,
    statuses: &[String],
    limit: u32,
    with_body: bool,
) -> Result<Vec<OutboxRow>> {
    if let Some(bad) = statuses.iter().find(|s| !ATTENTION_STATUSES.contains(&s.as_str())) {
        return Err(Error::Invalid(format!("status {bad:?}: use unknown or failed")));
    }
    let meta = require_tenant(pool, customer_ref).await?;
    // ISOLATION: read in the tenant's own scope; RLS hides every other tenant's rows.
    let mut tx = db::begin_tenant_read_only(pool, meta.id).await?;
    let rows = sqlx::query(
        "select outbox_id, ingest_id, chat, status, attempts, last_error, created_at, updated_at, \
         case when $4 then body end as body from outbox \
         where tenant_id = $1 and status = any($2) order by created_at desc, outbox_id desc limit $3",
    )
    .bind(meta.id.get())
    .bind(statuses)
    .bind(i64::from(limit))
    .bind(with_body)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.into_iter()
        .map(|row| {
            Ok(OutboxRow {
                outbox_id: row.try_get("outbox_id")?,
                ingest_id: row.try_get("ingest_id")?,
                chat: row.try_get("chat")?,
                status: row.try_get("status")?,
                attempts: row.try_get("attempts")?,
                last_error: row.try_get("last_error")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
                body: row.try_get("body")?,
            })
        })
        .collect()
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

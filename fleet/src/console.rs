//! Reads of the fleet console (served by the admin binary) that no CLI command makes: the
//! searchable tenant list, the sends per account against their budget, the canary's last
//! verdicts and a tenant's recent replies. Counts, states and times only; a reply's text only
//! when the caller asks for it (the console asks only for a token with the `pii` scope).

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use wafleet_shared::CustomerRef;

use crate::db;
use crate::error::{InvalidInput, Result};
use crate::outbox::{self, OutboxRow};
use crate::tenant::TenantStatus;

/// One line of the console's tenant list.
#[derive(Clone, Debug)]
pub struct TenantLine {
    /// Database id (for reading its queue depth).
    pub tenant_id: i64,
    /// The ref.
    pub customer_ref: CustomerRef,
    /// Row status.
    pub status: TenantStatus,
    /// The account's name.
    pub account: String,
    /// Last stored bridge state (no live check).
    pub bridge_state: String,
    /// Bot kind.
    pub bot_kind: String,
    /// `classic` or `quorum`.
    pub queue_type: String,
    /// When the newest reply was sent.
    pub last_reply_at: Option<DateTime<Utc>>,
}

/// Which tenants a page of the list holds.
#[derive(Clone, Debug, Default)]
pub struct TenantFilter {
    /// Only refs containing this text.
    pub search: Option<String>,
    /// Only this status.
    pub status: Option<TenantStatus>,
}

/// Tag of the console's tenant-list cursors (see [`crate::paging`]).
const CURSOR_TAG: &str = "c1";

/// One page of tenants matching `filter`, in ref order after the tenant `cursor` names, and the
/// cursor of the next page.
pub async fn tenants_page(
    pool: &PgPool,
    filter: &TenantFilter,
    cursor: Option<&str>,
    limit: u32,
) -> Result<(Vec<TenantLine>, Option<String>)> {
    let after = cursor.map(|c| crate::paging::decode(CURSOR_TAG, c)).transpose()?;
    if after.as_deref().is_some_and(|r| CustomerRef::parse(r).is_err()) {
        return Err(InvalidInput::Cursor.into());
    }
    let rows = sqlx::query(
        "select tenant_id, customer_ref, status, account, bridge_state, bot_kind, queue_type, last_reply_at \
         from wafleet_console_tenants($1, $2, $3, $4)",
    )
    .bind(filter.search.as_deref().filter(|s| !s.is_empty()))
    .bind(filter.status.map(TenantStatus::as_str))
    .bind(after.as_deref())
    .bind(i32::try_from(limit.saturating_add(1)).unwrap_or(i32::MAX))
    .fetch_all(pool)
    .await?;
    let mut lines = rows
        .iter()
        .map(|row| {
            let raw: String = row.try_get("customer_ref")?;
            Ok(TenantLine {
                tenant_id: row.try_get("tenant_id")?,
                customer_ref: CustomerRef::parse(&raw)
                    .map_err(|source| InvalidInput::CustomerRef { raw: raw.clone(), source })?,
                status: TenantStatus::parse(row.try_get("status")?)?,
                account: row.try_get("account")?,
                bridge_state: row.try_get("bridge_state")?,
                bot_kind: row.try_get("bot_kind")?,
                queue_type: row.try_get("queue_type")?,
                last_reply_at: row.try_get("last_reply_at")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let next = if lines.len() > limit as usize {
        lines.truncate(limit as usize);
        lines.last().map(|l| crate::paging::encode(CURSOR_TAG, l.customer_ref.as_str()))
    } else {
        None
    };
    Ok((lines, next))
}

/// An account's sends against its budget.
#[derive(Clone, Debug, Default)]
pub struct AccountSends {
    /// Replies sent in the last minute.
    pub last_minute: i64,
    /// Replies sent in the last hour.
    pub last_hour: i64,
    /// Tenants with replies waiting to be sent.
    pub tenants_waiting: i64,
}

/// Sends per account id, on the database's clock.
pub async fn account_sends(pool: &PgPool) -> Result<Vec<(i64, AccountSends)>> {
    let rows = sqlx::query(
        "select account_id, sent_last_minute, sent_last_hour, tenants_waiting \
         from wafleet_console_account_sends(now())",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let sends = AccountSends {
                last_minute: row.try_get("sent_last_minute")?,
                last_hour: row.try_get("sent_last_hour")?,
                tenants_waiting: row.try_get("tenants_waiting")?,
            };
            Ok((row.try_get("account_id")?, sends))
        })
        .collect()
}

/// The last verdict of one canary tenant.
#[derive(Clone, Debug)]
pub struct CanaryResult {
    /// The canary tenant.
    pub customer_ref: String,
    /// Whether the probe passed.
    pub passed: bool,
    /// Why it failed.
    pub reason: Option<String>,
    /// How long a passing probe took.
    pub latency_ms: Option<i64>,
    /// When it was decided.
    pub checked_at: DateTime<Utc>,
}

/// Records the verdict of `customer_ref`'s latest probe (the worker's canary replica).
pub async fn record_canary(
    pool: &PgPool,
    customer_ref: &CustomerRef,
    reason: Option<&str>,
    latency: Option<std::time::Duration>,
) -> Result<()> {
    sqlx::query(
        "insert into canary_results (customer_ref, passed, reason, latency_ms, checked_at) \
         values ($1, $2, $3, $4, now()) on conflict (customer_ref) do update \
         set passed = excluded.passed, reason = excluded.reason, latency_ms = excluded.latency_ms, \
         checked_at = excluded.checked_at",
    )
    .bind(customer_ref.as_str())
    .bind(reason.is_none())
    .bind(reason)
    .bind(latency.map(|l| i64::try_from(l.as_millis()).unwrap_or(i64::MAX)))
    .execute(pool)
    .await?;
    Ok(())
}

/// Every canary tenant's last verdict, in ref order.
pub async fn canary_results(pool: &PgPool) -> Result<Vec<CanaryResult>> {
    let rows = sqlx::query(
        "select customer_ref, passed, reason, latency_ms, checked_at from canary_results order by customer_ref",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(CanaryResult {
                customer_ref: row.try_get("customer_ref")?,
                passed: row.try_get("passed")?,
                reason: row.try_get("reason")?,
                latency_ms: row.try_get("latency_ms")?,
                checked_at: row.try_get("checked_at")?,
            })
        })
        .collect()
}

/// Reply statuses the console's tenant page lists.
pub const RECENT_REPLY_STATUSES: &[&str] = &["sent", "failed", "unknown", "expired"];

/// A known tenant's newest `limit` replies in [`RECENT_REPLY_STATUSES`], with their text only
/// when `with_body`.
pub async fn recent_replies(
    pool: &PgPool,
    customer_ref: &CustomerRef,
    limit: u32,
    with_body: bool,
) -> Result<Vec<OutboxRow>> {
    let meta = crate::service::require_tenant(pool, customer_ref).await?;
    let statuses: Vec<String> = RECENT_REPLY_STATUSES.iter().map(|s| (*s).to_owned()).collect();
    // ISOLATION: read in the tenant's own scope; RLS hides every other tenant's rows.
    let mut tx = db::begin_tenant_read_only(pool, meta.id).await?;
    let (rows, _) = outbox::attention_rows(&mut tx, meta.id, &statuses, (limit, None), with_body).await?;
    tx.commit().await?;
    Ok(rows)
}

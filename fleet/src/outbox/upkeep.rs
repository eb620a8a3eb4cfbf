//! Outbox upkeep that spends no budget: settling replies that can no longer go out (expired,
//! tenant inactive), marking crash leftovers `unknown`, retention, a contact's erasure and an
//! offboarded tenant's pending replies.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use tracing::{info, warn};

use crate::db;
use crate::error::Result;
use crate::labels::TenantLabels;
use crate::tenant::TenantId;

/// Settles pending replies that can no longer be sent: past their TTL → `expired`, tenant not
/// active → `cancelled`. Never silent: each is logged and counted. Returns how many.
pub async fn settle(pool: &PgPool, now: Option<DateTime<Utc>>, limit: i32, labels: &TenantLabels) -> Result<u64> {
    let rows: Vec<(i64, i64, String)> =
        sqlx::query_as("select outbox_id, tenant_id, new_status from wafleet_outbox_settle($1, $2)")
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?;
    let mut settled = 0;
    for (outbox_id, tenant_id, status) in rows {
        let mut tx = db::begin_tenant(pool, TenantId::from_db(tenant_id)).await?;
        // ISOLATION: in the row's own scope; the status filter keeps a concurrent claim intact.
        let done = sqlx::query(
            "update outbox set status = $3, last_error = $4, updated_at = now() \
             where outbox_id = $1 and tenant_id = $2 and status = 'pending'",
        )
        .bind(outbox_id)
        .bind(tenant_id)
        .bind(&status)
        .bind(if status == "expired" { "time to live passed before a send was possible" } else { "tenant not active" })
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let tenant = customer_ref_in(&mut tx, tenant_id).await?;
        tx.commit().await?;
        if done > 0 {
            settled += done;
            info!(tenant = %tenant, outbox_id, state = %status, "reply not sent");
            metrics::counter!(crate::metric::SENDER_SENDS_TOTAL, "outcome" => status, "tenant" => bounded(labels, &tenant))
                .increment(done);
        }
    }
    Ok(settled)
}

/// The bounded metric label of a tenant ref read from the database.
fn bounded(labels: &TenantLabels, customer_ref: &str) -> String {
    wafleet_shared::CustomerRef::parse(customer_ref)
        .map_or_else(|_| crate::labels::OTHER.to_owned(), |r| labels.label(&r))
}

async fn customer_ref_in(tx: &mut Transaction<'static, Postgres>, tenant_id: i64) -> Result<String> {
    let r: Option<String> = sqlx::query_scalar("select customer_ref from tenants where tenant_id = $1")
        .bind(tenant_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(r.unwrap_or_default())
}

/// Rows left `sending` longer than `older_than` were cut by a crash and may have reached the
/// person: `unknown`, never resent.
pub async fn mark_stale_sending(
    pool: &PgPool,
    now: Option<DateTime<Utc>>,
    older_than: Duration,
    labels: &TenantLabels,
) -> Result<u64> {
    let stale: Vec<(i64, i64)> =
        sqlx::query_as("select outbox_id, tenant_id from wafleet_outbox_stale_sending_at($1, $2)")
            .bind(now)
            .bind(older_than)
            .fetch_all(pool)
            .await?;
    let mut marked = 0;
    for (outbox_id, tenant_id) in stale {
        let mut tx = db::begin_tenant(pool, TenantId::from_db(tenant_id)).await?;
        marked += sqlx::query(
            "update outbox set status = 'unknown', last_error = 'interrupted while sending', updated_at = now() \
             where outbox_id = $1 and tenant_id = $2 and status = 'sending'",
        )
        .bind(outbox_id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let tenant = customer_ref_in(&mut tx, tenant_id).await?;
        tx.commit().await?;
        warn!(tenant = %tenant, outbox_id, "reply interrupted while sending is now unknown");
        metrics::counter!(crate::metric::SENDER_SENDS_TOTAL, "outcome" => "unknown", "tenant" => bounded(labels, &tenant))
            .increment(1);
    }
    Ok(marked)
}

/// Retention: deletes `tenant`'s finished rows (`sent`, `failed`, `unknown`, `expired`,
/// `cancelled`) last changed more than `days` days ago, inside the caller's tenant-scoped
/// transaction. Returns how many.
pub async fn prune_finished(tx: &mut Transaction<'static, Postgres>, tenant: TenantId, days: i32) -> Result<u64> {
    Ok(sqlx::query(
        "delete from outbox where tenant_id = $1 and status in ('sent', 'failed', 'unknown', 'expired', 'cancelled') \
         and updated_at < now() - make_interval(days => $2)",
    )
    .bind(tenant.get())
    .bind(days)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// Erasure: deletes `tenant`'s rows for the chats in `forms` (pending replies to the contact are
/// not sent), inside the caller's tenant-scoped transaction. Returns how many.
pub async fn erase_contact(tx: &mut Transaction<'static, Postgres>, tenant: TenantId, forms: &[String]) -> Result<u64> {
    Ok(sqlx::query("delete from outbox where tenant_id = $1 and chat = any($2)")
        .bind(tenant.get())
        .bind(forms)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

/// Offboarding, dry run: how many of `tenant`'s replies are still pending.
pub async fn pending_count(tx: &mut Transaction<'static, Postgres>, tenant: TenantId) -> Result<u64> {
    Ok(sqlx::query_scalar::<_, i64>("select count(*) from outbox where tenant_id = $1 and status = 'pending'")
        .bind(tenant.get())
        .fetch_one(&mut **tx)
        .await? as u64)
}

/// Offboarding: cancels `tenant`'s pending replies. Returns how many.
pub async fn cancel_pending(tx: &mut Transaction<'static, Postgres>, tenant: TenantId) -> Result<u64> {
    Ok(sqlx::query(
        "update outbox set status = 'cancelled', last_error = 'tenant offboarded', updated_at = now() \
         where tenant_id = $1 and status = 'pending'",
    )
    .bind(tenant.get())
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

//! Data lifecycle: retention of processed events, the message log and finished outbox rows
//! (`WAFLEET_RETENTION_DAYS`), per-tenant export, and erasure of one contact's data.
//!
//! ISOLATION: every read and delete runs in one tenant's own scope; retention walks the tenants
//! one by one instead of deleting across tenants, so RLS applies to it like to everything else.

use std::time::Duration;

use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wafleet_shared::CustomerRef;

use crate::db;
use crate::error::{Error, InvalidInput, Result};
use crate::locks;
use crate::outbox;
use crate::tenant;

/// Settings of retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionConfig {
    /// `WAFLEET_RETENTION_DAYS`: keep this many days (default 30).
    pub days: u32,
    /// `WAFLEET_RETENTION_INTERVAL_SECS`: how often the worker runs it (default 3600).
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { days: 30, interval: Duration::from_secs(3600) }
    }
}

impl RetentionConfig {
    /// Refuses a zero retention or interval (`WAFLEET_RETENTION_DAYS`,
    /// `WAFLEET_RETENTION_INTERVAL_SECS`).
    pub fn validate(&self) -> Result<()> {
        if self.days == 0 || self.interval.is_zero() {
            return Err(Error::Config("WAFLEET_RETENTION_DAYS and WAFLEET_RETENTION_INTERVAL_SECS must be > 0".into()));
        }
        Ok(())
    }
}

/// What one retention run deleted.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RetentionReport {
    /// Tenants visited.
    pub tenants: u32,
    /// Rows deleted from `processed_events`.
    pub processed_events: u64,
    /// Rows deleted from `message_log`.
    pub message_log: u64,
    /// Finished outbox rows deleted (`sent`, `failed`, `unknown`, `expired`, `cancelled`).
    pub outbox: u64,
    /// Another replica or CLI held the retention lock; nothing was done.
    pub skipped: bool,
}

/// One retention run, guarded by an advisory lock held on a direct connection to
/// `database_url` (the lock dies with the connection if this process does).
pub async fn run_once(pool: &PgPool, database_url: &str, days: u32) -> Result<RetentionReport> {
    let Some(lock) = db::try_lead(database_url, locks::RETENTION.key).await? else {
        return Ok(RetentionReport { skipped: true, ..RetentionReport::default() });
    };
    let result = prune_all(pool, days).await;
    // Closing the connection releases the lock.
    let _ = sqlx::Connection::close(lock).await;
    result
}

async fn prune_all(pool: &PgPool, days: u32) -> Result<RetentionReport> {
    let days = i32::try_from(days).map_err(|_| InvalidInput::RetentionDays(days))?;
    let mut report = RetentionReport::default();
    for summary in tenant::list(pool).await? {
        let mut tx = db::begin_tenant(pool, summary.tenant_id).await?;
        let id = summary.tenant_id.get();
        report.processed_events += delete(
            &mut tx,
            "delete from processed_events where tenant_id = $1 and processed_at < now() - make_interval(days => $2)",
            id,
            days,
        )
        .await?;
        report.message_log += delete(
            &mut tx,
            "delete from message_log where tenant_id = $1 and created_at < now() - make_interval(days => $2)",
            id,
            days,
        )
        .await?;
        report.outbox += outbox::prune_finished(&mut tx, summary.tenant_id, days).await?;
        tx.commit().await?;
        report.tenants += 1;
    }
    Ok(report)
}

async fn delete(tx: &mut Transaction<'static, Postgres>, sql: &str, tenant: i64, days: i32) -> Result<u64> {
    Ok(sqlx::query(sql).bind(tenant).bind(days).execute(&mut **tx).await?.rows_affected())
}

/// Runs retention every `config.interval` until `shutdown` (the worker; every replica tries, the
/// advisory lock lets one at a time through).
pub async fn run_periodically(
    pool: PgPool,
    database_url: String,
    config: RetentionConfig,
    shutdown: CancellationToken,
) {
    loop {
        match run_once(&pool, &database_url, config.days).await {
            Ok(r) if r.skipped => {}
            Ok(r) => {
                info!(
                    tenants = r.tenants,
                    processed_events = r.processed_events,
                    message_log = r.message_log,
                    outbox = r.outbox,
                    "retention run"
                );
                metrics::counter!(crate::metric::RETENTION_DELETED_TOTAL, "table" => "processed_events")
                    .increment(r.processed_events);
                metrics::counter!(crate::metric::RETENTION_DELETED_TOTAL, "table" => "message_log")
                    .increment(r.message_log);
                metrics::counter!(crate::metric::RETENTION_DELETED_TOTAL, "table" => "outbox").increment(r.outbox);
            }
            Err(e) => warn!(error = %e, "retention run failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.interval) => {}
        }
    }
}

/// Rows written by [`export`], per table.
pub type ExportCounts = Vec<(String, u64)>;

/// `wafleet tenants export`: every row of the tenant, one JSON object per line
/// (`{"table": .., "row": {..}}`), from one repeatable-read, read-only transaction scoped to the
/// tenant. Tables are every table with a `tenant_id` column the application role can read, so a
/// new tenant-owned table is exported without a code change.
pub async fn export(
    pool: &PgPool,
    customer_ref: &CustomerRef,
    out: &mut (dyn std::io::Write + Send),
) -> Result<ExportCounts> {
    let meta =
        tenant::lookup(pool, customer_ref).await?.ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))?;
    let mut tx = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only").execute(&mut *tx).await?;
    // ISOLATION: scoped before the first read; RLS hides every other tenant's rows.
    db::scope_to_tenant(&mut tx, meta.id).await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "select c.table_name::text from information_schema.columns c \
         join information_schema.tables t on t.table_schema = c.table_schema and t.table_name = c.table_name \
         where c.table_schema = 'public' and c.column_name = 'tenant_id' and t.table_type = 'BASE TABLE' \
         and has_table_privilege(format('%I.%I', c.table_schema, c.table_name), 'select') order by 1",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut counts = Vec::new();
    for table in tables {
        // The http bot's signing secret is a credential, not tenant data: never exported.
        let sql = format!(
            "select to_jsonb(t) - 'bot_secret' from public.\"{}\" t where t.tenant_id = $1",
            table.replace('"', "\"\"")
        );
        let rows: Vec<serde_json::Value> = sqlx::query_scalar(&sql).bind(meta.id.get()).fetch_all(&mut *tx).await?;
        for row in &rows {
            let line = serde_json::json!({ "table": table, "row": row });
            writeln!(out, "{line}").map_err(InvalidInput::ExportWrite)?;
        }
        counts.push((table, rows.len() as u64));
    }
    tx.commit().await?;
    Ok(counts)
}

/// What an erasure changed.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ErasureReport {
    /// `message_log` rows deleted.
    pub message_log: u64,
    /// `outbox` rows deleted (pending replies to the contact are not sent).
    pub outbox: u64,
    /// `processed_events` rows whose chat id was redacted (kept for dedupe by ingest id).
    pub processed_events: u64,
}

/// The spellings a contact has in our tables: bare digits and the 1:1 JID.
pub fn contact_forms(contact: &str) -> Result<Vec<String>> {
    let raw = contact.trim();
    let user = raw.strip_suffix("@s.whatsapp.net").unwrap_or(raw);
    let digits: String = user.chars().filter(|c| !matches!(c, '+' | ' ' | '-' | '(' | ')')).collect();
    if !(6..=20).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(InvalidInput::Contact.into());
    }
    Ok(vec![digits.clone(), format!("{digits}@s.whatsapp.net")])
}

/// `wafleet tenants erase --contact`: deletes the contact's message log and outbox rows and
/// redacts its chat id in processed events, in one transaction scoped to the tenant.
pub async fn erase_contact(pool: &PgPool, customer_ref: &CustomerRef, contact: &str) -> Result<ErasureReport> {
    let forms = contact_forms(contact)?;
    let meta =
        tenant::lookup(pool, customer_ref).await?.ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))?;
    let mut tx = db::begin_tenant(pool, meta.id).await?;
    let id = meta.id.get();
    let message_log = sqlx::query("delete from message_log where tenant_id = $1 and chat_id = any($2)")
        .bind(id)
        .bind(&forms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let outbox = outbox::erase_contact(&mut tx, meta.id, &forms).await?;
    // The ingest id stays (dedupe of a late redelivery); the chat id is replaced by a value that
    // reveals nothing and keeps the provider-id index unique.
    let processed_events = sqlx::query(
        "update processed_events set chat_id = 'erased:' || ingest_id::text where tenant_id = $1 and chat_id = any($2)",
    )
    .bind(id)
    .bind(&forms)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(ErasureReport { message_log, outbox, processed_events })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contact_is_matched_as_digits_and_as_its_jid() {
        let forms = contact_forms("+1 555-000-1234").unwrap_or_default();
        assert_eq!(forms, vec!["15550001234".to_owned(), "15550001234@s.whatsapp.net".to_owned()]);
        assert_eq!(contact_forms("15550001234@s.whatsapp.net").unwrap_or_default()[0], "15550001234");
        assert!(contact_forms("abc").is_err());
        assert!(contact_forms("123").is_err());
    }
}

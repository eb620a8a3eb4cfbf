//! Settling a claimed reply: the sender's outcome of a send, and the bridge's `from_me` echo
//! settling an `unknown` (or still `sending`) reply. Everything runs in the caller's transaction,
//! already scoped to the reply's tenant, and repeats the tenant filter.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use tracing::info;

use super::reply_chat;
use crate::error::Result;
use crate::tenant::TenantId;

/// The API accepted the send: `sent`, with the bridge's message id. A row already settled by
/// the echo (`unknown`) is taken too. Returns how many rows changed (0: the row is gone, the
/// contact was erased meanwhile).
pub async fn mark_sent(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    outbox_id: i64,
    message_id: Option<&str>,
    now: Option<DateTime<Utc>>,
) -> Result<u64> {
    Ok(sqlx::query(
        "update outbox set status = 'sent', sent_at = coalesce($4, now()), updated_at = now(), \
         provider_message_id = $3 where outbox_id = $1 and tenant_id = $2 \
         and status in ('sending', 'unknown')",
    )
    .bind(outbox_id)
    .bind(tenant.get())
    .bind(message_id)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// A retryable failure: back to `pending`, due at `at`, or `after_ms` after `now` (the database
/// clock when `None`), with `error` as the last error.
pub async fn mark_retry(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    outbox_id: i64,
    at: Option<DateTime<Utc>>,
    now: Option<DateTime<Utc>>,
    after_ms: f64,
    error: &str,
) -> Result<()> {
    sqlx::query(
        "update outbox set status = 'pending', updated_at = now(), last_error = $6, \
         next_attempt_at = coalesce($3, coalesce($4, now()) + $5 * interval '1 millisecond') \
         where outbox_id = $1 and tenant_id = $2 and status in ('sending', 'unknown')",
    )
    .bind(outbox_id)
    .bind(tenant.get())
    .bind(at)
    .bind(now)
    .bind(after_ms)
    .bind(error)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A send answered 503 (or a 5xx other than 500/502/504) that may still have reached the
/// person: back to `pending`, due after the `from_me` echo window, and matchable by that echo
/// meanwhile ([`reconcile_from_me`]), so it is resent only if no echo came.
pub async fn await_echo(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    outbox_id: i64,
    now: Option<DateTime<Utc>>,
    window: std::time::Duration,
    error: &str,
) -> Result<()> {
    sqlx::query(
        "update outbox set status = 'pending', awaiting_echo = true, updated_at = now(), last_error = $5, \
         next_attempt_at = coalesce($3, now()) + $4 * interval '1 millisecond' \
         where outbox_id = $1 and tenant_id = $2 and status = 'sending'",
    )
    .bind(outbox_id)
    .bind(tenant.get())
    .bind(now)
    .bind(window.as_millis() as f64)
    .bind(error)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A final state for a row still in flight (`sent` from the echo, `unknown`, `failed`).
pub async fn finish(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    outbox_id: i64,
    state: &str,
    error: &str,
) -> Result<()> {
    sqlx::query(
        // Only a row still in flight: an echo may already have settled it as `sent`.
        "update outbox set status = $3, last_error = $4, updated_at = now(), \
         sent_at = case when $3 = 'sent' then coalesce(sent_at, attempted_at, now()) else sent_at end \
         where outbox_id = $1 and tenant_id = $2 and status = 'sending'",
    )
    .bind(outbox_id)
    .bind(tenant.get())
    .bind(state)
    .bind(error)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Called by the message processor inside its tenant-scoped transaction for
/// every `message` event with `from_me: true`: when the bridge's own outgoing message matches an
/// `unknown` reply of the same tenant (same chat, same body), that reply did reach the person and
/// becomes `sent`. A reply still `sending` matches too (the echo can overtake the API's answer;
/// the sender then leaves the row `sent`). The oldest match wins, so two identical replies need
/// two echoes. Returns whether a reply was reconciled.
///
/// ISOLATION: runs in the caller's tenant scope and repeats the tenant filter; an echo can only
/// settle a reply of the tenant whose webhook URL delivered it.
pub async fn reconcile_from_me(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    chat_id: Option<&str>,
    body: Option<&str>,
    provider_message_id: Option<&str>,
) -> Result<bool> {
    let (Some(chat_id), Some(body)) = (chat_id, body) else { return Ok(false) };
    let chat = reply_chat(chat_id);
    let reconciled: Option<i64> = sqlx::query_scalar(
        "update outbox set status = 'sent', sent_at = coalesce(sent_at, attempted_at, now()), updated_at = now(), \
         provider_message_id = coalesce($4, provider_message_id), last_error = 'reconciled from the bridge''s from_me echo' \
         where outbox_id = (select outbox_id from outbox where tenant_id = $1 \
                            and (status in ('unknown', 'sending') or (status = 'pending' and awaiting_echo)) \
                            and chat in ($2, $5) and body = $3 order by created_at, outbox_id limit 1 for update) \
         returning outbox_id",
    )
    .bind(tenant.get())
    .bind(&chat)
    .bind(body)
    .bind(provider_message_id)
    .bind(chat_id)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(outbox_id) = reconciled {
        info!(tenant_id = %tenant, outbox_id, "unknown reply reconciled from the from_me echo");
        metrics::counter!(crate::metric::SENDER_RECONCILED_TOTAL).increment(1);
    }
    Ok(reconciled.is_some())
}

/// Whether the bridge's `from_me` echo of reply `outbox_id` was already processed (it can
/// overtake the API's answer): a `message` event from this tenant's own bridge, same chat and
/// body, logged since the attempt. Called in the tenant's own scope.
pub async fn echo_already_seen(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    outbox_id: i64,
) -> Result<bool> {
    let seen: bool = sqlx::query_scalar(
        "select exists(select 1 from outbox o \
         join message_log ml on ml.tenant_id = o.tenant_id and ml.direction = 'in' and ml.event_type = 'message' \
              and ml.body = o.body and ml.chat_id in (o.chat, o.chat || '@s.whatsapp.net') \
              and ml.created_at >= coalesce(o.attempted_at, o.created_at) \
         join processed_events pe on pe.tenant_id = ml.tenant_id and pe.ingest_id = ml.ingest_id and pe.from_me \
         where o.outbox_id = $1 and o.tenant_id = $2)",
    )
    .bind(outbox_id)
    .bind(tenant.get())
    .fetch_one(&mut **tx)
    .await?;
    Ok(seen)
}

//! Replies enter the outbox with the event that produced them, inside the message path's one
//! tenant-scoped transaction (processed_events + message log + outbox, then ack).

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use crate::error::Result;
use crate::tenant::TenantId;

/// The inbound event recorded with its replies: its dedupe row and its message log line.
#[derive(Clone, Copy, Debug)]
pub struct InboundRecord<'a> {
    /// Ingest id of the envelope (the dedupe key).
    pub ingest_id: uuid::Uuid,
    /// Event type.
    pub event_type: &'a str,
    /// Chat of the event.
    pub chat_id: Option<&'a str>,
    /// Whether the event is the bridge's copy of an outgoing message.
    pub from_me: bool,
    /// The bridge's message id, when the event has one.
    pub provider_message_id: Option<&'a str>,
    /// What processing did (`replied`, `recorded`, ...).
    pub outcome: &'a str,
    /// When ingest received it.
    pub received_at: DateTime<Utc>,
    /// Message text, for the log line.
    pub body: Option<&'a str>,
}

/// The bot's replies, in its order: `(chat, body)` pairs, their expiry and the trace to join.
#[derive(Clone, Copy, Debug)]
pub struct Replies<'a> {
    /// Where each reply goes and what it says.
    pub targets: &'a [(&'a str, &'a str)],
    /// After this a pending reply expires instead of arriving late.
    pub expires_at: DateTime<Utc>,
    /// Trace context of the message, so the send joins its trace.
    pub traceparent: Option<&'a str>,
}

/// Records `event` for `tenant` and queues `replies`, in the caller's tenant-scoped `tx`.
/// Returns `false` when the event was recorded before (a concurrent or earlier delivery): then
/// nothing was written and the caller rolls back.
///
/// One statement writes the dedupe row, the log line and the first reply: the log and the reply
/// are only written when the dedupe insert won, and the message path pays one round trip.
pub async fn insert_with_event(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    event: &InboundRecord<'_>,
    replies: &Replies<'_>,
) -> Result<bool> {
    let first = replies.targets.first();
    let inserted: i64 = sqlx::query_scalar(
        "with pe as (insert into processed_events (tenant_id, ingest_id, event_type, chat_id, from_me, \
             provider_message_id, outcome, received_at) values ($1, $2, $3, $4, $5, $6, $7, $8) \
             on conflict do nothing returning tenant_id, ingest_id), \
         ml as (insert into message_log (tenant_id, ingest_id, direction, event_type, chat_id, body) \
             select tenant_id, ingest_id, 'in', $3, $4, $9 from pe), \
         ob as (insert into outbox (tenant_id, ingest_id, chat, body, expires_at, traceparent) \
             select tenant_id, ingest_id, $10, $11, $12, $13 from pe where $10::text is not null) \
         select count(*) from pe",
    )
    .bind(tenant.get())
    .bind(event.ingest_id)
    .bind(event.event_type)
    .bind(event.chat_id)
    .bind(event.from_me)
    .bind(event.provider_message_id)
    .bind(event.outcome)
    .bind(event.received_at)
    .bind(event.body)
    .bind(first.map(|t| t.0))
    .bind(first.map(|t| t.1))
    .bind(replies.expires_at)
    .bind(replies.traceparent)
    .fetch_one(&mut **tx)
    .await?;
    if inserted == 0 {
        return Ok(false);
    }
    // ISOLATION: the outbox rows belong to the tenant that owns the message; the bridge is
    // not stored here but read from the tenant row at send time. Further replies go one by
    // one, in order, so their outbox ids keep the bot's order.
    for (chat, body) in replies.targets.iter().skip(1) {
        sqlx::query(
            "insert into outbox (tenant_id, ingest_id, chat, body, expires_at, traceparent) values ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant.get())
        .bind(event.ingest_id)
        .bind(*chat)
        .bind(*body)
        .bind(replies.expires_at)
        .bind(replies.traceparent)
        .execute(&mut **tx)
        .await?;
    }
    Ok(true)
}

//! Per-tenant dead letters: list, show, replay and purge `wa.dlq.<ref>`.
//!
//! ISOLATION: replay republishes a message only into the queue of the tenant whose DLQ it came
//! from, only if the envelope names that same tenant, the tenant is active, and the envelope's URL
//! generation is the tenant's current one. Nothing here can move a message between tenants.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use serde::Serialize;
use sqlx::PgPool;
use wafleet_shared::publish::{publish_confirmed, PublishError, Target};
use wafleet_shared::topology::{self as names, ATTEMPT_HEADER, HISTORY_HEADER, LAST_ERROR_HEADER, REASON_HEADER};
use wafleet_shared::{AuthMode, CustomerRef, Envelope};

use crate::error::{Conflict, Error, Result};
use crate::tenant::{self, TenantStatus};

/// Bound of one replayed message's publish plus its confirm. Replay is an operator command over a
/// fresh connection, not a hot path: generous enough for a loaded broker, short enough that a
/// blocked one (memory or disk alarm) fails the command instead of hanging it.
pub const REPLAY_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Summary of one tenant's dead-letter queue.
#[derive(Debug, Clone, Serialize)]
pub struct DlqSummary {
    /// The tenant.
    pub customer_ref: String,
    /// Messages in `wa.dlq.<ref>`.
    pub count: u32,
    /// Age of the oldest message, by the time ingest accepted it.
    pub oldest_age_secs: Option<i64>,
    /// Count per failure reason.
    pub reasons: BTreeMap<String, u32>,
}

/// One dead letter: metadata, and the payload only when asked for.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The ingest id (dedupe key), when the message is an envelope.
    pub ingest_id: Option<String>,
    /// Event type.
    pub event_type: Option<String>,
    /// When ingest accepted it.
    pub received_at: Option<DateTime<Utc>>,
    /// Last failure reason (`rejected` when the broker dead-lettered it on its own).
    pub reason: String,
    /// Attempts made through the retry tiers.
    pub attempts: u32,
    /// Last error text.
    pub last_error: String,
    /// One line per failed attempt.
    pub history: Vec<String>,
    /// The webhook payload, only with `--body`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

/// Which messages to replay.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Every message in the DLQ.
    All,
    /// Only these ingest ids.
    Ids(Vec<String>),
}

/// What a replay did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// Ingest ids moved back to the tenant's queue.
    pub moved: Vec<String>,
    /// Ingest ids left in the DLQ, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

async fn open(amqp_url: &str) -> Result<(Connection, Channel)> {
    let connection = wafleet_shared::amqp::connect(amqp_url, "wafleet-cli-dlq").await?;
    let channel = connection.create_channel().await?;
    Ok((connection, channel))
}

async fn depth(channel: &Channel, queue: &str) -> Result<u32> {
    let q = channel
        .queue_declare(queue, QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await?;
    Ok(q.message_count())
}

/// Takes up to `limit` messages without acking them; closing the channel puts them all back.
async fn browse(channel: &Channel, queue: &str, limit: u32) -> Result<Vec<BasicGetMessage>> {
    let n = depth(channel, queue).await?.min(limit);
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        match channel.basic_get(queue, BasicGetOptions { no_ack: false }).await? {
            Some(m) => out.push(m),
            None => break,
        }
    }
    Ok(out)
}

fn header_str(message: &BasicGetMessage, name: &str) -> Option<String> {
    match message.delivery.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn describe(message: &BasicGetMessage, with_body: bool) -> DeadLetter {
    let envelope = Envelope::decode(&message.delivery.data).ok().map(Envelope::into_v1);
    let attempts =
        match message.delivery.properties.headers().as_ref().and_then(|h| h.inner().get(ATTEMPT_HEADER).cloned()) {
            Some(AMQPValue::LongUInt(n)) => n,
            _ => 0,
        };
    DeadLetter {
        ingest_id: envelope.as_ref().map(|e| e.ingest_id.to_string()),
        event_type: envelope.as_ref().map(|e| e.event_type.clone()),
        received_at: envelope.as_ref().map(|e| e.received_at),
        reason: header_str(message, REASON_HEADER).unwrap_or_else(|| "rejected".into()),
        attempts,
        last_error: header_str(message, LAST_ERROR_HEADER).unwrap_or_default(),
        history: header_str(message, HISTORY_HEADER)
            .map(|h| h.lines().map(str::to_owned).collect())
            .unwrap_or_default(),
        payload: if with_body { envelope.map(|e| e.payload.to_value()) } else { None },
    }
}

/// `dlq list`: count, oldest age and reasons per tenant (all tenants, or one), largest first.
pub async fn list(pool: &PgPool, amqp_url: &str, only: Option<&CustomerRef>) -> Result<Vec<DlqSummary>> {
    let refs: Vec<CustomerRef> = match only {
        Some(r) => vec![r.clone()],
        None => tenant::list(pool).await?.into_iter().map(|t| t.customer_ref).collect(),
    };
    let mut out = summarize(amqp_url, &refs).await?;
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.customer_ref.cmp(&b.customer_ref)));
    Ok(out)
}

/// The summaries of `refs`' dead-letter queues, in the order of `refs`.
pub async fn summarize(amqp_url: &str, refs: &[CustomerRef]) -> Result<Vec<DlqSummary>> {
    let connection = wafleet_shared::amqp::connect(amqp_url, "wafleet-cli-dlq").await?;
    let mut out = Vec::new();
    for customer_ref in refs {
        // One channel per queue: a missing DLQ closes its channel, not the whole listing, and
        // closing the channel returns the browsed messages.
        let channel = connection.create_channel().await?;
        let mut summary = DlqSummary {
            customer_ref: customer_ref.to_string(),
            count: 0,
            oldest_age_secs: None,
            reasons: BTreeMap::new(),
        };
        if let Ok(messages) = browse(&channel, &names::dlq_queue(customer_ref), 1000).await {
            summary.count = messages.len() as u32;
            let mut oldest: Option<DateTime<Utc>> = None;
            for m in &messages {
                let d = describe(m, false);
                *summary.reasons.entry(d.reason).or_insert(0) += 1;
                oldest = match (oldest, d.received_at) {
                    (Some(o), Some(r)) => Some(o.min(r)),
                    (None, r) => r,
                    (o, None) => o,
                };
            }
            summary.oldest_age_secs = oldest.map(|o| (Utc::now() - o).num_seconds());
            let _ = channel.close(200, "browsed").await;
        }
        out.push(summary);
    }
    wafleet_shared::amqp::close(connection).await;
    Ok(out)
}

/// `dlq show`: up to `limit` dead letters, metadata only unless `with_body`.
pub async fn show(amqp_url: &str, customer_ref: &CustomerRef, limit: u32, with_body: bool) -> Result<Vec<DeadLetter>> {
    let (connection, channel) = open(amqp_url).await?;
    let messages = browse(&channel, &names::dlq_queue(customer_ref), limit).await?;
    let out = messages.iter().map(|m| describe(m, with_body)).collect();
    // Closing the channel returns every browsed message to the queue.
    wafleet_shared::amqp::close(connection).await;
    Ok(out)
}

/// Tag of dead-letter page cursors (see [`crate::paging`]).
const CURSOR_TAG: &str = "q1";

/// Deepest position a page may reach: browsing holds every message before it unacked.
pub const MAX_BROWSE: u32 = 10_000;

/// Where the next page of a tenant's dead letters starts. A queue has no key to page on, so the
/// cursor names a position from the head and a fingerprint of the message just before it; a
/// page whose position now holds another message (a replay or purge moved the queue) is refused
/// instead of silently skipping or repeating dead letters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DlqCursor {
    position: u32,
    fingerprint: String,
}

impl DlqCursor {
    /// Parses a cursor that [`DlqCursor::encode`] made; anything else is
    /// [`crate::error::InvalidInput::Cursor`].
    pub fn parse(cursor: &str) -> Result<Self> {
        let key = crate::paging::decode(CURSOR_TAG, cursor)?;
        key.split_once('.')
            .and_then(|(position, fingerprint)| {
                let position: u32 = position.parse().ok().filter(|p| (1..MAX_BROWSE).contains(p))?;
                let hex = fingerprint.len() == 16 && fingerprint.bytes().all(|b| b.is_ascii_hexdigit());
                hex.then(|| Self { position, fingerprint: fingerprint.to_owned() })
            })
            .ok_or_else(|| crate::error::InvalidInput::Cursor.into())
    }

    /// The opaque form handed to clients.
    pub fn encode(&self) -> String {
        crate::paging::encode(CURSOR_TAG, &format!("{}.{}", self.position, self.fingerprint))
    }
}

/// The first 8 bytes of the SHA-256 of a message's body and headers, in hex. Quorum queues add
/// or bump `x-delivery-count` each time a browse returns the message, so it is left out.
fn fingerprint(message: &BasicGetMessage) -> String {
    use sha2::{Digest as _, Sha256};
    let mut hash = Sha256::new();
    hash.update(&message.delivery.data);
    if let Some(headers) = message.delivery.properties.headers() {
        for (name, value) in headers.inner().iter().filter(|(name, _)| name.as_str() != "x-delivery-count") {
            hash.update(format!("{name}={value:?}\n").as_bytes());
        }
    }
    hash.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// `dlq show` one page at a time: up to `limit` dead letters after `after` (from the head when
/// `None`), oldest first, metadata only unless `with_body`; with the cursor of the next page.
pub async fn show_page(
    amqp_url: &str,
    customer_ref: &CustomerRef,
    after: Option<&DlqCursor>,
    limit: u32,
    with_body: bool,
) -> Result<(Vec<DeadLetter>, Option<DlqCursor>)> {
    let start = after.map_or(0, |c| c.position);
    let window = start.saturating_add(limit).saturating_add(1).min(MAX_BROWSE);
    let (connection, channel) = open(amqp_url).await?;
    let browsed = browse(&channel, &names::dlq_queue(customer_ref), window).await;
    let described = browsed.map(|messages| {
        let seen_before = start.checked_sub(1).and_then(|i| messages.get(i as usize)).map(fingerprint);
        let page: Vec<&BasicGetMessage> = messages.iter().skip(start as usize).take(limit as usize).collect();
        let more = messages.len() > (start + limit) as usize;
        let next = page
            .last()
            .filter(|_| more)
            .map(|m| DlqCursor { position: start + page.len() as u32, fingerprint: fingerprint(m) });
        (seen_before, page.into_iter().map(|m| describe(m, with_body)).collect::<Vec<_>>(), next)
    });
    // Closing the connection returns every browsed message to the queue.
    wafleet_shared::amqp::close(connection).await;
    let (seen_before, letters, next) = described?;
    if after.is_some_and(|c| seen_before.as_deref() != Some(c.fingerprint.as_str())) {
        return Err(Conflict::DeadLettersMoved(customer_ref.clone()).into());
    }
    Ok((letters, next))
}

/// `dlq replay`: moves selected dead letters back to the tenant's own queue.
pub async fn replay(
    pool: &PgPool,
    amqp_url: &str,
    customer_ref: &CustomerRef,
    selection: &Selection,
    dry_run: bool,
) -> Result<ReplayReport> {
    let meta =
        tenant::lookup(pool, customer_ref).await?.ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))?;
    if meta.status != TenantStatus::Active {
        return Err(Conflict::NotActive { customer_ref: customer_ref.clone(), status: meta.status.as_str() }.into());
    }
    let (connection, channel) = open(amqp_url).await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let messages = browse(&channel, &names::dlq_queue(customer_ref), u32::MAX).await?;
    let mut report = ReplayReport { dry_run, ..ReplayReport::default() };
    for message in messages {
        let envelope = Envelope::decode(&message.delivery.data).ok().map(Envelope::into_v1);
        let id = envelope.as_ref().map(|e| e.ingest_id.to_string()).unwrap_or_else(|| "<undecodable>".into());
        let selected = match selection {
            Selection::All => true,
            Selection::Ids(ids) => ids.contains(&id),
        };
        if !selected {
            continue;
        }
        let Some(envelope) = envelope else {
            report.skipped.push((id, "not an envelope; purge it instead".into()));
            continue;
        };
        // ISOLATION: the envelope must name the DLQ's own tenant, and the URL generation must be
        // current (a rotated URL's events stay dead).
        if &envelope.customer_ref != customer_ref {
            report.skipped.push((id, "envelope names another tenant; never replayed".into()));
            continue;
        }
        if envelope.auth == AuthMode::Token && envelope.generation != meta.generation {
            report
                .skipped
                .push((id, format!("generation {} is not the current {}", envelope.generation, meta.generation)));
            continue;
        }
        if dry_run {
            report.moved.push(id);
            continue;
        }
        let mut headers = message.delivery.properties.headers().clone().unwrap_or_default();
        // A fresh set of retries for the replayed message; its history stays with it.
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(0));
        // The broker strips a tier's per-message expiration when it dead-letters, so none is carried here.
        let properties = message.delivery.properties.clone().with_headers(headers);
        // ISOLATION: through the direct exchange `wa.inbound` with the tenant's own ref, the
        // key only `wa.tenant.<ref>` is bound by. Not the default exchange by queue name: the
        // message keeps the ref as routing key, so if it fails again `wa.dlx` routes it back to
        // `wa.dlq.<ref>`, and the CLI needs no write right on `amq.default`.
        let target = Target { exchange: names::INBOUND_EXCHANGE, routing_key: customer_ref.as_str() };
        match publish_confirmed(&channel, target, &message.delivery.data, properties, REPLAY_PUBLISH_TIMEOUT).await {
            Ok(()) => {
                message.delivery.acker.ack(BasicAckOptions::default()).await?;
                report.moved.push(id);
            }
            // The channel is gone: the rest would fail too, and every unacked message returns.
            Err(e @ PublishError::Broker(_)) => return Err(e.into()),
            Err(e) => report.skipped.push((id, format!("republish not confirmed ({e}); left in the DLQ"))),
        }
    }
    wafleet_shared::amqp::close(connection).await;
    Ok(report)
}

/// `dlq purge`: deletes every message in the tenant's DLQ; returns how many.
pub async fn purge(amqp_url: &str, customer_ref: &CustomerRef) -> Result<u32> {
    let (connection, channel) = open(amqp_url).await?;
    let purged =
        channel.queue_purge(&names::dlq_queue(customer_ref), lapin::options::QueuePurgeOptions::default()).await?;
    wafleet_shared::amqp::close(connection).await;
    Ok(purged)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_cursor_round_trips_and_refuses_positions_and_fingerprints_it_never_makes() {
        let c = DlqCursor { position: 40, fingerprint: "0123456789abcdef".into() };
        assert_eq!(DlqCursor::parse(&c.encode()).unwrap(), c);
        for key in ["0.0123456789abcdef", "10000.0123456789abcdef", "4.0123", "4.zzzzzzzzzzzzzzzz", "4"] {
            assert!(DlqCursor::parse(&crate::paging::encode(CURSOR_TAG, key)).is_err(), "{key}");
        }
    }
}

//! Accepting a verified event durably: the single call site between HTTP and the broker.
//!
//! This module owns the rule "200 only once the event is durable": it fixes the ingest id, encodes
//! the envelope and publishes it under the publish deadline; when the broker does not confirm in
//! time (deadline, nack, return, blocked or unreachable), it appends the same envelope to the disk
//! spool and answers only once that is fsynced. It also owns readiness, "could an event be
//! accepted durably now". It must not parse requests or choose a tenant.

use std::time::{Duration, Instant};

use wafleet_shared::IngestId;

use crate::error::Error;
use crate::event::VerifiedEvent;
use crate::metric;
use crate::publisher::{PublishError, Publisher};
use crate::spool::{Spool, SpoolError};

/// Publishes `event` and returns its ingest id once the broker has confirmed it or, failing
/// that, once `spool` (when enabled) holds it on disk.
///
/// `deadline` bounds the whole publish for every [`Publisher`]; the RabbitMQ publisher also
/// applies it around `basic_publish` and the confirm. The spool append is not under it: once the
/// broker has failed, a durable append is the only way to a 200.
pub async fn accept(
    publisher: &dyn Publisher,
    spool: Option<&Spool>,
    event: VerifiedEvent,
    deadline: Duration,
) -> Result<IngestId, Error> {
    // ISOLATION: the routing key and the envelope's ref come from the same verified event,
    // so they cannot differ; the spool stores this same key with the same bytes.
    let routing_key = event.customer_ref().clone();
    // Fixed before the publish, so a spooled copy keeps the same dedupe key.
    let ingest_id = IngestId::new();
    // One copy of the envelope: the publish reads it, and the spool takes it if the broker fails.
    let body = event.into_envelope(ingest_id, chrono::Utc::now()).to_bytes();

    let started = Instant::now();
    let outcome = match tokio::time::timeout(deadline, publisher.publish(&routing_key, Some(ingest_id), &body)).await {
        Ok(result) => result,
        Err(_) => Err(PublishError::Deadline),
    };
    let label = if outcome.is_ok() { "ok" } else { "error" };
    metrics::histogram!(metric::PUBLISH_CONFIRM_SECONDS, "outcome" => label).record(started.elapsed().as_secs_f64());

    let err = match outcome {
        Ok(()) => {
            if let Some(spool) = spool {
                spool.note_broker_ready();
            }
            return Ok(ingest_id);
        }
        Err(err) => err,
    };
    metrics::counter!(metric::PUBLISH_FAILED_TOTAL, "reason" => err.reason()).increment(1);
    let Some(spool) = spool else { return Err(Error::BrokerUnavailable(err)) };
    // After a deadline the broker may still confirm the first copy; the spooled copy then
    // arrives as a duplicate, which the worker drops by ingest id. Losing it would be worse.
    // A nack is the tenant's own queue refusing (its length bound, `overflow: reject-publish`):
    // that tenant may take only its share of the spool, so the rest stays for the others.
    let appended = if matches!(err, PublishError::Nack) {
        spool.append_within_share(&routing_key, body).await
    } else {
        spool.append(&routing_key, body).await
    };
    match appended {
        Ok(()) => {
            metrics::counter!(metric::SPOOLED_TOTAL).increment(1);
            // Per event, so debug: the publisher logs the outage itself, and the rate is a metric.
            tracing::debug!(reason = err.reason(), "broker did not confirm; event spooled");
            Ok(ingest_id)
        }
        Err(SpoolError::TenantShareFull) => {
            metrics::counter!(metric::SPOOL_REFUSED_TOTAL, "reason" => "tenant_share").increment(1);
            tracing::warn!(tenant = %routing_key, "tenant queue full and its spool share used up; answering 503");
            Err(Error::TenantShareFull)
        }
        Err(SpoolError::Full) => {
            metrics::counter!(metric::SPOOL_REFUSED_TOTAL, "reason" => "full").increment(1);
            Err(Error::SpoolFull)
        }
        Err(spool_err) => {
            metrics::counter!(metric::SPOOL_REFUSED_TOTAL, "reason" => "failed").increment(1);
            Err(Error::SpoolFailed(spool_err))
        }
    }
}

/// Whether ingest can accept an event durably now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The broker is ready.
    Ready,
    /// The broker is not, but the spool takes events (the reason is the broker's).
    Spooling(&'static str),
    /// Neither can take events; the reason is shown by `/readyz`.
    NotReady(&'static str),
}

/// Readiness from the publisher and the spool.
///
/// With the spool on, a full spool is not ready. Otherwise, once the broker has been ready since
/// start, a broker outage leaves ingest ready and spooling: marking every replica unready at once
/// would turn the outage into refused webhooks, which WA Bridges never retries. Before the broker
/// was ever ready (a bad URL or missing `wa.inbound` at rollout) ingest stays not ready, so a
/// broken rollout stops instead of replacing working replicas.
pub fn readiness(publisher: &dyn Publisher, spool: Option<&Spool>) -> Readiness {
    let broker = publisher.not_ready_reason();
    let Some(spool) = spool else {
        return broker.map_or(Readiness::Ready, Readiness::NotReady);
    };
    if spool.is_full() {
        return Readiness::NotReady("spool full");
    }
    match broker {
        None => {
            spool.note_broker_ready();
            Readiness::Ready
        }
        Some(reason) if !spool.broker_seen() => Readiness::NotReady(reason),
        Some(_) if spool.is_failing() => Readiness::NotReady("broker unavailable and spool failing"),
        Some(reason) => Readiness::Spooling(reason),
    }
}

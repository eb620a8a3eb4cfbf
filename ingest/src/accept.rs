//! Accepting a verified event durably: the single call site between HTTP and the broker.
//!
//! This module owns the rule "200 only once the event is durable": it fixes the ingest id, encodes
//! the envelope and publishes it under the publish deadline. The disk spool will slot in here, as
//! the fallback when the publish fails. It must not parse requests or choose a tenant.

use std::time::{Duration, Instant};

use wafleet_shared::IngestId;

use crate::error::Error;
use crate::event::VerifiedEvent;
use crate::metric;
use crate::publisher::{PublishError, Publisher};

/// Publishes `event` and returns its ingest id once the broker has confirmed it.
///
/// `deadline` bounds the whole publish for every [`Publisher`]; the RabbitMQ publisher also
/// applies it around `basic_publish` and the confirm.
pub async fn accept(publisher: &dyn Publisher, event: VerifiedEvent, deadline: Duration) -> Result<IngestId, Error> {
    // ISOLATION: the routing key and the envelope's ref come from the same verified event,
    // so they cannot differ.
    let routing_key = event.customer_ref().clone();
    // Fixed before the publish, so a later spool retry keeps the same dedupe key.
    let ingest_id = IngestId::new();
    let body = event.into_envelope(ingest_id, chrono::Utc::now()).to_bytes();

    let started = Instant::now();
    let outcome = match tokio::time::timeout(deadline, publisher.publish(&routing_key, body)).await {
        Ok(result) => result,
        Err(_) => Err(PublishError::Deadline),
    };
    let label = if outcome.is_ok() { "ok" } else { "error" };
    metrics::histogram!(metric::PUBLISH_CONFIRM_SECONDS, "outcome" => label).record(started.elapsed().as_secs_f64());

    match outcome {
        Ok(()) => Ok(ingest_id),
        Err(err) => {
            metrics::counter!(metric::PUBLISH_FAILED_TOTAL, "reason" => err.reason()).increment(1);
            // The spool fallback goes here: append the same envelope (same ingest id), fsync,
            // and answer 200; 503 only when the spool cannot take it either.
            Err(Error::BrokerUnavailable(err))
        }
    }
}

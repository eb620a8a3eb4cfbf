//! The publishing seam: a trait with a RabbitMQ implementation and an in-memory fake.
//!
//! This module owns the contract "a publish succeeds only when the broker has confirmed that the
//! message is routed and stored". It must not build envelopes or choose routing keys: callers pass
//! the tenant's ref, and the implementation uses it verbatim.

mod fake;
mod rabbit;

use async_trait::async_trait;
use wafleet_shared::{CustomerRef, IngestId};

pub use fake::{FakeMode, FakePublisher};
pub use rabbit::LapinPublisher;

/// Why a publish did not end in a broker ack for a routed message.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No connected channel, or `wa.inbound` was not confirmed to exist.
    #[error("publisher not ready: {0}")]
    NotReady(&'static str),
    /// `basic_publish` plus its confirm did not finish within the deadline.
    #[error("publish deadline passed")]
    Deadline,
    /// The broker nacked the message.
    #[error("broker nacked the message")]
    Nack,
    /// The broker returned the message as unroutable (`mandatory`).
    #[error("broker returned the message as unroutable")]
    Returned,
    /// The channel was not in confirm mode, so there is no proof of durability.
    #[error("publish was not confirmed")]
    Unconfirmed,
    /// The broker connection or channel failed.
    #[error("broker error")]
    Amqp(#[source] lapin::Error),
}

impl PublishError {
    /// The `reason` label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::NotReady(_) => "not_ready",
            PublishError::Deadline => "deadline",
            PublishError::Nack => "nack",
            PublishError::Returned => "returned",
            PublishError::Unconfirmed => "unconfirmed",
            PublishError::Amqp(_) => "amqp",
        }
    }
}

/// Publishes encoded envelopes to `wa.inbound`.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes `body` with `routing_key` as the routing key and returns once the broker has
    /// confirmed it. A returned (unroutable) message or a nack is an error. `ingest_id` is the
    /// envelope's id when the caller knows it (the accept path); otherwise the publisher reads it
    /// from the body.
    async fn publish(
        &self,
        routing_key: &CustomerRef,
        ingest_id: Option<IngestId>,
        body: &[u8],
    ) -> Result<(), PublishError>;

    /// True when a publish can be expected to succeed: connected, and `wa.inbound` exists.
    fn is_ready(&self) -> bool;

    /// Why the publisher is not ready (`None` when it is). A fixed string, shown by `/readyz`.
    fn not_ready_reason(&self) -> Option<&'static str> {
        if self.is_ready() {
            None
        } else {
            Some("publisher not ready")
        }
    }
}

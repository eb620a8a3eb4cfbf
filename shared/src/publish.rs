//! One confirmed publish: `mandatory`, persistent as the caller's properties say, and a deadline
//! over both `basic.publish` and the broker's confirm. Used by every publisher that sends one
//! message at a time (worker retries, dead letters and quarantine, the unrouted sweep, DLQ
//! replay). Ingest keeps its own publisher (deadline, spool, metrics) and serializes its
//! `basic.publish` calls the same way.
//!
//! A returned (unroutable) message and a nack are failures, never a success: the caller must keep
//! the original (requeue it, leave it in its queue) when this returns an error.
//!
//! The channel must be in confirm mode (`confirm_select`), or the publish fails as
//! [`PublishError::NotConfirming`] rather than passing unconfirmed.

use std::future::Future;
use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::publisher_confirm::Confirmation;
use lapin::{BasicProperties, Channel};
use tokio::sync::Mutex;

/// Why a confirmed publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The channel or connection failed during the publish or while waiting for its confirm.
    #[error("broker error while publishing")]
    Broker(#[source] lapin::Error),
    /// No confirm arrived in time; a publish can hang while the broker blocks publishers.
    #[error("publish not confirmed within {after:?}")]
    TimedOut {
        /// The deadline that passed.
        after: Duration,
    },
    /// The broker refused the message (for example a queue at its length bound with reject-publish).
    #[error("publish nacked by the broker")]
    Nacked,
    /// The broker returned the message: no queue is bound for its routing key.
    #[error("publish returned by the broker: {reply_code} {reply_text}")]
    Returned {
        /// AMQP reply code (312 NO_ROUTE for an unroutable message).
        reply_code: u16,
        /// The broker's reason.
        reply_text: String,
    },
    /// The channel is not in confirm mode, so the broker never confirms.
    #[error("channel is not in confirm mode")]
    NotConfirming,
}

/// Where a message goes and what it carries.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Exchange name; `""` is the default exchange (routing key = queue name).
    pub exchange: &'a str,
    /// Routing key.
    pub routing_key: &'a str,
}

/// Publishes `body` with `mandatory` on a channel in confirm mode and waits for the broker's
/// confirm, all within `timeout`.
///
/// Only for a channel that one task publishes on at a time; a channel shared by concurrent tasks
/// goes through [`publish_confirmed_shared`].
pub async fn publish_confirmed(
    channel: &Channel,
    target: Target<'_>,
    body: &[u8],
    properties: BasicProperties,
    timeout: Duration,
) -> Result<(), PublishError> {
    let publishing = channel.basic_publish(target.exchange, target.routing_key, mandatory(), body, properties);
    confirmed(publishing, timeout).await
}

/// [`publish_confirmed`] on a channel shared by concurrent tasks. The lock is held for
/// `basic.publish` only, not for the confirm: lapin numbers the confirm before it queues the
/// frames, so two unserialized publishes on one channel could swap their delivery tags. The
/// deadline covers the wait for the lock as well.
pub async fn publish_confirmed_shared(
    channel: &Mutex<Channel>,
    target: Target<'_>,
    body: &[u8],
    properties: BasicProperties,
    timeout: Duration,
) -> Result<(), PublishError> {
    let publishing = async {
        let channel = channel.lock().await;
        channel.basic_publish(target.exchange, target.routing_key, mandatory(), body, properties).await
    };
    confirmed(publishing, timeout).await
}

/// `mandatory`: an unroutable message comes back (or goes to the alternate exchange) instead of
/// being confirmed and silently dropped.
fn mandatory() -> BasicPublishOptions {
    BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() }
}

/// Awaits the publish and then its confirm under one deadline.
async fn confirmed<P, C>(publishing: P, timeout: Duration) -> Result<(), PublishError>
where
    P: Future<Output = lapin::Result<C>>,
    C: Future<Output = lapin::Result<Confirmation>> + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let confirm = match tokio::time::timeout_at(deadline, publishing).await {
        Err(_) => return Err(PublishError::TimedOut { after: timeout }),
        Ok(published) => published.map_err(PublishError::Broker)?,
    };
    // The confirm is awaited in its own task: lapin keeps a confirm dropped unresolved until
    // `wait_for_confirms` (never called on these long-lived channels), so a deadline must not drop
    // it. The task ends when the broker answers or the channel closes.
    let waiter = tokio::spawn(confirm);
    match tokio::time::timeout_at(deadline, waiter).await {
        Err(_) => Err(PublishError::TimedOut { after: timeout }),
        // The waiter only ends by panic or runtime shutdown: nothing was confirmed.
        Ok(Err(_join)) => Err(PublishError::TimedOut { after: timeout }),
        Ok(Ok(confirmation)) => settle(confirmation.map_err(PublishError::Broker)?),
    }
}

/// Only an ack of a message that was not returned is a success.
fn settle(confirmation: Confirmation) -> Result<(), PublishError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        // The returned message holds the payload: dropped without being read or logged.
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
            Err(PublishError::Returned { reply_code: returned.reply_code, reply_text: returned.reply_text.to_string() })
        }
        Confirmation::Nack(None) => Err(PublishError::Nacked),
        Confirmation::NotRequested => Err(PublishError::NotConfirming),
    }
}

#[cfg(test)]
mod tests {
    use std::future::pending;

    use lapin::acker::Acker;
    use lapin::message::{BasicReturnMessage, Delivery};

    use super::*;

    fn returned(reply_code: u16, reply_text: &str) -> Box<BasicReturnMessage> {
        Box::new(BasicReturnMessage {
            delivery: Delivery {
                delivery_tag: 0,
                exchange: "".into(),
                routing_key: "wa.tenant.nobody".into(),
                redelivered: false,
                properties: BasicProperties::default(),
                data: b"payload".to_vec(),
                acker: Acker::default(),
            },
            reply_code,
            reply_text: reply_text.into(),
        })
    }

    #[test]
    fn only_a_plain_ack_is_a_success() {
        assert!(settle(Confirmation::Ack(None)).is_ok());
        assert!(matches!(settle(Confirmation::Nack(None)), Err(PublishError::Nacked)));
        assert!(matches!(settle(Confirmation::NotRequested), Err(PublishError::NotConfirming)));
    }

    #[test]
    fn a_returned_message_is_a_failure_with_the_brokers_reason() {
        match settle(Confirmation::Ack(Some(returned(312, "NO_ROUTE")))) {
            Err(PublishError::Returned { reply_code, reply_text }) => {
                assert_eq!(reply_code, 312);
                assert_eq!(reply_text, "NO_ROUTE");
            }
            other => panic!("expected Returned, got {other:?}"),
        }
        assert!(matches!(
            settle(Confirmation::Nack(Some(returned(312, "NO_ROUTE")))),
            Err(PublishError::Returned { reply_code: 312, .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_confirm_that_never_arrives_times_out_at_the_deadline() {
        let timeout = Duration::from_millis(250);
        let started = tokio::time::Instant::now();
        let never = async { Ok::<_, lapin::Error>(pending::<lapin::Result<Confirmation>>()) };
        let result = confirmed(never, timeout).await;
        assert!(matches!(result, Err(PublishError::TimedOut { after }) if after == timeout), "{result:?}");
        assert_eq!(started.elapsed(), timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_publish_counts_against_the_same_deadline() {
        let timeout = Duration::from_secs(2);
        let started = tokio::time::Instant::now();
        let hanging = pending::<lapin::Result<std::future::Ready<lapin::Result<Confirmation>>>>();
        let result = confirmed(hanging, timeout).await;
        assert!(matches!(result, Err(PublishError::TimedOut { .. })), "{result:?}");
        assert_eq!(started.elapsed(), timeout);
    }

    #[tokio::test]
    async fn a_broker_error_keeps_its_source() {
        let failing = async {
            Err::<std::future::Ready<lapin::Result<Confirmation>>, _>(lapin::Error::InvalidChannelState(
                lapin::ChannelState::Closed,
            ))
        };
        let result = confirmed(failing, Duration::from_secs(1)).await;
        let Err(err @ PublishError::Broker(_)) = result else { panic!("expected a broker error, got {result:?}") };
        assert!(std::error::Error::source(&err).is_some());
    }

    #[tokio::test]
    async fn an_acked_confirm_is_a_success() {
        let acked = async { Ok::<_, lapin::Error>(async { Ok(Confirmation::Ack(None)) }) };
        assert!(confirmed(acked, Duration::from_secs(1)).await.is_ok());
    }
}

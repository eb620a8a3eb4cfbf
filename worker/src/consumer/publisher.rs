//! The publisher channel all tenant consumers of one session share (retries, dead letters,
//! quarantine). A refused publish (403 on an exchange the user may not write, 404 on a missing
//! one) makes the broker close the channel; a closed channel is reopened, in confirm mode, before
//! the next publish, so one tenant's failed side path never stalls every other tenant's retries.

use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicNackOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::Mutex;
use tracing::warn;
use wafleet_fleet::error::Result;
use wafleet_shared::publish::{publish_confirmed_shared, PublishError, Target};

/// One connection's shared confirm-mode channel, reopened when the broker closes it.
pub(crate) struct SharedPublisher {
    connection: Connection,
    channel: Mutex<Channel>,
}

impl SharedPublisher {
    /// Opens the first channel of `connection` in confirm mode.
    pub(crate) async fn open(connection: Connection) -> lapin::Result<Self> {
        let channel = confirm_channel(&connection).await?;
        Ok(Self { connection, channel: Mutex::new(channel) })
    }

    /// The current channel (for declarations at session start).
    pub(crate) async fn channel(&self) -> Channel {
        self.channel.lock().await.clone()
    }

    /// Publishes and waits for the confirm within `timeout`, first reopening the channel if the
    /// broker closed it (the reopen counts against the same deadline).
    pub(crate) async fn publish(
        &self,
        target: Target<'_>,
        body: &[u8],
        properties: BasicProperties,
        timeout: Duration,
    ) -> std::result::Result<(), PublishError> {
        let started = tokio::time::Instant::now();
        match tokio::time::timeout(timeout, self.reopen_if_closed()).await {
            Err(_) => return Err(PublishError::TimedOut { after: timeout }),
            Ok(Err(e)) => return Err(PublishError::Broker(e)),
            Ok(Ok(())) => {}
        }
        let left = timeout.saturating_sub(started.elapsed());
        publish_confirmed_shared(&self.channel, target, body, properties, left).await
    }

    async fn reopen_if_closed(&self) -> lapin::Result<()> {
        let mut channel = self.channel.lock().await;
        if channel.status().connected() {
            return Ok(());
        }
        warn!(channel = channel.id(), state = ?channel.status().state(), "publisher channel closed by the broker; reopening");
        metrics::counter!(crate::metric::WORKER_PUBLISHER_REOPENED_TOTAL).increment(1);
        *channel = confirm_channel(&self.connection).await?;
        Ok(())
    }

    /// Closes the connection at the end of the session.
    pub(crate) async fn close(&self) {
        let _ = self.connection.close(200, "worker stopping").await;
    }
}

async fn confirm_channel(connection: &Connection) -> lapin::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(channel)
}

impl super::TenantConsumer {
    /// Acks after a confirmed publish; otherwise puts the message back so nothing is lost.
    pub(super) async fn settle_after_publish(
        &self,
        delivery: &lapin::message::Delivery,
        published: Result<()>,
        what: &str,
    ) -> std::result::Result<(), lapin::Error> {
        match published {
            Ok(()) => delivery.acker.ack(BasicAckOptions::default()).await,
            Err(e) => {
                warn!(tenant = %self.customer_ref, error = %e, what, "publish failed; requeueing");
                tokio::time::sleep(Duration::from_millis(500)).await;
                delivery.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await
            }
        }
    }

    /// Publishes a copy of the delivery with new headers and waits for the confirm, all under
    /// one deadline (a publish can hang while the broker is blocked). A return or nack is a failure.
    pub(super) async fn publish(
        &self,
        delivery: &lapin::message::Delivery,
        exchange: &str,
        routing_key: &str,
        headers: FieldTable,
        expiration: Option<String>,
    ) -> Result<()> {
        let mut properties = delivery.properties.clone().with_delivery_mode(2).with_headers(headers);
        if let Some(expiration) = expiration {
            properties = properties.with_expiration(expiration.into());
        }
        let target = Target { exchange, routing_key };
        Ok(self.publisher.publish(target, &delivery.data, properties, self.publish_timeout).await?)
    }
}

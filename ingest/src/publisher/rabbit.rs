//! The RabbitMQ [`Publisher`]: one connection, one shared confirm-mode channel, pipelined
//! confirms, and a supervisor task that reconnects and keeps readiness honest.
//!
//! This module owns every AMQP call ingest makes. It must not declare topology unless the
//! development setting asks for it (topology belongs to `wafleet migrate`), and it must never log
//! a message body: a returned message carries the payload and is dropped unread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionStatus, ExchangeKind};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wafleet_shared::topology::{INBOUND_EXCHANGE, UNROUTED_EXCHANGE, UNROUTED_QUEUE};
use wafleet_shared::{CustomerRef, IngestId};

use super::{PublishError, Publisher};
use crate::config::{Config, DrainConfig};

/// First reconnect delay; doubled after each failed attempt.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest reconnect delay, so a recovered broker is picked up within seconds.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Bound on connecting, opening a channel, a passive check and closing.
const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// Publishes to `wa.inbound` over a supervised connection.
pub struct LapinPublisher {
    inner: Arc<Inner>,
}

struct Inner {
    live: RwLock<Option<Live>>,
    exchange_confirmed: AtomicBool,
    wake: Notify,
    publish_timeout: Duration,
}

#[derive(Clone)]
struct Live {
    channel: Channel,
    connection: ConnectionStatus,
    /// Held over each `basic_publish`. lapin numbers a publish for its confirm and then queues
    /// its frames in two steps, so two publishes racing on the shared channel can reach the
    /// broker in the other order than they were numbered; the broker's ack or nack for one
    /// would then settle the other, and a nacked event would be answered 200. The lock makes
    /// numbering and sending one step; confirms are still awaited concurrently.
    publish_order: Arc<tokio::sync::Mutex<()>>,
}

struct Settings {
    amqp_url: SecretString,
    declare_topology: bool,
    ready_recheck: Duration,
}

impl LapinPublisher {
    /// Starts the supervisor, which connects in the background (so ingest starts, not ready,
    /// while the broker is down) and closes the connection once `shutdown` fires.
    pub fn start(config: &Config, shutdown: CancellationToken) -> (Arc<Self>, JoinHandle<()>) {
        let settings = Settings {
            amqp_url: config.amqp_url.clone(),
            declare_topology: config.declare_topology,
            ready_recheck: config.ready_recheck,
        };
        Self::start_with(settings, config.publish_timeout, shutdown)
    }

    /// Like [`LapinPublisher::start`] for `wafleet-ingest drain`, which has no full [`Config`];
    /// it never declares topology.
    pub fn start_for_drain(config: &DrainConfig, shutdown: CancellationToken) -> (Arc<Self>, JoinHandle<()>) {
        let settings = Settings {
            amqp_url: config.amqp_url.clone(),
            declare_topology: false,
            ready_recheck: config.ready_recheck,
        };
        Self::start_with(settings, config.publish_timeout, shutdown)
    }

    fn start_with(
        settings: Settings,
        publish_timeout: Duration,
        shutdown: CancellationToken,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let inner = Arc::new(Inner {
            live: RwLock::new(None),
            exchange_confirmed: AtomicBool::new(false),
            wake: Notify::new(),
            publish_timeout,
        });
        let supervisor = tokio::spawn(supervise(Arc::clone(&inner), settings, shutdown));
        (Arc::new(Self { inner }), supervisor)
    }
}

impl Inner {
    fn live(&self) -> Option<Live> {
        self.live.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn set_live(&self, live: Option<Live>) {
        *self.live.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = live;
    }

    fn not_ready_reason(&self) -> Option<&'static str> {
        let Some(live) = self.live() else { return Some("not connected to the broker") };
        if !live.connection.connected() || !live.channel.status().connected() {
            Some("not connected to the broker")
        } else if live.connection.blocked() {
            Some("broker blocked the connection")
        } else if !self.exchange_confirmed.load(Ordering::SeqCst) {
            Some("exchange wa.inbound not confirmed")
        } else {
            None
        }
    }
}

#[async_trait]
impl Publisher for LapinPublisher {
    async fn publish(
        &self,
        routing_key: &CustomerRef,
        ingest_id: Option<IngestId>,
        body: &[u8],
    ) -> Result<(), PublishError> {
        // Publishing to a missing exchange would close the shared channel, so refuse early.
        if let Some(reason) = self.inner.not_ready_reason() {
            return Err(PublishError::NotReady(reason));
        }
        let Some(live) = self.inner.live() else { return Err(PublishError::NotReady("not connected to the broker")) };
        // The timestamp lets the management API report each queue's oldest message
        // (`head_message_timestamp`) without anyone having to browse it.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type("application/json".into())
            .with_timestamp(now);
        // The accept path passes the id it just encoded: parsing an 8 KiB body again only to
        // find it cost a visible share of ingest's CPU. Spool drains let it be read back.
        if let Some(id) = ingest_id.or_else(|| ingest_id_of(body)) {
            properties = properties.with_message_id(id.to_string().into());
        }
        // W3C trace context of the request, so the worker's consume span joins the same trace.
        let mut headers = lapin::types::FieldTable::default();
        wafleet_shared::trace::inject_current(&mut headers);
        properties = properties.with_headers(headers);
        // mandatory: an unroutable message comes back (or goes to the alternate exchange) instead
        // of vanishing, so a 200 is never given for a message no queue holds.
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        // One deadline over both steps: basic_publish itself can hang while the broker blocks
        // publishers (memory or disk alarm), not only the confirm.
        let deadline = tokio::time::Instant::now() + self.inner.publish_timeout;
        // ISOLATION: the routing key is the verified ref, verbatim; wa.inbound is a direct
        // exchange, so it can only reach wa.tenant.<ref> or the alternate exchange.
        let publishing = async {
            let _numbered_in_order = live.publish_order.lock().await;
            live.channel.basic_publish(INBOUND_EXCHANGE, routing_key.as_str(), options, body, properties).await
        };
        let outcome = match tokio::time::timeout_at(deadline, publishing).await {
            Err(_) => Err(PublishError::Deadline),
            Ok(Err(err)) => Err(PublishError::Amqp(err)),
            Ok(Ok(confirm)) => {
                // The confirm is awaited in its own task: lapin keeps a confirm that is dropped
                // unresolved until wait_for_confirms (never called here), so a deadline or a
                // cancelled request must not drop it. The task ends when the broker answers or
                // the channel closes.
                let waiter = tokio::spawn(confirm);
                match tokio::time::timeout_at(deadline, waiter).await {
                    Err(_) => Err(PublishError::Deadline),
                    Ok(Err(_join)) => Err(PublishError::Unconfirmed),
                    Ok(Ok(confirmation)) => confirmation.map_err(PublishError::Amqp),
                }
            }
        };
        match outcome {
            Err(err) => {
                if matches!(err, PublishError::Amqp(_)) {
                    // The channel or connection may be gone: let the supervisor look now.
                    self.inner.wake.notify_one();
                }
                Err(err)
            }
            Ok(Confirmation::Ack(None)) => Ok(()),
            // The returned message holds the payload: dropped without being read or logged.
            Ok(Confirmation::Ack(Some(_returned))) => Err(PublishError::Returned),
            Ok(Confirmation::Nack(_)) => Err(PublishError::Nack),
            Ok(Confirmation::NotRequested) => Err(PublishError::Unconfirmed),
        }
    }

    fn is_ready(&self) -> bool {
        self.inner.not_ready_reason().is_none()
    }

    fn not_ready_reason(&self) -> Option<&'static str> {
        self.inner.not_ready_reason()
    }
}

/// The envelope's ingest id, for the AMQP `message_id` property. Only that field is decoded.
fn ingest_id_of(body: &[u8]) -> Option<IngestId> {
    #[derive(Deserialize)]
    struct IdOnly {
        ingest_id: IngestId,
    }
    serde_json::from_slice::<IdOnly>(body).ok().map(|only| only.ingest_id)
}

/// Connects, holds the connection while it is healthy, and reconnects with capped exponential
/// backoff until `shutdown` fires.
async fn supervise(inner: Arc<Inner>, settings: Settings, shutdown: CancellationToken) {
    let mut backoff = MIN_BACKOFF;
    while !shutdown.is_cancelled() {
        // Each endpoint of the list is bounded on its own (ENDPOINT_CONNECT_TIMEOUT), and the
        // list starts at a shuffled node, so after its node went away ingest lands on another.
        let connecting = wafleet_shared::amqp::connect(settings.amqp_url.expose_secret(), "wafleet-ingest");
        let attempt = tokio::select! {
            () = shutdown.cancelled() => break,
            attempt = connecting => attempt,
        };
        match attempt {
            Ok(connection) => {
                tracing::info!("connected to the broker");
                let waker = Arc::clone(&inner);
                connection.on_error(move |_| waker.wake.notify_one());
                if settings.declare_topology {
                    declare_topology(&connection).await;
                }
                let opened = hold(&inner, &connection, &settings, &shutdown).await;
                inner.set_live(None);
                inner.exchange_confirmed.store(false, Ordering::SeqCst);
                close(&connection).await;
                if opened {
                    backoff = MIN_BACKOFF;
                }
                if shutdown.is_cancelled() {
                    break;
                }
                tracing::warn!("broker connection lost; reconnecting");
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in_ms = backoff.as_millis(), "cannot connect to the broker")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    inner.set_live(None);
    tracing::info!("publisher stopped");
}

/// Keeps a confirm-mode channel open on `connection` and re-checks `wa.inbound` periodically and
/// whenever something failed. Returns when the connection breaks or `shutdown` fires; the result
/// says whether a channel was ever opened (a healthy connection resets the backoff).
async fn hold(inner: &Arc<Inner>, connection: &Connection, settings: &Settings, shutdown: &CancellationToken) -> bool {
    let mut channel: Option<Channel> = None;
    let mut opened = false;
    let mut checked = false;
    loop {
        if !connection.status().connected() {
            return opened;
        }
        if !channel.as_ref().is_some_and(|c| c.status().connected()) {
            inner.set_live(None);
            match tokio::time::timeout(BROKER_CALL_TIMEOUT, open_confirm_channel(connection)).await {
                Ok(Ok(fresh)) => {
                    let waker = Arc::clone(inner);
                    fresh.on_error(move |_| waker.wake.notify_one());
                    inner.set_live(Some(Live {
                        channel: fresh.clone(),
                        connection: connection.status().clone(),
                        publish_order: Arc::default(),
                    }));
                    channel = Some(fresh);
                    opened = true;
                }
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "cannot open a publishing channel");
                    return opened;
                }
                Err(_) => {
                    tracing::warn!("opening a publishing channel timed out");
                    return opened;
                }
            }
        }
        let exists = inbound_exchange_exists(connection).await;
        let before = inner.exchange_confirmed.swap(exists, Ordering::SeqCst);
        if exists && !before {
            tracing::info!(exchange = INBOUND_EXCHANGE, "exchange confirmed; ready");
        } else if !exists && (before || !checked) {
            tracing::warn!(exchange = INBOUND_EXCHANGE, "exchange not found (run `wafleet migrate`); not ready");
        }
        checked = true;
        tokio::select! {
            () = shutdown.cancelled() => {
                if let Some(channel) = channel {
                    let _ = tokio::time::timeout(BROKER_CALL_TIMEOUT, channel.close(200, "shutdown")).await;
                }
                return opened;
            }
            () = inner.wake.notified() => {}
            () = tokio::time::sleep(settings.ready_recheck) => {}
        }
    }
}

async fn open_confirm_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(channel)
}

/// A passive declare on a throwaway channel: a missing exchange closes the channel with 404,
/// which must not take the shared publishing channel down with it.
async fn inbound_exchange_exists(connection: &Connection) -> bool {
    let check = async {
        let channel = connection.create_channel().await?;
        let options = ExchangeDeclareOptions { passive: true, ..ExchangeDeclareOptions::default() };
        channel.exchange_declare(INBOUND_EXCHANGE, ExchangeKind::Direct, options, FieldTable::default()).await?;
        let _ = channel.close(200, "check done").await;
        Ok::<(), lapin::Error>(())
    };
    matches!(tokio::time::timeout(BROKER_CALL_TIMEOUT, check).await, Ok(Ok(())))
}

/// Development only (`WAFLEET_INGEST_DECLARE_TOPOLOGY`): `wa.inbound` (direct) with alternate
/// exchange `wa.unrouted` (fanout) and the `wa.unrouted` queue. Failures are logged; readiness
/// then depends on the passive check as usual.
async fn declare_topology(connection: &Connection) {
    let declare = async {
        let channel = connection.create_channel().await?;
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        channel.exchange_declare(UNROUTED_EXCHANGE, ExchangeKind::Fanout, durable, FieldTable::default()).await?;
        let queue_options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(UNROUTED_QUEUE, queue_options, FieldTable::default()).await?;
        channel
            .queue_bind(UNROUTED_QUEUE, UNROUTED_EXCHANGE, "", QueueBindOptions::default(), FieldTable::default())
            .await?;
        let mut arguments = FieldTable::default();
        arguments.insert("alternate-exchange".into(), AMQPValue::LongString(UNROUTED_EXCHANGE.into()));
        channel.exchange_declare(INBOUND_EXCHANGE, ExchangeKind::Direct, durable, arguments).await?;
        let _ = channel.close(200, "topology declared").await;
        Ok::<(), lapin::Error>(())
    };
    match tokio::time::timeout(BROKER_CALL_TIMEOUT, declare).await {
        Ok(Ok(())) => tracing::info!("development topology declared"),
        Ok(Err(err)) => tracing::warn!(error = %err, "declaring development topology failed"),
        Err(_) => tracing::warn!("declaring development topology timed out"),
    }
}

async fn close(connection: &Connection) {
    if connection.status().connected() {
        let started = Instant::now();
        let _ = tokio::time::timeout(BROKER_CALL_TIMEOUT, connection.close(200, "shutdown")).await;
        tracing::debug!(elapsed_ms = started.elapsed().as_millis(), "broker connection closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_id_is_read_from_the_envelope_only() {
        let id = IngestId::new();
        let body = format!(r#"{{"v":"1","payload":{{"ingest_id":"x"}},"ingest_id":"{id}"}}"#);
        assert_eq!(ingest_id_of(body.as_bytes()), Some(id));
        assert_eq!(ingest_id_of(b"not json"), None);
    }
}

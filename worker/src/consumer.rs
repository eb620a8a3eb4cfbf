//! Consumption of every tenant queue. One AMQP connection for consumers and a separate one for
//! publishing (retries, dead letters, quarantine), so a blocked publisher cannot stall acks.
//!
//! A consumer the broker ends (`basic.cancel`: its queue deleted, its node lost) is noticed at
//! once and subscribed again on the next refresh, which follows within a second; the
//! per-tenant `wafleet_worker_tenant_consuming` gauge says whether each active tenant is consumed.
//!
//! Per-queue prefetch bounds what one tenant can hold unacked; a per-tenant semaphore caps its
//! concurrent work and a global semaphore caps the worker's, so a slow or noisy tenant holds
//! only its own slots.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing::{debug, warn};
use wafleet_shared::topology::{self as names, QueueType, ATTEMPT_HEADER, DLX_EXCHANGE, QUARANTINE_EXCHANGE};
use wafleet_shared::CustomerRef;

use crate::process::{Disposition, Failure, Processor};
use wafleet_fleet::error::{Error, Result, SetupError};
use wafleet_fleet::tenant::{self, TenantStatus};
use wafleet_fleet::topology;
use wafleet_fleet::topology::RetryTier;

mod config;
mod headers;
mod liveness;
mod publisher;
mod session;

pub use config::ConsumerConfig;
use headers::{failure_headers, header_u32, quarantine_headers};
use liveness::ConsumingGauge;
use publisher::SharedPublisher;
use session::SessionSignals;

/// Consumes tenant queues until shutdown, reconnecting and holding through outages.
pub struct ConsumerSupervisor {
    amqp_url: String,
    pool: PgPool,
    processor: Processor,
    config: ConsumerConfig,
    global: Arc<Semaphore>,
    /// Number of consumers currently running, for `/readyz` and tests.
    pub active_consumers: Arc<std::sync::atomic::AtomicUsize>,
    /// Whether a consumer session is up (broker connected, tenant list read), for `/readyz`.
    pub session_up: Arc<std::sync::atomic::AtomicBool>,
}

struct Running {
    tag: String,
    stop: CancellationToken,
    /// Set when a check found the broker no longer delivers to this consumer.
    lost: bool,
    /// What the checks watch: deliveries and free slots.
    watch: liveness::Watch,
    /// Finished when the consumer stream ended: by `stop`, or by the broker (`basic.cancel`).
    task: tokio::task::JoinHandle<()>,
}

impl ConsumerSupervisor {
    /// A supervisor consuming with `processor`.
    pub fn new(amqp_url: String, pool: PgPool, processor: Processor, config: ConsumerConfig) -> Self {
        let global = Arc::new(Semaphore::new(config.max_in_flight));
        Self {
            amqp_url,
            pool,
            processor,
            config,
            global,
            active_consumers: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            session_up: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Runs until `shutdown`: connect, consume, and start over after a broker or database outage.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken, tenants_changed: Arc<tokio::sync::Notify>) {
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            match self.session(&shutdown, &tenants_changed).await {
                Ok(SessionEnd::Shutdown) => return,
                Ok(SessionEnd::DatabaseDown) => {
                    session::wait_for_database(&self.pool, &shutdown).await;
                    backoff = Duration::from_millis(200);
                }
                Err(e) => {
                    warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "consumer session ended; reconnecting");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn session(&self, shutdown: &CancellationToken, tenants_changed: &tokio::sync::Notify) -> Result<SessionEnd> {
        let consume_conn = wafleet_shared::amqp::connect(&self.amqp_url, "wafleet-worker-consume").await?;
        let publish_conn = wafleet_shared::amqp::connect(&self.amqp_url, "wafleet-worker-publish").await?;
        let channel = consume_conn.create_channel().await?;
        // global=false: the prefetch applies to each consumer (= each tenant queue) separately.
        channel.basic_qos(self.config.prefetch, BasicQosOptions { global: false }).await?;
        let broken = CancellationToken::new();
        watch_connection(&consume_conn, broken.clone());
        watch_connection(&publish_conn, broken.clone());
        let publisher = Arc::new(SharedPublisher::open(publish_conn).await?);
        let declaring = publisher.channel().await;
        topology::declare_retry_tiers(&declaring, &self.config.retry_tiers).await?;
        // The exchange quarantine publishes go through; declared here too, so a fleet migrated
        // before it existed still quarantines instead of closing the shared channel with 404.
        topology::declare_quarantine(&declaring).await?;
        let mut running: HashMap<CustomerRef, Running> = HashMap::new();
        let signals = SessionSignals::new();
        let mut gauge = ConsumingGauge::default();
        let mut checks = liveness::ConsumerChecks::new(&consume_conn, self.config.consumer_check_interval);
        let result = loop {
            let refreshed = self.refresh(&consume_conn, &channel, &publisher, &mut running, &signals).await;
            if let Err(e) = refreshed.map(|tenants| gauge.set(&self.processor, &tenants, &running)) {
                if e.is_database_unavailable() {
                    break Ok(SessionEnd::DatabaseDown);
                }
                // A busy pool delays the refresh, nothing more; a failed probe is an outage.
                if e.is_pool_timeout() {
                    if wafleet_fleet::db::probe_writable(&self.pool, Duration::from_secs(5)).await {
                        warn!("database pool busy; tenant refresh postponed");
                    } else {
                        break Ok(SessionEnd::DatabaseDown);
                    }
                } else {
                    break Err(e);
                }
            }
            self.session_up.store(true, std::sync::atomic::Ordering::Relaxed);
            let next_refresh = tokio::time::Instant::now() + self.config.refresh_interval;
            let end = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break Some(Ok(SessionEnd::Shutdown)),
                    _ = broken.cancelled() => break Some(Err(Error::ConnectionLost)),
                    _ = signals.database_down.notified() => break Some(Ok(SessionEnd::DatabaseDown)),
                    _ = tenants_changed.notified() => {
                        debug!("tenant change notified; refreshing consumers");
                        break None;
                    }
                    // A short pause: a queue deleted again at once must not become a hot loop.
                    _ = signals.consumer_ended.notified() => {
                        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
                        break None;
                    }
                    // Between refreshes, only a lost consumer triggers one.
                    lost = checks.run(&mut running, &self.processor) => if lost { break None },
                    _ = tokio::time::sleep_until(next_refresh) => break None,
                }
            };
            if let Some(end) = end {
                break end;
            }
        };
        // Cancel consumers first so no new deliveries arrive, then let in-flight work finish:
        // unacked messages return to their queues when the channel closes.
        for (_, r) in running.drain() {
            let _ = channel.basic_cancel(&r.tag, BasicCancelOptions::default()).await;
            r.stop.cancel();
        }
        signals.stop.cancel();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), self.global.acquire_many(self.config.max_in_flight as u32))
                .await;
        self.active_consumers.store(0, std::sync::atomic::Ordering::Relaxed);
        self.session_up.store(false, std::sync::atomic::Ordering::Relaxed);
        gauge.none_consumed();
        let _ = consume_conn.close(200, "worker stopping").await;
        publisher.close().await;
        result
    }

    /// Starts consumers for tenants that have none, including those whose consumer the broker
    /// ended. Disabled tenants keep being consumed so their messages are dropped visibly;
    /// offboarded ones are not consumed. Returns the tenant list it worked from.
    // layout: one pass over the tenant list; each arm (offboarded, running, ended, new) is short.
    async fn refresh(
        &self,
        connection: &Connection,
        channel: &Channel,
        publisher: &Arc<SharedPublisher>,
        running: &mut HashMap<CustomerRef, Running>,
        signals: &SessionSignals,
    ) -> Result<Vec<tenant::TenantSummary>> {
        let tenants = tenant::list(&self.pool).await?;
        for summary in &tenants {
            let customer_ref = summary.customer_ref.clone();
            if summary.status == TenantStatus::Offboarded {
                if let Some(r) = running.remove(&customer_ref) {
                    let _ = channel.basic_cancel(&r.tag, BasicCancelOptions::default()).await;
                    r.stop.cancel();
                }
                continue;
            }
            match running.get(&customer_ref) {
                Some(r) if !r.lost && !r.task.is_finished() => continue,
                Some(_) => {
                    // The broker ended the consumer (basic.cancel), or a check found it gone.
                    warn!(tenant = %customer_ref, "tenant consumer was ended by the broker; subscribing again");
                    let label = self.processor.tenant_label_peek(&customer_ref);
                    metrics::counter!(crate::metric::WORKER_CONSUMER_RESUBSCRIBED_TOTAL, "tenant" => label)
                        .increment(1);
                    if let Some(r) = running.remove(&customer_ref) {
                        // Frees lapin's record of a consumer the broker dropped silently; the
                        // broker ignores a cancel of a tag it no longer knows.
                        let _ = channel.basic_cancel(&r.tag, BasicCancelOptions::default()).await;
                    }
                }
                None => {}
            }
            // Repairs a queue that is missing (for example after a broker reset); an existing
            // one is left as it is.
            topology::declare_tenant(connection, channel, &customer_ref, summary.queue_type).await?;
            let queue = names::tenant_queue(&customer_ref);
            // A fresh tag per subscription: a consumer the broker dropped silently may still hold
            // the old one on this channel, and a duplicate tag would close the connection.
            let n = SUBSCRIPTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tag = format!("wafleet-{}-{}-{n}", std::process::id(), queue);
            let consumer =
                channel.basic_consume(&queue, &tag, BasicConsumeOptions::default(), FieldTable::default()).await?;
            let stop = signals.stop.child_token();
            let tenant_slots = Arc::new(Semaphore::new(self.config.tenant_in_flight));
            let watch = liveness::Watch::new(tenant_slots.clone(), self.config.tenant_in_flight);
            let worker = TenantConsumer {
                deliveries: watch.deliveries(),
                customer_ref: customer_ref.clone(),
                processor: self.processor.clone(),
                publisher: publisher.clone(),
                tenant_slots,
                global: self.global.clone(),
                database_down: signals.database_down.clone(),
                retry_tiers: self.config.retry_tiers.clone(),
                publish_timeout: self.config.publish_timeout,
                classic: summary.queue_type == QueueType::Classic,
            };
            let task = tokio::spawn(worker.run(consumer, stop.clone(), signals.consumer_ended.clone()));
            running.insert(customer_ref, Running { tag, stop, lost: false, watch, task });
        }
        self.active_consumers.store(running.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(tenants)
    }
}

/// Numbers consumer tags, so each subscription has its own.
static SUBSCRIPTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long a stopped consumer keeps handing back deliveries while its cancel is on the way.
const HAND_BACK_WITHIN: Duration = Duration::from_secs(30);

/// Pause between a consumer ended by the broker and the refresh that subscribes it again.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(250);

enum SessionEnd {
    Shutdown,
    DatabaseDown,
}

fn watch_connection(connection: &Connection, broken: CancellationToken) {
    connection.on_error(move |e| {
        warn!(error = %e, "AMQP connection error");
        broken.cancel();
    });
}

struct TenantConsumer {
    customer_ref: CustomerRef,
    processor: Processor,
    publisher: Arc<SharedPublisher>,
    tenant_slots: Arc<Semaphore>,
    /// Counts deliveries, for the checks that find a consumer the broker stopped feeding.
    deliveries: Arc<std::sync::atomic::AtomicU64>,
    global: Arc<Semaphore>,
    database_down: Arc<tokio::sync::Notify>,
    retry_tiers: Vec<RetryTier>,
    publish_timeout: Duration,
    /// Classic queues have no delivery limit: the crash-loop backstop counts in Postgres.
    classic: bool,
}

impl TenantConsumer {
    /// Takes deliveries until `stop`, or until the broker ends the consumer; then `ended` wakes
    /// the supervisor to subscribe again.
    async fn run(self, mut consumer: lapin::Consumer, stop: CancellationToken, ended: Arc<tokio::sync::Notify>) {
        let this = Arc::new(self);
        loop {
            let delivery = tokio::select! {
                _ = stop.cancelled() => {
                    this.hand_back_undelivered(consumer).await;
                    return;
                }
                next = consumer.next() => match next {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => {
                        warn!(tenant = %this.customer_ref, error = %e, "consumer error");
                        this.ended(&ended);
                        return;
                    }
                    None => {
                        this.ended(&ended);
                        return;
                    }
                },
            };
            this.deliveries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (Ok(tenant_slot), Ok(global_slot)) =
                (this.tenant_slots.clone().acquire_owned().await, this.global.clone().acquire_owned().await)
            else {
                return;
            };
            let this = this.clone();
            tokio::spawn(async move {
                let _slots = (tenant_slot, global_slot);
                this.handle(delivery).await;
            });
        }
    }

    /// After `stop` the supervisor cancels the subscription on the channel every tenant shares.
    /// Deliveries the broker sent before its cancel-ok sit in this stream, unacked: dropped with
    /// the stream, they would stay unacked on that channel, out of every consumer's reach, until
    /// the session ends. Each goes back to its queue; the stream ends at the cancel-ok, or when
    /// the channel closes.
    async fn hand_back_undelivered(&self, mut consumer: lapin::Consumer) {
        let deadline = tokio::time::Instant::now() + HAND_BACK_WITHIN;
        while let Ok(Some(Ok(delivery))) = tokio::time::timeout_at(deadline, consumer.next()).await {
            let requeue = BasicRejectOptions { requeue: true };
            if let Err(e) = delivery.acker.reject(requeue).await {
                debug!(tenant = %self.customer_ref, error = %e, "could not hand a delivery back; the channel's close will");
            }
        }
    }

    /// The consumer stream ended without `stop`: the tenant is not consumed until the supervisor
    /// subscribes again.
    fn ended(&self, ended: &tokio::sync::Notify) {
        warn!(tenant = %self.customer_ref, "tenant consumer ended by the broker");
        let label = self.processor.tenant_label_peek(&self.customer_ref);
        metrics::gauge!(crate::metric::WORKER_TENANT_CONSUMING, "tenant" => label).set(0.0);
        ended.notify_one();
    }

    async fn handle(&self, delivery: lapin::message::Delivery) {
        let started = std::time::Instant::now();
        let label = self.processor.tenant_label(&self.customer_ref);
        let in_flight = metrics::gauge!(crate::metric::WORKER_IN_FLIGHT);
        in_flight.increment(1.0);
        let attempt = header_u32(&delivery, ATTEMPT_HEADER);
        match header_u32(&delivery, "x-delivery-count") {
            0 => {}
            1 => metrics::counter!(crate::metric::WORKER_REDELIVERIES_TOTAL, "delivery_count" => "1").increment(1),
            _ => metrics::counter!(crate::metric::WORKER_REDELIVERIES_TOTAL, "delivery_count" => "2+").increment(1),
        }
        // ISOLATION: the tenant is the one this consumer was started for (its queue), not
        // anything read from the message; the processor checks the envelope against it.
        // The consume span continues the trace ingest started (traceparent in the AMQP headers).
        let span = tracing::info_span!(
            "consume",
            tenant = %self.customer_ref,
            trace_id = tracing::field::Empty,
            otel.kind = "consumer"
        );
        wafleet_shared::trace::set_parent_from_headers(&span, delivery.properties.headers().as_ref());
        wafleet_shared::trace::record_trace_id(&span);
        let disposition = if self.classic && delivery.redelivered {
            self.processor.handle_redelivered_classic(&self.customer_ref, &delivery.data).instrument(span).await
        } else {
            self.processor.handle(&self.customer_ref, &delivery.data).instrument(span).await
        };
        if let Err(e) = self.settle(&delivery, disposition, attempt, label.clone()).await {
            warn!(tenant = %self.customer_ref, error = %e, "could not settle delivery; it will be redelivered");
        }
        metrics::histogram!(crate::metric::WORKER_PROCESSING_SECONDS, "tenant" => label)
            .record(started.elapsed().as_secs_f64());
        in_flight.decrement(1.0);
    }

    /// Does what the processor's disposition asks: ack, republish to a retry tier, quarantine,
    /// dead-letter, park, or hand back while the database is down.
    async fn settle(
        &self,
        delivery: &lapin::message::Delivery,
        disposition: Disposition,
        attempt: u32,
        label: String,
    ) -> Result<(), lapin::Error> {
        let acker = &delivery.acker;
        let came_back = attempt > 0;
        match disposition {
            Disposition::Ack => {
                if came_back {
                    self.forget_retry(delivery).await;
                }
                acker.ack(BasicAckOptions::default()).await
            }
            Disposition::Quarantine => {
                let headers = quarantine_headers(&self.customer_ref);
                let published = self.publish(delivery, QUARANTINE_EXCHANGE, "", headers, None).await;
                self.settle_after_publish(delivery, published, "quarantine").await
            }
            Disposition::Retry(failure) => match self.retry_tiers.get(attempt as usize) {
                Some(tier) => {
                    metrics::counter!(crate::metric::WORKER_RETRIED_TOTAL, "tenant" => label.clone(), "reason" => failure.reason())
                        .increment(1);
                    let headers = failure_headers(delivery, &failure, attempt + 1);
                    let expiration = tier.delay.as_millis().to_string();
                    // ISOLATION: published with the tenant's own ref as routing key; the tier's
                    // dead-lettering keeps it, so the message can only come back to this queue.
                    let published = self
                        .publish(delivery, &tier.name(), self.customer_ref.as_str(), headers, Some(expiration))
                        .await;
                    if published.is_ok() {
                        if let Err(e) =
                            self.processor.note_retry(&self.customer_ref, &delivery.data, &tier.label, tier.delay).await
                        {
                            debug!(tenant = %self.customer_ref, error = %e, "could not record the retry for `wafleet depth`");
                        }
                    }
                    self.settle_after_publish(delivery, published, "retry").await
                }
                None => {
                    let exhausted = Failure::RetriesExhausted(Box::new(failure));
                    self.dead_letter(delivery, &exhausted, attempt).await
                }
            },
            Disposition::DeadLetter(failure) => self.dead_letter(delivery, &failure, attempt).await,
            Disposition::LeaveForNewerWorker => {
                // Park it in the longest retry tier without counting an attempt: it comes back to
                // this queue later, when a newer worker may be running. Requeueing in place would
                // spin and, on quorum queues, run into the delivery limit and dead-letter it.
                let headers = delivery.properties.headers().clone().unwrap_or_default();
                let published = match self.retry_tiers.last() {
                    Some(tier) => {
                        let expiration = tier.delay.as_millis().to_string();
                        self.publish(delivery, &tier.name(), self.customer_ref.as_str(), headers, Some(expiration))
                            .await
                    }
                    None => Err(SetupError::NoRetryTiers.into()),
                };
                self.settle_after_publish(delivery, published, "park").await
            }
            Disposition::HoldDatabaseDown => {
                // Left unacked on purpose: the session cancels its consumers and closes the
                // channel, which returns the message once. A nack with requeue here would hand it
                // straight back to this still-subscribed consumer, and every round trip until the
                // consumers stop would burn a quorum delivery attempt.
                self.database_down.notify_one();
                Ok(())
            }
        }
    }

    /// Publishes to `wa.dlx` with the failure in the headers; if that fails, `basic.reject`
    /// lets the queue's own dead-letter policy take it, so the message is never dropped.
    async fn dead_letter(
        &self,
        delivery: &lapin::message::Delivery,
        failure: &Failure,
        attempt: u32,
    ) -> Result<(), lapin::Error> {
        warn!(tenant = %self.customer_ref, reason = failure.reason(), "dead-lettering message");
        let label = self.processor.tenant_label(&self.customer_ref);
        metrics::counter!(crate::metric::WORKER_DEAD_LETTERED_TOTAL, "tenant" => label, "reason" => failure.reason())
            .increment(1);
        let headers = failure_headers(delivery, failure, attempt);
        if attempt > 0 {
            self.forget_retry(delivery).await;
        }
        match self.publish(delivery, DLX_EXCHANGE, self.customer_ref.as_str(), headers, None).await {
            Ok(()) => delivery.acker.ack(BasicAckOptions::default()).await,
            Err(e) => {
                warn!(tenant = %self.customer_ref, error = %e, "DLQ publish failed; rejecting to the policy's DLX");
                delivery.acker.reject(BasicRejectOptions { requeue: false }).await
            }
        }
    }

    async fn forget_retry(&self, delivery: &lapin::message::Delivery) {
        if let Err(e) = self.processor.clear_retry(&self.customer_ref, &delivery.data).await {
            debug!(tenant = %self.customer_ref, error = %e, "could not clear the retry record");
        }
    }
}

//! Consumption of every tenant queue. One AMQP connection for consumers and a separate one for
//! publishing (quarantine, unrouted republish), so a blocked publisher cannot stall acks.
//!
//! Per-queue prefetch bounds what one tenant can hold unacked; a per-tenant semaphore caps its
//! concurrent work and a global semaphore caps the worker's, so a slow or noisy tenant holds
//! only its own slots.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use sqlx::PgPool;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing::{debug, info, warn};
use wafleet_shared::publish::{publish_confirmed_shared, Target};
use wafleet_shared::topology::{self as names, QueueType, ATTEMPT_HEADER, DLX_EXCHANGE, QUARANTINE_QUEUE};
use wafleet_shared::CustomerRef;

use crate::process::{Disposition, Failure, Processor};
use wafleet_fleet::error::{Error, Result, SetupError};
use wafleet_fleet::tenant::{self, TenantStatus};
use wafleet_fleet::topology;
use wafleet_fleet::topology::RetryTier;

mod headers;

use headers::{failure_headers, header_u32, quarantine_headers};

/// Settings of consumption.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Unacked messages per tenant queue. Small, so one tenant's backlog stays in its own
    /// queue (visible as depth, and taken by other replicas) instead of in this process.
    pub prefetch: u16,
    /// Concurrent messages per tenant.
    pub tenant_in_flight: usize,
    /// Concurrent messages in the whole worker.
    pub max_in_flight: usize,
    /// How often the tenant list is re-read even without a notification.
    pub refresh_interval: Duration,
    /// Retry tiers for consume-side failures, in order (`WAFLEET_RETRY_TIERS`).
    pub retry_tiers: Vec<RetryTier>,
    /// Bound of one publish plus its confirm (retry, dead-letter, quarantine).
    pub publish_timeout: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            prefetch: 8,
            tenant_in_flight: 4,
            max_in_flight: 64,
            refresh_interval: Duration::from_secs(30),
            retry_tiers: RetryTier::parse_list(topology::DEFAULT_RETRY_TIERS).unwrap_or_default(),
            publish_timeout: Duration::from_secs(5),
        }
    }
}

/// Consumes tenant queues until shutdown, reconnecting and holding through outages.
pub struct ConsumerSupervisor {
    amqp_url: String,
    pool: PgPool,
    processor: Processor,
    config: ConsumerConfig,
    global: Arc<Semaphore>,
    /// Set when Postgres is unreachable: consumers are cancelled until it answers again.
    database_down: Arc<tokio::sync::Notify>,
    /// Number of consumers currently running, for `/readyz` and tests.
    pub active_consumers: Arc<std::sync::atomic::AtomicUsize>,
    /// Whether a consumer session is up (broker connected, tenant list read), for `/readyz`.
    pub session_up: Arc<std::sync::atomic::AtomicBool>,
}

struct Running {
    tag: String,
    stop: CancellationToken,
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
            database_down: Arc::new(tokio::sync::Notify::new()),
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
                    self.wait_for_database(&shutdown).await;
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

    /// Polls Postgres with backoff (no hot loop) until it answers.
    async fn wait_for_database(&self, shutdown: &CancellationToken) {
        let mut delay = Duration::from_millis(250);
        loop {
            if sqlx::query("select 1").execute(&self.pool).await.is_ok() {
                info!("database reachable again; resuming consumers");
                return;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn session(&self, shutdown: &CancellationToken, tenants_changed: &tokio::sync::Notify) -> Result<SessionEnd> {
        let consume_conn = wafleet_shared::amqp::connect(&self.amqp_url, "wafleet-worker-consume").await?;
        let publish_conn = wafleet_shared::amqp::connect(&self.amqp_url, "wafleet-worker-publish").await?;
        let channel = consume_conn.create_channel().await?;
        // global=false: the prefetch applies to each consumer (= each tenant queue) separately.
        channel.basic_qos(self.config.prefetch, BasicQosOptions { global: false }).await?;
        let publisher = publish_conn.create_channel().await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        topology::declare_retry_tiers(&publisher, &self.config.retry_tiers).await?;
        let publisher = Arc::new(Mutex::new(publisher));
        let broken = CancellationToken::new();
        watch_connection(&consume_conn, broken.clone());
        watch_connection(&publish_conn, broken.clone());
        let mut running: HashMap<CustomerRef, Running> = HashMap::new();
        let session_stop = CancellationToken::new();
        let result = loop {
            if let Err(e) = self.refresh(&consume_conn, &channel, &publisher, &mut running, &session_stop).await {
                if e.is_database_unavailable() {
                    break Ok(SessionEnd::DatabaseDown);
                }
                break Err(e);
            }
            self.session_up.store(true, std::sync::atomic::Ordering::Relaxed);
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(SessionEnd::Shutdown),
                _ = broken.cancelled() => break Err(Error::ConnectionLost),
                _ = self.database_down.notified() => break Ok(SessionEnd::DatabaseDown),
                _ = tenants_changed.notified() => debug!("tenant change notified; refreshing consumers"),
                _ = tokio::time::sleep(self.config.refresh_interval) => {}
            }
        };
        // Cancel consumers first so no new deliveries arrive, then let in-flight work finish:
        // unacked messages return to their queues when the channel closes.
        for (_, r) in running.drain() {
            let _ = channel.basic_cancel(&r.tag, BasicCancelOptions::default()).await;
            r.stop.cancel();
        }
        session_stop.cancel();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), self.global.acquire_many(self.config.max_in_flight as u32))
                .await;
        self.active_consumers.store(0, std::sync::atomic::Ordering::Relaxed);
        self.session_up.store(false, std::sync::atomic::Ordering::Relaxed);
        let _ = consume_conn.close(200, "worker stopping").await;
        let _ = publish_conn.close(200, "worker stopping").await;
        result
    }

    /// Starts consumers for tenants that have none. Disabled tenants keep being consumed so
    /// their messages are dropped visibly; offboarded ones are not consumed.
    async fn refresh(
        &self,
        connection: &Connection,
        channel: &Channel,
        publisher: &Arc<Mutex<Channel>>,
        running: &mut HashMap<CustomerRef, Running>,
        session_stop: &CancellationToken,
    ) -> Result<()> {
        let tenants = tenant::list(&self.pool).await?;
        for summary in tenants {
            let customer_ref = summary.customer_ref;
            if summary.status == TenantStatus::Offboarded {
                if let Some(r) = running.remove(&customer_ref) {
                    let _ = channel.basic_cancel(&r.tag, BasicCancelOptions::default()).await;
                    r.stop.cancel();
                }
                continue;
            }
            if running.contains_key(&customer_ref) {
                continue;
            }
            // Repairs a queue that is missing (for example after a broker reset); an existing
            // one is left as it is.
            topology::declare_tenant(connection, channel, &customer_ref, summary.queue_type).await?;
            let queue = names::tenant_queue(&customer_ref);
            let tag = format!("wafleet-{}-{}", std::process::id(), queue);
            let consumer =
                channel.basic_consume(&queue, &tag, BasicConsumeOptions::default(), FieldTable::default()).await?;
            let stop = session_stop.child_token();
            let worker = TenantConsumer {
                customer_ref: customer_ref.clone(),
                processor: self.processor.clone(),
                publisher: publisher.clone(),
                tenant_slots: Arc::new(Semaphore::new(self.config.tenant_in_flight)),
                global: self.global.clone(),
                database_down: self.database_down.clone(),
                retry_tiers: self.config.retry_tiers.clone(),
                publish_timeout: self.config.publish_timeout,
                classic: summary.queue_type == QueueType::Classic,
            };
            tokio::spawn(worker.run(consumer, stop.clone()));
            running.insert(customer_ref, Running { tag, stop });
        }
        self.active_consumers.store(running.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

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
    publisher: Arc<Mutex<Channel>>,
    tenant_slots: Arc<Semaphore>,
    global: Arc<Semaphore>,
    database_down: Arc<tokio::sync::Notify>,
    retry_tiers: Vec<RetryTier>,
    publish_timeout: Duration,
    /// Classic queues have no delivery limit: the crash-loop backstop counts in Postgres.
    classic: bool,
}

impl TenantConsumer {
    async fn run(self, mut consumer: lapin::Consumer, stop: CancellationToken) {
        let this = Arc::new(self);
        loop {
            let delivery = tokio::select! {
                _ = stop.cancelled() => return,
                next = consumer.next() => match next {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => { warn!(tenant = %this.customer_ref, error = %e, "consumer error"); return; }
                    None => return,
                },
            };
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

    async fn handle(&self, delivery: lapin::message::Delivery) {
        let started = std::time::Instant::now();
        let label = self.processor.tenant_label(&self.customer_ref);
        let in_flight = metrics::gauge!(crate::metric::WORKER_IN_FLIGHT);
        in_flight.increment(1.0);
        let attempt = header_u32(&delivery, ATTEMPT_HEADER);
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
                let published =
                    self.publish(delivery, "", QUARANTINE_QUEUE, quarantine_headers(&self.customer_ref), None).await;
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
                let r = acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await;
                self.database_down.notify_one();
                r
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

    /// Acks after a confirmed publish; otherwise puts the message back so nothing is lost.
    async fn settle_after_publish(
        &self,
        delivery: &lapin::message::Delivery,
        published: Result<()>,
        what: &str,
    ) -> Result<(), lapin::Error> {
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
    async fn publish(
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
        let published =
            publish_confirmed_shared(&self.publisher, target, &delivery.data, properties, self.publish_timeout).await;
        Ok(published?)
    }
}

//! Whether each tenant is really consumed. `wafleet_worker_tenant_consuming`: per active tenant,
//! whether this worker consumes its queue; labels are bounded like every per-tenant metric
//! (`wafleet_fleet::labels`), and tenants past the labelled top N share `other`, which is 1 only if
//! every one of them is consumed. `ConsumerChecks`: a consumer the broker dropped without a
//! `basic.cancel` is found by its queue's consumer count and subscribed again.

use std::collections::{BTreeMap, HashMap, HashSet};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use tracing::warn;
use wafleet_fleet::tenant::{TenantStatus, TenantSummary};
use wafleet_shared::topology as names;
use wafleet_shared::CustomerRef;

use super::Running;
use crate::process::Processor;

/// The label values this session has exported, so a label that disappears can be cleared.
#[derive(Default)]
pub(super) struct ConsumingGauge {
    exported: HashSet<String>,
}

impl ConsumingGauge {
    /// Sets the gauge from the tenant list and the running consumers.
    pub(super) fn set(
        &mut self,
        processor: &Processor,
        tenants: &[TenantSummary],
        running: &HashMap<CustomerRef, Running>,
    ) {
        let mut values: BTreeMap<String, f64> = BTreeMap::new();
        for summary in tenants.iter().filter(|t| t.status == TenantStatus::Active) {
            let consuming = running.get(&summary.customer_ref).is_some_and(|r| !r.lost && !r.task.is_finished());
            let value = if consuming { 1.0 } else { 0.0 };
            let label = processor.tenant_label_peek(&summary.customer_ref);
            let slot = values.entry(label).or_insert(1.0);
            *slot = slot.min(value);
        }
        // The facade cannot delete a series: a label no longer exported (tenant offboarded or
        // disabled, or moved under `other`) reads 1, so a stale 0 can never page anyone.
        for gone in self.exported.iter().filter(|l| !values.contains_key(*l)) {
            metrics::gauge!(crate::metric::WORKER_TENANT_CONSUMING, "tenant" => gone.clone()).set(1.0);
        }
        for (label, value) in &values {
            metrics::gauge!(crate::metric::WORKER_TENANT_CONSUMING, "tenant" => label.clone()).set(*value);
        }
        self.exported = values.into_keys().collect();
    }

    /// The session ended (broker lost, database down, shutdown): nothing is consumed.
    pub(super) fn none_consumed(&self) {
        for label in &self.exported {
            metrics::gauge!(crate::metric::WORKER_TENANT_CONSUMING, "tenant" => label.clone()).set(0.0);
        }
    }
}

/// Finds consumers the broker dropped without telling: a passive declare of each consumed queue
/// on a channel of its own (a missing queue closes that channel, never the consumers' one).
pub(super) struct ConsumerChecks<'a> {
    connection: &'a lapin::Connection,
    probe: Option<lapin::Channel>,
    tick: tokio::time::Interval,
}

impl<'a> ConsumerChecks<'a> {
    /// Checks every `interval`, the first one an interval from now.
    pub(super) fn new(connection: &'a lapin::Connection, interval: std::time::Duration) -> Self {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { connection, probe: None, tick }
    }

    /// Waits for the next tick, then marks every consumer whose queue is gone or has no consumer
    /// as lost (and cancels it). Returns whether any was lost, so the caller subscribes again.
    pub(super) async fn run(&mut self, running: &mut HashMap<CustomerRef, Running>, processor: &Processor) -> bool {
        self.tick.tick().await;
        let mut any = false;
        for (customer_ref, r) in running.iter_mut().filter(|(_, r)| !r.lost) {
            if r.task.is_finished() {
                any = true;
                continue;
            }
            let Some((ready, consumers)) = self.counts(customer_ref).await else { continue };
            // No consumer at all (the queue was deleted) means ours is gone too. A queue deleted
            // and declared again can instead still list a consumer that gets nothing (seen on
            // RabbitMQ 3.10 quorum queues): ready messages while this consumer is idle and got
            // no delivery, at two checks in a row.
            if consumers > 0 && !r.watch.starved(ready) {
                continue;
            }
            warn!(tenant = %customer_ref, ready, consumers, "tenant consumer gets no deliveries; subscribing again");
            let label = processor.tenant_label_peek(customer_ref);
            metrics::gauge!(crate::metric::WORKER_TENANT_CONSUMING, "tenant" => label).set(0.0);
            r.lost = true;
            r.stop.cancel();
            any = true;
        }
        any
    }

    /// The queue's ready messages and consumers; no consumer when the queue is missing; `None`
    /// when the check itself could not run (the probe channel cannot be opened).
    async fn counts(&mut self, customer_ref: &CustomerRef) -> Option<(u32, u32)> {
        let probe = match &self.probe {
            Some(channel) if channel.status().connected() => channel.clone(),
            _ => {
                let channel = self.connection.create_channel().await.ok()?;
                self.probe = Some(channel.clone());
                channel
            }
        };
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let queue = names::tenant_queue(customer_ref);
        match probe.queue_declare(&queue, passive, FieldTable::default()).await {
            Ok(q) => Some((q.message_count(), q.consumer_count())),
            // 404: the queue is gone, and with it the consumer. Other errors: unknown, skip.
            Err(lapin::Error::ProtocolError(e)) if e.get_id() == 404 => Some((0, 0)),
            Err(_) => None,
        }
    }
}

/// What the checks know of one consumer: its delivery count and its free slots.
pub(super) struct Watch {
    deliveries: std::sync::Arc<std::sync::atomic::AtomicU64>,
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    capacity: usize,
    seen: u64,
    strikes: u8,
}

impl Watch {
    /// A watch over a consumer with `capacity` slots in `slots`.
    pub(super) fn new(slots: std::sync::Arc<tokio::sync::Semaphore>, capacity: usize) -> Self {
        Self { deliveries: std::sync::Arc::default(), slots, capacity, seen: 0, strikes: 0 }
    }

    /// The counter the consumer increments per delivery.
    pub(super) fn deliveries(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.deliveries.clone()
    }

    /// Whether the consumer was starved at this check and the one before: `ready` messages wait,
    /// nothing is in flight, and no delivery arrived since the last check.
    fn starved(&mut self, ready: u32) -> bool {
        let delivered = self.deliveries.load(std::sync::atomic::Ordering::Relaxed);
        let idle = self.slots.available_permits() >= self.capacity;
        let starving = ready > 0 && idle && delivered == self.seen;
        self.seen = delivered;
        self.strikes = if starving { self.strikes.saturating_add(1) } else { 0 };
        self.strikes >= 2
    }
}

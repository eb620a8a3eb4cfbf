//! Settings of consumption (`ConsumerConfig`), filled by the worker binary from its `Args`.

use std::time::Duration;

use wafleet_fleet::topology::{self, RetryTier};

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
    /// How often each consumed queue is checked for a consumer the broker dropped without a
    /// `basic.cancel` (a quorum queue deleted on RabbitMQ 3.10 sends none): one passive declare
    /// per queue (`WAFLEET_CONSUMER_CHECK_SECS`).
    pub consumer_check_interval: Duration,
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
            consumer_check_interval: Duration::from_secs(5),
            retry_tiers: RetryTier::parse_list(topology::DEFAULT_RETRY_TIERS).unwrap_or_default(),
            publish_timeout: Duration::from_secs(5),
        }
    }
}

//! Names of the metrics the worker runtime emits, in one place so that code, the Grafana
//! dashboard and the alert rules in `deploy/` share one source (`deploy/tools/validate_deploy.py`
//! reads the names from this file). Metrics of the service layer (outbox, budget, retention) are
//! named in `wafleet_fleet::metric`; the two the sender also records are re-exported here.
//!
//! This module must not hold a recorder or any state. Counters are exported with `_total` as
//! written here; histograms gain `_bucket`, `_sum` and `_count`. Label keys are written at the
//! call site, as in ingest. A `tenant` label is bounded by `wafleet_fleet::labels::TenantLabels`;
//! labels never carry a message, a token or a key.

pub use wafleet_fleet::metric::{BUCKET_PROXY, BUDGET_WAIT_SECONDS, SENDER_SENDS_TOTAL};

/// Counter, label `result` (`connected`, `not_connected`, `rate_limited`, `error`): status calls
/// the sender made to re-check a disconnected bridge whose replies wait.
pub const BRIDGE_RECHECKS_TOTAL: &str = "wafleet_sender_bridge_rechecks_total";
/// Gauge: messages being processed by this worker.
pub const WORKER_IN_FLIGHT: &str = "wafleet_worker_in_flight";
/// Counter, labels `tenant` and `outcome` (`replied`, `stale`, `bot_failed`, …): messages processed.
pub const WORKER_PROCESSED_TOTAL: &str = "wafleet_worker_processed_total";
/// Counter, label `reason` (a tenant rejection, or `unrouted_expired`): events dropped with an ack.
pub const WORKER_DROPPED_TOTAL: &str = "wafleet_worker_dropped_total";
/// Counter, label `reason` (`undecodable`, `serialization`, `processing_error`, `bot_error`,
/// `bot_transient`, `bot_panic`, `bot_timeout`), and `tenant` for bot failures: failed processing.
pub const WORKER_FAILED_TOTAL: &str = "wafleet_worker_failed_total";
/// Counter, labels `tenant` and `reason`: messages sent to a retry tier.
pub const WORKER_RETRIED_TOTAL: &str = "wafleet_worker_retried_total";
/// Counter, labels `tenant` and `reason`: messages moved to the tenant's DLQ.
pub const WORKER_DEAD_LETTERED_TOTAL: &str = "wafleet_worker_dead_lettered_total";
/// Counter: messages whose envelope named another tenant than their queue, sent to `wa.quarantine`.
/// Any increase is an isolation alert.
pub const WORKER_QUARANTINED_TOTAL: &str = "wafleet_worker_quarantined_total";
/// Counter, label `delivery_count` (`1`, `2+`): deliveries a quorum queue marks as redelivered
/// (`x-delivery-count`, attempts the delivery limit counts). `2+` means a message was returned
/// more than once; a database switchover should burn at most one.
pub const WORKER_REDELIVERIES_TOTAL: &str = "wafleet_worker_redeliveries_total";
/// Counter: redeliveries of events already processed (deduplicated).
pub const WORKER_DUPLICATES_TOTAL: &str = "wafleet_worker_duplicates_total";
/// Counter: events too old to answer (`WAFLEET_STALE_AFTER_SECS`), recorded without a bot run.
pub const WORKER_STALE_TOTAL: &str = "wafleet_worker_stale_total";
/// Gauge (0 or 1), label `tenant`: whether this worker consumes the queue of each active tenant.
/// The `other` label (tenants past the labelled top N) is 1 only if every one of them is consumed.
/// `WafleetTenantQueueNoConsumer` fires when no worker reports 1 for a tenant.
pub const WORKER_TENANT_CONSUMING: &str = "wafleet_worker_tenant_consuming";
/// Counter, label `tenant`: consumers the broker ended (`basic.cancel`: queue deleted, node lost)
/// and the worker subscribed again.
pub const WORKER_CONSUMER_RESUBSCRIBED_TOTAL: &str = "wafleet_worker_consumer_resubscribed_total";
/// Counter: times the shared publisher channel was found closed by the broker (a refused or
/// failed publish) and reopened.
pub const WORKER_PUBLISHER_REOPENED_TOTAL: &str = "wafleet_worker_publisher_reopened_total";
/// Histogram (seconds), label `tenant`: from delivery to settlement of one message.
pub const WORKER_PROCESSING_SECONDS: &str = "wafleet_worker_processing_seconds";
/// Histogram (seconds): one bot run.
pub const WORKER_BOT_SECONDS: &str = "wafleet_worker_bot_seconds";
/// Gauge: messages in `wa.unrouted` at the start of the last sweep.
pub const UNROUTED_DEPTH: &str = "wafleet_unrouted_depth";
/// Counter, label `reason` (`unknown_tenant`, `undecodable`): unrouted messages, counted once each.
pub const UNROUTED_TOTAL: &str = "wafleet_unrouted_total";
/// Counter: claimed sends whose tenant row no longer names the claimed account (skipped).
pub const SENDER_ACCOUNT_MISMATCH_TOTAL: &str = "wafleet_sender_account_mismatch_total";
/// Counter, label `outcome`: calls of the `http` bot.
pub const HTTP_BOT_REQUESTS_TOTAL: &str = "wafleet_http_bot_requests_total";
/// Counter, label `reason`: `http` bot calls refused by the SSRF guard.
pub const HTTP_BOT_REFUSED_TOTAL: &str = "wafleet_http_bot_refused_total";
/// Counter, label `reason`: replies of an `http` bot dropped for naming another chat.
pub const HTTP_BOT_REPLIES_REJECTED_TOTAL: &str = "wafleet_http_bot_replies_rejected_total";
/// Gauge (0 or 1), label `tenant`: whether the last isolation canary run of the tenant passed.
pub const CANARY_SUCCESS: &str = "wafleet_canary_success";
/// Gauge (unix seconds), label `tenant`: when the tenant's canary last passed.
pub const CANARY_LAST_SUCCESS_TIMESTAMP_SECONDS: &str = "wafleet_canary_last_success_timestamp_seconds";
/// Gauge (seconds), label `tenant`: round trip of the last passing canary.
pub const CANARY_LATENCY_SECONDS: &str = "wafleet_canary_latency_seconds";
/// Counter, labels `tenant` and `result` (`passed`, `misrouted`, …): canary runs.
pub const CANARY_RUNS_TOTAL: &str = "wafleet_canary_runs_total";
/// Gauge (0 or 1): whether this worker leads the canary.
pub const CANARY_LEADER: &str = "wafleet_canary_leader";

//! Names of the metrics the fleet crate emits (outbox, send budget, retention, accounts), in one
//! place so that code, the Grafana dashboard and the alert rules in `deploy/` share one source
//! (`deploy/tools/validate_deploy.py` reads the names from this file).
//!
//! This module must not hold a recorder or any state. Counters are exported with `_total` as
//! written here; histograms gain `_bucket`, `_sum` and `_count`. Label keys are written at the call
//! site, as in ingest; fixed sets of label values live here. Labels never carry a message, a token
//! or a key; a `tenant` label is bounded by [`crate::labels::TenantLabels`].

/// Counter, labels `outcome` (`sent`, `unknown`, `failed`, `expired`, …) and `tenant`: settled sends.
pub const SENDER_SENDS_TOTAL: &str = "wafleet_sender_sends_total";
/// Counter: `unknown` sends reconciled against the bridge's `from_me` echo.
pub const SENDER_RECONCILED_TOTAL: &str = "wafleet_sender_reconciled_total";
/// Counter, labels `account` and `bucket`: 429 answers of WA Bridges (the account is paused).
pub const SENDER_429_TOTAL: &str = "wafleet_sender_429_total";
/// Gauge (minutes), label `account`: the outbox backlog in minutes of the account's budget.
pub const OUTBOX_BACKLOG_MINUTES: &str = "wafleet_outbox_backlog_minutes";
/// Gauge (minutes), label `tenant`: one tenant's outbox backlog in minutes of its account's budget.
pub const OUTBOX_TENANT_BACKLOG_MINUTES: &str = "wafleet_outbox_tenant_backlog_minutes";
/// Gauge (seconds), label `tenant`: age of the tenant's oldest pending reply.
pub const OUTBOX_LAG_SECONDS: &str = "wafleet_outbox_lag_seconds";
/// Gauge: sends in state `unknown`, waiting for reconciliation or an operator.
pub const OUTBOX_UNKNOWN: &str = "wafleet_outbox_unknown";
/// Gauge, labels `account` and `bucket`: tokens left in the budget bucket.
pub const BUDGET_TOKENS: &str = "wafleet_budget_tokens";
/// Histogram (seconds), labels `account` and `bucket`: time spent waiting for a budget token.
pub const BUDGET_WAIT_SECONDS: &str = "wafleet_budget_wait_seconds";
/// Gauge, label `group`: tokens left in the egress group's bucket (the per-IP limit).
pub const EGRESS_TOKENS: &str = "wafleet_egress_tokens";
/// Counter, labels `group` and `account`: calls that waited for an egress token.
pub const EGRESS_WAITS_TOTAL: &str = "wafleet_egress_waits_total";
/// Gauge (0 or 1), label `tenant`: whether the tenant's bridge was last seen connected.
pub const BRIDGE_CONNECTED: &str = "wafleet_bridge_connected";
/// Gauge, label `state` ([`BRIDGE_STATES`]): bridges of the fleet per state.
pub const BRIDGES: &str = "wafleet_bridges";
/// Counter, label `table` (`processed_events`, `message_log`, `outbox`): rows deleted by retention.
pub const RETENTION_DELETED_TOTAL: &str = "wafleet_retention_deleted_total";
/// Counter, label `account`: accounts whose API key could not be resolved.
pub const ACCOUNT_KEY_ERRORS_TOTAL: &str = "wafleet_account_key_errors_total";

/// The `bucket` of proxy calls (WA Bridges allows 120 per minute per API key).
pub const BUCKET_PROXY: &str = "proxy";
/// Every `state` of [`BRIDGES`].
pub const BRIDGE_STATES: [&str; 3] = ["connected", "disconnected", "unknown"];

//! Dead letters, queue depth and the outbox.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use wafleet_fleet::{depth, dlq, outbox, service};

/// Dead-letter summary of one tenant.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DlqSummary {
    /// The tenant.
    pub customer_ref: String,
    /// Messages in `wa.dlq.<ref>`.
    pub count: u32,
    /// Age of the oldest message in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_age_secs: Option<i64>,
    /// Count per failure reason.
    pub reasons: BTreeMap<String, u32>,
}

impl From<dlq::DlqSummary> for DlqSummary {
    fn from(s: dlq::DlqSummary) -> Self {
        Self { customer_ref: s.customer_ref, count: s.count, oldest_age_secs: s.oldest_age_secs, reasons: s.reasons }
    }
}

/// One page of dead-letter summaries, in ref order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DlqPage {
    /// One summary per tenant of this page.
    pub items: Vec<DlqSummary>,
    /// Opaque cursor of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The next page's URL (same limit, this cursor); absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One page of a tenant's dead letters, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterPage {
    /// The dead letters of this page.
    pub items: Vec<DeadLetter>,
    /// Opaque cursor of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The next page's URL (same limit and `body`, this cursor); absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One dead letter: metadata, and the payload only with `?body=true`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetter {
    /// The ingest id (dedupe key), when the message is an envelope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_id: Option<String>,
    /// Event type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// When ingest accepted it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_at: Option<DateTime<Utc>>,
    /// Last failure reason.
    pub reason: String,
    /// Attempts through the retry tiers.
    pub attempts: u32,
    /// Last error text.
    pub last_error: String,
    /// One line per failed attempt.
    pub history: Vec<String>,
    /// The webhook payload (personal data), only with `?body=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<serde_json::Value>,
}

impl From<dlq::DeadLetter> for DeadLetter {
    fn from(d: dlq::DeadLetter) -> Self {
        Self {
            ingest_id: d.ingest_id,
            event_type: d.event_type,
            received_at: d.received_at,
            reason: d.reason,
            attempts: d.attempts,
            last_error: d.last_error,
            history: d.history,
            payload: d.payload,
        }
    }
}

/// `POST .../dlq/replay`: `all`, or a list of ingest ids.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Replay every message.
    #[serde(default)]
    pub all: bool,
    /// Replay these ingest ids.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub ids: Vec<String>,
    /// Only report what would move.
    #[serde(default)]
    pub dry_run: bool,
}

/// A dead letter left in place, and why.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Skipped {
    /// Its ingest id (`<undecodable>` when not an envelope).
    pub ingest_id: String,
    /// Why it stayed.
    pub reason: String,
}

/// What a replay did (or would do).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ReplayReport {
    /// Ingest ids moved (or, in a dry run, that would move) to the tenant's own queue.
    pub moved: Vec<String>,
    /// Dead letters left in the DLQ.
    pub skipped: Vec<Skipped>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

impl From<dlq::ReplayReport> for ReplayReport {
    fn from(r: dlq::ReplayReport) -> Self {
        Self {
            moved: r.moved,
            skipped: r.skipped.into_iter().map(|(ingest_id, reason)| Skipped { ingest_id, reason }).collect(),
            dry_run: r.dry_run,
        }
    }
}

/// Result of a purge.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Purged {
    /// The tenant.
    pub customer_ref: String,
    /// Messages deleted from `wa.dlq.<ref>`.
    pub purged: u32,
}

/// Queue depth of one tenant.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantDepth {
    /// The tenant.
    pub customer_ref: String,
    /// Messages ready in `wa.tenant.<ref>`.
    pub ready: u64,
    /// Delivered and not yet acked (absent without the management API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unacked: Option<u64>,
    /// Waiting in a retry tier.
    pub retrying: u64,
    /// In `wa.dlq.<ref>`.
    pub dlq: u64,
    /// Age of the oldest ready message in seconds (needs the management API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_age_secs: Option<i64>,
    /// Consumers on the tenant queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumers: Option<u64>,
}

impl From<depth::TenantDepth> for TenantDepth {
    fn from(d: depth::TenantDepth) -> Self {
        Self {
            customer_ref: d.customer_ref,
            ready: d.ready,
            unacked: d.unacked,
            retrying: d.retrying,
            dlq: d.dlq,
            oldest_age_secs: d.oldest_age_secs,
            consumers: d.consumers,
        }
    }
}

/// Where depth numbers came from.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DepthSource {
    /// RabbitMQ's management API.
    Management,
    /// Passive declares (management API unavailable: no unacked count, no age).
    PassiveDeclare,
}

impl From<depth::DepthSource> for DepthSource {
    fn from(s: depth::DepthSource) -> Self {
        match s {
            depth::DepthSource::Management => Self::Management,
            depth::DepthSource::PassiveDeclare => Self::PassiveDeclare,
        }
    }
}

/// Depth of the tenants that are not offboarded, one page in ref order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FleetDepth {
    /// Where the numbers came from.
    pub source: DepthSource,
    /// One entry per tenant of this page.
    pub tenants: Vec<TenantDepth>,
    /// Opaque cursor of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The next page's URL (same limit, this cursor); absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Depth of one tenant.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct OneDepth {
    /// Where the numbers came from.
    pub source: DepthSource,
    /// The tenant's depth.
    pub depth: TenantDepth,
}

/// One account's outbox backlog.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountBacklog {
    /// Account name.
    pub account: String,
    /// Pending replies of its tenants.
    pub pending: i64,
    /// Proxy budget in sends per minute.
    pub sends_per_minute: f64,
    /// `pending` in minutes of budget.
    pub backlog_minutes: f64,
    /// Tokens in the proxy bucket at its last refill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<f64>,
    /// End of a 429 pause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<DateTime<Utc>>,
}

/// One tenant's outbox backlog.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantBacklog {
    /// The tenant.
    pub customer_ref: String,
    /// Its account.
    pub account: String,
    /// Tenant status.
    pub status: String,
    /// Last known bridge state.
    pub bridge_state: String,
    /// Replies waiting.
    pub pending: i64,
    /// Replies being sent.
    pub sending: i64,
    /// Replies that may or may not have reached the person.
    pub unknown: i64,
    /// Replies WA Bridges refused.
    pub failed: i64,
    /// Age of the oldest pending reply in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_secs: Option<f64>,
    /// `pending` in minutes of the account's budget.
    pub backlog_minutes: f64,
}

/// `wafleet outbox`: backlog per account and per tenant with unknown, failed or pending replies.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct OutboxSummary {
    /// Per account (every account, on every page).
    pub accounts: Vec<AccountBacklog>,
    /// Per tenant, one page in ref order.
    pub tenants: Vec<TenantBacklog>,
    /// Opaque cursor of the next page of tenants; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The next page's URL (same limit, this cursor); absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl From<outbox::OutboxSummary> for OutboxSummary {
    fn from(s: outbox::OutboxSummary) -> Self {
        Self {
            accounts: s
                .accounts
                .into_iter()
                .map(|a| AccountBacklog {
                    account: a.account,
                    pending: a.pending,
                    sends_per_minute: a.sends_per_minute,
                    backlog_minutes: a.backlog_minutes,
                    tokens: a.tokens,
                    paused_until: a.paused_until,
                })
                .collect(),
            tenants: s
                .tenants
                .into_iter()
                .map(|t| TenantBacklog {
                    customer_ref: t.customer_ref,
                    account: t.account,
                    status: t.status,
                    bridge_state: t.bridge_state,
                    pending: t.pending,
                    sending: t.sending,
                    unknown: t.unknown,
                    failed: t.failed,
                    lag_secs: t.lag_secs,
                    backlog_minutes: t.backlog_minutes,
                })
                .collect(),
            next_cursor: None,
            next: None,
        }
    }
}

/// How a reply's send ended, for the rows an operator resolves by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SendOutcome {
    /// May or may not have reached the person: never resent automatically.
    Unknown,
    /// Refused by WA Bridges.
    Failed,
}

impl SendOutcome {
    /// The stored status (and query value).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Failed => "failed",
        }
    }
}

/// An outbox row that needs an operator (`unknown` or `failed`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct OutboxRow {
    /// Row id.
    pub outbox_id: i64,
    /// The event that produced the reply.
    pub ingest_id: Uuid,
    /// Chat the reply was for.
    pub chat: String,
    /// How its send ended.
    pub status: SendOutcome,
    /// Send attempts.
    pub attempts: i32,
    /// Last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Queued at.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The reply text (personal data), only with `?body=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl From<service::OutboxRow> for OutboxRow {
    fn from(r: service::OutboxRow) -> Self {
        Self {
            outbox_id: r.outbox_id,
            ingest_id: r.ingest_id,
            chat: r.chat,
            // The query selects only these two statuses (service::ATTENTION_STATUSES).
            status: if r.status == "failed" { SendOutcome::Failed } else { SendOutcome::Unknown },
            attempts: r.attempts,
            last_error: r.last_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
            body: r.body,
        }
    }
}

/// A tenant's outbox rows that need an operator.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct OutboxRows {
    /// The tenant.
    pub customer_ref: String,
    /// Newest first.
    pub rows: Vec<OutboxRow>,
    /// Opaque cursor of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The next page's URL (same filters, this cursor); absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

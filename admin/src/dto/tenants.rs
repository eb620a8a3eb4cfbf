//! Tenants, their bots, webhook URLs, bridges and data (export, erasure).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wafleet_fleet::{retention, tenant};

/// A tenant (metadata only). Its database id is internal and never leaves the server: the ref
/// names it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    /// The tenant's ref (routing key and webhook path segment).
    pub customer_ref: String,
    /// The bridge's `/proxy/*` key at WA Bridges.
    pub bridge: String,
    /// Lifecycle status.
    pub status: TenantStatus,
    /// Current webhook URL generation (bumped by rotate-url).
    pub generation: i64,
    /// Webhook authentication.
    pub auth_mode: AuthMode,
    /// Type of its queue.
    pub queue_type: QueueType,
    /// Its bot.
    pub bot_kind: BotKind,
}

impl From<tenant::TenantSummary> for Tenant {
    fn from(t: tenant::TenantSummary) -> Self {
        Self {
            customer_ref: t.customer_ref.to_string(),
            bridge: t.bridge,
            status: t.status.into(),
            generation: t.generation.to_db(),
            auth_mode: t.auth_mode.into(),
            queue_type: t.queue_type.into(),
            bot_kind: t.bot_kind.into(),
        }
    }
}

/// Lifecycle status of a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Messages are processed and replies sent.
    Active,
    /// Messages are dropped with a warning; the queue is kept.
    Disabled,
    /// Tombstone: the ref can never be used again.
    Offboarded,
}

impl From<tenant::TenantStatus> for TenantStatus {
    fn from(s: tenant::TenantStatus) -> Self {
        match s {
            tenant::TenantStatus::Active => Self::Active,
            tenant::TenantStatus::Disabled => Self::Disabled,
            tenant::TenantStatus::Offboarded => Self::Offboarded,
        }
    }
}

/// One tenant in full (`GET /v1/tenants/{customer_ref}`, `wafleet tenants show`): its metadata,
/// the account that sends its replies, and its limits.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantDetail {
    /// The tenant.
    #[serde(flatten)]
    pub tenant: Tenant,
    /// The WA Bridges account that sends its replies.
    pub account: String,
    /// Its send limits and queue bound.
    pub limits: TenantLimits,
    /// The bridge's id at WA Bridges, once provisioned or reconciled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<i64>,
    /// Last bridge state reported by a connection event or a status call.
    pub bridge_state: String,
    /// When the tenant was added.
    pub created_at: DateTime<Utc>,
    /// Last change of its row.
    pub updated_at: DateTime<Utc>,
}

/// A tenant's limits, as `PATCH .../limits` sets them.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantLimits {
    /// Consecutive sends per round-robin turn (1-100).
    pub weight: i32,
    /// At most this many sends per minute (budget window); absent: no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_min: Option<i32>,
    /// At most this many sends per day; absent: no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_day: Option<i32>,
    /// Bound of its queue in bytes; absent: the fleet-wide default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_max_bytes: Option<i64>,
}

impl From<tenant::TenantDetail> for TenantDetail {
    fn from(t: tenant::TenantDetail) -> Self {
        Self {
            tenant: Tenant {
                customer_ref: t.customer_ref.to_string(),
                bridge: t.bridge,
                status: t.status.into(),
                generation: t.generation.to_db(),
                auth_mode: t.auth_mode.into(),
                queue_type: t.queue_type.into(),
                bot_kind: t.bot_kind.into(),
            },
            account: t.account,
            limits: TenantLimits {
                weight: t.limits.weight,
                max_per_min: t.limits.max_per_min,
                max_per_day: t.limits.max_per_day,
                queue_max_bytes: t.queue_max_bytes,
            },
            instance_id: t.instance_id,
            bridge_state: t.bridge_state,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// Answer of `POST /v1/tenants`: the tenant, and the `http` bot's signing secret when one was
/// generated.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedTenant {
    /// The tenant.
    #[serde(flatten)]
    pub tenant: Tenant,
    /// The new `http` bot signing secret: shown in this answer only (an Idempotency-Key replay
    /// leaves it out; rotate it with `POST .../bot` and `rotate_secret`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bot_secret: Option<String>,
}

/// `PATCH .../limits`: the arguments of `wafleet tenants limits`. An omitted field stays as it was.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLimits {
    /// Consecutive sends per round-robin turn (1-100); omitted: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100, example = 2)]
    pub weight: Option<i32>,
    /// At most this many sends per minute (budget window). `null`: no cap; omitted: unchanged.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i32>, nullable, minimum = 1, example = 30)]
    pub max_per_min: Option<Option<i32>>,
    /// At most this many sends per day (1440 budget windows). `null`: no cap; omitted: unchanged.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i32>, nullable, minimum = 1, example = 5000)]
    pub max_per_day: Option<Option<i32>>,
    /// Bound of the tenant's queue in bytes (`max-length-bytes`; past it the queue refuses
    /// publishes). `null`: back to the fleet-wide default; omitted: unchanged.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>, nullable, minimum = 1, example = 67108864)]
    pub queue_max_bytes: Option<Option<u64>>,
}

/// Tells an explicit `null` (`Some(None)`) from an omitted field (`None`, by `default`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `POST .../bot`: the arguments of `wafleet tenants set-bot`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBot {
    /// The new bot.
    pub bot: BotKind,
    /// `http` only: the bot URL (required when the tenant has none yet).
    #[schema(max_length = 2048, pattern = "^https?://[^\\s]+$", example = "https://bot.example.com/hook")]
    pub bot_url: Option<String>,
    /// `http` only: generate a new signing secret (the old one stops working).
    #[serde(default)]
    pub rotate_secret: bool,
    /// `http` only: let the bot reply to other chats.
    pub allow_other_chats: Option<bool>,
}

/// `POST .../groups`: the argument of `wafleet tenants groups`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetGroups {
    /// Whether the built-in bots (echo, rules) answer in group chats. An http bot decides for
    /// itself.
    pub reply_in_groups: bool,
}

/// Answer of `POST .../bot`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BotSet {
    /// The tenant.
    pub customer_ref: String,
    /// Its bot now.
    pub bot: String,
    /// A new `http` bot signing secret, shown once, when one was generated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bot_secret: Option<String>,
}

/// One page of tenants, in ref order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantPage {
    /// The tenants of this page.
    pub items: Vec<Tenant>,
    /// Opaque cursor of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The next page's URL (same limit, this cursor); absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A tenant's bot.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BotKind {
    /// Replies with the message text.
    #[default]
    Echo,
    /// Replies from the tenant's keyword rules.
    Rules,
    /// Forwards to the tenant's own bot URL with a signed request (needs `bot_url`).
    Http,
}

/// A tenant's webhook authentication.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Signed URL only.
    #[default]
    Token,
    /// Also the unsigned `POST /webhook` route.
    Open,
}

/// Type of a tenant's queue.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueueType {
    /// Replicated (default).
    #[default]
    Quorum,
    /// Classic v2, for fleets far past ~5k tenants.
    Classic,
}

impl From<tenant::BotKind> for BotKind {
    fn from(b: tenant::BotKind) -> Self {
        match b {
            tenant::BotKind::Echo => Self::Echo,
            tenant::BotKind::Rules => Self::Rules,
            tenant::BotKind::Http => Self::Http,
        }
    }
}

impl From<wafleet_shared::AuthMode> for AuthMode {
    fn from(a: wafleet_shared::AuthMode) -> Self {
        match a {
            wafleet_shared::AuthMode::Token => Self::Token,
            wafleet_shared::AuthMode::Open => Self::Open,
        }
    }
}

impl From<wafleet_shared::topology::QueueType> for QueueType {
    fn from(q: wafleet_shared::topology::QueueType) -> Self {
        match q {
            wafleet_shared::topology::QueueType::Quorum => Self::Quorum,
            wafleet_shared::topology::QueueType::Classic => Self::Classic,
        }
    }
}

impl From<BotKind> for tenant::BotKind {
    fn from(b: BotKind) -> Self {
        match b {
            BotKind::Echo => Self::Echo,
            BotKind::Rules => Self::Rules,
            BotKind::Http => Self::Http,
        }
    }
}

impl From<AuthMode> for wafleet_shared::AuthMode {
    fn from(a: AuthMode) -> Self {
        match a {
            AuthMode::Token => Self::Token,
            AuthMode::Open => Self::Open,
        }
    }
}

impl From<QueueType> for wafleet_shared::topology::QueueType {
    fn from(q: QueueType) -> Self {
        match q {
            QueueType::Quorum => Self::Quorum,
            QueueType::Classic => Self::Classic,
        }
    }
}

/// `POST /v1/tenants`: the arguments of `wafleet tenants add`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// The tenant's ref.
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,128}$", example = "cust_8842")]
    pub customer_ref: String,
    /// The bridge's key at WA Bridges (its provisioning `customer_ref`). Defaults to, and must
    /// equal, the tenant's ref: WA Bridges repeats it in every webhook body, and ingest refuses a
    /// body whose `customer_ref` is not the URL's ref.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$",
        example = "cust_8842"
    )]
    #[serde(default)]
    pub bridge: Option<String>,
    /// Bot (default `echo`).
    #[serde(default)]
    pub bot: BotKind,
    /// `http` bot only: the tenant's own bot URL. A signing secret is generated and returned once.
    #[schema(max_length = 2048, pattern = "^https?://[^\\s]+$", example = "https://bot.example.com/hook")]
    pub bot_url: Option<String>,
    /// `http` bot only: let the bot reply to other chats (still only on the tenant's own bridge).
    #[serde(default)]
    pub allow_other_chats: bool,
    /// Webhook auth (default `token`).
    #[serde(default)]
    pub auth: AuthMode,
    /// Queue type (default `quorum`).
    #[serde(default)]
    pub queue_type: QueueType,
    /// WA Bridges account whose key and budget send the replies (default `default`).
    #[serde(default = "default_account")]
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$", example = "default")]
    pub account: String,
}

fn default_account() -> String {
    wafleet_fleet::accounts::DEFAULT_ACCOUNT.to_owned()
}

/// A request that needs the public base URL of ingest.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BaseUrl {
    /// Public base URL of ingest, e.g. `https://hooks.example.com`.
    #[schema(max_length = 2048, pattern = "^https?://", example = "https://hooks.example.com")]
    pub base: String,
}

/// A signed webhook URL: a credential, to set on the tenant's bridge.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookUrl {
    /// The tenant.
    pub customer_ref: String,
    /// The URL to configure on the bridge (treat it like a password). Absent from a rotation
    /// answer to a token without the `credentials` scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The tenant's status; events for a tenant that is not active are dropped.
    pub status: TenantStatus,
    /// The URL generation the URL is signed for (a rotation moves to the next one).
    pub generation: i64,
    /// Set when the URL will not work as is (tenant not active), or was withheld.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// `POST .../erase`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseRequest {
    /// The contact's phone number with country code, or its JID (personal data: never logged).
    #[schema(
        max_length = 64,
        pattern = "^(\\+?[0-9][0-9 ()-]{5,40}|[0-9]{6,20}@s\\.whatsapp\\.net)$",
        example = "447700900123"
    )]
    pub contact: String,
}

/// What an erasure changed.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Erasure {
    /// `message_log` rows deleted.
    pub message_log: u64,
    /// `outbox` rows deleted.
    pub outbox: u64,
    /// `processed_events` rows whose chat id was redacted.
    pub processed_events: u64,
}

impl From<retention::ErasureReport> for Erasure {
    fn from(r: retention::ErasureReport) -> Self {
        Self { message_log: r.message_log, outbox: r.outbox, processed_events: r.processed_events }
    }
}

/// One row of an export (`format=json`; JSON lines carry the same objects one per line).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ExportRow {
    /// Table name.
    pub table: String,
    /// The row, as `to_jsonb` of the table's row.
    #[schema(value_type = Object)]
    pub row: serde_json::Value,
}

/// Result of provisioning.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Provisioned {
    /// The tenant.
    pub customer_ref: String,
    /// WA Bridges' numeric id, now stored on the tenant.
    pub instance_id: i64,
    /// The id recorded before, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_instance_id: Option<i64>,
    /// True when the bridge existed already: WA Bridges returned it unchanged, so its webhook URL
    /// was not updated.
    pub already_provisioned: bool,
}

impl From<wafleet_fleet::lifecycle::Provisioned> for Provisioned {
    fn from(p: wafleet_fleet::lifecycle::Provisioned) -> Self {
        Self {
            already_provisioned: p.previous_instance_id == Some(p.instance_id),
            customer_ref: p.customer_ref,
            instance_id: p.instance_id,
            previous_instance_id: p.previous_instance_id,
        }
    }
}

/// A bridge's session status at WA Bridges.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BridgeStatus {
    /// The tenant.
    pub customer_ref: String,
    /// WA Bridges' status, e.g. `connected`.
    pub status: String,
}

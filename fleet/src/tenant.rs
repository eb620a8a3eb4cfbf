//! Tenants and the repository that is the only place a [`Tenant`] or [`TenantBridge`] is made.
//!
//! ISOLATION: neither type can be built, parsed, deserialized or decoded from a row outside this
//! module. A bridge key therefore reaches the sender only by reading the tenant's own row under
//! its own RLS scope; no string from a request can become a `TenantBridge`. The compile-fail
//! tests in `fleet/tests/ui/` prove it.

use std::fmt;

use sqlx::{PgPool, Postgres, Row, Transaction};
use wafleet_shared::topology::QueueType;
use wafleet_shared::{AuthMode, CustomerRef, Generation};

use crate::accounts::AccountId;
use crate::db;
use crate::error::{Error, InvalidInput, Result};

mod detail;
mod id;
mod roster;
mod snapshot;

pub use detail::{detail, Limits, TenantDetail};
pub use id::TenantId;
pub use roster::{insert, insert_in_account, list, set_status, NewTenant, TenantSummary};
pub use snapshot::{still_current, TenantSnapshot};

/// The `/proxy/*` path key of a tenant's own bridge. Capability type: only the repository makes
/// one, from the tenant's row, and the bridge client accepts nothing else.
#[derive(PartialEq, Eq)]
pub struct TenantBridge {
    key: String,
}

impl TenantBridge {
    /// The key, for building the request path.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Debug for TenantBridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantBridge({})", self.key)
    }
}

/// Status of a tenant row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    /// Messages are processed and replies sent.
    Active,
    /// Messages are dropped with a warning; the queue is kept.
    Disabled,
    /// Tombstone: the ref can never be used again.
    Offboarded,
}

impl TenantStatus {
    /// Parses the database spelling.
    pub fn parse(raw: &str) -> Result<Self> {
        match raw {
            "active" => Ok(Self::Active),
            "disabled" => Ok(Self::Disabled),
            "offboarded" => Ok(Self::Offboarded),
            other => Err(InvalidInput::TenantStatus(other.to_owned()).into()),
        }
    }
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Offboarded => "offboarded",
        }
    }
}

/// Which built-in bot a tenant runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BotKind {
    /// Replies with the message text.
    Echo,
    /// Replies from the tenant's keyword rules.
    Rules,
    /// Forwards to the tenant's own bot URL (`crate::bots::http`).
    Http,
}

impl BotKind {
    /// Parses the database / CLI spelling.
    pub fn parse(raw: &str) -> Result<Self> {
        match raw {
            "echo" => Ok(Self::Echo),
            "rules" => Ok(Self::Rules),
            "http" => Ok(Self::Http),
            other => Err(InvalidInput::BotKind(other.to_owned()).into()),
        }
    }
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Rules => "rules",
            Self::Http => "http",
        }
    }
}

/// An active tenant, read from its own row. Fields are private: only this module builds one.
pub struct Tenant {
    id: TenantId,
    customer_ref: CustomerRef,
    bridge: TenantBridge,
    status: TenantStatus,
    generation: Generation,
    auth_mode: AuthMode,
    queue_type: QueueType,
    bot_kind: BotKind,
    bot_config: serde_json::Value,
    account_id: AccountId,
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant").field("id", &self.id).field("customer_ref", &self.customer_ref).finish_non_exhaustive()
    }
}

impl Tenant {
    /// Database id.
    pub fn id(&self) -> TenantId {
        self.id
    }
    /// The tenant's ref.
    pub fn customer_ref(&self) -> &CustomerRef {
        &self.customer_ref
    }
    /// The tenant's own bridge.
    pub fn bridge(&self) -> &TenantBridge {
        &self.bridge
    }
    /// Row status.
    pub fn status(&self) -> TenantStatus {
        self.status
    }
    /// Current URL generation.
    pub fn generation(&self) -> Generation {
        self.generation
    }
    /// Whether the open webhook route is allowed.
    pub fn auth_mode(&self) -> AuthMode {
        self.auth_mode
    }
    /// Queue type of `wa.tenant.<ref>`.
    pub fn queue_type(&self) -> QueueType {
        self.queue_type
    }
    /// Bot the tenant runs.
    pub fn bot_kind(&self) -> BotKind {
        self.bot_kind
    }
    /// Bot configuration (per-tenant JSON).
    pub fn bot_config(&self) -> &serde_json::Value {
        &self.bot_config
    }
    /// Whether the built-in bots answer in group chats (`bot_config.reply_in_groups`, off unless
    /// the tenant turned it on with `wafleet tenants groups <ref> on`).
    pub fn replies_in_groups(&self) -> bool {
        self.bot_config.get("reply_in_groups").and_then(serde_json::Value::as_bool).unwrap_or(false)
    }
    /// The WA Bridges account whose key sends this tenant's replies.
    pub fn account_id(&self) -> AccountId {
        self.account_id
    }
}

/// Metadata from the cross-tenant lookup, before the tenant's own row is read.
#[derive(Clone, Debug)]
pub struct TenantMeta {
    /// Database id.
    pub id: TenantId,
    /// Row status.
    pub status: TenantStatus,
    /// Current URL generation.
    pub generation: Generation,
    /// Auth mode.
    pub auth_mode: AuthMode,
}

/// Looks up a ref through the narrow definer function: ids and metadata only.
pub async fn lookup(pool: &PgPool, customer_ref: &CustomerRef) -> Result<Option<TenantMeta>> {
    let row = sqlx::query("select tenant_id, status, generation, auth_mode from wafleet_resolve_tenant($1)")
        .bind(customer_ref.as_str())
        .fetch_optional(pool)
        .await?;
    row.map(|row| -> Result<TenantMeta> {
        Ok(TenantMeta {
            id: TenantId::from_db(row.try_get("tenant_id")?),
            status: TenantStatus::parse(row.try_get("status")?)?,
            generation: generation_of(row.try_get("generation")?)?,
            auth_mode: auth_of(row.try_get("auth_mode")?)?,
        })
    })
    .transpose()
}

/// Reads a tenant's own row inside a transaction already scoped to that tenant.
/// ISOLATION: RLS makes any other tenant's row invisible here, and the `where` repeats the id.
/// Crate-private: callers outside the crate get a `Tenant` from [`load_by_ref`] or
/// [`resolve_for_message`], which start from a ref, never from a bare id.
pub(crate) async fn load_in(tx: &mut Transaction<'static, Postgres>, id: TenantId) -> Result<Option<Tenant>> {
    let row = sqlx::query(&format!("select {TENANT_COLUMNS} from tenants where tenant_id = $1"))
        .bind(id.get())
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|row| tenant_from_row(&row)).transpose()
}

/// The columns [`tenant_from_row`] maps.
const TENANT_COLUMNS: &str =
    "tenant_id, customer_ref, bridge, status, generation, auth_mode, queue_type, bot_kind, bot_config, account_id";

fn tenant_from_row(row: &sqlx::postgres::PgRow) -> Result<Tenant> {
    Ok(Tenant {
        id: TenantId::from_db(row.try_get("tenant_id")?),
        customer_ref: ref_of(row.try_get("customer_ref")?)?,
        bridge: TenantBridge { key: row.try_get("bridge")? },
        status: TenantStatus::parse(row.try_get("status")?)?,
        generation: generation_of(row.try_get("generation")?)?,
        auth_mode: auth_of(row.try_get("auth_mode")?)?,
        queue_type: queue_type_of(row.try_get("queue_type")?)?,
        bot_kind: BotKind::parse(row.try_get("bot_kind")?)?,
        bot_config: row.try_get("bot_config")?,
        account_id: AccountId::from_db(row.try_get("account_id")?),
    })
}

/// Why a message's tenant could not be used. Each becomes a `reason` label on the drop metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No tenant has this ref.
    UnknownTenant,
    /// The tenant is disabled.
    Disabled,
    /// The tenant was offboarded (tombstone).
    Offboarded,
    /// The URL generation is not the tenant's current one (rotated or forged).
    GenerationMismatch,
    /// An open-route event for a tenant that requires a signed URL.
    OpenAuthNotAllowed,
}

impl Rejection {
    /// Every rejection, so the drop counter can start at 0 for each reason.
    pub const ALL: [Rejection; 5] =
        [Self::UnknownTenant, Self::Disabled, Self::Offboarded, Self::GenerationMismatch, Self::OpenAuthNotAllowed];

    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownTenant => "unknown_tenant",
            Self::Disabled => "disabled",
            Self::Offboarded => "offboarded",
            Self::GenerationMismatch => "generation_mismatch",
            Self::OpenAuthNotAllowed => "open_auth_not_allowed",
        }
    }
}

/// The keys an event is deduplicated by: its ingest id, or the bridge's message id in the same
/// chat and direction (a bridge that sends one event to two webhook URLs).
#[derive(Clone, Copy, Debug)]
pub struct DedupeKey<'a> {
    /// Ingest id of the envelope.
    pub ingest_id: uuid::Uuid,
    /// The bridge's message id, when the event has one.
    pub provider_message_id: Option<&'a str>,
    /// Chat of the event.
    pub chat_id: Option<&'a str>,
    /// Whether the event is the bridge's copy of an outgoing message.
    pub from_me: bool,
}

/// The message path's read: the tenant behind `id` checked for use: the ref must name an active tenant whose
/// generation matches, and open events need an open tenant (there is no fallback tenant), and whether
/// this event was processed before, in one read-only round trip (plus begin and commit). A usable
/// tenant comes back as a [`TenantSnapshot`], which the worker keeps for the tenant's next messages.
///
/// ISOLATION: the row is read in `id`'s own scope and must carry `customer_ref`, the ref of the
/// queue the message came from; an id that maps to another ref (which cannot happen, since refs
/// are never reused and tenant rows never deleted) is refused as an unknown tenant.
pub async fn resolve_for_message(
    pool: &PgPool,
    id: TenantId,
    customer_ref: &CustomerRef,
    generation: Generation,
    auth: AuthMode,
    dedupe: DedupeKey<'_>,
) -> Result<(std::result::Result<TenantSnapshot, Rejection>, bool)> {
    let mut tx = db::begin_tenant_read_only(pool, id).await?;
    let row = sqlx::query(&format!(
        "select {TENANT_COLUMNS}, xmin::text::bigint as row_version, exists(select 1 from processed_events p where p.tenant_id = $1 and (p.ingest_id = $2 \
         or (p.provider_message_id = $3 and coalesce(p.chat_id, '') = coalesce($4, '') and p.from_me = $5))) as seen \
         from tenants where tenant_id = $1"
    ))
    .bind(id.get())
    .bind(dedupe.ingest_id)
    .bind(dedupe.provider_message_id)
    .bind(dedupe.chat_id)
    .bind(dedupe.from_me)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let Some(row) = row else { return Ok((Err(Rejection::UnknownTenant), false)) };
    let tenant = tenant_from_row(&row)?;
    if tenant.customer_ref() != customer_ref {
        tracing::error!(tenant = %customer_ref, tenant_id = %id, "tenant id maps to another ref; refusing the message");
        return Ok((Err(Rejection::UnknownTenant), false));
    }
    let seen: bool = row.try_get("seen")?;
    let snapshot = TenantSnapshot::new(tenant, row.try_get("row_version")?);
    Ok((snapshot.usable_for(generation, auth).map(|_| snapshot), seen))
}

/// Reads a tenant's own row by ref, whatever its status (operator commands).
/// ISOLATION: the row is read in its own tenant scope, like every tenant read.
pub async fn load_by_ref(pool: &PgPool, customer_ref: &CustomerRef) -> Result<Tenant> {
    let meta = lookup(pool, customer_ref).await?.ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))?;
    let mut tx = db::begin_tenant_read_only(pool, meta.id).await?;
    let tenant = load_in(&mut tx, meta.id).await?;
    tx.commit().await?;
    tenant.ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))
}

fn check_usable(tenant: Tenant, generation: Generation, auth: AuthMode) -> std::result::Result<Tenant, Rejection> {
    match tenant.status {
        TenantStatus::Disabled => return Err(Rejection::Disabled),
        TenantStatus::Offboarded => return Err(Rejection::Offboarded),
        TenantStatus::Active => {}
    }
    match (auth, tenant.auth_mode) {
        // Open events carry no generation; they are only for tenants that opted in.
        (AuthMode::Open, AuthMode::Open) => Ok(tenant),
        (AuthMode::Open, AuthMode::Token) => Err(Rejection::OpenAuthNotAllowed),
        (AuthMode::Token, _) if generation != tenant.generation => Err(Rejection::GenerationMismatch),
        (AuthMode::Token, _) => Ok(tenant),
    }
}

pub(super) fn generation_of(raw: i64) -> Result<Generation> {
    Generation::from_db(raw).ok_or_else(|| InvalidInput::Generation(raw).into())
}

pub(super) fn auth_of(raw: &str) -> Result<AuthMode> {
    AuthMode::parse(raw).ok_or_else(|| InvalidInput::AuthMode(raw.to_owned()).into())
}

pub(super) fn queue_type_of(raw: &str) -> Result<QueueType> {
    QueueType::parse(raw).ok_or_else(|| InvalidInput::QueueType(raw.to_owned()).into())
}

pub(super) fn ref_of(raw: &str) -> Result<CustomerRef> {
    CustomerRef::parse(raw).map_err(|source| InvalidInput::CustomerRef { raw: raw.to_owned(), source }.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(status: TenantStatus, generation: u64, auth_mode: AuthMode) -> Tenant {
        Tenant {
            id: TenantId::from_db(1),
            customer_ref: CustomerRef::parse("a").unwrap_or_else(|e| panic!("{e}")),
            bridge: TenantBridge { key: "bridge-a".into() },
            status,
            generation: Generation::from_db(generation as i64).unwrap_or(Generation::FIRST),
            auth_mode,
            queue_type: QueueType::Quorum,
            bot_kind: BotKind::Echo,
            bot_config: serde_json::Value::Null,
            account_id: AccountId::from_db(1),
        }
    }
    fn generation(n: i64) -> Generation {
        Generation::from_db(n).unwrap_or(Generation::FIRST)
    }

    #[test]
    fn only_active_tenants_of_the_same_generation_are_usable() {
        assert!(check_usable(tenant(TenantStatus::Active, 2, AuthMode::Token), generation(2), AuthMode::Token).is_ok());
        let rejection = |t, g, a| check_usable(t, g, a).err();
        assert_eq!(
            rejection(tenant(TenantStatus::Active, 2, AuthMode::Token), generation(1), AuthMode::Token),
            Some(Rejection::GenerationMismatch)
        );
        assert_eq!(
            rejection(tenant(TenantStatus::Disabled, 1, AuthMode::Token), generation(1), AuthMode::Token),
            Some(Rejection::Disabled)
        );
        assert_eq!(
            rejection(tenant(TenantStatus::Offboarded, 1, AuthMode::Token), generation(1), AuthMode::Token),
            Some(Rejection::Offboarded)
        );
    }

    #[test]
    fn a_summary_serializes_with_the_database_spellings() {
        let t = tenant(TenantStatus::Offboarded, 3, AuthMode::Open);
        let json = serde_json::to_value(TenantSummary::of(&t)).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"tenant_id": 1, "customer_ref": "a", "bridge": "bridge-a", "status": "offboarded",
                "generation": 3, "auth_mode": "open", "queue_type": "quorum", "bot_kind": "echo"})
        );
    }

    #[test]
    fn open_events_are_accepted_only_for_open_tenants() {
        assert_eq!(
            check_usable(tenant(TenantStatus::Active, 1, AuthMode::Token), generation(0), AuthMode::Open).err(),
            Some(Rejection::OpenAuthNotAllowed)
        );
        assert!(check_usable(tenant(TenantStatus::Active, 1, AuthMode::Open), generation(0), AuthMode::Open).is_ok());
    }
}

//! Bots and the scope they run in. A bot gets a [`TenantScope`] (its tenant, its config and
//! tenant-scoped reads) and returns replies as data. Bots cannot send: only the outbox sender
//! sends, and it reads the bridge from the tenant row at send time.
//!
//! ISOLATION: a fresh bot and a fresh scope are built for every message, and nothing global is
//! reachable from bot code. The scope's database access always goes through a transaction
//! scoped to its own tenant.

mod echo;
pub mod http;
mod kind;
mod rules;

use async_trait::async_trait;
use sqlx::PgPool;

use wafleet_fleet::db;
use wafleet_fleet::tenant::{BotKind, Tenant};

pub use echo::EchoBot;
pub use http::{HttpBot, HttpBotClient, HttpBotConfig};
pub use kind::MessageKind;
pub use rules::RulesBot;

/// The parts of an inbound `message` event a bot may read.
#[derive(Clone, Debug)]
pub struct InboundMessage {
    /// Conversation JID (`...@s.whatsapp.net` or a group JID).
    pub chat_id: String,
    /// Text content, or a media message's caption (empty when it has none).
    pub body: String,
    /// What the message holds (`type`).
    pub kind: MessageKind,
    /// The event's `media_type`, when not empty (its values are not documented).
    pub media_type: Option<String>,
    /// The sender's JID (`contact_id`): in a group, a member, not the chat.
    pub contact_id: Option<String>,
    /// Sender display name, if any.
    pub sender_name: Option<String>,
    /// Whether it came from a group.
    pub is_group: bool,
    /// WhatsApp message id, when WA Bridges sent one (stable across retries).
    pub message_id: Option<String>,
}

/// A reply the bot wants sent, on the tenant's own bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Text to send.
    pub body: String,
    /// `None`: the chat the message came from (every built-in bot). `Some` only from the `http`
    /// bot of a tenant whose `bot_config.allow_other_chats` is true.
    pub chat: Option<String>,
}

/// Why a bot produced no replies.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    /// Worth retrying later (a dependency was briefly unavailable).
    #[error("transient bot failure: {0}")]
    Transient(String),
    /// Retrying will not help.
    #[error("bot failure: {0}")]
    Permanent(String),
}

/// A tenant's bot. Implementations must not keep state between messages.
#[async_trait]
pub trait Bot: Send + Sync {
    /// Handles one message and returns the replies to send.
    async fn handle(&self, scope: &TenantScope, message: &InboundMessage) -> Result<Vec<Reply>, BotError>;
}

/// What a bot can see: its own tenant and tenant-scoped reads. Built fresh for each message.
pub struct TenantScope {
    tenant: Tenant,
    pool: PgPool,
    http: Option<HttpBotClient>,
}

impl TenantScope {
    /// A scope for one message of `tenant`.
    pub fn new(tenant: Tenant, pool: PgPool) -> Self {
        Self { tenant, pool, http: None }
    }

    /// Lends the worker's one SSRF-guarded client to the `http` bot of this scope.
    pub fn with_http_client(mut self, client: Option<HttpBotClient>) -> Self {
        self.http = client;
        self
    }

    /// The tenant this scope belongs to.
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// The tenant's keyword rules, longest keyword first.
    /// ISOLATION: read in a read-only transaction scoped to this tenant; RLS hides other rows.
    pub async fn keyword_rules(&self) -> Result<Vec<(String, String)>, BotError> {
        let mut tx = db::begin_tenant_read_only(&self.pool, self.tenant.id())
            .await
            .map_err(|e| BotError::Transient(e.to_string()))?;
        let rules: Vec<(String, String)> = sqlx::query_as(
            "select keyword, reply from bot_rules where tenant_id = $1 order by length(keyword) desc, keyword",
        )
        .bind(self.tenant.id().get())
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| BotError::Transient(e.to_string()))?;
        tx.commit().await.map_err(|e| BotError::Transient(e.to_string()))?;
        Ok(rules)
    }

    /// Gives the tenant back once the bot is done.
    pub fn into_tenant(self) -> Tenant {
        self.tenant
    }
}

/// A fresh bot for `kind`.
pub fn bot_for(kind: BotKind) -> Box<dyn Bot> {
    match kind {
        BotKind::Echo => Box::new(EchoBot),
        BotKind::Rules => Box::new(RulesBot),
        BotKind::Http => Box::new(HttpBot),
    }
}

/// Makes the bot for each message. The worker uses [`BuiltinBots`]; tests inject bots that
/// misbehave (panic, hang) to exercise the failure paths.
pub trait BotFactory: Send + Sync {
    /// A fresh bot for one message of `tenant`.
    fn bot_for(&self, tenant: &Tenant) -> Box<dyn Bot>;
}

/// The built-in bots, chosen by the tenant row.
pub struct BuiltinBots;

impl BotFactory for BuiltinBots {
    fn bot_for(&self, tenant: &Tenant) -> Box<dyn Bot> {
        bot_for(tenant.bot_kind())
    }
}

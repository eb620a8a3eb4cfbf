//! A tenant's row as the message path read it, with the row version it had (`xmin`, which every
//! update of the row changes), so the transaction that records a message can check in one cheap
//! read that the row still holds, instead of a transaction of its own to read it again.
//!
//! ISOLATION: a snapshot is only ever made from the tenant's own row, read in its own scope
//! ([`super::resolve_for_message`]); it hands out copies of that `Tenant` for one message's bot
//! scope each, and [`still_current`] runs in the recording transaction, scoped to the same tenant.

use sqlx::{Postgres, Transaction};
use wafleet_shared::{AuthMode, Generation};

use super::{check_usable, BotKind, Rejection, Tenant, TenantBridge};
use crate::error::Result;

/// The tenant row and its version when it was read.
#[derive(Debug)]
pub struct TenantSnapshot {
    tenant: Tenant,
    version: i64,
}

impl TenantSnapshot {
    pub(super) fn new(tenant: Tenant, version: i64) -> Self {
        Self { tenant, version }
    }

    /// The row as read.
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// The bot kind of the row as read.
    pub fn bot_kind(&self) -> BotKind {
        self.tenant.bot_kind
    }

    /// A copy of the tenant for one message, if the row as read accepts an event of this
    /// generation and auth mode; otherwise why not.
    pub fn usable_for(&self, generation: Generation, auth: AuthMode) -> std::result::Result<Tenant, Rejection> {
        check_usable(self.copy(), generation, auth)
    }

    fn copy(&self) -> Tenant {
        let t = &self.tenant;
        Tenant {
            id: t.id,
            customer_ref: t.customer_ref.clone(),
            bridge: TenantBridge { key: t.bridge.key.clone() },
            status: t.status,
            generation: t.generation,
            auth_mode: t.auth_mode,
            queue_type: t.queue_type,
            bot_kind: t.bot_kind,
            bot_config: t.bot_config.clone(),
            account_id: t.account_id,
        }
    }
}

/// Whether the snapshot's row is unchanged, read inside `tx` (already scoped to its tenant): the
/// message path records a message only while the row it ran the bot with still holds, so a
/// disable, a URL rotation or a bot change committed meanwhile sends the message round again.
pub async fn still_current(tx: &mut Transaction<'static, Postgres>, snapshot: &TenantSnapshot) -> Result<bool> {
    let version: Option<i64> = sqlx::query_scalar("select xmin::text::bigint from tenants where tenant_id = $1")
        .bind(snapshot.tenant.id.get())
        .fetch_optional(&mut **tx)
        .await?;
    Ok(version == Some(snapshot.version))
}

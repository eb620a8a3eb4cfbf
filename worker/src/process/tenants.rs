//! What the message path remembers about tenants between messages: the id behind each ref, and
//! the row of each tenant whose bot has no side effects outside its replies.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sqlx::PgPool;
use wafleet_fleet::error::Result;
use wafleet_fleet::tenant::{self, BotKind, TenantId, TenantSnapshot};
use wafleet_shared::CustomerRef;

/// Tenant ids by ref, filled on first use, so the message path does not call the cross-tenant
/// lookup function for every event.
///
/// ISOLATION: caching is sound because a ref names one row forever: refs are unique, are never
/// reused after offboarding, and tenant rows are never deleted. Unknown refs are not cached, so a
/// tenant provisioned later is found. The message path still checks that the row it reads carries
/// the queue's ref ([`tenant::resolve_for_message`]).
#[derive(Default)]
pub(super) struct TenantIds(RwLock<HashMap<CustomerRef, TenantId>>);

impl TenantIds {
    pub(super) async fn get(&self, pool: &PgPool, customer_ref: &CustomerRef) -> Result<Option<TenantId>> {
        if let Some(id) = self.0.read().ok().and_then(|ids| ids.get(customer_ref).copied()) {
            return Ok(Some(id));
        }
        let Some(meta) = tenant::lookup(pool, customer_ref).await? else { return Ok(None) };
        if let Ok(mut ids) = self.0.write() {
            ids.insert(customer_ref.clone(), meta.id);
        }
        Ok(Some(meta.id))
    }
}

/// The last row read of each tenant, so a message can run its bot without a transaction of its
/// own to read the row and look for a duplicate: the recording transaction checks that the row
/// is unchanged ([`tenant::still_current`]) and that the event is new (its dedupe insert), and
/// sends the message round again with a fresh read when the row changed.
///
/// Only tenants of the built-in bots are kept. Their bots only compute replies, which a
/// duplicate's rolled-back transaction discards; an `http` bot calls the tenant's own service,
/// so its messages are checked for duplicates before the bot runs, every time.
///
/// ISOLATION: entries are keyed by the queue's ref and were read in that tenant's own scope; a
/// stale entry is never trusted past the version check, and the bot of a row read for one
/// tenant only ever sees that tenant.
#[derive(Default)]
pub(super) struct TenantRows(RwLock<HashMap<CustomerRef, Arc<TenantSnapshot>>>);

impl TenantRows {
    pub(super) fn get(&self, customer_ref: &CustomerRef) -> Option<Arc<TenantSnapshot>> {
        self.0.read().ok().and_then(|rows| rows.get(customer_ref).cloned())
    }

    /// Keeps `snapshot` for the next messages of its tenant, unless its bot reaches outside.
    pub(super) fn keep(&self, snapshot: &Arc<TenantSnapshot>) {
        if snapshot.bot_kind() == BotKind::Http {
            self.forget(snapshot.tenant().customer_ref());
            return;
        }
        if let Ok(mut rows) = self.0.write() {
            rows.insert(snapshot.tenant().customer_ref().clone(), snapshot.clone());
        }
    }

    pub(super) fn forget(&self, customer_ref: &CustomerRef) {
        if let Ok(mut rows) = self.0.write() {
            rows.remove(customer_ref);
        }
    }
}

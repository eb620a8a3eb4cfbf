//! The outbox, one owner for one table: every statement that reads or writes `outbox`, and every
//! call of a `wafleet_outbox_*` definer function, lives under this module. Callers get typed
//! functions that take the tenant (or the caller's tenant-scoped transaction) first, as the
//! tenant repository does; they never write outbox SQL themselves.
//!
//! - [`insert`]: replies written with their inbound event, inside the message path's transaction.
//! - [`pick`] and [`claim`]: the fair scheduler's choice, and the claim of that row in its tenant's
//!   scope within the same transaction.
//! - [`lease`]: the claimer's session-bound token, so a crashed claimer's rows are found at once.
//! - [`settle`]: send outcomes, and the bridge's `from_me` echo settling `unknown` replies.
//! - [`upkeep`]: work that spends no budget: expiry, crash leftovers, retention, erasure, offboarding.
//! - [`summary`] and [`queries`]: the backlog summary and metrics, operator and canary reads.
//!
//! ISOLATION: cross-tenant reads go through definer functions that return ids, counts and
//! timestamps; every write happens in the row's own tenant scope.

pub mod claim;
pub mod insert;
pub mod lease;
pub mod pick;
pub mod queries;
pub mod settle;
pub mod summary;
pub mod upkeep;

pub use claim::{claim, release_unsent, ClaimedRow};
pub use insert::{insert_with_event, InboundRecord, Replies};
pub use lease::{ClaimLease, CLAIM_LOCK_CLASS};
pub use pick::{pick, Pick};
pub use queries::{attention_rows, nonce_counts, nonce_rows, NonceRow, OutboxCursor, OutboxRow};
pub use settle::{await_echo, echo_already_seen, finish, mark_retry, mark_sent, reconcile_from_me};
pub use summary::{publish_metrics, summary, AccountBacklog, OutboxSummary, TenantBacklog};
pub use upkeep::{cancel_pending, erase_contact, mark_stale_sending, pending_count, prune_finished, settle};

/// The `chat` to send a reply to: the bare number for 1:1 chats (as in the WA Bridges send
/// example), the full JID for groups.
pub fn reply_chat(chat_id: &str) -> String {
    chat_id.strip_suffix("@s.whatsapp.net").unwrap_or(chat_id).to_owned()
}

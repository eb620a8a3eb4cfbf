//! The sender's claim of the reply the scheduler picked: in the same transaction as the pick (so
//! the account's bucket row stays locked until commit), scoped to the reply's tenant from here on.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use crate::db;
use crate::error::Result;
use crate::tenant::{self, Tenant, TenantId};

/// A claimed reply, now `sending`, with its tenant's row as read in the claim's scope.
#[derive(Debug)]
pub struct ClaimedRow {
    /// Chat the reply goes to.
    pub chat: String,
    /// The reply text.
    pub body: String,
    /// Send attempts, this one included.
    pub attempts: i32,
    /// Trace context of the message that produced the reply.
    pub traceparent: Option<String>,
    /// The tenant row read in the claim's scope; `None` if it is gone. The caller checks its
    /// status and account before sending.
    pub tenant: Option<Tenant>,
}

/// Claims `outbox_id` of `tenant` (as granted by [`super::pick`]) inside `tx`: still `pending` and
/// not expired at `now` (the database clock when `None`), stamped with the claimer's lease token
/// `claimed_by` (see [`super::lease`]; `None` leaves only the age backstop). `None` when another
/// replica claimed it or it expired meanwhile; the caller rolls back, which returns the token.
pub async fn claim(
    tx: &mut Transaction<'static, Postgres>,
    tenant_id: TenantId,
    outbox_id: i64,
    now: Option<DateTime<Utc>>,
    claimed_by: Option<i32>,
) -> Result<Option<ClaimedRow>> {
    // ISOLATION: from here the transaction is scoped to the picked tenant, and the row is
    // read under that tenant's RLS with the tenant filter repeated; the scheduler's ids
    // cannot pull another tenant's row.
    db::scope_to_tenant(tx, tenant_id).await?;
    // A row another transaction has locked (housekeeping expiring it, an operator cancelling,
    // another replica) is skipped, not waited for: this transaction holds the account's bucket row
    // and may hold the outcome rows of finished sends, so waiting here could close a cycle
    // with a transaction that updates many rows (found as a deadlock by the benchmark's bulk
    // cancel). A skipped claim is undone like any other.
    let row: Option<(String, String, i32, Option<String>)> = sqlx::query_as(
        "update outbox set status = 'sending', attempts = attempts + 1, attempted_at = coalesce($3, now()), \
         updated_at = now(), claimed_by = $4 where outbox_id = (select outbox_id from outbox where outbox_id = $1 \
         and tenant_id = $2 and status = 'pending' and expires_at > coalesce($3, now()) for update skip locked) \
         and tenant_id = $2 and status = 'pending' returning chat, body, attempts, traceparent",
    )
    .bind(outbox_id)
    .bind(tenant_id.get())
    .bind(now)
    .bind(claimed_by)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((chat, body, attempts, traceparent)) = row else { return Ok(None) };
    // ISOLATION: the bridge and the account come from the tenant row, read now, never from
    // the message; a reply is only ever sent with its own tenant's account key.
    let tenant = tenant::load_in(tx, tenant_id).await?;
    Ok(Some(ClaimedRow { chat, body, attempts, traceparent, tenant }))
}

/// Gives back a claim whose commit its claimer could not confirm (the connection broke during
/// the commit), so the reply was never sent: `pending` again, the attempt not counted. Only the
/// claimer knows that nothing went out, so only a row still carrying this very claim is taken
/// (its token `claimed_by` and its attempt count `attempts`), also after the stale-sending sweep
/// made it `unknown` because the claimer's session ended with the broken connection (a failover).
/// A claim that never committed matches nothing. Runs in the caller's transaction, scoped to
/// `tenant_id`; returns whether the claim had committed.
pub async fn release_unsent(
    tx: &mut Transaction<'static, Postgres>,
    tenant_id: TenantId,
    outbox_id: i64,
    claimed_by: Option<i32>,
    attempts: i32,
) -> Result<bool> {
    // ISOLATION: the row is addressed by its own tenant as well as its id, in that tenant's scope.
    let released = sqlx::query(
        "update outbox set status = 'pending', attempts = attempts - 1, claimed_by = null, updated_at = now(), \
         last_error = 'claim interrupted before the send; not sent' \
         where outbox_id = $1 and tenant_id = $2 and status in ('sending', 'unknown') \
         and claimed_by is not distinct from $3 and attempts = $4",
    )
    .bind(outbox_id)
    .bind(tenant_id.get())
    .bind(claimed_by)
    .bind(attempts)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(released > 0)
}

//! The egress budget: WA Bridges also limits every client IP to 300 calls a minute, across all
//! keys and endpoints. An egress group is the set of processes that leave through one public IP
//! (a NAT, a node pool); every API call takes a token from its group's bucket as well as from its
//! account's, shared fairly across the accounts that call through the group (stride scheduling in
//! `wafleet_egress_take`, migration 0018).
//!
//! The group token is taken inside the caller's transaction after the account's token, so a call
//! goes out only with both and a refusal by either is undone by one rollback. The refusal is then
//! recorded in a statement of its own ([`note_waiting`]), which the fairness rule needs: the next
//! token goes to the waiting account that has had the fewest. [`take_and_end`] is that whole
//! step for a call of its own; the sender, which grants several replies in one transaction,
//! takes with [`take`] and records a refusal with [`note_waiting`] after its transaction ends.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Row as _, Transaction};

use super::{millis, EgressBucket, Take};
use crate::accounts::{AccountId, AccountRuntime};
use crate::error::Result;

/// Takes `account`'s group token inside `tx`, after its own token and whatever else `tx` holds,
/// and ends `tx`: commits on a grant; on a refusal rolls back (which returns the account's token)
/// and records the wait.
pub async fn take_and_end(
    pool: &PgPool,
    mut tx: Transaction<'static, Postgres>,
    account: &AccountRuntime,
    now: Option<DateTime<Utc>>,
) -> Result<Take> {
    match take(&mut tx, account, now).await? {
        Take::Granted(tokens) => {
            tx.commit().await?;
            Ok(Take::Granted(tokens))
        }
        Take::Wait(wait) => {
            tx.rollback().await?;
            note_waiting(pool, account, now).await?;
            Ok(Take::Wait(wait))
        }
    }
}

/// Takes `account`'s group token inside `tx` (after the account's own token). On
/// [`Take::Wait`] the caller undoes what the refusal must not keep, ends `tx`, and then calls
/// [`note_waiting`].
pub async fn take(
    tx: &mut Transaction<'static, Postgres>,
    account: &AccountRuntime,
    now: Option<DateTime<Utc>>,
) -> Result<Take> {
    take_in(tx, &account.egress, account.id, now).await
}

async fn take_in(
    tx: &mut Transaction<'static, Postgres>,
    egress: &EgressBucket,
    account: AccountId,
    now: Option<DateTime<Utc>>,
) -> Result<Take> {
    let s = egress.bucket;
    let (granted, wait_ms, tokens): (bool, i64, f64) =
        sqlx::query_as("select granted, wait_ms, tokens from wafleet_egress_take($1, $2, $3, $4, $5, $6)")
            .bind(&egress.group)
            .bind(account.get())
            .bind(s.rate_per_window)
            .bind(s.burst)
            .bind(s.window_secs)
            .bind(now)
            .fetch_one(&mut **tx)
            .await?;
    metrics::gauge!(crate::metric::EGRESS_TOKENS, "group" => egress.group.clone()).set(tokens.max(0.0));
    Ok(if granted { Take::Granted(tokens) } else { Take::Wait(millis(wait_ms)) })
}

/// Records that `account` was refused a group token and comes back for one, so the next token
/// goes to the waiting account that has had the fewest.
pub async fn note_waiting(pool: &PgPool, account: &AccountRuntime, now: Option<DateTime<Utc>>) -> Result<()> {
    let egress = &account.egress;
    let s = egress.bucket;
    sqlx::query("select wafleet_egress_wait($1, $2, $3, $4, $5, $6)")
        .bind(&egress.group)
        .bind(account.id.get())
        .bind(s.rate_per_window)
        .bind(s.burst)
        .bind(s.window_secs)
        .bind(now)
        .execute(pool)
        .await?;
    metrics::counter!(crate::metric::EGRESS_WAITS_TOTAL, "group" => egress.group.clone(), "account" => account.name.clone())
        .increment(1);
    Ok(())
}

/// One account's share of a group. Read by the tests; `wafleet outbox` does not show it yet.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EgressShare {
    /// The group.
    pub group: String,
    /// Tokens of the group at its last refill.
    pub tokens: f64,
    /// The account, if any has called through the group yet.
    pub account_id: Option<i64>,
    /// Tokens the account has had (its stride pass; joins at the group's floor).
    pub pass: Option<f64>,
    /// Whether the account's last request was refused and it is coming back.
    pub waiting: Option<bool>,
}

/// Every group and its accounts' shares.
pub async fn state(pool: &PgPool) -> Result<Vec<EgressShare>> {
    // Mapped by hand, like the audit log's rows: deriving sqlx::FromRow in this crate would change
    // the compile-fail snapshots of worker/tests/ui.
    let rows = sqlx::query("select egress_group, tokens, account_id, pass, waiting from wafleet_egress_state()")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(EgressShare {
                group: row.try_get("egress_group")?,
                tokens: row.try_get("tokens")?,
                account_id: row.try_get("account_id")?,
                pass: row.try_get("pass")?,
                waiting: row.try_get("waiting")?,
            })
        })
        .collect()
}

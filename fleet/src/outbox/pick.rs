//! The fair scheduler's pick: which tenant's reply an account sends next, with its budget token
//! taken (`wafleet_outbox_pick`: round robin by tenant, weights, caps, bridge state and 429
//! pauses, shared by every replica through the account's bucket row).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use crate::accounts::AccountRuntime;
use crate::budget;
use crate::error::Result;
use crate::tenant::TenantId;

/// Result of the fair scheduler for one account.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pick {
    /// A token was taken for this reply.
    Granted {
        /// The reply.
        outbox_id: i64,
        /// Its tenant.
        tenant_id: TenantId,
        /// Tokens left.
        tokens: f64,
    },
    /// Replies are due but the bucket is empty or paused.
    Wait(Duration),
    /// Nothing may be sent now; the hint says when the next retry comes due, if known.
    Idle(Option<Duration>),
}

/// Runs the fair scheduler of `account` inside `tx` (see `wafleet_outbox_pick`). The bucket row
/// stays locked until `tx` ends: rolling back returns the token.
pub async fn pick(
    tx: &mut Transaction<'static, Postgres>,
    account: &AccountRuntime,
    now: Option<DateTime<Utc>>,
) -> Result<Pick> {
    let s = account.proxy;
    let (outcome, outbox_id, tenant_id, wait_ms, tokens): (String, Option<i64>, Option<i64>, Option<i64>, f64) =
        sqlx::query_as(
            "select outcome, outbox_id, tenant_id, wait_ms, tokens from wafleet_outbox_pick($1, $2, $3, $4, $5)",
        )
        .bind(account.id.get())
        .bind(s.rate_per_window)
        .bind(s.burst)
        .bind(s.window_secs)
        .bind(now)
        .fetch_one(&mut **tx)
        .await?;
    metrics::gauge!(crate::metric::BUDGET_TOKENS, "account" => account.name.clone(), "bucket" => crate::metric::BUCKET_PROXY)
        .set(tokens.max(0.0));
    Ok(match (outcome.as_str(), outbox_id, tenant_id) {
        ("granted", Some(outbox_id), Some(tenant_id)) => {
            Pick::Granted { outbox_id, tenant_id: TenantId::from_db(tenant_id), tokens }
        }
        ("wait", _, _) => Pick::Wait(budget::millis(wait_ms.unwrap_or(1))),
        _ => Pick::Idle(wait_ms.map(budget::millis)),
    })
}

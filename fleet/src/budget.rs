//! The fleet-wide WA Bridges budget: one token bucket per (account, bucket) in Postgres, shared
//! by every worker replica and the CLI. Each take refills the bucket by the elapsed time and
//! takes a token or reports the wait, atomically under the bucket row's lock. A 429 pauses the
//! account's bucket for everyone (`paused_until`).
//!
//! WA Bridges allows 120 `/proxy/*` calls, 120 other calls and 10 provisioning calls per minute
//! per API key. A token bucket of rate `r` per window and capacity `b` lets at most `r + b` calls
//! through in any window, so `r + b ≤ 120` keeps the proxy bucket inside the limit (default
//! 110 + 5). No session state is used, so the bucket also works through a transaction pooler.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::accounts::{AccountId, AccountRuntime};
use crate::clock::Clock;
use crate::error::{Error, Result};

pub mod egress;
mod settings;

pub use settings::{BucketSettings, BudgetConfig, EgressBucket, EgressConfig, PER_IP_LIMIT_PER_MIN};

/// Documented WA Bridges limit of `/proxy/*` and other `/api/*` calls per key per minute.
pub const API_LIMIT_PER_MIN: u32 = 120;
/// Documented WA Bridges limit of `POST /api/instances` per key per minute.
pub const PROVISION_LIMIT_PER_MIN: u32 = 10;

/// Which documented limit a call counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// `/api/instances/{key}/proxy/*`: sends, status polls, canaries.
    Proxy,
    /// `POST /api/instances`.
    Provision,
    /// Every other `/api/*` call (list, get, delete).
    Other,
}

impl Bucket {
    /// The database and metric spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proxy => "proxy",
            Self::Provision => "provision",
            Self::Other => "other",
        }
    }
}

/// Result of a take.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Take {
    /// A token was taken; this many remain.
    Granted(f64),
    /// None available (or the account is paused): try again after this long.
    Wait(Duration),
}

pub(crate) fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms.max(1)).unwrap_or(1))
}

/// Takes one token from `bucket` of `account` and one from its egress group, or reports the
/// wait. One transaction: a refusal by either bucket leaves both as they were.
pub async fn take(pool: &PgPool, account: &AccountRuntime, bucket: Bucket, now: Option<DateTime<Utc>>) -> Result<Take> {
    let settings = settings_of(account, bucket);
    let mut tx = pool.begin().await?;
    let (granted, wait_ms, tokens): (bool, i64, f64) =
        sqlx::query_as("select granted, wait_ms, tokens from wafleet_budget_take($1, $2, $3, $4, $5, $6)")
            .bind(account.id.get())
            .bind(bucket.as_str())
            .bind(settings.rate_per_window)
            .bind(settings.burst)
            .bind(settings.window_secs)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
    metrics::gauge!(crate::metric::BUDGET_TOKENS, "account" => account.name.clone(), "bucket" => bucket.as_str())
        .set(tokens.max(0.0));
    if !granted {
        // Only the refill changed, which the next take recomputes from the stored state.
        tx.rollback().await?;
        return Ok(Take::Wait(millis(wait_ms)));
    }
    Ok(match egress::take_and_end(pool, tx, account, now).await? {
        // The account's tokens left, as the gauge and the callers know them.
        Take::Granted(_) => Take::Granted(tokens),
        wait => wait,
    })
}

/// Takes a token, sleeping (real time) while the bucket is empty or paused, for at most
/// `max_wait`. For the CLI and other callers that must not skip the budget.
pub async fn take_waiting(
    pool: &PgPool,
    account: &AccountRuntime,
    bucket: Bucket,
    clock: &dyn Clock,
    max_wait: Duration,
) -> Result<()> {
    let started = std::time::Instant::now();
    loop {
        match take(pool, account, bucket, clock.now()).await? {
            Take::Granted(_) => {
                metrics::histogram!(crate::metric::BUDGET_WAIT_SECONDS, "account" => account.name.clone(), "bucket" => bucket.as_str())
                    .record(started.elapsed().as_secs_f64());
                return Ok(());
            }
            Take::Wait(wait) => {
                if started.elapsed() + wait > max_wait {
                    return Err(Error::BudgetWait {
                        account: account.name.clone(),
                        bucket: bucket.as_str(),
                        waited: max_wait,
                    });
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// A 429: pauses `bucket` of `account` for every replica, for `retry_after`, or with
/// exponential backoff and jitter when the API sent none. Returns the end of the pause.
pub async fn pause(
    pool: &PgPool,
    account: &AccountRuntime,
    bucket: Bucket,
    retry_after: Option<Duration>,
    now: Option<DateTime<Utc>>,
) -> Result<DateTime<Utc>> {
    let until: DateTime<Utc> = sqlx::query_scalar("select wafleet_budget_pause($1, $2, $3, $4, $5)")
        .bind(account.id.get())
        .bind(bucket.as_str())
        .bind(retry_after.map(|d| d.as_secs_f64()))
        .bind(settings_of(account, bucket).window_secs)
        .bind(now)
        .fetch_one(pool)
        .await?;
    metrics::counter!(crate::metric::SENDER_429_TOTAL, "account" => account.name.clone(), "bucket" => bucket.as_str())
        .increment(1);
    tracing::warn!(account = %account.name, bucket = bucket.as_str(), until = %until, "WA Bridges answered 429; account paused");
    Ok(until)
}

fn settings_of(account: &AccountRuntime, bucket: Bucket) -> BucketSettings {
    match bucket {
        Bucket::Proxy => account.proxy,
        Bucket::Provision => account.provision,
        Bucket::Other => account.other,
    }
}

/// One bucket's state, for metrics and `wafleet outbox`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BucketState {
    /// Account id.
    pub account_id: i64,
    /// `proxy`, `provision` or `other`.
    pub bucket: String,
    /// Tokens at the last refill.
    pub tokens: f64,
    /// When a 429 pause ends, if one is set.
    pub paused_until: Option<DateTime<Utc>>,
}

/// Every bucket's state.
pub async fn state(pool: &PgPool) -> Result<Vec<BucketState>> {
    let rows: Vec<(i64, String, f64, Option<DateTime<Utc>>)> =
        sqlx::query_as("select account_id, bucket, tokens, paused_until from wafleet_budget_state()")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(account_id, bucket, tokens, paused_until)| BucketState { account_id, bucket, tokens, paused_until })
        .collect())
}

/// The account id of a bucket state (typed).
impl BucketState {
    /// Typed account id.
    pub fn account(&self) -> AccountId {
        AccountId::from_db(self.account_id)
    }
}

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
use wafleet_shared::settings::BudgetSettings;

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

/// Budget settings of the default account, and the window of every bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetConfig {
    /// `WAFLEET_SEND_RATE_PER_MIN`: proxy tokens per window for accounts without their own rate
    /// (default 110).
    pub rate_per_window: u32,
    /// `WAFLEET_SEND_BURST`: bucket capacity for accounts without their own (default 5).
    pub burst: u32,
    /// `WAFLEET_BUDGET_WINDOW_SECS`: the API's "minute" (default 60; tests compress it).
    pub window: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self { rate_per_window: 110, burst: 5, window: Duration::from_secs(60) }
    }
}

impl From<&BudgetSettings> for BudgetConfig {
    /// The budget the binaries parsed (`WAFLEET_SEND_RATE_PER_MIN`, `WAFLEET_SEND_BURST`,
    /// `WAFLEET_BUDGET_WINDOW_SECS`; each already checked to be > 0).
    fn from(settings: &BudgetSettings) -> Self {
        Self {
            rate_per_window: settings.send_rate_per_min,
            burst: settings.send_burst,
            window: Duration::from_secs(settings.budget_window_secs),
        }
    }
}

/// Rate, capacity and window of one bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketSettings {
    /// Tokens added per window.
    pub rate_per_window: f64,
    /// Capacity.
    pub burst: f64,
    /// Window length in seconds.
    pub window_secs: f64,
}

impl BucketSettings {
    /// Tokens per minute of wall time (for backlog arithmetic).
    pub fn per_minute(&self) -> f64 {
        self.rate_per_window * 60.0 / self.window_secs
    }
}

impl BudgetConfig {
    /// Refuses values the bucket cannot work with.
    pub fn validate(&self) -> Result<()> {
        if self.rate_per_window == 0 || self.burst == 0 || self.window.is_zero() {
            return Err(Error::Config(
                "WAFLEET_SEND_RATE_PER_MIN, WAFLEET_SEND_BURST and WAFLEET_BUDGET_WINDOW_SECS must be > 0".into(),
            ));
        }
        Ok(())
    }

    /// Startup warnings: a default budget that does not fit the documented limit.
    pub fn warnings(&self) -> Vec<String> {
        self.account_warnings("default", &self.proxy(None, None))
    }

    /// Warnings for one account's proxy bucket.
    pub fn account_warnings(&self, account: &str, proxy: &BucketSettings) -> Vec<String> {
        let total = proxy.rate_per_window + proxy.burst;
        if total > f64::from(API_LIMIT_PER_MIN) {
            vec![format!(
                "account {account}: send rate {} + burst {} = {total} per window exceeds the documented {API_LIMIT_PER_MIN} \
                 /proxy/* calls per minute; expect 429s (which pause the account)",
                proxy.rate_per_window, proxy.burst
            )]
        } else {
            Vec::new()
        }
    }

    fn window_secs(&self) -> f64 {
        self.window.as_secs_f64()
    }

    /// The proxy bucket of an account with optional own rate and burst.
    pub fn proxy(&self, rate: Option<i32>, burst: Option<i32>) -> BucketSettings {
        BucketSettings {
            rate_per_window: rate.map_or(f64::from(self.rate_per_window), f64::from),
            burst: burst.map_or(f64::from(self.burst), f64::from),
            window_secs: self.window_secs(),
        }
    }

    /// The provisioning bucket: 9 per window plus 1, inside the documented 10.
    pub fn provision(&self) -> BucketSettings {
        BucketSettings {
            rate_per_window: f64::from(PROVISION_LIMIT_PER_MIN - 1),
            burst: 1.0,
            window_secs: self.window_secs(),
        }
    }

    /// The bucket of other API calls: 110 per window plus 5, inside the documented 120.
    pub fn other(&self) -> BucketSettings {
        BucketSettings { rate_per_window: 110.0, burst: 5.0, window_secs: self.window_secs() }
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

/// Takes one token from `bucket` of `account`, or reports the wait. One statement.
pub async fn take(pool: &PgPool, account: &AccountRuntime, bucket: Bucket, now: Option<DateTime<Utc>>) -> Result<Take> {
    let settings = settings_of(account, bucket);
    let (granted, wait_ms, tokens): (bool, i64, f64) =
        sqlx::query_as("select granted, wait_ms, tokens from wafleet_budget_take($1, $2, $3, $4, $5, $6)")
            .bind(account.id.get())
            .bind(bucket.as_str())
            .bind(settings.rate_per_window)
            .bind(settings.burst)
            .bind(settings.window_secs)
            .bind(now)
            .fetch_one(pool)
            .await?;
    metrics::gauge!(crate::metric::BUDGET_TOKENS, "account" => account.name.clone(), "bucket" => bucket.as_str())
        .set(tokens.max(0.0));
    Ok(if granted { Take::Granted(tokens) } else { Take::Wait(millis(wait_ms)) })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_budget_fits_the_documented_proxy_limit_and_larger_ones_warn() {
        let config = BudgetConfig::default();
        let proxy = config.proxy(None, None);
        assert!(proxy.rate_per_window + proxy.burst <= f64::from(API_LIMIT_PER_MIN));
        assert!(config.warnings().is_empty());
        let greedy = BudgetConfig { rate_per_window: 120, burst: 5, ..BudgetConfig::default() };
        assert_eq!(greedy.warnings().len(), 1);
        assert!(greedy.warnings()[0].contains("exceeds"));
    }

    #[test]
    fn provisioning_and_other_buckets_fit_their_own_limits() {
        let config = BudgetConfig::default();
        let p = config.provision();
        assert!(p.rate_per_window + p.burst <= f64::from(PROVISION_LIMIT_PER_MIN));
        let o = config.other();
        assert!(o.rate_per_window + o.burst <= f64::from(API_LIMIT_PER_MIN));
    }

    #[test]
    fn account_rate_overrides_the_default_and_the_window_scales_the_rate() {
        let config = BudgetConfig { window: Duration::from_secs(6), ..BudgetConfig::default() };
        let own = config.proxy(Some(60), Some(2));
        assert_eq!((own.rate_per_window, own.burst, own.window_secs), (60.0, 2.0, 6.0));
        assert!((own.per_minute() - 600.0).abs() < 1e-9);
    }

    #[test]
    fn zero_rate_or_window_is_refused() {
        assert!(BudgetConfig { rate_per_window: 0, ..BudgetConfig::default() }.validate().is_err());
        assert!(BudgetConfig { window: Duration::ZERO, ..BudgetConfig::default() }.validate().is_err());
    }
}

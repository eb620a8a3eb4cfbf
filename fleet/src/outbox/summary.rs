//! The backlog summary behind `wafleet outbox` and the backlog, lag and bridge-state metrics.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

use crate::accounts::{self, AccountId};
use crate::budget::BudgetConfig;
use crate::error::Result;

/// One tenant's line of the outbox summary.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TenantBacklog {
    /// The tenant's ref.
    pub customer_ref: String,
    /// Its account's name.
    pub account: String,
    /// Tenant status.
    pub status: String,
    /// Last known bridge state (`connected`, `disconnected`, `unknown`).
    pub bridge_state: String,
    /// Replies waiting to be sent.
    pub pending: i64,
    /// Replies being sent right now.
    pub sending: i64,
    /// Replies that may or may not have reached the person.
    pub unknown: i64,
    /// Replies the API refused.
    pub failed: i64,
    /// Age of the oldest pending reply, in seconds (the outbox lag).
    pub lag_secs: Option<f64>,
    /// `pending` in minutes of the account's whole send budget.
    pub backlog_minutes: f64,
    /// Per-tenant caps, when set.
    pub max_sends_per_min: Option<i32>,
    /// Per-tenant daily cap, when set.
    pub max_sends_per_day: Option<i32>,
}

/// One account's line of the outbox summary.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AccountBacklog {
    /// Account name.
    pub account: String,
    /// Pending replies of all its tenants.
    pub pending: i64,
    /// Proxy budget in sends per minute.
    pub sends_per_minute: f64,
    /// `pending` in minutes of budget.
    pub backlog_minutes: f64,
    /// Tokens in the proxy bucket at its last refill.
    pub tokens: Option<f64>,
    /// End of a 429 pause, if one is set.
    pub paused_until: Option<DateTime<Utc>>,
}

/// The outbox summary: per account and per tenant, with backlog in minutes of budget.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OutboxSummary {
    /// Per account.
    pub accounts: Vec<AccountBacklog>,
    /// Per tenant with pending, sending, unknown or failed replies.
    pub tenants: Vec<TenantBacklog>,
}

/// Builds the summary. `now` is only used for the lag (the database clock when `None`).
pub async fn summary(pool: &PgPool, budget: &BudgetConfig, now: Option<DateTime<Utc>>) -> Result<OutboxSummary> {
    let accounts = accounts::list(pool).await?;
    let rate: HashMap<AccountId, (String, f64)> =
        accounts.iter().map(|a| (a.id, (a.name.clone(), budget.proxy(a.rate_per_min, a.burst).per_minute()))).collect();
    let now: DateTime<Utc> = match now {
        Some(n) => n,
        None => sqlx::query_scalar("select now()").fetch_one(pool).await?,
    };
    let rows = sqlx::query(
        "select customer_ref, account_id, tenant_status, bridge_state, pending, sending, unknown, failed, \
         oldest_pending_at, max_sends_per_min, max_sends_per_day from wafleet_outbox_summary()",
    )
    .fetch_all(pool)
    .await?;
    let mut tenants = Vec::with_capacity(rows.len());
    for row in rows {
        let account_id = AccountId::from_db(row.try_get("account_id")?);
        let (account, per_minute) = rate.get(&account_id).cloned().unwrap_or_else(|| ("?".into(), 1.0));
        let pending: i64 = row.try_get("pending")?;
        let oldest: Option<DateTime<Utc>> = row.try_get("oldest_pending_at")?;
        tenants.push(TenantBacklog {
            customer_ref: row.try_get("customer_ref")?,
            account,
            status: row.try_get("tenant_status")?,
            bridge_state: row.try_get("bridge_state")?,
            pending,
            sending: row.try_get("sending")?,
            unknown: row.try_get("unknown")?,
            failed: row.try_get("failed")?,
            lag_secs: oldest.map(|o| (now - o).num_milliseconds().max(0) as f64 / 1000.0),
            backlog_minutes: pending as f64 / per_minute.max(f64::MIN_POSITIVE),
            max_sends_per_min: row.try_get("max_sends_per_min")?,
            max_sends_per_day: row.try_get("max_sends_per_day")?,
        });
    }
    let buckets = crate::budget::state(pool).await?;
    let accounts = accounts
        .iter()
        .map(|a| {
            let pending: i64 = tenants.iter().filter(|t| t.account == a.name).map(|t| t.pending).sum();
            let per_minute = budget.proxy(a.rate_per_min, a.burst).per_minute();
            let bucket = buckets.iter().find(|b| b.account() == a.id && b.bucket == "proxy");
            AccountBacklog {
                account: a.name.clone(),
                pending,
                sends_per_minute: per_minute,
                backlog_minutes: pending as f64 / per_minute.max(f64::MIN_POSITIVE),
                tokens: bucket.map(|b| b.tokens),
                paused_until: bucket.and_then(|b| b.paused_until),
            }
        })
        .collect();
    Ok(OutboxSummary { accounts, tenants })
}

/// Per-tenant gauges are published for this many tenants at most (the deepest backlogs); the
/// rest are summed into `tenant="other"`, so a large fleet cannot explode Prometheus.
const TOP_TENANT_GAUGES: usize = 50;

/// Publishes the backlog (minutes of budget), outbox lag and bridge-state gauges.
pub async fn publish_metrics(pool: &PgPool, budget: &BudgetConfig) -> Result<()> {
    let summary = summary(pool, budget, None).await?;
    for a in &summary.accounts {
        metrics::gauge!(crate::metric::OUTBOX_BACKLOG_MINUTES, "account" => a.account.clone()).set(a.backlog_minutes);
        if let Some(tokens) = a.tokens {
            metrics::gauge!(crate::metric::BUDGET_TOKENS, "account" => a.account.clone(), "bucket" => crate::metric::BUCKET_PROXY)
                .set(tokens.max(0.0));
        }
    }
    let mut tenants: Vec<_> = summary.tenants.iter().collect();
    tenants.sort_by(|a, b| b.backlog_minutes.total_cmp(&a.backlog_minutes));
    let (mut other_backlog, mut other_lag) = (0.0f64, 0.0f64);
    for (i, t) in tenants.iter().enumerate() {
        if i < TOP_TENANT_GAUGES {
            metrics::gauge!(crate::metric::OUTBOX_TENANT_BACKLOG_MINUTES, "tenant" => t.customer_ref.clone())
                .set(t.backlog_minutes);
            metrics::gauge!(crate::metric::OUTBOX_LAG_SECONDS, "tenant" => t.customer_ref.clone())
                .set(t.lag_secs.unwrap_or(0.0));
        } else {
            other_backlog += t.backlog_minutes;
            other_lag = other_lag.max(t.lag_secs.unwrap_or(0.0));
        }
    }
    metrics::gauge!(crate::metric::OUTBOX_TENANT_BACKLOG_MINUTES, "tenant" => crate::labels::OTHER).set(other_backlog);
    metrics::gauge!(crate::metric::OUTBOX_LAG_SECONDS, "tenant" => crate::labels::OTHER).set(other_lag);
    let states: Vec<(String, String, String)> =
        sqlx::query_as("select customer_ref, status, bridge_state from wafleet_fleet_bridges()")
            .fetch_all(pool)
            .await?;
    let mut by_state: HashMap<&'static str, f64> = HashMap::new();
    let mut bridges: Vec<(f64, String)> = Vec::new();
    for (customer_ref, status, bridge_state) in states {
        if status == "offboarded" {
            continue;
        }
        let (state, connected) = match bridge_state.as_str() {
            "connected" => ("connected", 1.0),
            "disconnected" => ("disconnected", 0.0),
            _ => ("unknown", -1.0),
        };
        *by_state.entry(state).or_insert(0.0) += 1.0;
        bridges.push((connected, customer_ref));
    }
    // A bounded set of per-tenant series, disconnected bridges first: they are the actionable ones.
    bridges.sort_by(|a, b| a.0.abs().total_cmp(&b.0.abs()).then_with(|| a.1.cmp(&b.1)));
    for (connected, customer_ref) in bridges.into_iter().take(TOP_TENANT_GAUGES) {
        metrics::gauge!(crate::metric::BRIDGE_CONNECTED, "tenant" => customer_ref).set(connected);
    }
    for state in crate::metric::BRIDGE_STATES {
        metrics::gauge!(crate::metric::BRIDGES, "state" => state).set(by_state.get(state).copied().unwrap_or(0.0));
    }
    let unknown: i64 = summary.tenants.iter().map(|t| t.unknown).sum();
    metrics::gauge!(crate::metric::OUTBOX_UNKNOWN).set(unknown as f64);
    Ok(())
}

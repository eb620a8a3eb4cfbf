//! Outbox upkeep that spends no budget: settling replies that can no longer go out (expired,
//! tenant inactive), marking crash leftovers `unknown`, reconciling `unknown` sends against the
//! bridge's own `from_me` echo, and the backlog summary behind `wafleet outbox` and the backlog,
//! lag and bridge-state metrics.
//!
//! ISOLATION: cross-tenant reads go through definer functions that return ids, counts and
//! timestamps; every write happens in the row's own tenant scope.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Row, Transaction};
use tracing::{info, warn};

use crate::accounts::{self, AccountId};
use crate::budget::BudgetConfig;
use crate::db;
use crate::error::Result;
use crate::labels::TenantLabels;
use crate::tenant::TenantId;

/// Settles pending replies that can no longer be sent: past their TTL → `expired`, tenant not
/// active → `cancelled`. Never silent: each is logged and counted. Returns how many.
pub async fn settle(pool: &PgPool, now: Option<DateTime<Utc>>, limit: i32, labels: &TenantLabels) -> Result<u64> {
    let rows: Vec<(i64, i64, String)> =
        sqlx::query_as("select outbox_id, tenant_id, new_status from wafleet_outbox_settle($1, $2)")
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?;
    let mut settled = 0;
    for (outbox_id, tenant_id, status) in rows {
        let mut tx = db::begin_tenant(pool, TenantId::from_db(tenant_id)).await?;
        // ISOLATION: in the row's own scope; the status filter keeps a concurrent claim intact.
        let done = sqlx::query(
            "update outbox set status = $3, last_error = $4, updated_at = now() \
             where outbox_id = $1 and tenant_id = $2 and status = 'pending'",
        )
        .bind(outbox_id)
        .bind(tenant_id)
        .bind(&status)
        .bind(if status == "expired" { "time to live passed before a send was possible" } else { "tenant not active" })
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let tenant = customer_ref_in(&mut tx, tenant_id).await?;
        tx.commit().await?;
        if done > 0 {
            settled += done;
            info!(tenant = %tenant, outbox_id, state = %status, "reply not sent");
            metrics::counter!(crate::metric::SENDER_SENDS_TOTAL, "outcome" => status, "tenant" => bounded(labels, &tenant))
                .increment(done);
        }
    }
    Ok(settled)
}

/// The bounded metric label of a tenant ref read from the database.
fn bounded(labels: &TenantLabels, customer_ref: &str) -> String {
    wafleet_shared::CustomerRef::parse(customer_ref)
        .map_or_else(|_| crate::labels::OTHER.to_owned(), |r| labels.label(&r))
}

async fn customer_ref_in(tx: &mut Transaction<'static, Postgres>, tenant_id: i64) -> Result<String> {
    let r: Option<String> = sqlx::query_scalar("select customer_ref from tenants where tenant_id = $1")
        .bind(tenant_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(r.unwrap_or_default())
}

/// Rows left `sending` longer than `older_than` were cut by a crash and may have reached the
/// person: `unknown`, never resent.
pub async fn mark_stale_sending(
    pool: &PgPool,
    now: Option<DateTime<Utc>>,
    older_than: Duration,
    labels: &TenantLabels,
) -> Result<u64> {
    let stale: Vec<(i64, i64)> =
        sqlx::query_as("select outbox_id, tenant_id from wafleet_outbox_stale_sending_at($1, $2)")
            .bind(now)
            .bind(older_than)
            .fetch_all(pool)
            .await?;
    let mut marked = 0;
    for (outbox_id, tenant_id) in stale {
        let mut tx = db::begin_tenant(pool, TenantId::from_db(tenant_id)).await?;
        marked += sqlx::query(
            "update outbox set status = 'unknown', last_error = 'interrupted while sending', updated_at = now() \
             where outbox_id = $1 and tenant_id = $2 and status = 'sending'",
        )
        .bind(outbox_id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let tenant = customer_ref_in(&mut tx, tenant_id).await?;
        tx.commit().await?;
        warn!(tenant = %tenant, outbox_id, "reply interrupted while sending is now unknown");
        metrics::counter!(crate::metric::SENDER_SENDS_TOTAL, "outcome" => "unknown", "tenant" => bounded(labels, &tenant))
            .increment(1);
    }
    Ok(marked)
}

/// Issue #5 item 7, called by the message processor inside its tenant-scoped transaction for
/// every `message` event with `from_me: true`: when the bridge's own outgoing message matches an
/// `unknown` reply of the same tenant (same chat, same body), that reply did reach the person and
/// becomes `sent`. A reply still `sending` matches too (the echo can overtake the API's answer;
/// the sender then leaves the row `sent`). The oldest match wins, so two identical replies need
/// two echoes. Returns whether a reply was reconciled.
///
/// ISOLATION: runs in the caller's tenant scope and repeats the tenant filter; an echo can only
/// settle a reply of the tenant whose webhook URL delivered it.
pub async fn reconcile_from_me(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    chat_id: Option<&str>,
    body: Option<&str>,
    provider_message_id: Option<&str>,
) -> Result<bool> {
    let (Some(chat_id), Some(body)) = (chat_id, body) else { return Ok(false) };
    let chat = reply_chat(chat_id);
    let reconciled: Option<i64> = sqlx::query_scalar(
        "update outbox set status = 'sent', sent_at = coalesce(sent_at, attempted_at, now()), updated_at = now(), \
         provider_message_id = coalesce($4, provider_message_id), last_error = 'reconciled from the bridge''s from_me echo' \
         where outbox_id = (select outbox_id from outbox where tenant_id = $1 and status in ('unknown', 'sending') \
                            and chat in ($2, $5) and body = $3 order by created_at, outbox_id limit 1 for update) \
         returning outbox_id",
    )
    .bind(tenant.get())
    .bind(&chat)
    .bind(body)
    .bind(provider_message_id)
    .bind(chat_id)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(outbox_id) = reconciled {
        info!(tenant_id = %tenant, outbox_id, "unknown reply reconciled from the from_me echo");
        metrics::counter!(crate::metric::SENDER_RECONCILED_TOTAL).increment(1);
    }
    Ok(reconciled.is_some())
}

/// Whether the bridge's `from_me` echo of reply `outbox_id` was already processed (it can
/// overtake the API's answer): a `message` event from this tenant's own bridge, same chat and
/// body, logged since the attempt. Called in the tenant's own scope.
pub async fn echo_already_seen(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    outbox_id: i64,
) -> Result<bool> {
    let seen: bool = sqlx::query_scalar(
        "select exists(select 1 from outbox o \
         join message_log ml on ml.tenant_id = o.tenant_id and ml.direction = 'in' and ml.event_type = 'message' \
              and ml.body = o.body and ml.chat_id in (o.chat, o.chat || '@s.whatsapp.net') \
              and ml.created_at >= coalesce(o.attempted_at, o.created_at) \
         join processed_events pe on pe.tenant_id = ml.tenant_id and pe.ingest_id = ml.ingest_id and pe.from_me \
         where o.outbox_id = $1 and o.tenant_id = $2)",
    )
    .bind(outbox_id)
    .bind(tenant.get())
    .fetch_one(&mut **tx)
    .await?;
    Ok(seen)
}

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

/// The `chat` to send a reply to: the bare number for 1:1 chats (as in the WA Bridges send
/// example), the full JID for groups.
pub fn reply_chat(chat_id: &str) -> String {
    chat_id.strip_suffix("@s.whatsapp.net").unwrap_or(chat_id).to_owned()
}

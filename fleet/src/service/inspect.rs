//! Looking into a tenant's queues and outbox: depth, dead letters, and the replies an operator
//! resolves by hand. Each command refuses an unknown tenant before it reads anything.

use sqlx::PgPool;
use wafleet_shared::CustomerRef;

use super::tenants::require_tenant;
use crate::db;
use crate::depth::{self, DepthSource, TenantDepth};
use crate::dlq::{self, DeadLetter, DlqSummary};
use crate::endpoints::Endpoints;
use crate::error::{Conflict, InvalidInput, Result};
use crate::outbox::{self, OutboxCursor, OutboxRow};
use crate::tenant::TenantStatus;

/// One tenant's line of `wafleet depth`. An offboarded tenant has no queues: a conflict.
pub async fn tenant_depth(
    pool: &PgPool,
    endpoints: &Endpoints,
    customer_ref: &CustomerRef,
) -> Result<(TenantDepth, DepthSource)> {
    let meta = require_tenant(pool, customer_ref).await?;
    if meta.status == TenantStatus::Offboarded {
        return Err(Conflict::QueuesGone(customer_ref.clone()).into());
    }
    depth::one(pool, endpoints, meta.id.get(), customer_ref).await
}

/// `wafleet depth [<ref>...]`: the whole fleet, or only the named tenants (in the fleet's
/// deepest-first order). An unknown or offboarded ref is an error, not a missing line.
pub async fn depth_of(
    pool: &PgPool,
    endpoints: &Endpoints,
    refs: &[CustomerRef],
) -> Result<(Vec<TenantDepth>, DepthSource)> {
    for r in refs {
        if require_tenant(pool, r).await?.status == TenantStatus::Offboarded {
            return Err(Conflict::QueuesGone(r.clone()).into());
        }
    }
    let (mut rows, source) = depth::depth(pool, endpoints).await?;
    if !refs.is_empty() {
        rows.retain(|d| refs.iter().any(|r| r.as_str() == d.customer_ref));
    }
    Ok((rows, source))
}

/// `dlq list`, refusing an unknown tenant instead of reporting an empty queue for it.
pub async fn dlq_list(pool: &PgPool, amqp_url: &str, only: Option<&CustomerRef>) -> Result<Vec<DlqSummary>> {
    if let Some(r) = only {
        require_tenant(pool, r).await?;
    }
    dlq::list(pool, amqp_url, only).await
}

/// Tag of the fleet dead-letter listing's cursors (see [`crate::paging`]).
const DLQ_CURSOR_TAG: &str = "d1";

/// One page of the fleet's dead-letter summaries, in ref order (a count changes while one
/// pages, a ref never does), after the tenant the cursor names; with the cursor of the next page.
pub async fn dlq_list_page(
    pool: &PgPool,
    amqp_url: &str,
    cursor: Option<&str>,
    limit: u32,
) -> Result<(Vec<DlqSummary>, Option<String>)> {
    let after = cursor.map(|c| crate::paging::decode(DLQ_CURSOR_TAG, c)).transpose()?;
    if after.as_deref().is_some_and(|r| CustomerRef::parse(r).is_err()) {
        return Err(InvalidInput::Cursor.into());
    }
    let mut tenants = super::tenants::list_tenants_page(pool, after.as_deref(), limit.saturating_add(1)).await?;
    let more = tenants.len() > limit as usize;
    tenants.truncate(limit as usize);
    let refs: Vec<CustomerRef> = tenants.into_iter().map(|t| t.customer_ref).collect();
    let next = if more { refs.last().map(|r| crate::paging::encode(DLQ_CURSOR_TAG, r.as_str())) } else { None };
    Ok((dlq::summarize(amqp_url, &refs).await?, next))
}

/// `dlq show` of a known tenant.
pub async fn dlq_show(
    pool: &PgPool,
    amqp_url: &str,
    customer_ref: &CustomerRef,
    limit: u32,
    with_body: bool,
) -> Result<Vec<DeadLetter>> {
    require_tenant(pool, customer_ref).await?;
    dlq::show(amqp_url, customer_ref, limit, with_body).await
}

/// One page of `dlq show` of a known tenant (see [`dlq::show_page`]).
pub async fn dlq_show_page(
    pool: &PgPool,
    amqp_url: &str,
    customer_ref: &CustomerRef,
    (cursor, limit): (Option<&str>, u32),
    with_body: bool,
) -> Result<(Vec<DeadLetter>, Option<String>)> {
    let after = cursor.map(dlq::DlqCursor::parse).transpose()?;
    require_tenant(pool, customer_ref).await?;
    let (letters, next) = dlq::show_page(amqp_url, customer_ref, after.as_ref(), limit, with_body).await?;
    Ok((letters, next.map(|c| c.encode())))
}

/// `dlq purge` of a known tenant; returns how many messages were deleted.
pub async fn dlq_purge(pool: &PgPool, amqp_url: &str, customer_ref: &CustomerRef) -> Result<u32> {
    require_tenant(pool, customer_ref).await?;
    dlq::purge(amqp_url, customer_ref).await
}

/// Outbox statuses an operator resolves by hand.
pub const ATTENTION_STATUSES: &[&str] = &["unknown", "failed"];

/// One page of a tenant's outbox rows in `statuses` (each one of [`ATTENTION_STATUSES`]), newest
/// first, below `after`; with the cursor of the next page.
pub async fn outbox_rows(
    pool: &PgPool,
    customer_ref: &CustomerRef,
    statuses: &[String],
    page: (u32, Option<OutboxCursor>),
    with_body: bool,
) -> Result<(Vec<OutboxRow>, Option<OutboxCursor>)> {
    if let Some(bad) = statuses.iter().find(|s| !ATTENTION_STATUSES.contains(&s.as_str())) {
        return Err(InvalidInput::OutboxStatus(bad.clone()).into());
    }
    let meta = require_tenant(pool, customer_ref).await?;
    // ISOLATION: read in the tenant's own scope; RLS hides every other tenant's rows.
    let mut tx = db::begin_tenant_read_only(pool, meta.id).await?;
    let rows = outbox::attention_rows(&mut tx, meta.id, statuses, page, with_body).await?;
    tx.commit().await?;
    Ok(rows)
}

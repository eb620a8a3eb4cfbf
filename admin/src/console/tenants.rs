//! The tenants page (search by ref, filter by status, cursor pages; with each tenant's account,
//! stored bridge state, bot, queue counts, oldest message and last reply) and the audit page.

use std::collections::HashMap;

use axum::extract::State;
use axum::Extension;
use maud::{html, Markup};
use serde::Deserialize;
use wafleet_fleet::audit::Record;
use wafleet_fleet::console::{self, TenantFilter};
use wafleet_fleet::depth::{self, TenantDepth};
use wafleet_fleet::service;
use wafleet_fleet::tenant::TenantStatus;
use wafleet_shared::CustomerRef;

use super::layout::{self, PageError, Viewer};
use crate::problem::Kind;
use crate::routes::{next_link, Query};
use crate::state::AppState;

/// Tenants per page.
const PAGE: u32 = 50;

/// Query of `GET /console/tenants`.
#[derive(Debug, Deserialize)]
pub struct TenantsQuery {
    /// Refs containing this.
    pub q: Option<String>,
    /// One status, or empty for all.
    pub status: Option<String>,
    /// Tenants per page (default 50, at most 500).
    pub limit: Option<u32>,
    /// The next page's cursor.
    pub cursor: Option<String>,
}

/// `GET /console/tenants`.
pub async fn page(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(query): Query<TenantsQuery>,
) -> Result<Markup, PageError> {
    let search = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    if search.is_some_and(|q| q.chars().count() > 128) {
        return Err(PageError::new(Kind::InvalidRequest, "search for at most 128 characters of a ref"));
    }
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(TenantStatus::parse(raw)?),
    };
    let filter = TenantFilter { search: search.map(str::to_owned), status };
    let limit = crate::routes::limit(query.limit, PAGE, 500)?;
    let (lines, next_cursor) = console::tenants_page(&state.pool, &filter, query.cursor.as_deref(), limit).await?;
    // The queues of this page's tenants only (offboarded ones have none).
    let live: Vec<(i64, CustomerRef)> = lines
        .iter()
        .filter(|t| t.status != TenantStatus::Offboarded)
        .map(|t| (t.tenant_id, t.customer_ref.clone()))
        .collect();
    let (depths, _) = depth::of_tenants(&state.pool, &state.endpoints, &live).await?;
    let depths: HashMap<String, TenantDepth> = depths.into_iter().map(|d| (d.customer_ref.clone(), d)).collect();
    let next = next_cursor.as_deref().map(|c| {
        let filters = [
            ("q", search.map(str::to_owned)),
            ("status", status.map(|s| s.as_str().to_owned())),
            ("limit", query.limit.map(|l| l.to_string())),
        ];
        next_link("/console/tenants", &filters, c)
    });
    let body = html! {
        form method="get" action="/console/tenants" role="search" {
            label for="q" { "Ref contains" }
            input #q type="search" name="q" value=(search.unwrap_or_default());
            label for="status" { "Status" }
            select #status name="status" {
                option value="" { "any" }
                @for s in ["active", "disabled", "offboarded"] {
                    option value=(s) selected[status.map(TenantStatus::as_str) == Some(s)] { (s) }
                }
            }
            button type="submit" { "Search" }
        }
        table #tenants {
            tr { th { "ref" } th { "status" } th { "account" } th { "bridge (stored)" } th { "bot" }
                 th.num { "ready" } th.num { "unacked" } th.num { "retrying" } th.num { "DLQ" } th.num { "oldest" } th { "last reply" } }
            @for t in &lines {
                @let d = depths.get(t.customer_ref.as_str());
                tr {
                    td { a href=(format!("/console/tenants/{}", t.customer_ref)) { (t.customer_ref) } }
                    td class=(format!("status-{}", t.status.as_str())) { (t.status.as_str()) }
                    td { (t.account) } td { (t.bridge_state) } td { (t.bot_kind) }
                    td.num { (d.map_or_else(|| "—".to_owned(), |d| d.ready.to_string())) }
                    td.num { (layout::count(d.and_then(|d| d.unacked))) }
                    td.num { (d.map_or_else(|| "—".to_owned(), |d| d.retrying.to_string())) }
                    td.num { (d.map_or_else(|| "—".to_owned(), |d| d.dlq.to_string())) }
                    td.num { (layout::age(d.and_then(|d| d.oldest_age_secs))) }
                    td { (layout::maybe_time(t.last_reply_at.as_ref())) }
                }
            }
        }
        @if lines.is_empty() { p { "No tenant matches." } }
        @if let Some(next) = next { p { a rel="next" href=(next) { "Next page" } } }
    };
    Ok(layout::page("Tenants", Some(&viewer), body))
}

/// Query of `GET /console/audit`.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    /// The next page's cursor.
    pub cursor: Option<String>,
}

/// `GET /console/audit`: the fleet's audit log, newest first.
pub async fn audit(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(query): Query<AuditQuery>,
) -> Result<Markup, PageError> {
    let after = query.cursor.as_deref().map(service::AuditCursor::parse).transpose()?;
    let page = service::audit_page(&state.pool, PAGE, None, after).await?;
    let next = page.next.map(|c| next_link("/console/audit", &[], &c.encode()));
    let body = html! {
        (audit_table(&page.records))
        @if let Some(next) = next { p { a rel="next" href=(next) { "Older" } } }
    };
    Ok(layout::page("Audit log", Some(&viewer), body))
}

/// Audit records as a table.
pub fn audit_table(records: &[Record]) -> Markup {
    html! {
        @if records.is_empty() { p { "No records." } }
        @else {
            table.audit {
                tr { th { "when" } th { "who" } th { "command" } th { "target" } th { "outcome" } th { "detail" } }
                @for r in records { tr {
                    td { (layout::time(&r.at)) } td { (r.operator) } td { (r.command) }
                    td { (r.target.as_deref().unwrap_or("—")) } td { (r.outcome) } td { (r.detail.as_deref().unwrap_or("")) }
                } }
            }
        }
    }
}

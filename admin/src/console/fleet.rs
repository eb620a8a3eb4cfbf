//! The fleet page: tenants by status, each account's sends against its budget and its 429 pause,
//! the deepest and oldest queues, dead letters in total, the canary's last verdicts and a live
//! chart of ready messages. The queue tables refresh themselves (htmx) every few seconds.

use std::collections::HashMap;

use axum::extract::State;
use axum::Extension;
use chrono::Utc;
use maud::{html, Markup};
use wafleet_fleet::depth::{self, TenantDepth};
use wafleet_fleet::{console, service};

use super::layout::{self, PageError, Viewer};
use crate::state::AppState;

/// Rows of each "top" table.
const TOP: usize = 10;

/// `GET /console/fleet`.
pub async fn page(State(state): State<AppState>, Extension(viewer): Extension<Viewer>) -> Result<Markup, PageError> {
    let tenants = service::list_tenants(&state.pool).await?;
    let mut by_status: Vec<(&'static str, usize)> = Vec::new();
    for t in &tenants {
        let status = t.status.as_str();
        match by_status.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => by_status.push((status, 1)),
        }
    }
    by_status.sort();
    let accounts = accounts(&state).await?;
    let canary = console::canary_results(&state.pool).await?;
    let panel = panel_markup(&state).await?;
    let body = html! {
        section aria-labelledby="status-h" {
            h2 #status-h { "Tenants by status" }
            table { tr { th { "status" } th.num { "tenants" } }
                @for (status, n) in &by_status { tr { td { (status) } td.num { (n) } } }
            }
            p { a href="/console/tenants" { "All tenants" } }
        }
        section aria-labelledby="accounts-h" { h2 #accounts-h { "Accounts and their send budget" } (accounts) }
        section aria-labelledby="chart-h" {
            h2 #chart-h { "Ready messages, all tenants (live)" }
            div.chart data-series="/console/fleet/series" data-label="ready" {}
            p.hint { "Sampled by this admin process every 2 s while the page is open." }
        }
        (panel)
        section aria-labelledby="canary-h" {
            h2 #canary-h { "Isolation canary" }
            @if canary.is_empty() { p { "No canary verdict yet (WAFLEET_CANARY_TENANTS unset, or no round finished)." } }
            @else {
                table { tr { th { "canary tenant" } th { "result" } th { "latency" } th { "checked" } }
                    @for c in &canary { tr {
                        td { (c.customer_ref) }
                        td { @if c.passed { "passed" } @else { "FAILED: " (c.reason.as_deref().unwrap_or("?")) } }
                        td { (c.latency_ms.map_or_else(|| "—".to_owned(), |ms| format!("{ms} ms"))) }
                        td { (layout::time(&c.checked_at)) }
                    } }
                }
            }
        }
    };
    Ok(layout::page("Fleet", Some(&viewer), body))
}

/// `GET /console/fleet/panel`: the queue tables alone, for htmx to swap in.
pub async fn panel(State(state): State<AppState>) -> Result<Markup, PageError> {
    panel_markup(&state).await
}

async fn panel_markup(state: &AppState) -> Result<Markup, PageError> {
    let (mut rows, source) = depth::depth(&state.pool, &state.endpoints).await?;
    let dead_letters: u64 = rows.iter().map(|d| d.dlq).sum();
    let deepest: Vec<TenantDepth> = rows.iter().take(TOP).cloned().collect();
    rows.retain(|d| d.oldest_age_secs.is_some());
    rows.sort_by(|a, b| b.oldest_age_secs.cmp(&a.oldest_age_secs).then_with(|| a.customer_ref.cmp(&b.customer_ref)));
    rows.truncate(TOP);
    Ok(html! {
        div #fleet-panel hx-get="/console/fleet/panel" hx-trigger="every 5s" hx-swap="outerHTML" {
            section aria-labelledby="deepest-h" {
                h2 #deepest-h { "Deepest queues" }
                (depth_table(&deepest))
            }
            section aria-labelledby="oldest-h" {
                h2 #oldest-h { "Oldest messages" }
                (depth_table(&rows))
            }
            section aria-labelledby="dlq-h" {
                h2 #dlq-h { "Dead letters" }
                p { strong #dlq-total { (dead_letters) } " dead letters in all tenants' DLQs." }
            }
            p.hint { "Depth from " (format!("{source:?}")) ", " (layout::time(&Utc::now())) "." }
        }
    })
}

fn depth_table(rows: &[TenantDepth]) -> Markup {
    html! {
        @if rows.is_empty() { p { "None." } }
        @else {
            table { tr { th { "tenant" } th.num { "ready" } th.num { "unacked" } th.num { "retrying" } th.num { "DLQ" } th.num { "oldest" } }
                @for d in rows { tr {
                    td { a href=(format!("/console/tenants/{}", d.customer_ref)) { (d.customer_ref) } }
                    td.num { (d.ready) } td.num { (layout::count(d.unacked)) } td.num { (d.retrying) }
                    td.num { (d.dlq) } td.num { (layout::age(d.oldest_age_secs)) }
                } }
            }
        }
    }
}

async fn accounts(state: &AppState) -> Result<Markup, PageError> {
    let accounts = service::list_accounts(&state.pool).await?;
    let sends: HashMap<i64, console::AccountSends> = console::account_sends(&state.pool).await?.into_iter().collect();
    let summary = service::outbox_summary(&state.pool, &state.budget, None).await?;
    let now = Utc::now();
    Ok(html! {
        table {
            tr { th { "account" } th.num { "sent, last minute" } th.num { "budget / minute" } th.num { "sent, last hour" }
                 th.num { "budget / hour" } th.num { "tenants waiting" } th.num { "pending replies" } th { "429 pause" } }
            @for a in &accounts {
                @let s = sends.get(&a.id.get()).cloned().unwrap_or_default();
                @let backlog = summary.accounts.iter().find(|b| b.account == a.name);
                @let per_minute = state.budget.proxy(a.rate_per_min, a.burst).per_minute();
                tr {
                    td { (a.name) }
                    td.num { (s.last_minute) } td.num { (format!("{per_minute:.0}")) }
                    td.num { (s.last_hour) } td.num { (format!("{:.0}", per_minute * 60.0)) }
                    td.num { (s.tenants_waiting) }
                    td.num { (backlog.map_or(0, |b| b.pending)) }
                    td { @match backlog.and_then(|b| b.paused_until).filter(|until| *until > now) {
                        Some(until) => { "paused until " (layout::time(&until)) }
                        None => { "none" }
                    } }
                }
            }
        }
    })
}

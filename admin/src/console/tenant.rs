//! One tenant's page: its settings (never its webhook URL: that is an audited action for a
//! token with `credentials`), a live depth panel and chart, its rules, recent replies (texts only
//! for a token with `pii`), dead letters with replay and purge, its audit trail, and the actions
//! a token with `write` may take.

use axum::extract::State;
use axum::Extension;
use maud::{html, Markup};
use serde::Deserialize;
use wafleet_fleet::admin_tokens::Scope;
use wafleet_fleet::audit::Entry;
use wafleet_fleet::dlq::DeadLetter;
use wafleet_fleet::tenant::TenantStatus;
use wafleet_fleet::{console, service};

use super::layout::{self, PageError, Viewer};
use crate::routes::{audited, parse_ref, Path, Query, RefPath};
use crate::state::AppState;

/// Rows of each list on the page.
const ROWS: u32 = 20;

/// Query of the tenant page.
#[derive(Debug, Deserialize)]
pub struct TenantQuery {
    /// Show the dead letters' payloads and the replies' texts (needs `pii`; audited).
    pub bodies: Option<bool>,
}

/// `GET /console/tenants/{ref}`.
pub async fn page(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(path): Path<RefPath>,
    Query(query): Query<TenantQuery>,
) -> Result<Markup, PageError> {
    let customer_ref = parse_ref(&path.customer_ref)?;
    let detail = service::show_tenant(&state.pool, &customer_ref).await?;
    let bodies = query.bodies.unwrap_or(false) && viewer.caller.may(Scope::Pii);
    let (letters, replies) = if bodies {
        // Message content on screen is a read of personal data, audited as the API audits the
        // same reads (`dlq show` and `outbox rows` with bodies).
        let target = Some(customer_ref.as_str());
        let letters = dead_letters(&state, &detail, true).await;
        let letter_entry = Entry::new("dlq show", target, serde_json::json!({"limit": ROWS * 5, "body": true}));
        let letters = audited(&state, &viewer.caller, letter_entry, false, letters).await?;
        let replies = console::recent_replies(&state.pool, &customer_ref, ROWS, true).await;
        let reply_entry = Entry::new("outbox rows", target, serde_json::json!({"limit": ROWS, "body": true}));
        (letters, audited(&state, &viewer.caller, reply_entry, false, replies).await?)
    } else {
        (
            dead_letters(&state, &detail, false).await?,
            console::recent_replies(&state.pool, &customer_ref, ROWS, false).await?,
        )
    };
    let rules = service::list_rules(&state.pool, &customer_ref).await?;
    let trail = service::audit_page(&state.pool, ROWS, Some(customer_ref.as_str()), None).await?;
    let live = detail.status != TenantStatus::Offboarded;
    let depth = if live { Some(depth_markup(&state, &customer_ref).await?) } else { None };
    let writes = viewer.caller.may(Scope::Write);
    let base = format!("/console/tenants/{customer_ref}");
    let body = html! {
        (settings(&detail))
        @if let Some(depth) = depth {
            section aria-labelledby="depth-h" {
                h2 #depth-h { "Queue" }
                (depth)
                div.chart data-series=(format!("{base}/series")) data-label="ready" {}
            }
        }
        @if writes || viewer.caller.may(Scope::Credentials) { (super::actions::panel(&viewer, &base, &detail)) }
        section aria-labelledby="dlq-h" {
            h2 #dlq-h { "Dead letters" }
            (dead_letter_table(&viewer, &base, &letters, writes && detail.status == TenantStatus::Active))
            @if viewer.caller.may(Scope::Pii) && !bodies { p { a href=(format!("{base}?bodies=true")) { "Show payloads and reply texts (audited)" } } }
        }
        section aria-labelledby="replies-h" {
            h2 #replies-h { "Recent replies" }
            @if replies.is_empty() { p { "None." } }
            @else {
                table #replies { tr { th { "status" } th { "chat" } th.num { "attempts" } th { "queued" } th { "last change" } th { "error" } @if bodies { th { "text" } } }
                    @for r in &replies { tr {
                        td { (r.status) } td { (r.chat) } td.num { (r.attempts) } td { (layout::time(&r.created_at)) }
                        td { (layout::time(&r.updated_at)) } td { (r.last_error.as_deref().unwrap_or("")) }
                        @if bodies { td { (r.body.as_deref().unwrap_or("")) } }
                    } }
                }
            }
        }
        section aria-labelledby="rules-h" {
            h2 #rules-h { "Bot rules" }
            @if rules.is_empty() { p { "None." } }
            @else { table #rules { tr { th { "keyword" } th { "reply" } } @for r in &rules { tr { td { (r.keyword) } td { (r.reply) } } } } }
        }
        section aria-labelledby="trail-h" { h2 #trail-h { "Audit trail" } (super::tenants::audit_table(&trail.records)) }
    };
    Ok(layout::page(&format!("Tenant {customer_ref}"), Some(&viewer), body))
}

fn settings(detail: &wafleet_fleet::tenant::TenantDetail) -> Markup {
    html! {
        section aria-labelledby="settings-h" {
            h2 #settings-h { "Settings" }
            dl.settings {
                dt { "status" } dd #tenant-status class=(format!("status-{}", detail.status.as_str())) { (detail.status.as_str()) }
                dt { "account" } dd { (detail.account) }
                dt { "bridge" } dd { (detail.bridge) " (instance " (detail.instance_id.map_or_else(|| "—".to_owned(), |i| i.to_string())) ")" }
                dt { "bridge state (stored)" } dd { (detail.bridge_state) }
                dt { "bot" } dd { (detail.bot_kind.as_str()) }
                dt { "webhook auth" } dd { (detail.auth_mode.as_str()) ", URL generation " (detail.generation) }
                dt { "queue" } dd { (detail.queue_type.as_str()) @if let Some(max) = detail.queue_max_bytes { ", at most " (max) " bytes" } }
                dt { "send limits" } dd {
                    "weight " (detail.limits.weight)
                    ", per minute " (detail.limits.max_per_min.map_or_else(|| "—".to_owned(), |n| n.to_string()))
                    ", per day " (detail.limits.max_per_day.map_or_else(|| "—".to_owned(), |n| n.to_string()))
                }
                dt { "created" } dd { (layout::time(&detail.created_at)) }
            }
        }
    }
}

async fn dead_letters(
    state: &AppState,
    detail: &wafleet_fleet::tenant::TenantDetail,
    bodies: bool,
) -> wafleet_fleet::Result<Vec<DeadLetter>> {
    if detail.status == TenantStatus::Offboarded {
        return Ok(Vec::new());
    }
    service::dlq_show(&state.pool, &state.endpoints.amqp_url, &detail.customer_ref, ROWS * 5, bodies).await
}

fn dead_letter_table(viewer: &Viewer, base: &str, letters: &[DeadLetter], actions: bool) -> Markup {
    html! {
        @if letters.is_empty() { p #dlq-empty { "None." } }
        @else {
            table #dead-letters {
                tr { th { "ingest id" } th { "event" } th { "received" } th { "reason" } th.num { "attempts" } th { "details" } @if actions { th { "replay" } } }
                @for l in letters {
                    @let id = l.ingest_id.clone().unwrap_or_default();
                    tr {
                        td { code { (id) } } td { (l.event_type.as_deref().unwrap_or("?")) }
                        td { (layout::maybe_time(l.received_at.as_ref())) } td { (l.reason) } td.num { (l.attempts) }
                        td { details { summary { "show" }
                            p { "Last error: " (l.last_error) }
                            @if !l.history.is_empty() { ol { @for h in &l.history { li { (h) } } } }
                            @if let Some(payload) = &l.payload { pre { (serde_json::to_string_pretty(payload).unwrap_or_default()) } }
                        } }
                        @if actions && !id.is_empty() { td {
                            form.inline method="post" action=(format!("{base}/dlq/replay")) {
                                (viewer.csrf_field()) input type="hidden" name="id" value=(id);
                                input type="hidden" name="dry_run" value="true";
                                button type="submit" { "Dry run" }
                            }
                            form.inline method="post" action=(format!("{base}/dlq/replay")) {
                                (viewer.csrf_field()) input type="hidden" name="id" value=(id);
                                button type="submit" { "Replay" }
                            }
                        } }
                    }
                }
            }
        }
    }
}

/// `GET /console/tenants/{ref}/depth`: the depth panel alone, for htmx to swap in.
pub async fn depth_panel(State(state): State<AppState>, Path(path): Path<RefPath>) -> Result<Markup, PageError> {
    let customer_ref = parse_ref(&path.customer_ref)?;
    depth_markup(&state, &customer_ref).await
}

async fn depth_markup(state: &AppState, customer_ref: &wafleet_shared::CustomerRef) -> Result<Markup, PageError> {
    let (d, _) = service::tenant_depth(&state.pool, &state.endpoints, customer_ref).await?;
    Ok(html! {
        div #depth hx-get=(format!("/console/tenants/{customer_ref}/depth")) hx-trigger="every 2s" hx-swap="outerHTML" {
            table { tr { th.num { "ready" } th.num { "unacked" } th.num { "retrying" } th.num { "DLQ" } th.num { "oldest" } th.num { "consumers" } }
                tr { td.num #depth-ready { (d.ready) } td.num { (layout::count(d.unacked)) } td.num { (d.retrying) }
                     td.num #depth-dlq { (d.dlq) } td.num { (layout::age(d.oldest_age_secs)) } td.num { (layout::count(d.consumers)) } }
            }
        }
    })
}

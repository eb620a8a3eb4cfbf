//! The console's actions: each a form POST (checked for the session's CSRF token and the API
//! route's scopes by [`super::session::require`]) that calls the same service function as the
//! API route it mirrors and writes the same audit record, with the token's name. Anything that
//! cannot be undone (rotating the URL, purging dead letters) needs its confirmation box ticked.
//!
//! ISOLATION: the tenant comes from the path only; a form names no other tenant, and a replay
//! moves a message only into the queue of the tenant whose DLQ it came from.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;
use wafleet_fleet::admin_tokens::Scope;
use wafleet_fleet::audit::Entry;
use wafleet_fleet::dlq::{self, Selection};
use wafleet_fleet::service;
use wafleet_fleet::tenant::{TenantDetail, TenantStatus};
use wafleet_shared::CustomerRef;

use super::layout::{self, PageError, Viewer};
use crate::problem::Kind;
use crate::routes::{audited, parse_ref, Path, RefPath};
use crate::state::AppState;

/// The actions panel of a tenant page: only what the viewer's scopes allow.
pub fn panel(viewer: &Viewer, base: &str, detail: &TenantDetail) -> Markup {
    let writes = viewer.caller.may(Scope::Write);
    let live = detail.status != TenantStatus::Offboarded;
    html! {
        section #actions aria-labelledby="actions-h" {
            h2 #actions-h { "Actions" }
            @if writes && live {
                @let (verb, label) = if detail.status == TenantStatus::Active { ("disable", "Disable tenant") } else { ("enable", "Enable tenant") };
                form.inline method="post" action=(format!("{base}/{verb}")) { (viewer.csrf_field()) button #toggle-status type="submit" { (label) } }
                form.inline method="post" action=(format!("{base}/bridge-status")) {
                    (viewer.csrf_field()) button type="submit" { "Check bridge status live (spends one send of the budget)" }
                }
                // A replay moves messages into the queue of an active tenant only.
                @if detail.status == TenantStatus::Active {
                    form method="post" action=(format!("{base}/dlq/replay")) {
                        (viewer.csrf_field()) input type="hidden" name="all" value="true";
                        button type="submit" name="dry_run" value="true" { "Dry-run replay of every dead letter" }
                        " " button type="submit" { "Replay every dead letter" }
                    }
                }
                form method="post" action=(format!("{base}/dlq/purge")) {
                    (viewer.csrf_field())
                    input #purge-confirm type="checkbox" name="confirm" value="yes" required;
                    label for="purge-confirm" { "I understand every dead letter of this tenant is deleted for good" }
                    " " button type="submit" { "Purge dead letters" }
                }
                form method="post" action=(format!("{base}/rotate-url")) {
                    (viewer.csrf_field())
                    label for="rotate-base" { "Public ingest base URL" }
                    input #rotate-base type="url" name="base" required placeholder="https://hooks.example.com";
                    input #rotate-confirm type="checkbox" name="confirm" value="yes" required;
                    label for="rotate-confirm" { "I understand the current webhook URL stops working" }
                    " " button type="submit" { "Rotate webhook URL" }
                }
            }
            @if viewer.caller.may(Scope::Credentials) && live {
                form method="post" action=(format!("{base}/webhook-url")) {
                    (viewer.csrf_field())
                    label for="reveal-base" { "Public ingest base URL" }
                    input #reveal-base type="url" name="base" required placeholder="https://hooks.example.com";
                    " " button type="submit" { "Show webhook URL (audited)" }
                }
            }
        }
    }
}

fn back(customer_ref: &CustomerRef) -> Response {
    Redirect::to(&format!("/console/tenants/{customer_ref}")).into_response()
}

fn result_page(viewer: &Viewer, customer_ref: &CustomerRef, title: &str, body: Markup) -> Markup {
    let body = html! {
        (body)
        p { a href=(format!("/console/tenants/{customer_ref}")) { "Back to " (customer_ref) } }
    };
    layout::page(title, Some(viewer), body)
}

async fn set_status(state: &AppState, viewer: &Viewer, raw: &str, status: TenantStatus) -> Result<Response, PageError> {
    let command = if status == TenantStatus::Active { "tenants enable" } else { "tenants disable" };
    let customer_ref = parse_ref(raw)?;
    let result = service::set_status(&state.pool, &customer_ref, status).await;
    audited(state, &viewer.caller, Entry::new(command, Some(raw), json!({})), false, result).await?;
    Ok(back(&customer_ref))
}

/// `POST .../disable`.
pub async fn disable(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(path): Path<RefPath>,
) -> Result<Response, PageError> {
    set_status(&state, &viewer, &path.customer_ref, TenantStatus::Disabled).await
}

/// `POST .../enable`.
pub async fn enable(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(path): Path<RefPath>,
) -> Result<Response, PageError> {
    set_status(&state, &viewer, &path.customer_ref, TenantStatus::Active).await
}

/// A form with a public base URL and, for rotation, the confirmation box.
#[derive(Debug, Deserialize)]
pub struct BaseForm {
    base: String,
    confirm: Option<String>,
}

fn confirmed(confirm: Option<&str>) -> Result<(), PageError> {
    match confirm {
        Some("yes") => Ok(()),
        _ => Err(PageError::new(Kind::InvalidRequest, "tick the confirmation box: this cannot be undone")),
    }
}

/// `POST .../rotate-url`: the new URL is shown once, to a token with `credentials`.
pub async fn rotate_url(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(path): Path<RefPath>,
    Form(form): Form<BaseForm>,
) -> Result<Markup, PageError> {
    let customer_ref = parse_ref(&path.customer_ref)?;
    confirmed(form.confirm.as_deref())?;
    service::check_base_url(&form.base)?;
    let entry = Entry::new("tenants rotate-url", Some(&path.customer_ref), json!({"base": form.base}));
    let result = async {
        service::rotate_url(&state.pool, state.signing_key()?, &customer_ref, &form.base).await?;
        Ok(service::webhook_url(&state.pool, state.signing_key()?, &customer_ref, &form.base).await?.0)
    }
    .await;
    let url = audited(&state, &viewer.caller, entry, false, result).await?;
    let body = html! {
        p.notice { "The webhook URL was rotated; the previous one no longer works. Set the new one on the bridge in the WA Bridges dashboard." }
        @if viewer.caller.may(Scope::Credentials) {
            p { "The new URL, shown once:" } p.secret #webhook-url { (url) }
        } @else {
            p { "The new URL is shown only to a token with the credentials scope." }
        }
    };
    Ok(result_page(&viewer, &customer_ref, "Webhook URL rotated", body))
}

/// `POST .../webhook-url`: shows the tenant's current URL (a credential; audited).
pub async fn webhook_url(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(path): Path<RefPath>,
    Form(form): Form<BaseForm>,
) -> Result<Markup, PageError> {
    let customer_ref = parse_ref(&path.customer_ref)?;
    service::check_base_url(&form.base)?;
    let entry = Entry::new("webhook-url", Some(&path.customer_ref), json!({"base": form.base}));
    let result =
        async { Ok(service::webhook_url(&state.pool, state.signing_key()?, &customer_ref, &form.base).await?.0) }.await;
    let url = audited(&state, &viewer.caller, entry, false, result).await?;
    let body =
        html! { p.secret #webhook-url { (url) } p.hint { "Anyone with this URL can make the tenant's bot answer." } };
    Ok(result_page(&viewer, &customer_ref, "Webhook URL", body))
}

/// `POST .../bridge-status`: asks WA Bridges (spends a send of the account's budget; audited).
pub async fn bridge_status(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(path): Path<RefPath>,
) -> Result<Markup, PageError> {
    let customer_ref = parse_ref(&path.customer_ref)?;
    let result = service::bridge_status(&state.fleet, &customer_ref).await;
    let entry = Entry::new("bridge status", Some(&path.customer_ref), json!({}));
    let status = audited(&state, &viewer.caller, entry, false, result).await?;
    let body = html! { p { "WA Bridges says the bridge is " strong #live-status { (status) } "." } };
    Ok(result_page(&viewer, &customer_ref, "Bridge status", body))
}

/// The replay form: one ingest id or all, and whether it is a dry run.
#[derive(Debug, Deserialize)]
pub struct ReplayForm {
    id: Option<String>,
    all: Option<String>,
    dry_run: Option<String>,
}

/// `POST .../dlq/replay`: a dry run reports and changes nothing (not audited, as in the CLI).
pub async fn replay(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(path): Path<RefPath>,
    Form(form): Form<ReplayForm>,
) -> Result<Markup, PageError> {
    let customer_ref = parse_ref(&path.customer_ref)?;
    let dry_run = form.dry_run.as_deref() == Some("true");
    let (selection, all, ids) = match (form.all.as_deref() == Some("true"), form.id.filter(|i| !i.is_empty())) {
        (true, None) => (Selection::All, true, Vec::new()),
        (false, Some(id)) => (Selection::Ids(vec![id.clone()]), false, vec![id]),
        _ => return Err(PageError::new(Kind::InvalidRequest, "replay one dead letter or all of them")),
    };
    let result = dlq::replay(&state.pool, &state.endpoints.amqp_url, &customer_ref, &selection, dry_run).await;
    let report = if dry_run {
        result?
    } else {
        let entry = Entry::new("dlq replay", Some(&path.customer_ref), json!({"all": all, "ids": ids}));
        audited(&state, &viewer.caller, entry, false, result).await?
    };
    let verb = if dry_run { "Would move" } else { "Moved" };
    let body = html! {
        p #replay-summary { (verb) " " (report.moved.len()) " message(s) back to the tenant's queue; " (report.skipped.len()) " stay in the DLQ." }
        @if !report.moved.is_empty() { ul #replay-moved { @for id in &report.moved { li { code { (id) } } } } }
        @if !report.skipped.is_empty() { ul { @for (id, why) in &report.skipped { li { code { (id) } ": " (why) } } } }
    };
    let title = if dry_run { "Replay dry run" } else { "Replayed" };
    Ok(result_page(&viewer, &customer_ref, title, body))
}

/// The purge form.
#[derive(Debug, Deserialize)]
pub struct PurgeForm {
    confirm: Option<String>,
}

/// `POST .../dlq/purge`.
pub async fn purge(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(path): Path<RefPath>,
    Form(form): Form<PurgeForm>,
) -> Result<Markup, PageError> {
    let customer_ref = parse_ref(&path.customer_ref)?;
    confirmed(form.confirm.as_deref())?;
    let result = service::dlq_purge(&state.pool, &state.endpoints.amqp_url, &customer_ref).await;
    let purged =
        audited(&state, &viewer.caller, Entry::new("dlq purge", Some(&path.customer_ref), json!({})), false, result)
            .await?;
    let body = html! { p #purged { "Deleted " (purged) " dead letter(s) for good." } };
    Ok(result_page(&viewer, &customer_ref, "Dead letters purged", body))
}

//! Per-tenant dead letters (`wafleet dlq`): list, show (metadata unless `?body=true`), replay
//! (only into the tenant's own queue; `dry_run` reports) and purge.
//!
//! ISOLATION: the tenant comes from the path only; `dlq::replay` moves a message only into the
//! queue of the tenant whose DLQ it came from, and only if its envelope names that tenant.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wafleet_fleet::audit::Entry;
use wafleet_fleet::dlq::{self, Selection};
use wafleet_fleet::service;

use super::{
    audited, limit, next_link, parse_ref, ActionErrors, BadRequest, Body, CommonErrors, Conflict, IdempotencyKey,
    NotFound, Path, Query, RefPath, WriteErrors,
};
use crate::auth::Caller;
use crate::dto::{DeadLetter, DeadLetterPage, DlqPage, DlqSummary, Purged, ReplayReport, ReplayRequest};
use crate::problem::{ApiError, Kind};
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_dead_letter_queues))
        .routes(routes!(show_dead_letters))
        .routes(routes!(replay_dead_letters))
        .routes(routes!(purge_dead_letters))
}

/// Query of `GET /v1/dlq`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this tenant (one item, no next page).
    #[param(pattern = "^[A-Za-z0-9_.:-]{1,128}$")]
    pub customer_ref: Option<String>,
    /// Tenants per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(max_length = 400)]
    pub cursor: Option<String>,
}

/// Count, oldest age and reasons per tenant, in ref order, one page of tenants at a time
/// (`wafleet dlq list`, which sorts the whole fleet largest first instead).
#[utoipa::path(get, path = "/v1/dlq", tag = "dead letters", params(ListQuery),
    responses((status = 200, description = "One summary per tenant of the page", body = DlqPage), BadRequest, NotFound, CommonErrors))]
async fn list_dead_letter_queues(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<DlqPage>, ApiError> {
    let limit = limit(query.limit, 50, 500)?;
    if let Some(only) = query.customer_ref.as_deref().map(parse_ref).transpose()? {
        let summaries = service::dlq_list(&state.pool, &state.endpoints.amqp_url, Some(&only)).await?;
        let items = summaries.into_iter().map(DlqSummary::from).collect();
        return Ok(Json(DlqPage { items, next_cursor: None, next: None }));
    }
    let (summaries, next_cursor) =
        service::dlq_list_page(&state.pool, &state.endpoints.amqp_url, query.cursor.as_deref(), limit).await?;
    let next = next_cursor.as_deref().map(|c| next_link("/v1/dlq", &[("limit", Some(limit.to_string()))], c));
    Ok(Json(DlqPage { items: summaries.into_iter().map(DlqSummary::from).collect(), next_cursor, next }))
}

/// Query of `GET .../dlq`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShowQuery {
    /// How many messages (default 20).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Include the webhook payloads (personal data: handle with care).
    pub body: Option<bool>,
    /// `next_cursor` of the previous page.
    #[param(max_length = 400)]
    pub cursor: Option<String>,
}

/// A tenant's dead letters, oldest first, one page at a time: metadata, and the payload only
/// with `?body=true` (`wafleet dlq show`), which needs the `pii` scope and is audited like a
/// change. A page whose cursor no longer matches the queue (a replay or purge moved it) is 409.
#[utoipa::path(get, path = "/v1/tenants/{customer_ref}/dlq", tag = "dead letters", params(RefPath, ShowQuery),
    responses((status = 200, description = "Oldest first", body = DeadLetterPage), BadRequest, NotFound, Conflict,
        CommonErrors))]
async fn show_dead_letters(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RefPath>,
    Query(query): Query<ShowQuery>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    let customer_ref = parse_ref(&path.customer_ref)?;
    let limit = limit(query.limit, 20, 1000)?;
    let body = query.body.unwrap_or(false);
    let page = (query.cursor.as_deref(), limit);
    let result = service::dlq_show_page(&state.pool, &state.endpoints.amqp_url, &customer_ref, page, body).await;
    let (letters, next_cursor) = if body {
        let entry = Entry::new("dlq show", Some(&path.customer_ref), json!({"limit": limit, "body": true}));
        audited(&state, &caller, entry, false, result).await?
    } else {
        result?
    };
    let next = next_cursor.as_deref().map(|c| {
        let filters = [("limit", Some(limit.to_string())), ("body", query.body.map(|b| b.to_string()))];
        next_link(&format!("/v1/tenants/{customer_ref}/dlq"), &filters, c)
    });
    Ok(Json(DeadLetterPage { items: letters.into_iter().map(DeadLetter::from).collect(), next_cursor, next }))
}

/// Move dead letters back into the tenant's own queue (`wafleet dlq replay`): only while the
/// tenant is active and only envelopes of its current URL generation. Idempotent: dedupe drops
/// a message already processed.
#[utoipa::path(post, path = "/v1/tenants/{customer_ref}/dlq/replay", tag = "dead letters", params(RefPath, IdempotencyKey),
    request_body = ReplayRequest,
    responses((status = 200, description = "What moved (or would move) and what stayed", body = ReplayReport),
        WriteErrors))]
async fn replay_dead_letters(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RefPath>,
    Body(request): Body<ReplayRequest>,
) -> Result<Json<ReplayReport>, ApiError> {
    let customer_ref = parse_ref(&path.customer_ref)?;
    let selection = match (request.all, request.ids.is_empty()) {
        (true, true) => Selection::All,
        (false, false) => Selection::Ids(request.ids.clone()),
        (true, false) => return Err(ApiError::new(Kind::InvalidRequest, "say all: true or list ids, not both")),
        (false, true) => {
            return Err(ApiError::new(Kind::InvalidRequest, "say all: true or list the ingest ids to replay"))
        }
    };
    let result = dlq::replay(&state.pool, &state.endpoints.amqp_url, &customer_ref, &selection, request.dry_run).await;
    let report = if request.dry_run {
        // A dry run changes nothing and is not audited, as in the CLI.
        result?
    } else {
        let entry = Entry::new("dlq replay", Some(&path.customer_ref), json!({"all": request.all, "ids": request.ids}));
        audited(&state, &caller, entry, false, result).await?
    };
    Ok(Json(report.into()))
}

/// Delete every dead letter of a tenant, for good (`wafleet dlq purge --yes`).
#[utoipa::path(post, path = "/v1/tenants/{customer_ref}/dlq/purge", tag = "dead letters", params(RefPath, IdempotencyKey),
    responses((status = 200, description = "Purged", body = Purged), ActionErrors))]
async fn purge_dead_letters(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RefPath>,
) -> Result<Json<Purged>, ApiError> {
    let entry = Entry::new("dlq purge", Some(&path.customer_ref), json!({}));
    let customer_ref = parse_ref(&path.customer_ref)?;
    let result = service::dlq_purge(&state.pool, &state.endpoints.amqp_url, &customer_ref).await;
    let purged = audited(&state, &caller, entry, false, result).await?;
    Ok(Json(Purged { customer_ref: path.customer_ref, purged }))
}

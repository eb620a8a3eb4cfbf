//! Fleet-wide and per-tenant reads: queue depth (`wafleet depth`), the outbox summary and a
//! tenant's unknown and failed replies (`wafleet outbox`), the audit log (`wafleet audit`), and
//! the operations of asynchronous commands.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use wafleet_fleet::audit::Entry;
use wafleet_fleet::{depth, service};

use super::{audited, limit, next_link, parse_ref, BadRequest, CommonErrors, Conflict, NotFound, Path, Query, RefPath};
use crate::auth::Caller;
use crate::dto::{
    AuditPage, AuditRecord, FleetDepth, OneDepth, Operation, OutboxRow, OutboxRows, OutboxSummary, SendOutcome,
};
use crate::operations;
use crate::problem::{ApiError, Kind};
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_depth))
        .routes(routes!(get_tenant_depth))
        .routes(routes!(get_outbox_summary))
        .routes(routes!(list_outbox_rows))
        .routes(routes!(list_audit_records))
        .routes(routes!(get_operation))
}

/// Query of the listings computed per call (depth, outbox summary, accounts, tokens, rules).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(max_length = 400)]
    pub cursor: Option<String>,
}

/// One page of a listing: its items, the next page's cursor and its URL.
pub(super) type KeyPage<T> = (Vec<T>, Option<String>, Option<String>);

/// The page of `items` after `query.cursor`, by a unique key, and its next link on `path`.
pub(super) fn key_page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    tag: &str,
    path: &str,
    query: &PageQuery,
) -> Result<KeyPage<T>, ApiError> {
    let limit = limit(query.limit, 100, 1000)?;
    let (page, next_cursor) =
        wafleet_fleet::paging::page_by_key(items, key, tag, query.cursor.as_deref(), limit as usize)?;
    let next = next_cursor.as_deref().map(|c| next_link(path, &[("limit", Some(limit.to_string()))], c));
    Ok((page, next_cursor, next))
}

/// Depth of the tenants that are not offboarded, one page in ref order (`wafleet depth`, which
/// shows the whole fleet deepest first).
#[utoipa::path(get, path = "/v1/depth", tag = "queues", params(PageQuery),
    responses((status = 200, description = "Per-tenant depth", body = FleetDepth), BadRequest, CommonErrors))]
async fn get_depth(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<Json<FleetDepth>, ApiError> {
    let (rows, source) = depth::depth(&state.pool, &state.endpoints).await?;
    let (rows, next_cursor, next) = key_page(rows, |d| d.customer_ref.clone(), "d1", "/v1/depth", &query)?;
    Ok(Json(FleetDepth {
        source: source.into(),
        tenants: rows.into_iter().map(Into::into).collect(),
        next_cursor,
        next,
    }))
}

/// One tenant's queue depth: ready, unacked, retrying, DLQ, oldest age, consumers.
#[utoipa::path(get, path = "/v1/tenants/{customer_ref}/depth", tag = "queues", params(RefPath),
    responses((status = 200, description = "The tenant's depth", body = OneDepth), BadRequest, NotFound, Conflict, CommonErrors))]
async fn get_tenant_depth(
    State(state): State<AppState>,
    Path(path): Path<RefPath>,
) -> Result<Json<OneDepth>, ApiError> {
    let customer_ref = parse_ref(&path.customer_ref)?;
    let (depth, source) = service::tenant_depth(&state.pool, &state.endpoints, &customer_ref).await?;
    Ok(Json(OneDepth { source: source.into(), depth: depth.into() }))
}

/// Backlog per account and per tenant, in minutes of budget, with unknown and failed counts
/// (`wafleet outbox`).
#[utoipa::path(get, path = "/v1/outbox", tag = "outbox", params(PageQuery),
    responses((status = 200, description = "The outbox summary", body = OutboxSummary), BadRequest, CommonErrors))]
async fn get_outbox_summary(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<Json<OutboxSummary>, ApiError> {
    let mut summary: OutboxSummary = service::outbox_summary(&state.pool, &state.budget, None).await?.into();
    let (tenants, next_cursor, next) =
        key_page(summary.tenants, |t| t.customer_ref.clone(), "b1", "/v1/outbox", &query)?;
    summary.tenants = tenants;
    summary.next_cursor = next_cursor;
    summary.next = next;
    Ok(Json(summary))
}

/// Query of `GET .../outbox`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxQuery {
    /// Only this status (default: both).
    #[param(inline)]
    pub status: Option<SendOutcome>,
    /// How many rows (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Include the reply texts (personal data).
    pub body: Option<bool>,
    /// `next_cursor` of the previous page.
    #[param(max_length = 400)]
    pub cursor: Option<String>,
}

/// A tenant's unknown and failed replies, newest first, one page at a time, to resolve by hand. The reply texts
/// (`?body=true`) need the `pii` scope and are audited like a change.
#[utoipa::path(get, path = "/v1/tenants/{customer_ref}/outbox", tag = "outbox", params(RefPath, OutboxQuery),
    responses((status = 200, description = "The rows", body = OutboxRows), BadRequest, NotFound, CommonErrors))]
async fn list_outbox_rows(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RefPath>,
    Query(query): Query<OutboxQuery>,
) -> Result<Json<OutboxRows>, ApiError> {
    let customer_ref = parse_ref(&path.customer_ref)?;
    let statuses: Vec<String> = match query.status {
        Some(status) => vec![status.as_str().to_owned()],
        None => service::ATTENTION_STATUSES.iter().map(|s| (*s).to_owned()).collect(),
    };
    let limit = limit(query.limit, 100, 1000)?;
    let after = query.cursor.as_deref().map(service::OutboxCursor::parse).transpose()?;
    let body = query.body.unwrap_or(false);
    let result = service::outbox_rows(&state.pool, &customer_ref, &statuses, (limit, after), body).await;
    let (rows, next) = if body {
        let entry = Entry::new("outbox rows", Some(&path.customer_ref), json!({"limit": limit, "body": true}));
        audited(&state, &caller, entry, false, result).await?
    } else {
        result?
    };
    let next_cursor = next.map(service::OutboxCursor::encode);
    let next = next_cursor.as_deref().map(|c| {
        let status = query.status.map(|s| s.as_str().to_owned());
        let filters =
            [("status", status), ("limit", Some(limit.to_string())), ("body", query.body.map(|b| b.to_string()))];
        next_link(&format!("/v1/tenants/{customer_ref}/outbox"), &filters, c)
    });
    Ok(Json(OutboxRows {
        customer_ref: customer_ref.to_string(),
        rows: rows.into_iter().map(OutboxRow::from).collect(),
        next_cursor,
        next,
    }))
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// How many records (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Only records about this tenant ref or account.
    #[param(min_length = 1, max_length = 256)]
    pub target: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(max_length = 400)]
    pub cursor: Option<String>,
}

/// The operator audit log, newest first, one page at a time (`wafleet audit`): CLI operators and
/// admin tokens alike. Paging by cursor returns every record that existed when the first page
/// was read exactly once; records written meanwhile appear only on a new first page.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "One page, newest first", body = AuditPage), BadRequest, CommonErrors))]
async fn list_audit_records(
    State(state): State<AppState>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = limit(query.limit, 50, 1000)?;
    if query.target.as_deref().is_some_and(|t| t.is_empty() || t.chars().count() > 256) {
        return Err(ApiError::new(Kind::InvalidRequest, "target must be 1-256 characters"));
    }
    let after = query.cursor.as_deref().map(service::AuditCursor::parse).transpose()?;
    let page = service::audit_page(&state.pool, limit, query.target.as_deref(), after).await?;
    let next_cursor = page.next.map(service::AuditCursor::encode);
    let next = next_cursor
        .as_deref()
        .map(|c| next_link("/v1/audit", &[("limit", Some(limit.to_string())), ("target", query.target.clone())], c));
    Ok(Json(AuditPage { items: page.records.into_iter().map(AuditRecord::from).collect(), next_cursor, next }))
}

/// The `{operation_id}` path segment.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OperationPath {
    /// The id from the 202 answer.
    pub operation_id: Uuid,
}

/// An asynchronous operation: pending → running → succeeded or failed, with its steps.
#[utoipa::path(get, path = "/v1/operations/{operation_id}", tag = "operations", params(OperationPath),
    responses((status = 200, description = "The operation", body = Operation), BadRequest, NotFound, CommonErrors))]
async fn get_operation(
    State(state): State<AppState>,
    Path(path): Path<OperationPath>,
) -> Result<Json<Operation>, ApiError> {
    operations::get(&state.pool, path.operation_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(Kind::OperationNotFound, format!("no operation {}", path.operation_id)))
}

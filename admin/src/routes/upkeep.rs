//! The fleet's upkeep: a retention run (`wafleet retention run`) and the reconciliation of the
//! tenants' bridges against WA Bridges (`wafleet bridges reconcile [--fix]`). Both act on the
//! whole fleet and need `write`; each writes the CLI's audit record when it can change something.

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wafleet_fleet::audit::Entry;
use wafleet_fleet::service;

use super::{audited, Body, IdempotencyKey, WriteErrors};
use crate::auth::Caller;
use crate::dto::{ReconcileReport, ReconcileRequest, RetentionReport, RetentionRun};
use crate::problem::{ApiError, Kind};
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(run_retention)).routes(routes!(reconcile_bridges))
}

/// Delete processed events, log rows and finished outbox rows older than `days`, for every
/// tenant (`wafleet retention run`). One run at a time across the fleet: when another holds
/// the lock, nothing is done and `skipped` says so.
#[utoipa::path(post, path = "/v1/retention/run", tag = "upkeep", params(IdempotencyKey),
    request_body = RetentionRun,
    responses((status = 200, description = "What was deleted", body = RetentionReport), WriteErrors))]
async fn run_retention(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(run): Body<RetentionRun>,
) -> Result<Json<RetentionReport>, ApiError> {
    if !(1..=3650).contains(&run.days) {
        return Err(ApiError::new(Kind::InvalidRequest, format!("days {}: use 1-3650", run.days)));
    }
    let entry = Entry::new("retention run", None, json!({"days": run.days}));
    let result = service::run_retention(&state.pool, &state.endpoints.database_url, run.days).await;
    Ok(Json(audited(&state, &caller, entry, false, result).await?.into()))
}

/// Compare every account's bridges at WA Bridges with the tenants (`wafleet bridges
/// reconcile`): bridges without a tenant, bridges of offboarded tenants, tenants without a
/// bridge, recorded ids that disagree. Read-only unless `fix`, which only records listed ids
/// (and is audited). Listing spends proxy tokens of each account.
#[utoipa::path(post, path = "/v1/bridges/reconcile", tag = "bridges", params(IdempotencyKey),
    request_body = ReconcileRequest,
    responses((status = 200, description = "What was found (and fixed)", body = ReconcileReport), WriteErrors))]
async fn reconcile_bridges(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(request): Body<ReconcileRequest>,
) -> Result<Json<ReconcileReport>, ApiError> {
    let result = service::reconcile_bridges(&state.fleet, request.fix).await;
    let report = if request.fix {
        audited(&state, &caller, Entry::new("bridges reconcile --fix", None, json!({})), false, result).await?
    } else {
        result?
    };
    Ok(Json(report.into()))
}

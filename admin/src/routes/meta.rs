//! Unauthenticated endpoints: liveness, readiness (Postgres answers as the administration role) and
//! the OpenAPI document. None of them touches tenant data.

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dto::Health;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz))
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "Alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// Postgres answers; the API can serve requests.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, description = "Ready", body = Health),
        (status = 503, description = "Postgres does not answer", body = Problem, content_type = "application/problem+json")))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    sqlx::query("select 1").execute(&state.pool).await.map_err(wafleet_fleet::Error::from)?;
    Ok(Json(Health { status: "ok".into() }))
}

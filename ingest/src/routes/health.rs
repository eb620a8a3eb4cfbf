//! `/healthz` (the process answers), `/readyz` (an event could be accepted durably now) and
//! `/metrics` (Prometheus text).
//!
//! These handlers must stay cheap and must not touch the broker themselves: readiness is what the
//! publisher's supervisor last observed.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::AppState;

/// The operational routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(check_health))
        .route("/readyz", get(check_ready))
        .route("/metrics", get(render_metrics))
}

async fn check_health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn check_ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.publisher.not_ready_reason() {
        None => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "not ready", "reason": reason }))),
    }
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = state.metrics.as_ref().map(|handle| handle.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

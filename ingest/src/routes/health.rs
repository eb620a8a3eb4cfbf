//! The ops port's routes: `/healthz` (the process answers), `/readyz` (an event could be accepted
//! durably now), `/spoolz` (what the disk spool still owes the broker) and `/metrics` (Prometheus
//! text). They are never served on the webhook port.
//!
//! These handlers must stay cheap and must not touch the broker themselves: readiness is what the
//! publisher's supervisor last observed, combined with the spool's state.
//!
//! `/spoolz` is for a Kubernetes preStop hook, which must hold the pod while its spool still has
//! records (they would otherwise wait on the PVC for the next start). It answers
//! `{"enabled":true,"records":N,"bytes":B,"segments":S,"oldest_age_seconds":A,"full":false}`,
//! always with 200. `?wait_secs=N` (at most 300) first waits until the spool is empty or N seconds
//! pass, so a shell-less `httpGet` hook can wait too:
//!
//! ```yaml
//! lifecycle:
//!   preStop:
//!     httpGet: { path: "/spoolz?wait_secs=20", port: ops }
//! ```

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::AppState;
use crate::accept::{readiness, Readiness};

/// Longest `/spoolz?wait_secs`, so a forgotten hook cannot hold a connection for ever.
const MAX_SPOOLZ_WAIT: Duration = Duration::from_secs(300);

/// The operational routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(check_health))
        .route("/readyz", get(check_ready))
        .route("/spoolz", get(show_spool))
        .route("/metrics", get(render_metrics))
}

async fn check_health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn check_ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match readiness(state.publisher.as_ref(), state.spool.as_ref()) {
        Readiness::Ready => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Readiness::Spooling(reason) => (StatusCode::OK, Json(json!({ "status": "ready", "spooling": reason }))),
        Readiness::NotReady(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "not ready", "reason": reason })))
        }
    }
}

#[derive(Debug, Deserialize)]
struct SpoolzQuery {
    wait_secs: Option<u64>,
}

async fn show_spool(State(state): State<AppState>, Query(query): Query<SpoolzQuery>) -> Json<Value> {
    let Some(spool) = state.spool else {
        return Json(
            json!({ "enabled": false, "records": 0, "bytes": 0, "segments": 0, "oldest_age_seconds": 0.0, "full": false }),
        );
    };
    if let Some(secs) = query.wait_secs {
        spool.wait_until_empty(Duration::from_secs(secs).min(MAX_SPOOLZ_WAIT)).await;
    }
    let status = spool.status();
    Json(json!({
        "enabled": true,
        "records": status.records,
        "bytes": status.bytes,
        "segments": status.segments,
        "oldest_age_seconds": status.oldest_age_seconds,
        "full": status.full,
    }))
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    // The oldest-age gauge grows with time alone: bring it up to date for this scrape.
    if let Some(spool) = &state.spool {
        spool.status();
    }
    let text = state.metrics.as_ref().map(|handle| handle.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

//! The unauthenticated `/_sim` control and inspection API used by tests, the demo script and
//! benchmarks: registering bridges, reading and clearing the send log and the API call log, setting
//! faults, firing webhook events and reading stats. It bypasses rate limits and must never be
//! reachable through the simulated `/api` surface.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::parse_json;
use crate::calls::ApiCall;
use crate::error::{Error, Result};
use crate::model::{Bridge, Fault, RecordedSend, RejectedAttempt, SimStats};
use crate::webhook::{inbound_message_event, random_message_id};
use crate::Simulator;

/// Routes under `/_sim`.
pub(crate) fn router() -> Router<Simulator> {
    Router::new()
        .route("/_sim/bridges", post(register_bridge).get(list_bridges))
        .route("/_sim/bridges/{key}/sends", get(list_bridge_sends))
        .route("/_sim/bridges/{key}/fault", post(set_bridge_fault).delete(clear_bridge_fault))
        .route("/_sim/bridges/{key}/fire", post(fire_event))
        .route("/_sim/bridges/{key}/fire-message", post(fire_message))
        .route("/_sim/sends", get(list_sends).delete(clear_sends))
        .route("/_sim/rejected", get(list_rejected))
        .route("/_sim/fault", post(set_fault).delete(clear_fault))
        .route("/_sim/api-calls", get(list_api_calls).delete(clear_api_calls))
        .route("/_sim/api-calls/max", get(max_api_calls))
        .route("/_sim/stats", get(get_stats))
}

#[derive(Debug, Deserialize)]
struct RegisterBridge {
    customer_ref: String,
    #[serde(default)]
    webhook_url: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct FireRequest {
    event: Value,
    #[serde(default = "default_true")]
    include_customer_ref: bool,
}

#[derive(Debug, Deserialize)]
struct FireMessageRequest {
    chat: String,
    body: String,
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default = "default_true")]
    include_customer_ref: bool,
}

async fn register_bridge(State(sim): State<Simulator>, body: Bytes) -> Result<Json<Bridge>> {
    let request: RegisterBridge = parse_json(&body)?;
    if request.customer_ref.trim().is_empty() {
        return Err(Error::BadRequest("customer_ref must not be empty".into()));
    }
    let bridge = sim.lock().upsert_bridge(&request.customer_ref, request.webhook_url, request.api_key, request.status);
    tracing::info!(bridge = %bridge.customer_ref, id = bridge.id, "bridge registered");
    Ok(Json(bridge))
}

async fn list_bridges(State(sim): State<Simulator>) -> Json<Vec<Bridge>> {
    Json(sim.bridges())
}

async fn list_bridge_sends(State(sim): State<Simulator>, Path(key): Path<String>) -> Json<Vec<RecordedSend>> {
    Json(sim.sends_for(&key))
}

async fn list_sends(State(sim): State<Simulator>) -> Json<Vec<RecordedSend>> {
    Json(sim.all_sends())
}

async fn clear_sends(State(sim): State<Simulator>) -> StatusCode {
    sim.clear_sends();
    StatusCode::NO_CONTENT
}

async fn list_rejected(State(sim): State<Simulator>) -> Json<Vec<RejectedAttempt>> {
    Json(sim.rejected_attempts())
}

fn parse_fault(body: &[u8]) -> Result<Fault> {
    let fault: Fault = parse_json(body)?;
    fault.validate().map_err(Error::BadRequest)?;
    Ok(fault)
}

async fn set_fault(State(sim): State<Simulator>, body: Bytes) -> Result<Json<Fault>> {
    let fault = parse_fault(&body)?;
    sim.set_fault(Some(fault.clone()));
    tracing::info!(status = fault.status, remaining = ?fault.remaining, "fault set");
    Ok(Json(fault))
}

async fn clear_fault(State(sim): State<Simulator>) -> StatusCode {
    sim.set_fault(None);
    StatusCode::NO_CONTENT
}

async fn set_bridge_fault(State(sim): State<Simulator>, Path(key): Path<String>, body: Bytes) -> Result<Json<Fault>> {
    let fault = parse_fault(&body)?;
    sim.set_bridge_fault(&key, Some(fault.clone()));
    Ok(Json(fault))
}

async fn clear_bridge_fault(State(sim): State<Simulator>, Path(key): Path<String>) -> StatusCode {
    sim.set_bridge_fault(&key, None);
    StatusCode::NO_CONTENT
}

async fn fire_event(State(sim): State<Simulator>, Path(key): Path<String>, body: Bytes) -> Result<Json<Value>> {
    let request: FireRequest = parse_json(&body)?;
    let status = sim.fire_event(&key, request.event, request.include_customer_ref).await?;
    Ok(Json(json!({ "status": status })))
}

async fn fire_message(State(sim): State<Simulator>, Path(key): Path<String>, body: Bytes) -> Result<Json<Value>> {
    let request: FireMessageRequest = parse_json(&body)?;
    let message_id = request.message_id.unwrap_or_else(random_message_id);
    let event = inbound_message_event(&request.chat, &request.body, &message_id);
    let status = sim.fire_event(&key, event, request.include_customer_ref).await?;
    Ok(Json(json!({ "status": status, "message_id": message_id })))
}

async fn list_api_calls(State(sim): State<Simulator>) -> Json<Vec<ApiCall>> {
    Json(sim.api_calls())
}

async fn clear_api_calls(State(sim): State<Simulator>) -> StatusCode {
    sim.clear_api_calls();
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct MaxQuery {
    span_ms: u64,
}

/// `?span_ms=60000` -> `{"span_ms": 60000, "max_calls": n, "rate_limited_answers": n}`.
async fn max_api_calls(State(sim): State<Simulator>, Query(query): Query<MaxQuery>) -> Result<Json<Value>> {
    if query.span_ms == 0 {
        return Err(Error::BadRequest("span_ms must be at least 1".into()));
    }
    let max_calls = sim.max_calls_in_any(std::time::Duration::from_millis(query.span_ms));
    let rate_limited_answers = sim.rate_limited_answers();
    Ok(Json(json!({ "span_ms": query.span_ms, "max_calls": max_calls, "rate_limited_answers": rate_limited_answers })))
}

async fn get_stats(State(sim): State<Simulator>) -> Json<SimStats> {
    Json(sim.stats())
}

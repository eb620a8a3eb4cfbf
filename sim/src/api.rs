//! HTTP routes of the simulated WA Bridges API (`/api/*`): bearer authentication, the
//! provisioning and "other" rate-limit buckets, bridge CRUD and the proxy routes. Handlers are
//! thin: extract, authenticate, call one `Simulator` method, map the result.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::limiter::Bucket;
use crate::model::Bridge;
use crate::proxy::SendTextResponse;
use crate::Simulator;

/// Routes under `/api`. Path parameters arrive percent-decoded from axum's `Path`.
pub(crate) fn router() -> Router<Simulator> {
    Router::new()
        .route("/api/instances", post(provision_instance).get(list_instances))
        .route("/api/instances/{key}", get(get_instance).delete(delete_instance))
        .route("/api/instances/{key}/proxy/status", get(get_status))
        .route("/api/instances/{key}/proxy/send/text", post(send_text))
        .route("/api/instances/{key}/proxy/{*rest}", axum::routing::any(unsupported_proxy))
        .route("/api/{*rest}", axum::routing::any(unsupported_api))
        // After the routes: it applies to the routes registered so far. Answering through
        // `Error` keeps the documented body shape and lets `error_statuses` apply to it too.
        .method_not_allowed_fallback(method_not_allowed)
}

/// The bearer token of `Authorization: Bearer <key>`, whether or not it is a configured key.
pub(crate) fn bearer_key(headers: &HeaderMap) -> Option<&str> {
    let header = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// Parse a JSON request body, answering the documented `{"error": ..}` shape on failure.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T> {
    serde_json::from_slice(raw).map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))
}

impl Simulator {
    /// The account named by `Authorization: Bearer <key>`, if it is configured.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<String> {
        let key = bearer_key(headers).ok_or(Error::Unauthorized)?;
        if !self.lock().is_known_key(key) {
            return Err(Error::Unauthorized);
        }
        Ok(key.to_owned())
    }

    /// Authenticate and charge `bucket`.
    fn admit_api(&self, headers: &HeaderMap, bucket: Bucket) -> Result<String> {
        let api_key = self.authenticate(headers)?;
        self.lock().admit(&api_key, bucket)?;
        Ok(api_key)
    }
}

#[derive(Debug, Deserialize)]
struct ProvisionRequest {
    customer_ref: String,
    #[serde(default)]
    webhook_url: Option<String>,
}

fn summary(bridge: &Bridge) -> Value {
    json!({ "id": bridge.id, "customer_ref": bridge.customer_ref, "state": "running", "created_at": bridge.created_at })
}

async fn provision_instance(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Result<Json<Value>> {
    let api_key = sim.admit_api(&headers, Bucket::Provision)?;
    let request: ProvisionRequest = parse_json(&body)?;
    if request.customer_ref.trim().is_empty() {
        return Err(Error::BadRequest("customer_ref must not be empty".into()));
    }
    if let Some(url) = &request.webhook_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::BadRequest("webhook_url must be an http(s) URL".into()));
        }
    }
    let bridge = sim.lock().provision(&api_key, &request.customer_ref, request.webhook_url)?;
    tracing::info!(bridge = %bridge.customer_ref, id = bridge.id, "bridge provisioned");
    Ok(Json(json!({ "id": bridge.id, "customer_ref": bridge.customer_ref, "state": "running" })))
}

async fn list_instances(State(sim): State<Simulator>, headers: HeaderMap) -> Result<Json<Value>> {
    let api_key = sim.admit_api(&headers, Bucket::Other)?;
    let owned = sim.lock().list_owned(&api_key);
    Ok(Json(Value::Array(owned.iter().map(summary).collect())))
}

async fn get_instance(
    State(sim): State<Simulator>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    let api_key = sim.admit_api(&headers, Bucket::Other)?;
    let bridge = sim.lock().find_owned(&api_key, &key)?;
    let mut detail = summary(&bridge);
    detail["webhook_url"] = json!(bridge.webhook_url);
    detail["manager"] = json!({ "health": "ok", "started_at": bridge.created_at, "fail_count": 0 });
    Ok(Json(detail))
}

async fn delete_instance(
    State(sim): State<Simulator>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode> {
    let api_key = sim.admit_api(&headers, Bucket::Other)?;
    let mut state = sim.lock();
    let bridge = state.find_owned(&api_key, &key)?;
    state.remove(&bridge.customer_ref);
    tracing::info!(bridge = %bridge.customer_ref, "bridge deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn get_status(State(sim): State<Simulator>, Path(key): Path<String>, headers: HeaderMap) -> Result<Json<Value>> {
    let api_key = sim.authenticate(&headers)?;
    Ok(Json(sim.proxy_status(&api_key, &key).await?))
}

async fn send_text(
    State(sim): State<Simulator>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<SendTextResponse>> {
    let api_key = sim.authenticate(&headers)?;
    Ok(Json(sim.send_text(&api_key, &key, &body).await?))
}

/// Documented but unsimulated proxy endpoints (qr, pair, logout, …) still cost proxy budget.
async fn unsupported_proxy(
    State(sim): State<Simulator>,
    Path((key, rest)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    let api_key = sim.authenticate(&headers)?;
    sim.admit_proxy(&api_key, &key, &rest)?;
    Err(Error::NotFound("endpoint not simulated"))
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

async fn unsupported_api(State(sim): State<Simulator>, headers: HeaderMap) -> Result<Response> {
    sim.admit_api(&headers, Bucket::Other)?;
    Err(Error::NotFound("not found"))
}

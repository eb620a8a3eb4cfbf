//! `Idempotency-Key` on every state-changing `/v1` request but tenant creation (whose handler
//! keeps its own record): a middleware after authentication. The request is identified by its
//! method, path, query and JSON body (parsed, so spacing and key order do not matter); its
//! answer is stored as the client saw it, except for credentials, which are never stored: a
//! bot's signing secret and a new admin token are not repeated (each is shown once), and a
//! rotated webhook URL is signed again from its stored generation, for a token that may read
//! credentials.

use axum::body::{to_bytes, Body};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use wafleet_fleet::admin_tokens::Scope;
use wafleet_shared::{CustomerRef, Generation};

use super::{begin, complete, key_of, release, request_hash, Begin};
use crate::auth::Caller;
use crate::config::BODY_LIMIT_BYTES;
use crate::problem::{ApiError, Kind, PROBLEM_JSON};
use crate::state::AppState;

/// The route whose answer carries a new webhook URL.
const ROTATE: &str = "/v1/tenants/{customer_ref}/rotate-url";

/// Middleware of the `/v1` routes (inside [`crate::auth::authorize`], which provides [`Caller`]).
pub async fn idempotent(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let changes = matches!(*request.method(), Method::POST | Method::PATCH | Method::PUT | Method::DELETE);
    // Tenant creation keeps its own record (and its own stored form).
    if !changes || route == "/v1/tenants" {
        return Ok(next.run(request).await);
    }
    let Some(key) = key_of(request.headers())? else { return Ok(next.run(request).await) };
    let Some(caller) = request.extensions().get::<Caller>().cloned() else { return Ok(next.run(request).await) };
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, BODY_LIMIT_BYTES)
        .await
        .map_err(|_| ApiError::new(Kind::PayloadTooLarge, "the request body is over 64 KiB"))?;
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
    let identity = format!("{} {}", parts.method, parts.uri.path_and_query().map_or("", |p| p.as_str()));
    let hash = match &parsed {
        Some(value) => request_hash(&identity, value),
        None => request_hash(&identity, &String::from_utf8_lossy(&bytes)),
    };
    match begin(&state.pool, caller.token_id, &key, &hash).await?? {
        Begin::Replay { status, body } => {
            Ok(replay(&state, &caller, &route, &parts.uri, parsed.as_ref(), status, body))
        }
        Begin::Run => {
            let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
            let (response, stored) = capture(response).await;
            let status = response.status();
            let written = if status.is_server_error() {
                release(&state.pool, caller.token_id, &key).await
            } else {
                complete(&state.pool, caller.token_id, &key, status, &stored).await
            };
            if let Err(e) = written {
                tracing::warn!(error = %crate::problem::error_chain(&e), "idempotency record not updated");
            }
            Ok(response)
        }
    }
}

/// The response as sent, and the form to store: body without credentials, and the headers a
/// replay needs.
async fn capture(response: Response) -> (Response, Value) {
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let mut stored_body: Option<Value> = serde_json::from_slice(&bytes).ok();
    if let Some(Value::Object(fields)) = stored_body.as_mut() {
        fields.remove("bot_secret");
        fields.remove("url");
        // A new admin token, shown once.
        fields.remove("token");
    }
    let header = |name: header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let stored = json!({
        "body": stored_body,
        "content_type": header(header::CONTENT_TYPE),
        "location": header(header::LOCATION),
    });
    (Response::from_parts(parts, Body::from(bytes)), stored)
}

/// The stored answer again; a rotation's URL is signed again from its stored generation.
fn replay(
    state: &AppState,
    caller: &Caller,
    route: &str,
    uri: &axum::http::Uri,
    request: Option<&Value>,
    status: StatusCode,
    stored: Value,
) -> Response {
    let mut body = stored["body"].clone();
    if route == ROTATE && status.is_success() && caller.may(Scope::Credentials) {
        if let Some(url) = resigned_url(state, uri, request, &body) {
            body["url"] = Value::String(url);
        }
    }
    let mut response = match body {
        Value::Null => status.into_response(),
        body => (status, axum::Json(body)).into_response(),
    };
    let headers = response.headers_mut();
    let content_type = stored["content_type"].as_str().unwrap_or(if status.is_success() { "" } else { PROBLEM_JSON });
    for (name, value) in
        [(header::CONTENT_TYPE, content_type), (header::LOCATION, stored["location"].as_str().unwrap_or(""))]
    {
        if let (false, Ok(value)) = (value.is_empty(), HeaderValue::from_str(value)) {
            headers.insert(name, value);
        }
    }
    response
}

/// The URL a rotation answered with, from the generation it stored and the request's base.
fn resigned_url(state: &AppState, uri: &axum::http::Uri, request: Option<&Value>, body: &Value) -> Option<String> {
    let generation = Generation::from_db(body["generation"].as_i64()?)?;
    let raw = uri.path().strip_prefix("/v1/tenants/")?.strip_suffix("/rotate-url")?;
    let customer_ref = CustomerRef::parse(raw).ok()?;
    let base = request?["base"].as_str()?;
    let key = state.signing_key().ok()?;
    wafleet_fleet::service::signed_url(key, &customer_ref, generation, base).ok()
}

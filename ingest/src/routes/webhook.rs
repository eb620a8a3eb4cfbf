//! `POST /webhook/{customer_ref}/{token}` (signed, one URL per bridge) and `POST /webhook` (open,
//! ref from the body, off by default).
//!
//! The handlers only sequence the checks, in an order that is part of the contract: authenticate
//! from the URL, then content type, then read the body, then parse, then publish. They must not
//! read a body before authentication, and must not choose a tenant themselves (see `event`).

use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::AppState;
use crate::accept::accept;
use crate::error::Error;
use crate::event::{Dropped, VerifiedEvent};
use crate::{auth, body, metric, payload};

/// The webhook routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhook/{customer_ref}/{token}", post(receive_webhook))
        .route("/webhook", post(receive_open_webhook))
}

/// The signed route: 200 only once the broker has confirmed the event or the spool holds it.
async fn receive_webhook(
    State(state): State<AppState>,
    uri: Uri,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    request_body: Body,
) -> Result<Json<Value>, Error> {
    let started = Instant::now();
    // A segment that does not even decode is a bad URL, answered like any other: 401.
    let Path((url_ref, token)) = path.map_err(|_| Error::UrlRef(None))?;
    // ISOLATION: the tenant is the URL's ref, and only once its token verifies. Nothing read
    // later (body fields included) may replace it.
    let (customer_ref, generation) = auth::authenticate(&state.keyring, uri.path(), &url_ref, &token)?;
    tracing::Span::current().record("tenant", customer_ref.as_str());
    body::require_json(&headers)?;
    // The body's bytes are dropped once checked: the event keeps its own copy of the text, and
    // a request waiting for its confirm should not hold two. Its room is held until the answer.
    let (bytes, _room) = body::read(&headers, request_body, state.body_limits, &state.in_flight).await?;
    let object = payload::parse_object(&bytes)?;
    drop(bytes);
    let event = VerifiedEvent::signed(customer_ref, generation, object)?;
    accept(state.publisher.as_ref(), state.spool.as_ref(), event, state.publish_timeout).await?;
    metrics::histogram!(metric::ACCEPT_SECONDS).record(started.elapsed().as_secs_f64());
    Ok(Json(json!({ "status": "accepted" })))
}

/// The open route: needs `WAFLEET_OPEN_WEBHOOK`; events without a valid body ref are dropped
/// with 200, because WA Bridges never retries and there is no fallback tenant.
async fn receive_open_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    request_body: Body,
) -> Result<Json<Value>, Error> {
    let started = Instant::now();
    if !state.open_webhook {
        return Err(Error::OpenDisabled);
    }
    body::require_json(&headers)?;
    let (bytes, _room) = body::read(&headers, request_body, state.body_limits, &state.in_flight).await?;
    let object = payload::parse_object(&bytes)?;
    drop(bytes);
    // ISOLATION: on this route the body's top-level customer_ref is the only tenant source.
    let event = match VerifiedEvent::open(object) {
        Ok(event) => event,
        Err(dropped) => {
            record_drop(&dropped);
            return Ok(Json(json!({ "status": "dropped" })));
        }
    };
    tracing::Span::current().record("tenant", event.customer_ref().as_str());
    accept(state.publisher.as_ref(), state.spool.as_ref(), event, state.publish_timeout).await?;
    metrics::histogram!(metric::ACCEPT_SECONDS).record(started.elapsed().as_secs_f64());
    Ok(Json(json!({ "status": "accepted" })))
}

fn record_drop(dropped: &Dropped) {
    metrics::counter!(metric::DROPPED_TOTAL, "reason" => dropped.reason()).increment(1);
    // Names the ref only (quoted and cut short), never the body.
    match dropped {
        Dropped::MissingRef => tracing::warn!(reason = dropped.reason(), "open webhook event dropped"),
        Dropped::InvalidRef(shown) => {
            tracing::warn!(reason = dropped.reason(), customer_ref = %shown, "open webhook event dropped");
        }
    }
}

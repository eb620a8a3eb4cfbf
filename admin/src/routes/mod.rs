//! The HTTP routes: one module per area, each exposing `router()` (an `OpenApiRouter`, so a
//! route and its OpenAPI entry cannot drift apart), merged by [`crate::startup::router`].
//! Handlers are thin: extract, call one service function, map the result.

pub mod accounts;
pub mod bridges;
pub mod dlq;
pub mod fleet;
pub mod meta;
pub mod rules;
pub mod tenants;
pub mod tokens;
pub mod upkeep;

use axum::extract::{FromRequest, FromRequestParts};
use serde::Deserialize;
use utoipa::{IntoParams, IntoResponses};
use wafleet_fleet::audit::Entry;
use wafleet_shared::CustomerRef;

use crate::auth::Caller;
use crate::problem::{error_chain, ApiError, Kind, Problem};
use crate::state::AppState;

/// A JSON body whose rejections are problems (400, 413, 415, 422).
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Body<T>(pub T);

/// Query parameters whose rejections are 400 problems.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// Path parameters whose rejections are 400 problems.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// The `{customer_ref}` path segment.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RefPath {
    /// The tenant's ref.
    #[param(pattern = "^[A-Za-z0-9_.:-]{1,128}$", example = "cust_8842")]
    pub customer_ref: String,
}

/// The `Idempotency-Key` header every state-changing request takes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// Makes retries safe: the same key with the same request gets the first answer again, and
    /// nothing runs twice; with another request, 422.
    #[serde(rename = "Idempotency-Key")]
    #[param(pattern = "^[!-~]{1,255}$")]
    pub idempotency_key: Option<String>,
}

/// Parses a ref from a request; a bad one is [`wafleet_fleet::Error::Invalid`] (400).
pub fn parse_ref(raw: &str) -> wafleet_fleet::Result<CustomerRef> {
    CustomerRef::parse(raw)
        .map_err(|source| wafleet_fleet::error::InvalidInput::CustomerRef { raw: raw.to_owned(), source }.into())
}

/// Writes the audit record of a finished command by `caller`, as the CLI does for its own, and
/// returns the command's result. Requests refused by validation (a malformed ref, base URL,
/// selection or body) changed nothing and reach no service function: they are not audited. When the command succeeded but its record could not be written,
/// the answer is 503 `audit-unavailable`, as the CLI exits non-zero then.
pub async fn audited<T>(
    state: &AppState,
    caller: &Caller,
    entry: Entry,
    dry_run: bool,
    result: wafleet_fleet::Result<T>,
) -> Result<T, ApiError> {
    let written = wafleet_fleet::audit::record_result(&state.pool, &caller.actor(), &entry, &result, dry_run).await;
    match (result, written) {
        (Err(e), written) => {
            if let Err(w) = written {
                tracing::warn!(command = %entry.command, error = %error_chain(&w), "audit record of a failed command not written");
            }
            Err(e.into())
        }
        (Ok(_), Err(w)) => Err(ApiError::audit(w)),
        (Ok(value), Ok(())) => Ok(value),
    }
}

/// Checks a `limit` query parameter.
pub fn limit(value: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    match value {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::new(Kind::InvalidRequest, format!("limit {n}: use 1-{max}"))),
    }
}

/// The relative URL of the next page of a listing at `path`: the same filters (`query`, the
/// unset ones left out) and `cursor`, so a client follows it without rebuilding the query.
pub fn next_link(path: &str, query: &[(&str, Option<String>)], cursor: &str) -> String {
    let mut pairs = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in query {
        if let Some(value) = value {
            pairs.append_pair(name, value);
        }
    }
    pairs.append_pair("cursor", cursor);
    format!("{path}?{}", pairs.finish())
}

// Error responses of the read endpoints, in parts: each operation lists only the parts it can
// answer with (`Common` always; `BadRequest` when it takes parameters; `NotFound` when its
// subject may not exist; `Conflict` and `Upstream` where the tenant's state or WA Bridges can
// refuse), so a client is not told to expect answers that never come.

/// Errors every `/v1` read can answer with.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum CommonErrors {
    /// Missing, malformed, unknown or revoked bearer token.
    #[response(
        status = 401,
        description = "Missing or invalid bearer token",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    /// The token lacks a scope this read needs (`read`; `credentials` or `pii` for those reads;
    /// `write` for a call that spends send budget).
    #[response(status = 403, description = "Insufficient scope", content_type = "application/problem+json")]
    Forbidden(Problem),
    /// The client address's or the token's rate limit is exhausted.
    #[response(
        status = 429,
        description = "Rate limit exceeded",
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait before the next request"))
    )]
    RateLimited(Problem),
    /// Postgres, RabbitMQ or WA Bridges unavailable, or a setting missing.
    #[response(
        status = 503,
        description = "A dependency is unavailable",
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait, when known"))
    )]
    Unavailable(Problem),
}

/// 400 of a read with path or query parameters.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum BadRequest {
    /// Malformed path or query (a limit out of range, a cursor this listing did not hand out).
    #[response(status = 400, description = "Invalid request", content_type = "application/problem+json")]
    BadRequest(Problem),
}

/// 404 of a read whose subject may not exist.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum NotFound {
    /// No such tenant, queue, bridge or operation.
    #[response(status = 404, description = "Not found", content_type = "application/problem+json")]
    NotFound(Problem),
}

/// 409 of a read the tenant's state can forbid.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum Conflict {
    /// The tenant's state forbids it (offboarded: its queues are gone), or WA Bridges answered 409.
    #[response(
        status = 409,
        description = "Conflict with the current state",
        content_type = "application/problem+json"
    )]
    Conflict(Problem),
}

/// 422 of a read that asks WA Bridges.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum Upstream {
    /// WA Bridges refused the call.
    #[response(status = 422, description = "WA Bridges refused", content_type = "application/problem+json")]
    Upstream(Problem),
}

/// Errors of a mutating endpoint.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum WriteErrors {
    /// Malformed path, query, header or value.
    #[response(status = 400, description = "Invalid request", content_type = "application/problem+json")]
    BadRequest(Problem),
    /// Missing, malformed, unknown or revoked bearer token.
    #[response(
        status = 401,
        description = "Missing or invalid bearer token",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    /// The token lacks a scope this call needs (`write`; erasing also `pii`).
    #[response(status = 403, description = "Insufficient scope", content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such tenant, queue or bridge.
    #[response(status = 404, description = "Not found", content_type = "application/problem+json")]
    NotFound(Problem),
    /// Conflicts with the current state (offboarded ref, bridge of another tenant, key in use).
    #[response(
        status = 409,
        description = "Conflict with the current state",
        content_type = "application/problem+json"
    )]
    Conflict(Problem),
    /// Body over 64 KiB.
    #[response(status = 413, description = "Request body too large", content_type = "application/problem+json")]
    TooLarge(Problem),
    /// Body not application/json.
    #[response(status = 415, description = "Unsupported media type", content_type = "application/problem+json")]
    MediaType(Problem),
    /// Wrong field, type or value in the body; Idempotency-Key reused; WA Bridges refused.
    #[response(status = 422, description = "Unprocessable request", content_type = "application/problem+json")]
    Unprocessable(Problem),
    /// The client address's or the token's rate limit is exhausted.
    #[response(
        status = 429,
        description = "Rate limit exceeded",
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait before the next request"))
    )]
    RateLimited(Problem),
    /// Postgres, RabbitMQ or WA Bridges unavailable, a setting missing, or the audit record not
    /// written.
    #[response(
        status = 503,
        description = "A dependency is unavailable",
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait, when known"))
    )]
    Unavailable(Problem),
}

/// Errors of a mutating endpoint that takes no body (disable, enable, offboard, purge): those
/// of [`WriteErrors`] but for the body's.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum ActionErrors {
    /// Malformed path, query, header or value.
    #[response(status = 400, description = "Invalid request", content_type = "application/problem+json")]
    BadRequest(Problem),
    /// Missing, malformed, unknown or revoked bearer token.
    #[response(
        status = 401,
        description = "Missing or invalid bearer token",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    /// The token lacks a scope this call needs (`write`; erasing also `pii`).
    #[response(status = 403, description = "Insufficient scope", content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such tenant, queue or bridge.
    #[response(status = 404, description = "Not found", content_type = "application/problem+json")]
    NotFound(Problem),
    /// Conflicts with the current state (offboarded ref, bridge of another tenant, key in use).
    #[response(
        status = 409,
        description = "Conflict with the current state",
        content_type = "application/problem+json"
    )]
    Conflict(Problem),
    /// Idempotency-Key reused with another request; WA Bridges refused.
    #[response(status = 422, description = "Unprocessable request", content_type = "application/problem+json")]
    Unprocessable(Problem),
    /// The client address's or the token's rate limit is exhausted.
    #[response(
        status = 429,
        description = "Rate limit exceeded",
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait before the next request"))
    )]
    RateLimited(Problem),
    /// Postgres, RabbitMQ or WA Bridges unavailable, a setting missing, or the audit record not
    /// written.
    #[response(
        status = 503,
        description = "A dependency is unavailable",
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait, when known"))
    )]
    Unavailable(Problem),
}

//! `Idempotency-Key` of every state-changing request: per token, the first request with a key is
//! run and its answer stored; the same key with the same request gets the stored answer again,
//! with another request 422, and while the first is still running 409. Server-side failures
//! (5xx) are not stored, so a retry after an outage runs again. Records expire after 24 hours.
//! Tenant creation uses these functions in its handler; every other route gets them from
//! [`layer::idempotent`].

use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use uuid::Uuid;
use wafleet_fleet::Result;

use crate::problem::{ApiError, Kind};

pub mod layer;

/// The header.
pub const HEADER: &str = "idempotency-key";

/// How long a record is kept.
const TTL_HOURS: i32 = 24;
/// A claim without an answer after this long was cut by a crash (a create takes seconds).
const ABANDONED_AFTER_SECS: f64 = 300.0;

/// What to do with a request that carries a key.
#[derive(Debug)]
pub enum Begin {
    /// First use: run it, then [`complete`] or [`release`].
    Run,
    /// Seen before with the same request: answer this again.
    Replay {
        /// Stored status.
        status: StatusCode,
        /// Stored body.
        body: serde_json::Value,
    },
}

/// The key of a request, if it has one: 1-255 visible ASCII characters.
pub fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(HEADER) else { return Ok(None) };
    let key = value
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
        ApiError::new(Kind::InvalidRequest, "Idempotency-Key must be 1-255 visible ASCII characters")
    })?;
    Ok(Some(key.to_owned()))
}

/// SHA-256 of what identifies a request: its route and its parsed body.
pub fn request_hash(route: &str, body: &impl serde::Serialize) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update([0]);
    hasher.update(serde_json::to_vec(body).unwrap_or_default());
    hasher.finalize().to_vec()
}

/// Claims `key` for `token`, or says how to answer.
pub async fn begin(pool: &PgPool, token: Uuid, key: &str, hash: &[u8]) -> Result<Result<Begin, ApiError>> {
    sqlx::query("delete from admin_idempotency where created_at < now() - make_interval(hours => $1)")
        .bind(TTL_HOURS)
        .execute(pool)
        .await?;
    let claimed = sqlx::query(
        "insert into admin_idempotency (token_id, key, request_hash) values ($1, $2, $3) on conflict do nothing",
    )
    .bind(token)
    .bind(key)
    .bind(hash)
    .execute(pool)
    .await?
    .rows_affected();
    if claimed == 1 {
        return Ok(Ok(Begin::Run));
    }
    // The same request, claimed by a run that never finished (the process died): take it over.
    let abandoned = sqlx::query(
        "update admin_idempotency set created_at = now() where token_id = $1 and key = $2 and request_hash = $3 \
         and status_code is null and created_at < now() - make_interval(secs => $4)",
    )
    .bind(token)
    .bind(key)
    .bind(hash)
    .bind(ABANDONED_AFTER_SECS)
    .execute(pool)
    .await?
    .rows_affected();
    if abandoned == 1 {
        return Ok(Ok(Begin::Run));
    }
    let stored: Option<(Vec<u8>, Option<i32>, Option<serde_json::Value>)> = sqlx::query_as(
        "select request_hash, status_code, response from admin_idempotency where token_id = $1 and key = $2",
    )
    .bind(token)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(match stored {
        // Expired and deleted between the two statements: the caller may simply retry.
        None => Err(ApiError::new(Kind::IdempotencyKeyInUse, "the Idempotency-Key record changed; retry the request")),
        Some((stored_hash, _, _)) if stored_hash != hash => Err(ApiError::new(
            Kind::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request; use a new key for a new request",
        )),
        Some((_, Some(code), Some(body))) => {
            let status = u16::try_from(code).ok().and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::OK);
            Ok(Begin::Replay { status, body })
        }
        Some(_) => Err(ApiError::new(
            Kind::IdempotencyKeyInUse,
            "a request with this Idempotency-Key is still running; retry it later",
        )
        .retry_after(1)),
    })
}

/// Stores the answer of a claimed key.
pub async fn complete(
    pool: &PgPool,
    token: Uuid,
    key: &str,
    status: StatusCode,
    body: &serde_json::Value,
) -> Result<()> {
    sqlx::query("update admin_idempotency set status_code = $3, response = $4 where token_id = $1 and key = $2")
        .bind(token)
        .bind(key)
        .bind(i32::from(status.as_u16()))
        .bind(body)
        .execute(pool)
        .await?;
    Ok(())
}

/// Forgets a claimed key after a server-side failure, so the request can be retried.
pub async fn release(pool: &PgPool, token: Uuid, key: &str) -> Result<()> {
    sqlx::query("delete from admin_idempotency where token_id = $1 and key = $2 and status_code is null")
        .bind(token)
        .bind(key)
        .execute(pool)
        .await?;
    Ok(())
}

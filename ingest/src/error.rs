//! The crate's one error enum and how each variant becomes an HTTP answer.
//!
//! This module owns the status code, the metric reason and the public message of every refusal.
//! It must never put request data (payload, token, path) into a response body or a log line: the
//! public messages are fixed strings, and causes stay in `source()`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use wafleet_shared::{InvalidRef, KeyringError, TokenError};

use crate::metric;
use crate::publisher::PublishError;
use crate::spool::SpoolError;

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ingest, from startup settings to a single request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is missing or malformed. Never carries the value.
    #[error("{var} {reason}")]
    Config {
        /// The environment variable.
        var: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `AMQP_URL` is not one URL or a list of one cluster's URLs (the error never quotes a URL).
    #[error("AMQP_URL cannot be used")]
    AmqpUrl(#[source] wafleet_shared::amqp::EndpointsError),
    /// `WAFLEET_SIGNING_KEY` could not be parsed (the error never echoes secret material).
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// The ref in the URL is not a valid `customer_ref`, or the path is percent-encoded.
    #[error("invalid customer_ref in URL")]
    UrlRef(#[source] Option<InvalidRef>),
    /// The URL token does not verify for the URL's ref.
    #[error("invalid webhook token")]
    Token(#[source] TokenError),
    /// The body's top-level `customer_ref` is not the URL's ref.
    #[error("customer_ref in body does not match the URL")]
    RefMismatch,
    /// `POST /webhook` was called while `WAFLEET_OPEN_WEBHOOK` is off.
    #[error("open webhook disabled")]
    OpenDisabled,
    /// The Content-Type is not `application/json`.
    #[error("unsupported content type")]
    UnsupportedMediaType,
    /// The body is larger than `WAFLEET_BODY_LIMIT_BYTES`.
    #[error("payload too large")]
    PayloadTooLarge,
    /// The body was not fully received within `WAFLEET_BODY_TIMEOUT_MS`.
    #[error("body read timed out")]
    BodyTimeout,
    /// Bodies already being handled fill `WAFLEET_BODY_BYTES_IN_FLIGHT` and none finished within
    /// `WAFLEET_BODY_TIMEOUT_MS`.
    #[error("too many body bytes in flight")]
    Busy,
    /// The body stream failed (client went away mid-body).
    #[error("body could not be read")]
    BodyRead(#[source] axum::BoxError),
    /// The body is not valid UTF-8.
    #[error("body is not valid UTF-8")]
    InvalidUtf8,
    /// The body is not JSON, or nests deeper than the parser allows.
    #[error("body is not valid JSON")]
    InvalidJson,
    /// The body is JSON but not an object.
    #[error("body is not a JSON object")]
    NotObject,
    /// The body object repeats a top-level key.
    #[error("body repeats a top-level key")]
    DuplicateKey,
    /// No route matches.
    #[error("not found")]
    NotFound,
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The broker did not confirm the event and the spool is off.
    #[error("broker unavailable")]
    BrokerUnavailable(#[source] PublishError),
    /// The broker did not confirm the event and the spool has no room for it.
    #[error("broker unavailable and spool full")]
    SpoolFull,
    /// The tenant's own queue is full (the broker nacked) and the tenant holds its whole share of
    /// the spool: 503 for this tenant only.
    #[error("tenant queue full and its spool share used up")]
    TenantShareFull,
    /// The broker did not confirm the event and the spool could not make it durable.
    #[error("broker unavailable and spool failed")]
    SpoolFailed(#[source] SpoolError),
    /// `wafleet-ingest drain`: the spool folder could not be opened (missing, unreadable, or
    /// locked by a running ingest).
    #[error("cannot open the spool folder {dir}")]
    SpoolOpen {
        /// The folder.
        dir: String,
        /// Why.
        #[source]
        source: SpoolError,
    },
    /// `wafleet-ingest drain` gave up with records left in the folder (they stay there).
    #[error("{records} records are still in the spool folder {dir} after {waited_secs} s: {reason}")]
    DrainIncomplete {
        /// Records not confirmed by the broker.
        records: u64,
        /// The folder.
        dir: String,
        /// How long the drain tried.
        waited_secs: u64,
        /// A fixed description of the likely cause.
        reason: &'static str,
    },
}

impl Error {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::UrlRef(_) | Error::Token(_) | Error::RefMismatch | Error::OpenDisabled => StatusCode::UNAUTHORIZED,
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::BodyRead(_) | Error::InvalidUtf8 | Error::InvalidJson | Error::NotObject | Error::DuplicateKey => {
                StatusCode::BAD_REQUEST
            }
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Busy
            | Error::BrokerUnavailable(_)
            | Error::SpoolFull
            | Error::TenantShareFull
            | Error::SpoolFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Config { .. }
            | Error::AmqpUrl(_)
            | Error::Keyring(_)
            | Error::SpoolOpen { .. }
            | Error::DrainIncomplete { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `reason` label for metrics: a fixed, low-cardinality name.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Config { .. } | Error::AmqpUrl(_) | Error::Keyring(_) => "config",
            Error::SpoolOpen { .. } | Error::DrainIncomplete { .. } => "drain",
            Error::UrlRef(_) => "bad_ref",
            Error::Token(_) => "bad_token",
            Error::RefMismatch => "ref_mismatch",
            Error::OpenDisabled => "open_disabled",
            Error::UnsupportedMediaType => "unsupported_media_type",
            Error::PayloadTooLarge => "payload_too_large",
            Error::BodyTimeout => "body_timeout",
            Error::Busy => "busy",
            Error::BodyRead(_) => "body_read",
            Error::InvalidUtf8 => "invalid_utf8",
            Error::InvalidJson => "invalid_json",
            Error::NotObject => "not_object",
            Error::DuplicateKey => "duplicate_key",
            Error::NotFound => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::BrokerUnavailable(_) => "broker_unavailable",
            Error::SpoolFull => "spool_full",
            Error::TenantShareFull => "tenant_share_full",
            Error::SpoolFailed(_) => "spool_failed",
        }
    }

    /// The public message: a fixed string per variant, never request data.
    fn public_message(&self) -> &'static str {
        match self {
            // One message for every authentication failure, so a caller cannot tell which part failed.
            Error::UrlRef(_) | Error::Token(_) => "invalid webhook URL",
            Error::RefMismatch => "customer_ref in body does not match the URL",
            Error::OpenDisabled => "open webhook disabled",
            Error::UnsupportedMediaType => "content type must be application/json",
            Error::PayloadTooLarge => "payload too large",
            Error::BodyTimeout => "body read timed out",
            Error::Busy => "ingest busy; retry later",
            Error::BodyRead(_) => "body could not be read",
            Error::InvalidUtf8 => "body is not valid UTF-8",
            Error::InvalidJson => "body is not valid JSON",
            Error::NotObject => "body must be a JSON object",
            Error::DuplicateKey => "body repeats a top-level key",
            Error::NotFound => "not found",
            Error::MethodNotAllowed => "method not allowed",
            Error::BrokerUnavailable(_) => "broker unavailable",
            Error::SpoolFull => "broker unavailable and spool full",
            Error::TenantShareFull => "tenant queue full; retry later",
            Error::SpoolFailed(_) => "broker unavailable and spool failed",
            Error::Config { .. }
            | Error::AmqpUrl(_)
            | Error::Keyring(_)
            | Error::SpoolOpen { .. }
            | Error::DrainIncomplete { .. } => "internal error",
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let reason = self.reason();
        if status.is_client_error() {
            metrics::counter!(metric::REJECTED_TOTAL, "reason" => reason).increment(1);
            tracing::info!(reason, status = status.as_u16(), "request rejected");
        } else {
            // Display of the source chain is safe: it holds broker errors, never the payload.
            let cause = std::error::Error::source(&self).map(|e| e.to_string()).unwrap_or_default();
            tracing::warn!(reason, status = status.as_u16(), cause, "request failed");
        }
        let body = match self {
            Error::OpenDisabled => json!({
                "error": self.public_message(),
                "hint": "configure a signed URL on the bridge: `wafleet webhook-url <ref> --base <public url>`",
            }),
            _ => json!({ "error": self.public_message() }),
        };
        (status, Json(body)).into_response()
    }
}

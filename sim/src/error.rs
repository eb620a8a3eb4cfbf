//! The simulator's one error enum and how each variant becomes an HTTP answer. Every error body
//! has the only documented shape, `{"error": "<message>"}`; the 429 carries `Retry-After`. An
//! answer whose status the reference does not document is marked with [`UndocumentedStatus`], so
//! the `/api` gate can apply the `error_statuses` setting without knowing the variants.

use axum::http::{header::RETRY_AFTER, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a simulated endpoint or a control call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Missing `Authorization` header or a key that is not configured.
    #[error("unauthorized")]
    Unauthorized,
    /// A per-key bucket is exhausted for the current window.
    #[error("rate limit exceeded")]
    RateLimited {
        /// Whole seconds until the window resets (at least 1).
        retry_after_secs: u64,
    },
    /// The bridge (or route) does not exist for this caller.
    #[error("{0}")]
    NotFound(&'static str),
    /// The bridge exists but belongs to another API key.
    #[error("forbidden")]
    Forbidden,
    /// The request conflicts with existing state (for example a taken `customer_ref`).
    #[error("{0}")]
    Conflict(String),
    /// The request body or parameters are invalid.
    #[error("{0}")]
    BadRequest(String),
    /// The path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// An injected fault answered instead of the simulated API.
    #[error("injected fault (HTTP {status})")]
    Injected {
        /// HTTP status to answer with.
        status: u16,
        /// Optional `Retry-After` header value in seconds.
        retry_after: Option<u64>,
    },
    /// `fire` was asked for a bridge that has no `webhook_url`.
    #[error("bridge {0} has no webhook_url")]
    NoWebhook(String),
    /// Posting an event to a webhook failed before any HTTP status came back.
    #[error("webhook delivery failed")]
    Webhook(#[from] reqwest::Error),
}

impl Error {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Conflict(_) | Self::NoWebhook(_) => StatusCode::CONFLICT,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Injected { status, .. } => StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Self::Webhook(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// Whether the reference leaves this answer's status undocumented (a guess the
    /// `error_statuses` setting may replace). Injected faults and 429 are deliberate, so never.
    fn is_undocumented(&self) -> bool {
        match self {
            Self::Unauthorized
            | Self::NotFound(_)
            | Self::Forbidden
            | Self::Conflict(_)
            | Self::BadRequest(_)
            | Self::MethodNotAllowed => true,
            Self::RateLimited { .. } | Self::Injected { .. } | Self::NoWebhook(_) | Self::Webhook(_) => false,
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Injected { status: 429, .. } => "rate limit exceeded".to_owned(),
            Self::Injected { .. } => {
                self.status().canonical_reason().unwrap_or("simulated failure").to_ascii_lowercase()
            }
            // Keep the cause chain visible to the test that fired the event.
            Self::Webhook(e) => format!("webhook delivery failed: {e}"),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let retry_after = match &self {
            Self::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            Self::Injected { retry_after, .. } => *retry_after,
            _ => None,
        };
        let mut response = (self.status(), Json(json!({ "error": self.message() }))).into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.is_undocumented() {
            response.extensions_mut().insert(UndocumentedStatus);
        }
        response
    }
}

/// Response extension on an error answer whose status the reference does not document.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UndocumentedStatus;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_error_answers_429_with_retry_after() {
        let response = Error::RateLimited { retry_after_secs: 7 }.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("7"));
    }

    #[test]
    fn injected_fault_without_retry_after_sends_no_header() {
        let response = Error::Injected { status: 503, retry_after: None }.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().get(RETRY_AFTER).is_none());
    }

    #[test]
    fn guessed_statuses_are_marked_and_deliberate_ones_are_not() {
        let marked = |e: Error| e.into_response().extensions().get::<UndocumentedStatus>().is_some();
        assert!(marked(Error::Unauthorized));
        assert!(marked(Error::NotFound("instance not found")));
        assert!(marked(Error::BadRequest("x".into())));
        assert!(!marked(Error::RateLimited { retry_after_secs: 1 }));
        assert!(!marked(Error::Injected { status: 404, retry_after: None }));
    }

    #[test]
    fn injected_fault_with_an_impossible_status_becomes_500() {
        assert_eq!(Error::Injected { status: 42, retry_after: None }.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}

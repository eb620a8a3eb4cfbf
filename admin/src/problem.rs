//! RFC 9457 problem details: the only error body of the admin API. Every failure becomes one
//! [`ApiError`] with a stable `type` URI; the mapping from the worker's errors lives here, in one
//! place. Bad input is 400/404/409/422; an unavailable dependency (database, broker, WA Bridges)
//! is 503, never 500. A detail never carries a token, a payload or a database internal.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wafleet_fleet::bridge_client::ApiError as BridgeApiError;
use wafleet_fleet::error::UnsafeRole;
use wafleet_fleet::Error as WorkerError;

/// Prefix of every problem `type`.
pub const TYPE_BASE: &str = "https://wafleet.dev/problems/";

/// The media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem details object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// Stable URI naming the kind of problem, e.g. `https://wafleet.dev/problems/tenant-not-found`.
    #[serde(rename = "type")]
    #[schema(example = "https://wafleet.dev/problems/tenant-not-found")]
    pub type_uri: String,
    /// Short summary of the kind of problem; the same for every occurrence.
    #[schema(example = "Tenant not found")]
    pub title: String,
    /// The HTTP status code.
    #[schema(example = 404)]
    pub status: u16,
    /// What went wrong this time, and what to change.
    #[schema(example = "no tenant with customer_ref cust_8842")]
    pub detail: String,
}

/// The kinds of problem the API answers with. Their slugs are part of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 400: a path, query, header or value is malformed.
    InvalidRequest,
    /// 401: missing, malformed, unknown or revoked bearer token.
    Unauthorized,
    /// 403: the token lacks a scope the route needs.
    InsufficientScope,
    /// 404: no tenant with this ref.
    TenantNotFound,
    /// 404: no operation with this id.
    OperationNotFound,
    /// 404: the tenant's queue does not exist (offboarded).
    QueueNotFound,
    /// 404: WA Bridges does not know the tenant's bridge.
    BridgeNotFound,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists with another method.
    MethodNotAllowed,
    /// 409: the request conflicts with the current state.
    Conflict,
    /// 409: a request with the same Idempotency-Key is still running.
    IdempotencyKeyInUse,
    /// 413: body over 64 KiB.
    PayloadTooLarge,
    /// 415: body not `application/json`.
    UnsupportedMediaType,
    /// 422: the JSON body has a wrong field, type or value.
    InvalidBody,
    /// 422: the Idempotency-Key was used with another request.
    IdempotencyKeyReused,
    /// 422: WA Bridges refused the request.
    UpstreamRejected,
    /// 429: the token's rate limit is exhausted.
    RateLimited,
    /// 503: the server lacks a setting this endpoint needs.
    NotConfigured,
    /// 503: Postgres, RabbitMQ or WA Bridges is unavailable.
    DependencyUnavailable,
    /// 503: the WA Bridges account's budget has no token for this call right now.
    BudgetExhausted,
    /// 503: the command ran, but its audit record could not be written.
    AuditUnavailable,
}

impl Kind {
    /// Slug, title and status.
    pub fn describe(self) -> (&'static str, &'static str, StatusCode) {
        use StatusCode as S;
        match self {
            Self::InvalidRequest => ("invalid-request", "Invalid request", S::BAD_REQUEST),
            Self::Unauthorized => ("unauthorized", "Missing or invalid bearer token", S::UNAUTHORIZED),
            Self::InsufficientScope => ("insufficient-scope", "The token lacks a scope", S::FORBIDDEN),
            Self::TenantNotFound => ("tenant-not-found", "Tenant not found", S::NOT_FOUND),
            Self::OperationNotFound => ("operation-not-found", "Operation not found", S::NOT_FOUND),
            Self::QueueNotFound => ("queue-not-found", "Queue not found", S::NOT_FOUND),
            Self::BridgeNotFound => ("bridge-not-found", "Bridge not found at WA Bridges", S::NOT_FOUND),
            Self::NotFound => ("not-found", "Not found", S::NOT_FOUND),
            Self::MethodNotAllowed => ("method-not-allowed", "Method not allowed", S::METHOD_NOT_ALLOWED),
            Self::Conflict => ("conflict", "Conflict with the current state", S::CONFLICT),
            Self::IdempotencyKeyInUse => ("idempotency-key-in-use", "Idempotency-Key in use", S::CONFLICT),
            Self::PayloadTooLarge => ("payload-too-large", "Request body too large", S::PAYLOAD_TOO_LARGE),
            Self::UnsupportedMediaType => {
                ("unsupported-media-type", "Unsupported media type", S::UNSUPPORTED_MEDIA_TYPE)
            }
            Self::InvalidBody => ("invalid-body", "Invalid request body", S::UNPROCESSABLE_ENTITY),
            Self::IdempotencyKeyReused => {
                ("idempotency-key-reused", "Idempotency-Key reused with another request", S::UNPROCESSABLE_ENTITY)
            }
            Self::UpstreamRejected => ("upstream-rejected", "WA Bridges refused the request", S::UNPROCESSABLE_ENTITY),
            Self::RateLimited => ("rate-limited", "Rate limit exceeded", S::TOO_MANY_REQUESTS),
            Self::NotConfigured => ("not-configured", "Not configured", S::SERVICE_UNAVAILABLE),
            Self::DependencyUnavailable => {
                ("dependency-unavailable", "A dependency is unavailable", S::SERVICE_UNAVAILABLE)
            }
            Self::BudgetExhausted => ("budget-exhausted", "WA Bridges budget exhausted", S::SERVICE_UNAVAILABLE),
            Self::AuditUnavailable => ("audit-unavailable", "Audit record not written", S::SERVICE_UNAVAILABLE),
        }
    }

    /// The problem `type` URI.
    pub fn type_uri(self) -> String {
        format!("{TYPE_BASE}{}", self.describe().0)
    }
}

/// An error answer of the admin API.
#[derive(Debug)]
pub struct ApiError {
    /// The kind of problem.
    pub kind: Kind,
    /// The `detail` member.
    pub detail: String,
    /// `Retry-After` seconds, for 429 and some 503s.
    pub retry_after: Option<u64>,
    /// The worker error behind a 5xx, logged (never sent).
    source: Option<WorkerError>,
}

impl ApiError {
    /// A problem of `kind` with `detail`.
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Self { kind, detail: detail.into(), retry_after: None, source: None }
    }

    /// Adds `Retry-After`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.kind.describe().2
    }

    /// The body.
    pub fn problem(&self) -> Problem {
        let (_, title, status) = self.kind.describe();
        Problem {
            type_uri: self.kind.type_uri(),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: self.detail.clone(),
        }
    }

    /// Logs a 5xx with its cause: the cause goes to the log (errors never carry a token or a
    /// payload), not to the caller.
    pub fn log_server_error(&self) {
        if !self.status().is_server_error() {
            return;
        }
        match &self.source {
            Some(source) => {
                tracing::warn!(error = %error_chain(source), problem = self.kind.describe().0, "request failed")
            }
            None => tracing::warn!(problem = self.kind.describe().0, detail = %self.detail, "request failed"),
        }
    }

    fn unavailable(what: &str, source: WorkerError) -> Self {
        Self {
            source: Some(source),
            ..Self::new(Kind::DependencyUnavailable, format!("{what} is unavailable; try again later"))
        }
    }

    /// A command that ran but whose audit record failed.
    pub fn audit(source: WorkerError) -> Self {
        Self {
            source: Some(source),
            ..Self::new(Kind::AuditUnavailable, "the command ran, but its audit record could not be written")
        }
    }
}

/// Whether a lapin error is the broker's NOT_FOUND (a queue that does not exist).
fn is_not_found(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(e, lapin::Error::ProtocolError(p) if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}

impl From<WorkerError> for ApiError {
    fn from(e: WorkerError) -> Self {
        match e {
            // Client refusals: the detail is the refusal and its causes (never a secret or a body).
            WorkerError::Invalid(ref invalid) => Self::new(Kind::InvalidRequest, error_chain(invalid)),
            WorkerError::UnknownTenant(r) => {
                Self::new(Kind::TenantNotFound, format!("no tenant with customer_ref {r}"))
            }
            WorkerError::Conflict(ref conflict) => Self::new(Kind::Conflict, error_chain(conflict)),
            WorkerError::Config(m) => Self::new(Kind::NotConfigured, m),
            WorkerError::Setup(ref setup) => Self::new(Kind::NotConfigured, error_chain(setup)),
            WorkerError::Setting(ref s) => Self::new(Kind::NotConfigured, s.to_string()),
            WorkerError::UnsafeRole(ref role) => {
                Self::new(Kind::NotConfigured, format!("{role}. {}", UnsafeRole::advice()))
            }
            WorkerError::BudgetWait { .. } => Self::new(Kind::BudgetExhausted, e.to_string()).retry_after(5),
            WorkerError::Broker(ref b) if is_not_found(b) => {
                Self::new(Kind::QueueNotFound, "the tenant's queue does not exist (was it offboarded?)")
            }
            WorkerError::Database(sqlx::Error::Database(ref db)) if !e.is_database_unavailable() => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                match code.get(..2) {
                    // Data exceptions: a value Postgres cannot store (a NUL byte, a bad encoding).
                    Some("22") => Self::new(Kind::InvalidRequest, format!("a value was refused: {}", db.message())),
                    // Integrity violations and the definer functions' own refusals.
                    Some("23") | Some("P0") => Self::new(Kind::Conflict, db.message().to_owned()),
                    _ => Self::unavailable("the database", e),
                }
            }
            WorkerError::Database(_) | WorkerError::Migration(_) => Self::unavailable("the database", e),
            WorkerError::BrokerConnect(ref connect)
                if matches!(**connect, wafleet_shared::amqp::ConnectError::Endpoints(_)) =>
            {
                Self::new(Kind::NotConfigured, connect.to_string())
            }
            WorkerError::Broker(_)
            | WorkerError::BrokerConnect(_)
            | WorkerError::Publish(_)
            | WorkerError::ConnectionLost => Self::unavailable("the broker", e),
            WorkerError::Management(_) => Self::unavailable("the RabbitMQ management API", e),
            WorkerError::Http(_) => Self::unavailable("an HTTP dependency", e),
            WorkerError::BridgeApi(ref api) => match api {
                BridgeApiError::RateLimited { retry_after } => {
                    let retry = retry_after.unwrap_or(5);
                    Self::new(Kind::BudgetExhausted, "WA Bridges answered 429 for this account; try again later")
                        .retry_after(retry)
                }
                BridgeApiError::Status { status: 404, message } => {
                    Self::new(Kind::BridgeNotFound, format!("WA Bridges answered 404: {message}"))
                }
                BridgeApiError::Status { status: 409, message } => {
                    Self::new(Kind::Conflict, format!("WA Bridges answered 409: {message}"))
                }
                BridgeApiError::Status { status: 401 | 403, .. } => Self::new(
                    Kind::NotConfigured,
                    "WA Bridges refused the account's API key; check the account's key reference",
                ),
                BridgeApiError::Status { status, message } if (400..500).contains(status) => {
                    Self::new(Kind::UpstreamRejected, format!("WA Bridges answered {status}: {message}"))
                }
                BridgeApiError::Status { .. } | BridgeApiError::Transport(_) => Self::unavailable("WA Bridges", e),
            },
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let kind = match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Kind::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Kind::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => Kind::InvalidBody,
            _ => Kind::InvalidRequest,
        };
        let detail = match kind {
            Kind::PayloadTooLarge => "the request body is over 64 KiB".to_owned(),
            Kind::UnsupportedMediaType => "send the body as Content-Type: application/json".to_owned(),
            _ => r.body_text(),
        };
        Self::new(kind, detail)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(Kind::InvalidRequest, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(Kind::InvalidRequest, r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        self.log_server_error();
        let mut response = (status, problem_body(&self.problem())).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.kind == Kind::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"wafleet-admin\""));
        }
        response
    }
}

fn problem_body(problem: &Problem) -> String {
    serde_json::to_string(problem).unwrap_or_else(|_| "{}".to_owned())
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use wafleet_fleet::error::{Conflict, InvalidInput, ManagementError, SetupError};

    fn management(method: &'static str, body: Option<&str>) -> WorkerError {
        WorkerError::Management(ManagementError::Status {
            method,
            path: "policies/v/wafleet-tenant".into(),
            status: StatusCode::UNAUTHORIZED,
            body: body.map(str::to_owned),
        })
    }

    #[test]
    fn a_client_refusal_keeps_its_text_and_its_cause_in_the_detail() {
        let Err(source) = wafleet_shared::CustomerRef::parse("a b") else { panic!("a space is not a ref") };
        let e = ApiError::from(WorkerError::Invalid(InvalidInput::CustomerRef { raw: "a b".into(), source }));
        assert!(
            e.problem().detail.starts_with("customer_ref \"a b\" is invalid: customer_ref may only"),
            "{}",
            e.problem().detail
        );
        let e = ApiError::from(WorkerError::from(UnsafeRole::Superuser("postgres".into())));
        assert!(e.problem().detail.contains("superuser") && e.problem().detail.contains("DATABASE_URL"));
    }

    #[test]
    fn worker_input_errors_become_client_problems_and_outages_become_503() {
        let cases = [
            (WorkerError::Invalid(InvalidInput::RuleReply), 400, "invalid-request"),
            (WorkerError::UnknownTenant("a".into()), 404, "tenant-not-found"),
            (WorkerError::Conflict(Conflict::QueueBusy("wa.tenant.a".into())), 409, "conflict"),
            (WorkerError::Setup(SetupError::NoSigningKey), 503, "not-configured"),
            (WorkerError::from(UnsafeRole::BypassRls("app".into())), 503, "not-configured"),
            (WorkerError::ConnectionLost, 503, "dependency-unavailable"),
            (WorkerError::Database(sqlx::Error::PoolTimedOut), 503, "dependency-unavailable"),
            (management("GET", None), 503, "dependency-unavailable"),
            (
                WorkerError::BudgetWait { account: "main".into(), bucket: "send", waited: Duration::from_secs(5) },
                503,
                "budget-exhausted",
            ),
            (
                WorkerError::BridgeApi(BridgeApiError::Status { status: 404, message: "x".into() }),
                404,
                "bridge-not-found",
            ),
            (
                WorkerError::BridgeApi(BridgeApiError::Status { status: 400, message: "x".into() }),
                422,
                "upstream-rejected",
            ),
            (
                WorkerError::BridgeApi(BridgeApiError::Status { status: 502, message: "x".into() }),
                503,
                "dependency-unavailable",
            ),
        ];
        for (error, status, slug) in cases {
            let e = ApiError::from(error);
            assert_eq!(e.status().as_u16(), status, "{slug}");
            assert_eq!(e.problem().type_uri, format!("{TYPE_BASE}{slug}"));
        }
    }

    #[test]
    fn a_server_side_problem_never_repeats_the_cause_to_the_caller() {
        let e = ApiError::from(management("PUT", Some("secret detail")));
        assert!(!e.problem().detail.contains("secret"), "{}", e.problem().detail);
    }
}

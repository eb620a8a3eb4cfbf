//! The HTTP surface: shared state, the two routers, request logging and request metrics.
//!
//! The webhook router is the public port and serves the webhook routes only; the ops router
//! (health, readiness, spool status, metrics) is served on a separate listener, so whoever can
//! reach the webhook cannot read metrics or hold a connection in `/spoolz?wait_secs`.
//! This module owns what wraps every route. It must not log a request URI (the webhook URL carries
//! its token): spans name the matched route template, and the tenant once it is verified.

mod health;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;
use wafleet_shared::Keyring;

use crate::body::{BodyLimits, InFlight};
use crate::config::Config;
use crate::error::Error;
use crate::metric;
use crate::publisher::Publisher;
use crate::spool::Spool;

/// What every handler needs. Small and cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Verifies webhook URL tokens.
    pub keyring: Arc<Keyring>,
    /// Where accepted events go.
    pub publisher: Arc<dyn Publisher>,
    /// Where they go when the broker does not confirm in time; `None` answers 503 instead.
    pub spool: Option<Spool>,
    /// Renders `/metrics`; `None` renders an empty page (tests run without a recorder).
    pub metrics: Option<PrometheusHandle>,
    /// Size and time limits for webhook bodies.
    pub body_limits: BodyLimits,
    /// Room for the bodies handled at once.
    pub in_flight: InFlight,
    /// Deadline for publish plus confirm.
    pub publish_timeout: Duration,
    /// Whether `POST /webhook` (ref from the body) is enabled.
    pub open_webhook: bool,
}

impl AppState {
    /// State built from `config`, publishing through `publisher`, without a spool (see
    /// [`AppState::with_spool`]: opening one is I/O and belongs to startup).
    pub fn new(config: &Config, publisher: Arc<dyn Publisher>, metrics: Option<PrometheusHandle>) -> Self {
        Self {
            keyring: Arc::clone(&config.keyring),
            publisher,
            spool: None,
            metrics,
            body_limits: BodyLimits { max_bytes: config.body_limit_bytes, timeout: config.body_timeout },
            in_flight: InFlight::new(config.body_bytes_in_flight),
            publish_timeout: config.publish_timeout,
            open_webhook: config.open_webhook,
        }
    }

    /// The same state, spooling to `spool` when the broker does not confirm.
    pub fn with_spool(mut self, spool: Spool) -> Self {
        self.spool = Some(spool);
        self
    }
}

/// The public webhook routes, with logging, request metrics and JSON 404/405 answers.
pub fn router(state: AppState) -> Router {
    wrap(webhook::router(), state)
}

/// The ops routes (`/healthz`, `/readyz`, `/spoolz`, `/metrics`), wrapped like [`router`].
pub fn ops_router(state: AppState) -> Router {
    wrap(health::router(), state)
}

fn wrap(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(|| async { Error::NotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(middleware::from_fn(count_requests))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    // Never the URI: on the webhook route it contains the token.
                    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
                    tracing::info_span!("http", method = %request.method(), route, tenant = tracing::field::Empty)
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                // A 503 from /readyz during start is expected, not an error; error.rs logs real causes.
                .on_failure(DefaultOnFailure::new().level(Level::WARN)),
        )
        .with_state(state)
}

async fn count_requests(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    metrics::counter!(metric::REQUESTS_TOTAL, "status" => response.status().as_u16().to_string()).increment(1);
    response
}

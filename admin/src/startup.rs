//! Wiring: the router (authenticated `/v1` routes, health, `/openapi.json`, problem fallbacks,
//! body limit, no-store, request log), and the application: check the database role, bind, serve
//! until told to stop, then give background operations a bounded time to finish.
//!
//! There is deliberately no CORS layer: browsers on other origins get no access.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use wafleet_fleet::db;

use crate::config::{Config, BODY_LIMIT_BYTES};
use crate::openapi;
use crate::problem::{ApiError, Kind};
use crate::state::{AppState, RateLimit};

/// How long background operations may run on after the server stopped.
const OPERATIONS_DRAIN: Duration = Duration::from_secs(20);

fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(openapi::document_json)
}

/// The whole HTTP surface over `state`.
pub fn router(state: AppState) -> Router {
    let (v1, open, _) = openapi::routes();
    // Layers run outside in: authentication and scopes first, then Idempotency-Key.
    let v1 = v1
        .layer(middleware::from_fn_with_state(state.clone(), crate::idempotency::layer::idempotent))
        .layer(middleware::from_fn_with_state(state.clone(), crate::auth::authorize));
    Router::new()
        .merge(v1)
        .merge(open)
        .route("/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], document_json()) }))
        .fallback(|| async { ApiError::new(Kind::NotFound, "no such endpoint; see /openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(Kind::MethodNotAllowed, "this endpoint does not take this method; see /openapi.json")
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn(log_and_harden))
        .with_state(state)
}

/// One span and one log line per request (method, route template, status, latency, token name;
/// never the query string, a header or a body), and `Cache-Control: no-store` on every answer:
/// some carry credentials (webhook URLs) or personal data.
async fn log_and_harden(request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!("request", method = %request.method(), route, token = tracing::field::Empty);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    span.in_scope(|| {
        tracing::info!(status = response.status().as_u16(), ms = started.elapsed().as_millis() as u64, "admin request");
    });
    response
}

/// A bound, ready-to-run admin API.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    port: u16,
}

impl Application {
    /// Opens the administration role's pool (refusing an unsafe role, like the CLI), builds the fleet
    /// context and binds `config.addr`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool = db::app_pool(&config.endpoints.database_url, config.pool_size)?;
        db::check_role(&pool, db::Duty::Admin, config.allow_unsafe_db_role)
            .await
            .context("the database role check failed (ADMIN_DATABASE_URL must be the administration role)")?;
        let budget = config.directory.budget.clone();
        let mut fleet = wafleet_fleet::lifecycle::Fleet::new(pool.clone(), config.endpoints.clone(), config.directory);
        fleet.max_budget_wait = config.max_budget_wait;
        if config.signing_key.is_none() {
            tracing::warn!("WAFLEET_SIGNING_KEY is not set: webhook-url, rotate-url and provision answer 503");
        }
        let rate = RateLimit { per_second: config.rate_per_sec, burst: config.rate_burst };
        let state = AppState::new(pool, config.endpoints.clone(), fleet, config.signing_key, budget, rate);
        Self::bind(config.addr, state).await
    }

    /// Binds `addr` (port 0 allowed) to serve `state`.
    pub async fn bind(addr: std::net::SocketAddr, state: AppState) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        Ok(Self { listener, state, port })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown`, drains in-flight requests, then waits a bounded time for running
    /// operations (an operation cut here is reported as failed and can be started again).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self { listener, state, port } = self;
        tracing::info!(port, "admin API listening");
        let served = axum::serve(listener, router(state.clone()))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("HTTP server failed");
        state.tasks.close();
        if tokio::time::timeout(OPERATIONS_DRAIN, state.tasks.wait()).await.is_err() {
            tracing::warn!("operations still running at exit; they will be reported as failed");
        }
        served
    }
}

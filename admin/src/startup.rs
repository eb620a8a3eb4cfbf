//! Wiring: the router (authenticated `/v1` routes, health, `/openapi.json`, problem fallbacks,
//! body limit, no-store, request log), and the application: check the database role, bind, serve
//! until told to stop, then give background operations a bounded time to finish.
//!
//! There is deliberately no CORS layer: browsers on other origins get no access.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::http::header;
use axum::middleware;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use wafleet_fleet::db;
use wafleet_shared::server::{self, ServerLimits};

use crate::config::{Config, BODY_LIMIT_BYTES};
use crate::problem::{ApiError, Kind};
use crate::state::{AppState, ConsoleSettings, RateLimit};
use crate::{edge, metric, openapi};

/// How long background operations may run on after the server stopped.
const OPERATIONS_DRAIN: Duration = Duration::from_secs(20);

/// How long shutdown waits for in-flight requests: longer than a request that waits for send
/// budget (`WAFLEET_ADMIN_BUDGET_WAIT_SECS`, 10 s by default) takes.
const REQUEST_DRAIN: Duration = Duration::from_secs(25);

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
        .merge(crate::console::router(state.clone()))
        .route("/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], document_json()) }))
        .fallback(|| async { ApiError::new(Kind::NotFound, "no such endpoint; see /openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(Kind::MethodNotAllowed, "this endpoint does not take this method; see /openapi.json")
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        // Outer layers run first: log and count every answer, then the address limit, before
        // the token of a /v1 request is read.
        .layer(middleware::from_fn_with_state(state.clone(), edge::limit_address))
        .layer(middleware::from_fn(edge::log_and_harden))
        .with_state(state)
}

/// The ops port: `/metrics` (Prometheus text, empty without a recorder) and `/healthz`. No
/// token and no API route, so it can be opened to the scraper alone.
pub fn ops_router(metrics: Option<PrometheusHandle>) -> Router {
    Router::new().route("/healthz", get(|| async { "ok" })).route(
        "/metrics",
        get(move || {
            let text = metrics.as_ref().map(PrometheusHandle::render).unwrap_or_default();
            async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
        }),
    )
}

/// Where and how the application serves.
#[derive(Clone, Copy, Debug)]
pub struct Listen {
    /// The API port.
    pub addr: SocketAddr,
    /// The ops port.
    pub ops_addr: SocketAddr,
    /// Header-read timeout and connection cap of the API port (the ops port has its own small cap).
    pub header_timeout: Duration,
    /// Open connections of the API port at most.
    pub max_connections: usize,
}

/// Open connections of the ops port at most: a scraper and probes need a few.
const OPS_MAX_CONNECTIONS: usize = 16;

/// A bound, ready-to-run admin API.
pub struct Application {
    listener: TcpListener,
    ops_listener: TcpListener,
    state: AppState,
    port: u16,
    ops_port: u16,
    limits: ServerLimits,
    metrics: Option<PrometheusHandle>,
}

impl Application {
    /// Opens the administration role's pool (refusing an unsafe role, like the CLI), builds the fleet
    /// context and binds `config.addr` and `config.ops_addr`; `/metrics` renders empty.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_metrics(config, None).await
    }

    /// Like [`Application::build`], with `/metrics` rendered from `metrics`.
    pub async fn build_with_metrics(config: Config, metrics: Option<PrometheusHandle>) -> anyhow::Result<Self> {
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
        let rates = (rate, config.address_rate);
        let console = ConsoleSettings {
            session_lifetime: config.console_session,
            // A browser reaches a loopback admin over plain HTTP; anywhere else through TLS.
            secure_cookie: !config.addr.ip().is_loopback(),
        };
        let state = AppState::new(pool, config.endpoints.clone(), fleet, config.signing_key, budget, rates)
            .with_console(console);
        let listen = Listen {
            addr: config.addr,
            ops_addr: config.ops_addr,
            header_timeout: config.header_timeout,
            max_connections: config.max_connections,
        };
        Self::bind(listen, state, metrics).await
    }

    /// Binds both ports of `listen` (port 0 allowed) to serve `state`.
    pub async fn bind(listen: Listen, state: AppState, metrics: Option<PrometheusHandle>) -> anyhow::Result<Self> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))
        };
        let listener = bind(listen.addr).await?;
        let ops_listener = bind(listen.ops_addr).await?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let ops_port = ops_listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let limits = ServerLimits {
            header_read_timeout: listen.header_timeout,
            max_connections: listen.max_connections,
            drain_timeout: REQUEST_DRAIN,
        };
        Ok(Self { listener, ops_listener, state, port, ops_port, limits, metrics })
    }

    /// The bound API port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bound ops port.
    pub fn ops_port(&self) -> u16 {
        self.ops_port
    }

    /// Serves until `shutdown`, drains in-flight requests, then waits a bounded time for running
    /// operations (an operation cut here is reported as failed and can be started again).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self { listener, ops_listener, state, port, ops_port, limits, metrics } = self;
        tracing::info!(port, ops_port, "admin API listening");
        metric::describe();
        let ops_limits = ServerLimits { max_connections: OPS_MAX_CONNECTIONS, ..limits };
        let ops = tokio::spawn(server::serve(
            ops_listener,
            {
                let ops = ops_router(metrics);
                move |_| ops.clone()
            },
            ops_limits,
            shutdown.clone(),
        ));
        let api = router(state.clone());
        // The peer address is what the per-address rate limit keys on.
        let with_peer = move |peer: SocketAddr| {
            api.clone().map_request(move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            })
        };
        server::serve(listener, with_peer, limits, shutdown).await;
        let _ = ops.await;
        state.tasks.close();
        if tokio::time::timeout(OPERATIONS_DRAIN, state.tasks.wait()).await.is_err() {
            tracing::warn!("operations still running at exit; they will be reported as failed");
        }
        Ok(())
    }
}

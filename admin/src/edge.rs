//! What every request of the API port passes before its route runs, outermost first: the
//! request log and metrics (one line and one count per answer, whatever answered), then the
//! per-address rate limit, checked before any token is read, so an unauthenticated flood is
//! refused without a database lookup.
//!
//! Must not authenticate or know any route: the route label is axum's matched path template.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock as _, DefaultClock};
use tracing::Instrument as _;

use crate::metric;
use crate::problem::{ApiError, Kind};
use crate::state::AppState;

/// The client's address, as the accept loop saw it. Never a forwarded header: those are the
/// client's word. Behind a proxy every client shares the proxy's address (see the docs).
/// Router tests without a connection share the unspecified address.
fn client_address(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(peer)| peer.ip())
}

/// The per-address rate limit: over it → 429 `rate-limited` with `Retry-After`, before the
/// token is looked at.
pub async fn limit_address(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    let address = client_address(&request);
    if let Err(not_until) = state.address_limiter.check_key(&address) {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        return Err(ApiError::new(Kind::RateLimited, "this client address is over its rate limit")
            .retry_after(wait.as_secs() + 1));
    }
    Ok(next.run(request).await)
}

/// One span, one log line and one count per request (method, route template, status, latency,
/// token name; never the raw path, the query string, a header or a body), and
/// `Cache-Control: no-store` on every answer: some carry credentials (webhook URLs) or personal
/// data.
pub async fn log_and_harden(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| metric::UNMATCHED_ROUTE.to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!("request", method = %request.method(), route, token = tracing::field::Empty);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let elapsed = started.elapsed();
    metric::record(&route, response.status().as_u16(), elapsed);
    span.in_scope(|| {
        tracing::info!(status = response.status().as_u16(), ms = elapsed.as_millis() as u64, "admin request");
    });
    response
}

//! The gate in front of every `/api/*` route. In this order, which is part of the contract:
//! name the client (peer address, or the `client_ip_header` value), charge the per-IP floor —
//! a request refused there is answered 429 at once and never reaches its route, so it costs no
//! per-key quota — run the route, apply the `error_statuses` setting to a guessed status, and log
//! the call with the status actually answered. The `/_sim` control API is never behind it.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use tokio::time::Instant;

use crate::api::bearer_key;
use crate::calls::ApiCall;
use crate::error::UndocumentedStatus;
use crate::limiter::Bucket;
use crate::{ErrorStatuses, SimConfig, Simulator};

/// Axum middleware for the `/api` router (see the module comment for the order of checks).
pub(crate) async fn api_gate(State(sim): State<Simulator>, request: Request, next: Next) -> Response {
    let arrived = Instant::now();
    let at = Utc::now();
    let bucket = bucket_of(request.method(), request.uri().path());
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip());
    let (client, api_key, floor) = {
        let mut state = sim.lock();
        let client = client_address(&state.config, request.headers(), peer);
        let api_key = bearer_key(request.headers()).filter(|k| state.is_known_key(k)).map(str::to_owned);
        let floor = state.admit_ip(&client, bucket, arrived);
        (client, api_key, floor)
    };
    let mut response = match floor {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    };
    let mut state = sim.lock();
    if state.config.error_statuses == ErrorStatuses::Uniform
        && response.extensions().get::<UndocumentedStatus>().is_some()
    {
        // `validate` keeps the setting a real error status; 400 only guards the conversion.
        *response.status_mut() =
            StatusCode::from_u16(state.config.uniform_error_status).unwrap_or(StatusCode::BAD_REQUEST);
    }
    let status = response.status().as_u16();
    state.calls.push(arrived, ApiCall { at, api_key, client, bucket, status });
    response
}

/// The per-key bucket of an `/api/*` request, from its method and raw path, the same split the
/// routes in `api` charge (a unit test pins each route).
pub(crate) fn bucket_of(method: &Method, path: &str) -> Bucket {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", "instances"] if method == Method::POST => Bucket::Provision,
        // Like the router: a path parameter and a catch-all never match an empty segment.
        ["api", "instances", key, "proxy", rest @ ..] if !key.is_empty() && rest.iter().any(|s| !s.is_empty()) => {
            Bucket::Proxy
        }
        _ => Bucket::Other,
    }
}

/// Who the per-IP floor counts a request under: the configured header's value when present and
/// non-empty, else the peer's IP address (without the port, which differs per connection).
fn client_address(config: &SimConfig, headers: &HeaderMap, peer: Option<IpAddr>) -> String {
    let from_header = config
        .client_ip_header
        .as_deref()
        .and_then(|name| headers.get(name))
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty());
    match (from_header, peer) {
        (Some(named), _) => named.to_owned(),
        (None, Some(ip)) => ip.to_string(),
        // Only a router driven without a listener (no `ConnectInfo`) gets here.
        (None, None) => "unknown".to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn each_route_maps_to_the_bucket_its_handler_charges() {
        assert_eq!(bucket_of(&Method::POST, "/api/instances"), Bucket::Provision);
        assert_eq!(bucket_of(&Method::GET, "/api/instances"), Bucket::Other);
        assert_eq!(bucket_of(&Method::GET, "/api/instances/42"), Bucket::Other);
        assert_eq!(bucket_of(&Method::DELETE, "/api/instances/cust_1"), Bucket::Other);
        assert_eq!(bucket_of(&Method::GET, "/api/instances/cust_1/proxy/status"), Bucket::Proxy);
        assert_eq!(bucket_of(&Method::POST, "/api/instances/a%2Fb/proxy/send/text"), Bucket::Proxy);
        assert_eq!(bucket_of(&Method::GET, "/api/instances/cust_1/proxy/qr"), Bucket::Proxy);
        assert_eq!(bucket_of(&Method::GET, "/api/contacts"), Bucket::Other);
        // These fall through to the `/api/{*rest}` route, which charges "other".
        assert_eq!(bucket_of(&Method::GET, "/api/instances/cust_1/proxy"), Bucket::Other);
        assert_eq!(bucket_of(&Method::GET, "/api/instances//proxy/status"), Bucket::Other);
    }

    #[test]
    fn the_client_header_names_the_client_only_when_configured_and_non_empty() {
        let peer = Some("127.0.0.1".parse().unwrap());
        let mut headers = HeaderMap::new();
        headers.insert("x-client-ip", "203.0.113.7".parse().unwrap());
        let plain = SimConfig::default();
        assert_eq!(client_address(&plain, &headers, peer), "127.0.0.1");
        let with_header = SimConfig { client_ip_header: Some("x-client-ip".into()), ..SimConfig::default() };
        assert_eq!(client_address(&with_header, &headers, peer), "203.0.113.7");
        headers.insert("x-client-ip", " ".parse().unwrap());
        assert_eq!(client_address(&with_header, &headers, peer), "127.0.0.1");
        assert_eq!(client_address(&with_header, &HeaderMap::new(), None), "unknown");
    }
}

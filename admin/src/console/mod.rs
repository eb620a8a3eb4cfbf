//! The fleet console: server-rendered pages under `/console` on the admin API's port, for the
//! three things operators do every day: look at one tenant, watch queue depth, replay dead
//! letters. It signs in with an admin token (a session cookie then stands for it), acts through
//! the same service functions as the API and the CLI, needs the same scopes as the API route it
//! mirrors ([`api_route`]), and writes the same audit records with the token's name.
//!
//! Reading works without JavaScript; the vendored htmx refreshes the depth panels and uPlot
//! draws the live charts, both served by this binary. A Content-Security-Policy allows scripts,
//! styles and requests from this origin only, and maud escapes everything a tenant or a message
//! controls.

pub mod actions;
pub mod assets;
pub mod fleet;
pub mod layout;
pub mod samples;
pub mod series;
pub mod session;
pub mod tenant;
pub mod tenants;

use axum::http::{header, HeaderValue, Method};
use axum::middleware;
use axum::response::Redirect;
use axum::routing::{get, post};
use axum::Router;
use wafleet_fleet::admin_tokens::Scope;

use crate::state::AppState;

/// The API route whose scopes each console route needs: `(method, console route, API route)`.
/// A guarded console route that is not here needs every scope (fail closed); a test checks that
/// every API route named here has scopes, and the router tests that every route here refuses a
/// request without a session.
pub const API_ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/console", "/v1/depth"),
    ("GET", "/console/fleet", "/v1/depth"),
    ("GET", "/console/fleet/panel", "/v1/depth"),
    ("GET", "/console/fleet/series", "/v1/depth"),
    ("GET", "/console/tenants", "/v1/tenants"),
    ("GET", "/console/tenants/{customer_ref}", "/v1/tenants/{customer_ref}"),
    ("GET", "/console/tenants/{customer_ref}/depth", "/v1/tenants/{customer_ref}/depth"),
    ("GET", "/console/tenants/{customer_ref}/series", "/v1/tenants/{customer_ref}/depth"),
    ("GET", "/console/audit", "/v1/audit"),
    ("POST", "/console/sign-out", "/v1/tenants"),
    ("POST", "/console/tenants/{customer_ref}/disable", "/v1/tenants/{customer_ref}/disable"),
    ("POST", "/console/tenants/{customer_ref}/enable", "/v1/tenants/{customer_ref}/enable"),
    ("POST", "/console/tenants/{customer_ref}/rotate-url", "/v1/tenants/{customer_ref}/rotate-url"),
    ("POST", "/console/tenants/{customer_ref}/webhook-url", "/v1/tenants/{customer_ref}/webhook-url"),
    ("POST", "/console/tenants/{customer_ref}/bridge-status", "/v1/tenants/{customer_ref}/bridge-status"),
    ("POST", "/console/tenants/{customer_ref}/dlq/replay", "/v1/tenants/{customer_ref}/dlq/replay"),
    ("POST", "/console/tenants/{customer_ref}/dlq/purge", "/v1/tenants/{customer_ref}/dlq/purge"),
];

/// The scopes the console route `route` (a template) needs for `method`: those of the API route
/// it mirrors, read with the API's method (reading the webhook URL and a live bridge status are
/// POSTs here, as actions, and GETs there). `pii` for message bodies is decided by the page.
pub fn required(method: &Method, route: &str) -> Option<Vec<Scope>> {
    if (method, route) == (&Method::POST, "/console/sign-out") {
        // Ending one's own session needs no power at all.
        return Some(Vec::new());
    }
    let (_, _, api) = API_ROUTES.iter().find(|(m, r, _)| *m == method.as_str() && *r == route)?;
    let api_method = match *api {
        "/v1/tenants/{customer_ref}/webhook-url" | "/v1/tenants/{customer_ref}/bridge-status" => Method::GET,
        _ => method.clone(),
    };
    crate::scopes::required(&api_method, api, false)
}

/// The Content-Security-Policy of every console answer: this origin's scripts, styles, images
/// and requests only; no inline script or style, no frames, forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes: the sign-in page and the assets are open; everything else passes
/// [`session::require`].
pub fn router(state: AppState) -> Router<AppState> {
    let guarded = Router::new()
        .route("/console", get(|| async { Redirect::to("/console/fleet") }))
        .route("/console/fleet", get(fleet::page))
        .route("/console/fleet/panel", get(fleet::panel))
        .route("/console/fleet/series", get(series::fleet))
        .route("/console/tenants", get(tenants::page))
        .route("/console/tenants/{customer_ref}", get(tenant::page))
        .route("/console/tenants/{customer_ref}/depth", get(tenant::depth_panel))
        .route("/console/tenants/{customer_ref}/series", get(series::tenant))
        .route("/console/audit", get(tenants::audit))
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/tenants/{customer_ref}/disable", post(actions::disable))
        .route("/console/tenants/{customer_ref}/enable", post(actions::enable))
        .route("/console/tenants/{customer_ref}/rotate-url", post(actions::rotate_url))
        .route("/console/tenants/{customer_ref}/webhook-url", post(actions::webhook_url))
        .route("/console/tenants/{customer_ref}/bridge-status", post(actions::bridge_status))
        .route("/console/tenants/{customer_ref}/dlq/replay", post(actions::replay))
        .route("/console/tenants/{customer_ref}/dlq/purge", post(actions::purge))
        .route_layer(middleware::from_fn_with_state(state, session::require));
    Router::new()
        .route("/console/sign-in", get(session::sign_in_page).post(session::sign_in))
        .route("/console/assets/{name}", get(assets::serve))
        .merge(guarded)
        .layer(middleware::map_response(|mut response: axum::response::Response| async move {
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
            headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            // Not `no-referrer`: with it a browser sends `Origin: null` on a form post, which the
            // same-origin check of the forms refuses.
            headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            response
        }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_console_route_mirrors_an_api_route_with_scopes() {
        for (method, route, api) in API_ROUTES {
            let method: Method = method.parse().unwrap();
            assert!(required(&method, route).is_some(), "{method} {route} → {api} has no scopes");
        }
        assert_eq!(required(&Method::GET, "/console/tenants").unwrap(), [Scope::Read]);
        assert_eq!(required(&Method::POST, "/console/tenants/{customer_ref}/dlq/replay").unwrap(), [Scope::Write]);
        assert_eq!(
            required(&Method::POST, "/console/tenants/{customer_ref}/webhook-url").unwrap(),
            [Scope::Credentials]
        );
        assert!(required(&Method::POST, "/console/sign-out").unwrap().is_empty());
        assert!(required(&Method::POST, "/console/tenants").is_none());
    }
}

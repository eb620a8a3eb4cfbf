//! Signing in and out, and the guard of every console route but the sign-in page and the
//! assets: a live session (else back to sign-in), the token's rate limit, the scopes of the API
//! route the console route mirrors (else 403), and for a POST the same origin and the session's
//! CSRF token (else 403), all before the handler runs.

use axum::body::{to_bytes, Body};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use governor::clock::{Clock as _, DefaultClock};
use maud::html;
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq as _;
use wafleet_fleet::admin_tokens::{self, session};
use wafleet_fleet::audit::{Entry, Outcome};

use super::layout::{self, PageError, Viewer};
use crate::auth::Caller;
use crate::config::BODY_LIMIT_BYTES;
use crate::problem::{ApiError, Kind};
use crate::state::AppState;

/// The session cookie's name over HTTPS: the `__Secure-` prefix makes a browser refuse it from a
/// page that is not HTTPS, so a plain-HTTP neighbour cannot plant one.
pub const SECURE_COOKIE: &str = "__Secure-wafleet_console";

/// The session cookie's name on a loopback admin (plain HTTP).
pub const LOOPBACK_COOKIE: &str = "wafleet_console";

fn cookie_name(state: &AppState) -> &'static str {
    if state.console.secure_cookie {
        SECURE_COOKIE
    } else {
        LOOPBACK_COOKIE
    }
}

/// The session secret of the request's cookie `name`, if it has exactly one: two cookies of that
/// name mean one was planted (by a sibling domain, say), and neither is trusted.
fn session_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, value)| value);
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// Whether a browser's `Origin` names this server (by its `Host`). A request without `Origin`
/// (not a browser, or a same-origin GET) passes; the CSRF token still guards it.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o == h)
}

/// The `Set-Cookie` value of a session `secret` living `max_age`; `Secure` unless `secure` is off
/// (an admin listening on loopback, where a browser may use plain HTTP).
fn cookie(state: &AppState, secret: &str, max_age: u64) -> Option<HeaderValue> {
    let secure = if state.console.secure_cookie { "; Secure" } else { "" };
    let name = cookie_name(state);
    HeaderValue::from_str(&format!(
        "{name}={secret}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .ok()
}

/// Back to the sign-in page: a redirect, or for an htmx refresh (which would swap the sign-in
/// page into a panel) 401 with `HX-Redirect`, which htmx follows as a whole-page navigation.
fn to_sign_in(request: &Request) -> Response {
    if request.headers().contains_key("hx-request") {
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        response.headers_mut().insert("hx-redirect", HeaderValue::from_static("/console/sign-in"));
        return response;
    }
    Redirect::to("/console/sign-in").into_response()
}

/// The guard (see the module).
pub async fn require(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, PageError> {
    let Some(secret) = session_cookie(request.headers(), cookie_name(&state)).map(str::to_owned) else {
        return Ok(to_sign_in(&request));
    };
    let Some(caller) = session::authenticate(&state.pool, &secret).await? else { return Ok(to_sign_in(&request)) };
    if let Err(not_until) = state.limiter.check_key(&caller.token_id) {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let limited = ApiError::new(Kind::RateLimited, format!("token {} is over its rate limit", caller.name));
        return Err(PageError(limited.retry_after(wait.as_secs() + 1)));
    }
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let needed = super::required(request.method(), &route).unwrap_or_else(|| admin_tokens::Scope::ALL.to_vec());
    let missing = caller.scopes.missing(&needed);
    if !missing.is_empty() {
        let names = missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        return Err(PageError::new(Kind::InsufficientScope, format!("token {} lacks the scope {names}", caller.name)));
    }
    let csrf = session::csrf_token(&secret);
    let request = if request.method() == Method::POST {
        match checked_form(request, &csrf).await? {
            Ok(request) => request,
            Err(refused) => return Ok(refused),
        }
    } else {
        request
    };
    tracing::Span::current().record("token", caller.name.as_str());
    let caller = Caller { token_id: caller.token_id, name: caller.name, scopes: caller.scopes };
    let mut request = request;
    request.extensions_mut().insert(Viewer { caller: caller.clone(), csrf });
    request.extensions_mut().insert(caller);
    request.extensions_mut().insert(SessionSecret(secret));
    Ok(next.run(request).await)
}

/// The cookie's session secret, for signing out.
#[derive(Clone)]
pub struct SessionSecret(String);

/// A POST's body, checked for the same origin and the session's CSRF token, and handed on; or
/// the 403 page of a form that is not from this session.
async fn checked_form(request: Request, csrf: &str) -> Result<Result<Request, Response>, PageError> {
    let forged = || {
        let body = html! { p.error role="alert" { "This form is not from this console session. Reload the page and try again." } };
        layout::with_status(StatusCode::FORBIDDEN, layout::page("Form refused", None, body))
    };
    if !same_origin(request.headers()) {
        return Ok(Err(forged()));
    }
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, BODY_LIMIT_BYTES)
        .await
        .map_err(|_| PageError::new(Kind::PayloadTooLarge, "the form is over 64 KiB"))?;
    let presented = url::form_urlencoded::parse(&bytes).find(|(k, _)| k == "csrf").map(|(_, v)| v.into_owned());
    Ok(match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(csrf.as_bytes())) => {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        _ => Err(forged()),
    })
}

/// `GET /console/sign-in`.
pub async fn sign_in_page() -> Response {
    sign_in_form(StatusCode::OK, None)
}

fn sign_in_form(status: StatusCode, error: Option<&str>) -> Response {
    let body = html! {
        @if let Some(error) = error { p.error role="alert" { (error) } }
        form method="post" action="/console/sign-in" {
            label for="token" { "Admin token" }
            input #token type="password" name="token" autocomplete="off" required autofocus;
            button type="submit" { "Sign in" }
        }
        p.hint { "Create a token with " code { "wafleet admin-tokens create" } ". The console acts with its scopes and records its name in the audit log." }
    };
    layout::with_status(status, layout::page("Sign in", None, body))
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct SignIn {
    token: String,
}

/// `POST /console/sign-in`: a live token opens a session and sets its cookie.
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Result<Response, PageError> {
    if !same_origin(&headers) {
        return Ok(sign_in_form(StatusCode::FORBIDDEN, Some("sign in from this console's own page")));
    }
    let Some(caller) = admin_tokens::authenticate(&state.pool, form.token.trim()).await? else {
        return Ok(sign_in_form(StatusCode::UNAUTHORIZED, Some("that is not a live admin token")));
    };
    if !caller.scopes.contains(admin_tokens::Scope::Read) {
        let refused = format!("token {} lacks the read scope every console page needs", caller.name);
        return Ok(sign_in_form(StatusCode::FORBIDDEN, Some(&refused)));
    }
    // A session this browser already had ends: one sign-in, one session.
    if let Some(previous) = session_cookie(&headers, cookie_name(&state)) {
        session::close(&state.pool, previous).await?;
    }
    let secret = session::open(&state.pool, caller.token_id, state.console.session_lifetime).await?;
    let actor = wafleet_fleet::audit::Actor::admin_token(&caller.name);
    let entry = Entry::new("console sign-in", None, json!({}));
    wafleet_fleet::audit::record(&state.pool, &actor, &entry, Outcome::Ok, None).await.map_err(ApiError::audit)?;
    let mut response = Redirect::to("/console/fleet").into_response();
    if let Some(value) = cookie(&state, secret.expose_secret(), state.console.session_lifetime.as_secs()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// `POST /console/sign-out`: ends the session and clears its cookie.
pub async fn sign_out(
    State(state): State<AppState>,
    Extension(SessionSecret(secret)): Extension<SessionSecret>,
) -> Result<Response, PageError> {
    session::close(&state.pool, &secret).await?;
    let mut response = Redirect::to("/console/sign-in").into_response();
    if let Some(value) = cookie(&state, "", 0) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_session_cookie_is_found_among_others_by_its_name_and_only_when_alone() {
        let h = headers(&[("cookie", "a=1; wafleet_console=wfs_x; b=2")]);
        assert_eq!(session_cookie(&h, LOOPBACK_COOKIE), Some("wfs_x"));
        assert_eq!(session_cookie(&h, SECURE_COOKIE), None);
        assert_eq!(session_cookie(&headers(&[("cookie", "xwafleet_console=1")]), LOOPBACK_COOKIE), None);
        assert_eq!(session_cookie(&HeaderMap::new(), LOOPBACK_COOKIE), None);
        let planted = headers(&[("cookie", "wafleet_console=wfs_planted"), ("cookie", "wafleet_console=wfs_x")]);
        assert_eq!(session_cookie(&planted, LOOPBACK_COOKIE), None, "two cookies of the name: neither is trusted");
    }

    #[test]
    fn a_foreign_origin_is_refused_and_a_missing_one_passes() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8082")])));
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8082"), ("origin", "http://127.0.0.1:8082")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8082"), ("origin", "http://evil.test")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8082"), ("origin", "null")])));
    }
}

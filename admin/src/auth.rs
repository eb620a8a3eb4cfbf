//! Authentication, rate limit and scopes of every `/v1` request, in that order: a bearer token
//! that names a live admin token (else 401), the token's rate limit (else 429), and every scope
//! the route needs ([`crate::scopes`], else 403, before anything is looked up). The
//! authenticated [`Caller`] is handed to the handler as an extension. A token is never logged;
//! its name is.

use axum::extract::MatchedPath;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock as _, DefaultClock};
use uuid::Uuid;
use wafleet_fleet::admin_tokens::{self, Scope, Scopes};
use wafleet_fleet::service::Actor;

use crate::problem::{ApiError, Kind};
use crate::state::AppState;

/// The caller of a request: the admin token it authenticated with.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Token id (the rate-limit and idempotency key).
    pub token_id: Uuid,
    /// Token name.
    pub name: String,
    /// What the token may do.
    pub scopes: Scopes,
}

impl Caller {
    /// The audit actor: `admin-token:<name>`.
    pub fn actor(&self) -> Actor {
        Actor::admin_token(&self.name)
    }

    /// Whether the token holds `scope`.
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(scope)
    }
}

/// The token of an `Authorization: Bearer <token>` header, if the header has that shape.
fn bearer(request: &Request) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Middleware of the `/v1` routes.
pub async fn authorize(State(state): State<AppState>, mut request: Request, next: Next) -> Result<Response, ApiError> {
    let unauthorized =
        || ApiError::new(Kind::Unauthorized, "send Authorization: Bearer <token> with a live admin token");
    let token = bearer(&request).ok_or_else(unauthorized)?;
    let caller = admin_tokens::authenticate(&state.pool, token).await?.ok_or_else(unauthorized)?;
    if let Err(not_until) = state.limiter.check_key(&caller.token_id) {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        return Err(ApiError::new(Kind::RateLimited, format!("token {} is over its rate limit", caller.name))
            .retry_after(wait.as_secs() + 1));
    }
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let bodies = crate::scopes::asks_for_bodies(request.uri().query());
    let needed = crate::scopes::required(request.method(), &route, bodies).unwrap_or_else(|| Scope::ALL.to_vec());
    let missing = caller.scopes.missing(&needed);
    if !missing.is_empty() {
        let names = |s: &[Scope]| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        return Err(ApiError::new(
            Kind::InsufficientScope,
            format!(
                "token {} lacks the scope {}: {} {route} needs {}",
                caller.name,
                names(&missing),
                request.method(),
                names(&needed)
            ),
        ));
    }
    tracing::Span::current().record("token", caller.name.as_str());
    request.extensions_mut().insert(Caller { token_id: caller.token_id, name: caller.name, scopes: caller.scopes });
    Ok(next.run(request).await)
}

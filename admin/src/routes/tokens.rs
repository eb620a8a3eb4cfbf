//! Admin tokens (`wafleet admin-tokens create|list|revoke`), for a token with the `admin` scope.
//! A token is shown once, in the answer that created it, and never stored with that answer (an
//! Idempotency-Key replay leaves it out). A token may only grant scopes it holds itself, so
//! token management cannot widen what its holder may do.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wafleet_fleet::admin_tokens::{self, Scope, Scopes};
use wafleet_fleet::audit::Entry;

use super::fleet::{key_page, PageQuery};
use super::{audited, ActionErrors, BadRequest, Body, CommonErrors, IdempotencyKey, Path, Query, WriteErrors};
use crate::auth::Caller;
use crate::dto::{AdminToken, AdminTokenPage, CreateToken, CreatedToken};
use crate::problem::{ApiError, Kind};
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_tokens, create_token)).routes(routes!(revoke_token))
}

/// Every token, live and revoked, by name; never a token (`wafleet admin-tokens list`).
#[utoipa::path(get, path = "/v1/admin-tokens", tag = "admin tokens", params(PageQuery),
    responses((status = 200, description = "The tokens", body = AdminTokenPage), BadRequest, CommonErrors))]
async fn list_tokens(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<Json<AdminTokenPage>, ApiError> {
    let tokens: Vec<AdminToken> = admin_tokens::list(&state.pool).await?.into_iter().map(AdminToken::from).collect();
    // A revoked token's name can be used again, so the key adds the creation time.
    let key =
        |t: &AdminToken| format!("{}|{}", t.created_at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true), t.name);
    let (items, next_cursor, next) = key_page(tokens, key, "k1", "/v1/admin-tokens", &query)?;
    Ok(Json(AdminTokenPage { items, next_cursor, next }))
}

/// Create a token (`wafleet admin-tokens create`): 201 with the token, shown once.
#[utoipa::path(post, path = "/v1/admin-tokens", tag = "admin tokens", params(IdempotencyKey),
    request_body = CreateToken,
    responses((status = 201, description = "Created; store the token as a secret", body = CreatedToken), WriteErrors))]
async fn create_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(request): Body<CreateToken>,
) -> Result<Response, ApiError> {
    let wanted: Vec<Scope> = request.scopes.iter().map(|s| Scope::from(*s)).collect();
    let beyond = caller.scopes.missing(&wanted);
    if !beyond.is_empty() {
        let names: Vec<&str> = beyond.iter().map(|s| s.as_str()).collect();
        return Err(ApiError::new(
            Kind::InsufficientScope,
            format!("token {} cannot grant scopes it does not hold: {}", caller.name, names.join(", ")),
        ));
    }
    let scopes = Scopes::of(wanted)?;
    let entry = Entry::new("admin-tokens create", Some(&request.name), json!({"scopes": scopes.names()}));
    let result = admin_tokens::create(&state.pool, &request.name, &scopes, caller.actor().as_str()).await;
    let (info, secret) = audited(&state, &caller, entry, false, result).await?;
    let created = CreatedToken { info: info.into(), token: Some(secret.expose_secret().to_owned()) };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// The `{name}` path segment.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    /// The token's name.
    #[param(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$", example = "ci-deploy")]
    pub name: String,
}

/// Revoke a live token (`wafleet admin-tokens revoke`): its next request gets 401.
#[utoipa::path(post, path = "/v1/admin-tokens/{name}/revoke", tag = "admin tokens", params(TokenPath, IdempotencyKey),
    responses((status = 200, description = "Revoked", body = AdminToken), ActionErrors))]
async fn revoke_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<TokenPath>,
) -> Result<Json<AdminToken>, ApiError> {
    let entry = Entry::new("admin-tokens revoke", Some(&path.name), json!({}));
    let result = admin_tokens::revoke(&state.pool, &path.name).await;
    Ok(Json(audited(&state, &caller, entry, false, result).await?.into()))
}

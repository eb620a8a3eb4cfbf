//! A tenant's webhook URL and bridge: `GET .../webhook-url`, `POST .../rotate-url`,
//! `POST .../provision` and `GET .../bridge-status`, each the service function behind the
//! matching CLI command. The URLs they return are credentials: answered with `no-store`, never
//! logged.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wafleet_fleet::admin_tokens::Scope;
use wafleet_fleet::audit::Entry;
use wafleet_fleet::service;
use wafleet_fleet::tenant::{TenantMeta, TenantStatus};

use super::{
    audited, parse_ref, BadRequest, Body, CommonErrors, Conflict, IdempotencyKey, NotFound, Path, Query, RefPath,
    Upstream, WriteErrors,
};
use crate::auth::Caller;
use crate::dto::{BaseUrl, BridgeStatus, Provisioned, WebhookUrl};
use crate::problem::ApiError;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_webhook_url))
        .routes(routes!(rotate_webhook_url))
        .routes(routes!(provision_bridge))
        .routes(routes!(get_bridge_status))
}

/// Query of `GET .../webhook-url`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BaseQuery {
    /// Public base URL of ingest, e.g. `https://hooks.example.com`.
    #[param(max_length = 2048, pattern = "^https?://", example = "https://hooks.example.com")]
    pub base: String,
}

fn webhook_url(customer_ref: &str, url: Option<String>, meta: &TenantMeta) -> WebhookUrl {
    let status = meta.status;
    let warning = match (&url, status) {
        (None, _) => Some(format!(
            "the new URL of {customer_ref} is shown only to a token with the credentials scope \
             (GET /v1/tenants/{customer_ref}/webhook-url)"
        )),
        (Some(_), TenantStatus::Active) => None,
        (Some(_), _) => {
            Some(format!("tenant {customer_ref} is {}; events sent to this URL are dropped", status.as_str()))
        }
    };
    WebhookUrl {
        customer_ref: customer_ref.to_owned(),
        url,
        status: status.into(),
        generation: meta.generation.to_db(),
        warning,
    }
}

/// The signed webhook URL to configure on the tenant's bridge (`wafleet webhook-url`). Needs
/// the `credentials` scope; every read is audited like a change.
#[utoipa::path(get, path = "/v1/tenants/{customer_ref}/webhook-url", tag = "bridges", params(RefPath, BaseQuery),
    responses((status = 200, description = "The URL (a credential)", body = WebhookUrl), BadRequest, NotFound, CommonErrors))]
async fn get_webhook_url(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RefPath>,
    Query(query): Query<BaseQuery>,
) -> Result<Json<WebhookUrl>, ApiError> {
    let entry = Entry::new("webhook-url", Some(&path.customer_ref), json!({"base": query.base}));
    let customer_ref = parse_ref(&path.customer_ref)?;
    service::check_base_url(&query.base)?;
    let result = async {
        let meta = service::require_tenant(&state.pool, &customer_ref).await?;
        let url = service::signed_url(state.signing_key()?, &customer_ref, meta.generation, &query.base)?;
        Ok(webhook_url(customer_ref.as_str(), Some(url), &meta))
    }
    .await;
    Ok(Json(audited(&state, &caller, entry, false, result).await?))
}

/// Revoke the tenant's webhook URL (next generation) and return the new one
/// (`wafleet tenants rotate-url`). Set it on the bridge in the WA Bridges dashboard. Needs
/// `write`; the new URL is in the answer only when the token also has `credentials`.
#[utoipa::path(post, path = "/v1/tenants/{customer_ref}/rotate-url", tag = "bridges", params(RefPath, IdempotencyKey),
    request_body = BaseUrl,
    responses((status = 200, description = "The new URL (a credential); the previous one no longer works",
        body = WebhookUrl,
        links(
            ("ReadUrl" = (operation_id = "get_webhook_url",
                parameters(("customer_ref" = "$response.body#/customer_ref")))),
            ("Offboard" = (operation_id = "offboard_tenant",
                parameters(("customer_ref" = "$response.body#/customer_ref"))))
        )), WriteErrors))]
async fn rotate_webhook_url(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RefPath>,
    Body(request): Body<BaseUrl>,
) -> Result<Json<WebhookUrl>, ApiError> {
    let entry = Entry::new("tenants rotate-url", Some(&path.customer_ref), json!({"base": request.base}));
    let customer_ref = parse_ref(&path.customer_ref)?;
    service::check_base_url(&request.base)?;
    let result = async {
        service::rotate_url(&state.pool, state.signing_key()?, &customer_ref, &request.base).await?;
        // URL and generation from one read, so the answer (and a replay of it) agree.
        let meta = service::require_tenant(&state.pool, &customer_ref).await?;
        let url = service::signed_url(state.signing_key()?, &customer_ref, meta.generation, &request.base)?;
        Ok(webhook_url(customer_ref.as_str(), caller.may(Scope::Credentials).then_some(url), &meta))
    }
    .await;
    Ok(Json(audited(&state, &caller, entry, false, result).await?))
}

/// Create the tenant's bridge at WA Bridges with its signed webhook URL (`wafleet provision`).
/// Idempotent: an existing bridge is returned unchanged (its webhook URL is not updated).
#[utoipa::path(post, path = "/v1/tenants/{customer_ref}/provision", tag = "bridges", params(RefPath, IdempotencyKey),
    request_body = BaseUrl,
    responses((status = 200, description = "Provisioned (or already provisioned)", body = Provisioned), WriteErrors))]
async fn provision_bridge(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RefPath>,
    Body(request): Body<BaseUrl>,
) -> Result<Json<Provisioned>, ApiError> {
    let entry = Entry::new("provision", Some(&path.customer_ref), json!({"base": request.base}));
    let customer_ref = parse_ref(&path.customer_ref)?;
    service::check_base_url(&request.base)?;
    let result =
        async { service::provision(&state.fleet, state.signing_key()?, &customer_ref, &request.base).await }.await;
    Ok(Json(audited(&state, &caller, entry, false, result).await?.into()))
}

/// The bridge's session status at WA Bridges (`wafleet bridges status`). Spends one proxy token
/// of the tenant's account, like a send, so it needs the `write` scope.
#[utoipa::path(get, path = "/v1/tenants/{customer_ref}/bridge-status", tag = "bridges", params(RefPath),
    responses((status = 200, description = "The bridge's status", body = BridgeStatus), BadRequest, NotFound, Conflict, Upstream, CommonErrors))]
async fn get_bridge_status(
    State(state): State<AppState>,
    Path(path): Path<RefPath>,
) -> Result<Json<BridgeStatus>, ApiError> {
    let customer_ref = parse_ref(&path.customer_ref)?;
    let status = service::bridge_status(&state.fleet, &customer_ref).await?;
    Ok(Json(BridgeStatus { customer_ref: customer_ref.to_string(), status }))
}

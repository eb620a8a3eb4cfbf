//! `/v1/tenants`: list, create (idempotent), show, disable, enable, offboard (asynchronous),
//! export, erase and limits. Each calls the service function behind the matching `wafleet tenants`
//! command and writes the same audit record, with the token as actor.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wafleet_fleet::audit::Entry;
use wafleet_fleet::tenant::{BotKind, NewTenant, TenantStatus};
use wafleet_fleet::{bot_settings, service};
use wafleet_shared::topology::QueueType;
use wafleet_shared::AuthMode;

use super::{
    audited, limit, next_link, parse_ref, ActionErrors, BadRequest, Body, CommonErrors, IdempotencyKey, NotFound, Path,
    Query, RefPath, WriteErrors,
};
use crate::auth::Caller;
use crate::dto::{
    BotSet, CreateTenant, CreatedTenant, EraseRequest, Erasure, ExportRow, Operation, SetBot, SetGroups, SetLimits,
    Tenant, TenantDetail, TenantPage,
};
use crate::idempotency::{self, Begin};
use crate::operations;
use crate::problem::{ApiError, Kind};
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tenants, create_tenant))
        .routes(routes!(get_tenant))
        .routes(routes!(disable_tenant))
        .routes(routes!(enable_tenant))
        .routes(routes!(offboard_tenant))
        .routes(routes!(export_tenant))
        .routes(routes!(erase_contact))
        .routes(routes!(set_bot))
        .routes(routes!(set_groups))
        .routes(routes!(set_limits))
}

/// Query of `GET /v1/tenants`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(max_length = 400)]
    pub cursor: Option<String>,
}

/// Tag of tenant-list cursors (see [`wafleet_fleet::paging`]).
const CURSOR_TAG: &str = "t1";

fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    wafleet_fleet::paging::decode(CURSOR_TAG, cursor)
        .ok()
        .filter(|r| parse_ref(r).is_ok())
        .ok_or_else(|| ApiError::new(Kind::InvalidRequest, "cursor is not one this API returned"))
}

/// List tenants, in ref order, one page at a time (`wafleet tenants list`).
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", params(ListQuery),
    responses((status = 200, description = "One page of tenants", body = TenantPage), BadRequest, CommonErrors))]
async fn list_tenants(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<TenantPage>, ApiError> {
    let limit = limit(query.limit, 50, 500)?;
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let mut tenants = service::list_tenants_page(&state.pool, after.as_deref(), limit + 1).await?;
    let next_cursor = if tenants.len() > limit as usize {
        tenants.truncate(limit as usize);
        tenants.last().map(|t| wafleet_fleet::paging::encode(CURSOR_TAG, t.customer_ref.as_str()))
    } else {
        None
    };
    let next = next_cursor.as_deref().map(|c| next_link("/v1/tenants", &[("limit", Some(limit.to_string()))], c));
    Ok(Json(TenantPage { items: tenants.into_iter().map(Tenant::from).collect(), next_cursor, next }))
}

/// Add a tenant and declare its queue (`wafleet tenants add`). Idempotent for an identical
/// tenant (200); with an `Idempotency-Key`, the same key and body get the same answer again.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants",
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
        description = "Makes retries safe: the same key with the same body gets the first answer again")),
    request_body = CreateTenant,
    responses(
        (status = 201, description = "Created", body = CreatedTenant,
            headers(("Location" = String, description = "The tenant")),
            // The lifecycle a client (and Schemathesis' stateful phase) follows from here:
            // rotate the URL, read it, offboard.
            links(
                ("RotateUrl" = (operation_id = "rotate_webhook_url",
                    parameters(("customer_ref" = "$response.body#/customer_ref")))),
                ("ReadUrl" = (operation_id = "get_webhook_url",
                    parameters(("customer_ref" = "$response.body#/customer_ref")))),
                ("Offboard" = (operation_id = "offboard_tenant",
                    parameters(("customer_ref" = "$response.body#/customer_ref"))))
            )),
        (status = 200, description = "An identical tenant existed; nothing changed", body = CreatedTenant),
        WriteErrors))]
async fn create_tenant(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Body(request): Body<CreateTenant>,
) -> Result<Response, ApiError> {
    let Some(key) = idempotency::key_of(&headers)? else {
        return create(&state, &caller, &request).await.map(created_response);
    };
    let hash = idempotency::request_hash("POST /v1/tenants", &request);
    match idempotency::begin(&state.pool, caller.token_id, &key, &hash).await?? {
        Begin::Replay { status, body } => Ok(replayed(status, body)),
        Begin::Run => {
            let result = create(&state, &caller, &request).await;
            let (status, body) = match &result {
                // The bot secret is shown once: it is never stored for a replay.
                Ok((status, created)) => (*status, json!(CreatedTenant { bot_secret: None, ..created.clone() })),
                Err(e) => (e.status(), json!(e.problem())),
            };
            let stored = if status.is_server_error() {
                idempotency::release(&state.pool, caller.token_id, &key).await
            } else {
                idempotency::complete(&state.pool, caller.token_id, &key, status, &body).await
            };
            if let Err(e) = stored {
                tracing::warn!(error = %crate::problem::error_chain(&e), "idempotency record not updated");
            }
            result.map(created_response)
        }
    }
}

async fn create(
    state: &AppState,
    caller: &Caller,
    request: &CreateTenant,
) -> Result<(StatusCode, CreatedTenant), ApiError> {
    let (bot, auth, queue_type): (BotKind, AuthMode, QueueType) =
        (request.bot.into(), request.auth.into(), request.queue_type.into());
    let bridge = request.bridge.clone().unwrap_or_else(|| request.customer_ref.clone());
    let entry = Entry::new(
        "tenants add",
        Some(&request.customer_ref),
        json!({"bridge": bridge, "bot": bot.as_str(), "auth": auth.as_str(),
               "queue_type": queue_type.as_str(), "account": request.account,
               "bot_origin": request.bot_url.as_deref().map(bot_settings::origin)}),
    );
    let new = NewTenant {
        customer_ref: parse_ref(&request.customer_ref)?,
        bridge,
        bot_kind: bot,
        auth_mode: auth,
        queue_type,
    };
    let http = bot_settings::http_settings(bot, request.bot_url.as_deref(), request.allow_other_chats)?;
    let result = async {
        let outcome =
            bot_settings::add_tenant(&state.pool, &state.endpoints, &new, &request.account, http.as_ref()).await?;
        Ok((outcome, service::get_tenant(&state.pool, &new.customer_ref).await?))
    }
    .await;
    let (outcome, tenant) = audited(state, caller, entry, false, result).await?;
    let status = if outcome.created { StatusCode::CREATED } else { StatusCode::OK };
    let bot_secret = outcome.secret.map(|s| s.expose_secret().to_owned());
    Ok((status, CreatedTenant { tenant: tenant.into(), bot_secret }))
}

fn created_response((status, created): (StatusCode, CreatedTenant)) -> Response {
    let location = format!("/v1/tenants/{}", created.tenant.customer_ref);
    let mut response = (status, Json(created)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn replayed(status: StatusCode, body: serde_json::Value) -> Response {
    if status.is_success() {
        if let Ok(created) = serde_json::from_value::<CreatedTenant>(body.clone()) {
            return created_response((status, created));
        }
    }
    let mut response = (status, Json(body)).into_response();
    if !status.is_success() {
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::problem::PROBLEM_JSON));
    }
    response
}

/// Show one tenant, whatever its status.
#[utoipa::path(get, path = "/v1/tenants/{customer_ref}", tag = "tenants", params(RefPath),
    responses((status = 200, description = "The tenant, its account and limits", body = TenantDetail), BadRequest, NotFound, CommonErrors))]
async fn get_tenant(State(state): State<AppState>, Path(path): Path<RefPath>) -> Result<Json<TenantDetail>, ApiError> {
    let customer_ref = parse_ref(&path.customer_ref)?;
    Ok(Json(service::show_tenant(&state.pool, &customer_ref).await?.into()))
}

async fn set_status(
    state: &AppState,
    caller: &Caller,
    raw: &str,
    status: TenantStatus,
) -> Result<Json<Tenant>, ApiError> {
    let command = if status == TenantStatus::Active { "tenants enable" } else { "tenants disable" };
    let customer_ref = parse_ref(raw)?;
    let result = async {
        service::set_status(&state.pool, &customer_ref, status).await?;
        service::get_tenant(&state.pool, &customer_ref).await
    }
    .await;
    Ok(Json(audited(state, caller, Entry::new(command, Some(raw), json!({})), false, result).await?.into()))
}

/// Disable a tenant: its messages are dropped with a warning, its queue is kept.
#[utoipa::path(post, path = "/v1/tenants/{customer_ref}/disable", tag = "tenants", params(RefPath, IdempotencyKey),
    responses((status = 200, description = "Disabled", body = Tenant), ActionErrors))]
async fn disable_tenant(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RefPath>,
) -> Result<Json<Tenant>, ApiError> {
    set_status(&state, &caller, &path.customer_ref, TenantStatus::Disabled).await
}

/// Enable a disabled tenant.
#[utoipa::path(post, path = "/v1/tenants/{customer_ref}/enable", tag = "tenants", params(RefPath, IdempotencyKey),
    responses((status = 200, description = "Enabled", body = Tenant), ActionErrors))]
async fn enable_tenant(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RefPath>,
) -> Result<Json<Tenant>, ApiError> {
    set_status(&state, &caller, &path.customer_ref, TenantStatus::Active).await
}

/// Query of offboarding.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OffboardQuery {
    /// Only report what each step would do.
    pub dry_run: Option<bool>,
}

/// Stop, drain and tombstone a tenant (`wafleet tenants offboard`), in the background: 202 with
/// the operation to poll. Resumable: start it again after a failure.
#[utoipa::path(post, path = "/v1/tenants/{customer_ref}/offboard", tag = "tenants", params(RefPath, OffboardQuery, IdempotencyKey),
    responses(
        (status = 202, description = "Accepted; poll the operation", body = Operation,
            headers(("Location" = String, description = "The operation"))),
        ActionErrors))]
async fn offboard_tenant(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RefPath>,
    Query(query): Query<OffboardQuery>,
) -> Result<Response, ApiError> {
    let dry_run = query.dry_run.unwrap_or(false);
    let customer_ref = parse_ref(&path.customer_ref)?;
    match service::require_tenant(&state.pool, &customer_ref).await {
        Ok(_) => {}
        // Refused before it started: audited now, like the CLI's failed run.
        Err(e) => {
            let entry = Entry::new("tenants offboard", Some(&path.customer_ref), json!({"dry_run": dry_run}));
            return audited(&state, &caller, entry, dry_run, Err::<(), _>(e)).await.map(|()| Response::default());
        }
    }
    let operation = operations::start_offboard(&state, &caller, customer_ref, dry_run).await?;
    let location = format!("/v1/operations/{}", operation.operation_id);
    let mut response = (StatusCode::ACCEPTED, Json(operation)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// Export format.
#[derive(Clone, Copy, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// One JSON object per line (`application/x-ndjson`).
    #[default]
    Jsonl,
    /// One JSON array (`application/json`).
    Json,
}

/// Query of export.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `jsonl` (default) or `json`.
    #[param(inline)]
    pub format: Option<ExportFormat>,
}

/// Every row of the tenant (`wafleet tenants export`): personal data, audited.
#[utoipa::path(get, path = "/v1/tenants/{customer_ref}/export", tag = "tenants", params(RefPath, ExportQuery),
    responses(
        (status = 200, description = "The tenant's rows",
            content((Vec<ExportRow> = "application/json"), (String = "application/x-ndjson"))),
        BadRequest, NotFound, CommonErrors))]
async fn export_tenant(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RefPath>,
    Query(query): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    let format = query.format.unwrap_or_default();
    let format_name = match format {
        ExportFormat::Jsonl => "jsonl",
        ExportFormat::Json => "json",
    };
    let entry =
        Entry::new("tenants export", Some(&path.customer_ref), json!({"to_file": false, "format": format_name}));
    let customer_ref = parse_ref(&path.customer_ref)?;
    let result = async {
        let mut lines = Vec::new();
        service::export_tenant(&state.pool, &customer_ref, &mut lines).await?;
        Ok(lines)
    }
    .await;
    let lines = audited(&state, &caller, entry, false, result).await?;
    let text = String::from_utf8_lossy(&lines);
    let (content_type, body) = match format {
        ExportFormat::Jsonl => ("application/x-ndjson", text.into_owned()),
        ExportFormat::Json => ("application/json", format!("[{}]", text.lines().collect::<Vec<_>>().join(","))),
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// Delete one contact's messages and replies, and redact its chat id in processed events
/// (`wafleet tenants erase`). The audit record does not name the contact.
#[utoipa::path(post, path = "/v1/tenants/{customer_ref}/erase", tag = "tenants", params(RefPath, IdempotencyKey),
    request_body = EraseRequest,
    responses((status = 200, description = "Erased", body = Erasure), WriteErrors))]
async fn erase_contact(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RefPath>,
    Body(request): Body<EraseRequest>,
) -> Result<Json<Erasure>, ApiError> {
    let entry = Entry::new("tenants erase", Some(&path.customer_ref), json!({"contact": request.contact}));
    let customer_ref = parse_ref(&path.customer_ref)?;
    let result = service::erase_contact(&state.pool, &customer_ref, &request.contact).await;
    Ok(Json(audited(&state, &caller, entry, false, result).await?.into()))
}

/// Change a tenant's bot (`wafleet tenants set-bot`); switching to `http` or `rotate_secret`
/// returns a new signing secret, once.
#[utoipa::path(post, path = "/v1/tenants/{customer_ref}/bot", tag = "tenants", params(RefPath, IdempotencyKey),
    request_body = SetBot,
    responses((status = 200, description = "The bot was set", body = BotSet), WriteErrors))]
async fn set_bot(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RefPath>,
    Body(request): Body<SetBot>,
) -> Result<Json<BotSet>, ApiError> {
    let kind: BotKind = request.bot.into();
    // The secret is generated, never an argument; the URL is kept as its origin only.
    let entry = Entry::new(
        "tenants set-bot",
        Some(&path.customer_ref),
        json!({"bot": kind.as_str(), "bot_origin": request.bot_url.as_deref().map(bot_settings::origin),
               "rotate_secret": request.rotate_secret, "allow_other_chats": request.allow_other_chats}),
    );
    let customer_ref = parse_ref(&path.customer_ref)?;
    let change = bot_settings::BotChange {
        kind,
        url: request.bot_url.as_deref().map(bot_settings::validate_bot_url).transpose()?,
        rotate_secret: request.rotate_secret,
        allow_other_chats: request.allow_other_chats,
    };
    let result = bot_settings::set_bot(&state.pool, &customer_ref, &change).await;
    let secret = audited(&state, &caller, entry, false, result).await?;
    Ok(Json(BotSet {
        customer_ref: path.customer_ref,
        bot: kind.as_str().to_owned(),
        bot_secret: secret.map(|s| s.expose_secret().to_owned()),
    }))
}

/// Whether the tenant's built-in bot answers in group chats (`wafleet tenants groups`).
#[utoipa::path(post, path = "/v1/tenants/{customer_ref}/groups", tag = "tenants", params(RefPath, IdempotencyKey),
    request_body = SetGroups,
    responses((status = 204, description = "The setting was changed"), WriteErrors))]
async fn set_groups(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RefPath>,
    Body(request): Body<SetGroups>,
) -> Result<StatusCode, ApiError> {
    let entry = Entry::new("tenants groups", Some(&path.customer_ref), json!({"reply": request.reply_in_groups}));
    let customer_ref = parse_ref(&path.customer_ref)?;
    let result = service::set_reply_in_groups(&state.pool, &customer_ref, request.reply_in_groups).await;
    audited(&state, &caller, entry, false, result).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change a tenant's limits (`wafleet tenants limits`); fields left out stay as they were. The
/// queue bound is applied as a broker policy on exactly this tenant's queue.
#[utoipa::path(patch, path = "/v1/tenants/{customer_ref}/limits", tag = "tenants", params(RefPath, IdempotencyKey),
    request_body = SetLimits,
    responses((status = 204, description = "The limits were set"), WriteErrors))]
async fn set_limits(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RefPath>,
    Body(request): Body<SetLimits>,
) -> Result<StatusCode, ApiError> {
    let change = service::LimitsChange {
        weight: request.weight,
        max_per_min: request.max_per_min,
        max_per_day: request.max_per_day,
    };
    let mut arguments = change.audit_arguments();
    arguments.insert("queue_max_bytes".into(), json!(request.queue_max_bytes));
    let entry = Entry::new("tenants limits", Some(&path.customer_ref), arguments.into());
    let customer_ref = parse_ref(&path.customer_ref)?;
    let result = async {
        if !change.is_empty() {
            service::update_tenant_limits(&state.pool, &customer_ref, change).await?;
        }
        if let Some(bytes) = request.queue_max_bytes {
            service::set_tenant_queue_bound(&state.pool, &state.endpoints, &customer_ref, bytes).await?;
        }
        Ok(())
    }
    .await;
    audited(&state, &caller, entry, false, result).await?;
    Ok(StatusCode::NO_CONTENT)
}

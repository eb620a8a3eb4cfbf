//! WA Bridges accounts (`wafleet accounts list|add`). Accounts belong to no tenant; adding one
//! is audited like the CLI's, with the token as actor. A key is never sent or shown here: only
//! where the worker reads it (`env:NAME`, `file:/path`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wafleet_fleet::accounts::KeyRef;
use wafleet_fleet::audit::Entry;
use wafleet_fleet::service;

use super::fleet::{key_page, PageQuery};
use super::{audited, BadRequest, Body, CommonErrors, IdempotencyKey, Query, WriteErrors};
use crate::auth::Caller;
use crate::dto::{Account, AccountAdded, AccountPage, NewAccount};
use crate::problem::ApiError;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_accounts, add_account))
}

/// Every account, by name, with its tenant count (`wafleet accounts list`).
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts", params(PageQuery),
    responses((status = 200, description = "The accounts", body = AccountPage), BadRequest, CommonErrors))]
async fn list_accounts(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
) -> Result<Json<AccountPage>, ApiError> {
    let accounts: Vec<Account> = service::list_accounts(&state.pool).await?.into_iter().map(Account::from).collect();
    let (items, next_cursor, next) = key_page(accounts, |a| a.name.clone(), "a1", "/v1/accounts", &query)?;
    Ok(Json(AccountPage { items, next_cursor, next }))
}

/// Add an account (`wafleet accounts add`): 201 when created, 200 when an identical one existed.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", params(IdempotencyKey),
    request_body = NewAccount,
    responses(
        (status = 201, description = "Created", body = AccountAdded),
        (status = 200, description = "An identical account existed; nothing changed", body = AccountAdded),
        WriteErrors))]
async fn add_account(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(request): Body<NewAccount>,
) -> Result<Response, ApiError> {
    let entry = Entry::new(
        "accounts add",
        Some(&request.name),
        json!({"key_ref": request.key_ref, "base_url": request.base_url, "rate_per_min": request.rate_per_min,
               "burst": request.burst, "test_account": request.test_account}),
    );
    let mut warnings = Vec::new();
    let result = async {
        let new = wafleet_fleet::accounts::NewAccount {
            name: request.name.clone(),
            key_ref: KeyRef::parse(&request.key_ref)?,
            base_url: request.base_url.clone(),
            rate_per_min: request.rate_per_min,
            burst: request.burst,
            test_account: request.test_account,
        };
        let budget = state.fleet.accounts.budget();
        warnings.extend(budget.account_warnings(&new.name, &budget.proxy(new.rate_per_min, new.burst)));
        // Said, not refused: the worker, not this server, must be able to read the key.
        if let Err(e) = new.key_ref.resolve(&Default::default()) {
            warnings.push(format!("{e} here; the worker must be able to read it"));
        }
        service::add_account(&state.pool, &new, state.fleet.accounts.policy()).await
    }
    .await;
    let (_, created) = audited(&state, &caller, entry, false, result).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(AccountAdded { name: request.name, created, warnings })).into_response())
}

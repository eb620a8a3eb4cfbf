//! A tenant's keyword rules (`wafleet rules list|add|remove`), the `rules` bot's replies.
//! Changes are audited like the CLI's, with the token as actor.
//!
//! ISOLATION: the tenant comes from the path only; the service functions read and write its
//! rules in its own scope, so a rule id of another tenant removes nothing.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wafleet_fleet::audit::Entry;
use wafleet_fleet::service;

use super::fleet::{key_page, PageQuery};
use super::{
    audited, parse_ref, ActionErrors, BadRequest, Body, CommonErrors, IdempotencyKey, NotFound, Path, Query, RefPath,
    WriteErrors,
};
use crate::auth::Caller;
use crate::dto::{NewRule, Rule, RulePage, RuleRemoved};
use crate::problem::ApiError;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_rules, add_rule)).routes(routes!(remove_rule))
}

/// A tenant's rules, in keyword order (`wafleet rules list`).
#[utoipa::path(get, path = "/v1/tenants/{customer_ref}/rules", tag = "rules", params(RefPath, PageQuery),
    responses((status = 200, description = "The rules", body = RulePage), BadRequest, NotFound, CommonErrors))]
async fn list_rules(
    State(state): State<AppState>,
    Path(path): Path<RefPath>,
    Query(query): Query<PageQuery>,
) -> Result<Json<RulePage>, ApiError> {
    let customer_ref = parse_ref(&path.customer_ref)?;
    let rules: Vec<Rule> = service::list_rules(&state.pool, &customer_ref).await?.into_iter().map(Rule::from).collect();
    let path = format!("/v1/tenants/{customer_ref}/rules");
    let (items, next_cursor, next) = key_page(rules, |r| r.keyword.clone(), "r1", &path, &query)?;
    Ok(Json(RulePage { items, next_cursor, next }))
}

/// Add a rule, or give an existing keyword a new reply (`wafleet rules add`).
#[utoipa::path(post, path = "/v1/tenants/{customer_ref}/rules", tag = "rules", params(RefPath, IdempotencyKey),
    request_body = NewRule,
    responses((status = 204, description = "The rule is in place"), WriteErrors))]
async fn add_rule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RefPath>,
    Body(rule): Body<NewRule>,
) -> Result<StatusCode, ApiError> {
    let customer_ref = parse_ref(&path.customer_ref)?;
    // The keyword only, as the CLI records it: a reply may quote a customer.
    let entry = Entry::new("rules add", Some(&path.customer_ref), json!({"keyword": rule.keyword}));
    let result = service::add_rule(&state.pool, &customer_ref, &rule.keyword, &rule.reply).await;
    audited(&state, &caller, entry, false, result).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The `{customer_ref}/rules/{rule}` path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RulePath {
    /// The tenant's ref.
    #[param(pattern = "^[A-Za-z0-9_.:-]{1,128}$", example = "cust_8842")]
    pub customer_ref: String,
    /// The rule's id, or its keyword (an all-digit value is tried as an id first).
    #[param(min_length = 1, max_length = 200, example = "hours")]
    pub rule: String,
}

/// Remove one of the tenant's rules (`wafleet rules remove`).
#[utoipa::path(delete, path = "/v1/tenants/{customer_ref}/rules/{rule}", tag = "rules", params(RulePath, IdempotencyKey),
    responses((status = 200, description = "Removed", body = RuleRemoved), ActionErrors))]
async fn remove_rule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RulePath>,
) -> Result<Json<RuleRemoved>, ApiError> {
    let customer_ref = parse_ref(&path.customer_ref)?;
    let entry = Entry::new("rules remove", Some(&path.customer_ref), json!({"rule": path.rule}));
    let result = service::remove_rule(&state.pool, &customer_ref, &path.rule).await;
    let keyword = audited(&state, &caller, entry, false, result).await?;
    Ok(Json(RuleRemoved { customer_ref: path.customer_ref, keyword }))
}

//! The OpenAPI 3.1 document, generated from the handlers and types (utoipa). It is committed as
//! `openapi.json` at the repository root; a test fails when the two differ, and
//! `wafleet-admin --print-openapi > openapi.json` regenerates it. The documented routes are
//! assembled here too, since the document is built from them and they start from its metadata.

use axum::Router;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::problem::Problem;
use crate::routes;
use crate::state::AppState;

/// Top-level metadata; the paths come from the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "wafleet admin API",
        description = "The operator CLI's commands over HTTP, for internal tooling. Every `/v1` request \
            needs `Authorization: Bearer <token>` (create one with `wafleet admin-tokens create --scopes`); \
            a call needs the token's scopes for it (read, credentials, pii, write, admin; else 403 \
            insufficient-scope). Errors are RFC 9457 problem details.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    security(("bearer" = [])),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    tags(
        (name = "tenants", description = "Tenant lifecycle (`wafleet tenants`)"),
        (name = "bridges", description = "Webhook URLs and bridges at WA Bridges"),
        (name = "dead letters", description = "Per-tenant dead-letter queues (`wafleet dlq`)"),
        (name = "queues", description = "Queue depth (`wafleet depth`)"),
        (name = "outbox", description = "Replies waiting, unknown or failed (`wafleet outbox`)"),
        (name = "audit", description = "The operator audit log (`wafleet audit`)"),
        (name = "accounts", description = "WA Bridges accounts and their budgets (`wafleet accounts`)"),
        (name = "admin tokens", description = "Tokens of this API (`wafleet admin-tokens`)"),
        (name = "rules", description = "Keyword rules of the `rules` bot (`wafleet rules`)"),
        (name = "upkeep", description = "Fleet upkeep (`wafleet retention run`)"),
        (name = "operations", description = "Asynchronous commands"),
        (name = "health", description = "Liveness and readiness")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some("An admin token from `wafleet admin-tokens create`".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

fn authenticated() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(routes::tenants::router())
        .merge(routes::bridges::router())
        .merge(routes::dlq::router())
        .merge(routes::fleet::router())
        .merge(routes::rules::router())
        .merge(routes::accounts::router())
        .merge(routes::tokens::router())
        .merge(routes::upkeep::router())
}

/// The authenticated `/v1` router, the unauthenticated one, and the document of both.
pub fn routes() -> (Router<AppState>, Router<AppState>, Document) {
    let (v1, v1_doc) = OpenApiRouter::<AppState>::new().merge(authenticated()).split_for_parts();
    let (open, open_doc) = routes::meta::router().split_for_parts();
    let mut doc = ApiDoc::openapi();
    doc.merge(v1_doc);
    doc.merge(open_doc);
    (v1, open, doc)
}

/// The document of every route.
pub fn document() -> Document {
    routes().2
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn document_json() -> String {
    match document().to_pretty_json() {
        Ok(json) => camel_case_links(&json) + "\n",
        Err(e) => format!("{{\"error\": \"cannot serialize the OpenAPI document: {e}\"}}\n"),
    }
}

/// utoipa 5.5 writes a Link Object's fields in snake case (`operation_id`); OpenAPI names them
/// `operationId`, `operationRef` and `requestBody`, and clients ignore links spelled otherwise.
/// Renames exactly those keys of each link, in every `"links"` object of the pretty JSON.
fn camel_case_links(json: &str) -> String {
    const RENAMES: [(&str, &str); 3] =
        [("operation_id", "operationId"), ("operation_ref", "operationRef"), ("request_body", "requestBody")];
    let mut out = String::with_capacity(json.len());
    let mut depth_in_links: Option<usize> = None;
    let mut depth = 0usize;
    for line in json.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let mut line = line.to_owned();
        // A link's own fields sit two levels inside `"links": {` (links → link name → fields).
        if depth_in_links.is_some_and(|d| depth == d + 2) {
            for (snake, camel) in RENAMES {
                if trimmed.starts_with(&format!("\"{snake}\":")) {
                    line = line.replacen(&format!("\"{snake}\""), &format!("\"{camel}\""), 1);
                }
            }
        }
        if trimmed.starts_with("\"links\": {") && depth_in_links.is_none() {
            depth_in_links = Some(depth);
        }
        // Pretty JSON opens and closes at most one object or array per line, outside strings.
        let body = trimmed.trim_end();
        if body.ends_with('{') || body.ends_with('[') {
            depth += 1;
        }
        if body.starts_with('}') || body.starts_with(']') {
            depth = depth.saturating_sub(1);
            if depth_in_links == Some(depth) {
                depth_in_links = None;
            }
        }
        out.push_str(&line);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn links_name_their_operations_as_openapi_spells_it_and_nothing_else_is_renamed() {
        let doc: serde_json::Value = serde_json::from_str(&document_json()).unwrap();
        let links = &doc["paths"]["/v1/tenants"]["post"]["responses"]["201"]["links"];
        for name in ["RotateUrl", "ReadUrl", "Offboard"] {
            let id = links[name]["operationId"].as_str().unwrap();
            assert!(links[name].get("operation_id").is_none());
            let found = doc["paths"]
                .as_object()
                .unwrap()
                .values()
                .any(|item| item.as_object().unwrap().values().any(|op| op["operationId"].as_str() == Some(id)));
            assert!(found, "link {name} names no operation: {id}");
            assert_eq!(links[name]["parameters"]["customer_ref"], "$response.body#/customer_ref");
        }
        // The offboarding answer's own field keeps its name.
        let text = document_json();
        assert!(text.contains("\"operation_id\""), "a schema property was renamed");
    }
}

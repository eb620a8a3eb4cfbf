//! Which scopes each route needs: one table, checked by [`crate::auth::authorize`] before any
//! handler runs. A route missing from the table needs every scope (fail closed); a test checks
//! that every route of the OpenAPI document is in it.
//!
//! Rules: reading state needs `read`; a webhook URL needs `credentials`; message bodies and
//! exports need `pii`; every change, and every call that spends send budget (provisioning, a
//! live bridge status), needs `write`; erasing needs `write` and `pii`; token management needs `admin`. Rotating a URL needs
//! `write` and shows the new URL only with `credentials` too (decided by its handler).

use axum::http::Method;
use wafleet_fleet::admin_tokens::Scope::{self, Admin, Credentials, Pii, Read, Write};

/// The scopes `method route` needs, where `route` is the route template
/// (`/v1/tenants/{customer_ref}/dlq`) and `body` whether the query asks for message bodies
/// (`body=true`). `None` for a route this table does not know.
pub fn required(method: &Method, route: &str, body: bool) -> Option<Vec<Scope>> {
    let base: &[Scope] = match (method.as_str(), route.strip_prefix("/v1")?) {
        ("GET", "/tenants" | "/tenants/{customer_ref}") => &[Read],
        ("GET", "/depth" | "/tenants/{customer_ref}/depth") => &[Read],
        ("GET", "/dlq" | "/outbox" | "/audit" | "/operations/{operation_id}") => &[Read],
        // Metadata; the bodies only with `pii` (below).
        ("GET", "/tenants/{customer_ref}/dlq" | "/tenants/{customer_ref}/outbox") => &[Read],
        ("GET", "/tenants/{customer_ref}/webhook-url") => &[Credentials],
        ("GET", "/tenants/{customer_ref}/export") => &[Pii],
        ("GET", "/tenants/{customer_ref}/rules" | "/accounts") => &[Read],
        // Reconciling lists every account's bridges: it spends send budget, like a bridge status.
        ("POST", "/tenants/{customer_ref}/rules" | "/retention/run" | "/bridges/reconcile" | "/accounts") => &[Write],
        ("DELETE", "/tenants/{customer_ref}/rules/{rule}") => &[Write],
        ("GET" | "POST", "/admin-tokens") | ("POST", "/admin-tokens/{name}/revoke") => &[Admin],
        // A live status spends a proxy token of the account's shared send budget.
        ("GET", "/tenants/{customer_ref}/bridge-status") => &[Write],
        ("POST", "/tenants/{customer_ref}/erase") => &[Write, Pii],
        (
            "POST",
            "/tenants"
            | "/tenants/{customer_ref}/disable"
            | "/tenants/{customer_ref}/enable"
            | "/tenants/{customer_ref}/offboard"
            | "/tenants/{customer_ref}/bot"
            | "/tenants/{customer_ref}/groups"
            | "/tenants/{customer_ref}/rotate-url"
            | "/tenants/{customer_ref}/provision"
            | "/tenants/{customer_ref}/dlq/replay"
            | "/tenants/{customer_ref}/dlq/purge",
        ) => &[Write],
        ("PATCH", "/tenants/{customer_ref}/limits") => &[Write],
        _ => return None,
    };
    let mut scopes = base.to_vec();
    let with_bodies = matches!(route, "/v1/tenants/{customer_ref}/dlq" | "/v1/tenants/{customer_ref}/outbox");
    if body && with_bodies {
        scopes.push(Pii);
    }
    Some(scopes)
}

/// Whether a query string may ask for message bodies: any `body` parameter other than
/// `body=false` counts (fail closed; the handler refuses a value that is not a boolean).
pub fn asks_for_bodies(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|pair| pair.split('=').next() == Some("body") && pair != "body=false"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_route_of_the_openapi_document_has_scopes() {
        let doc: serde_json::Value = serde_json::from_str(&crate::openapi::document_json()).unwrap();
        let mut checked = 0;
        for (path, ops) in doc["paths"].as_object().unwrap() {
            if !path.starts_with("/v1") {
                continue;
            }
            for method in ops.as_object().unwrap().keys() {
                let Ok(m) = method.to_uppercase().parse::<Method>() else { continue };
                if !matches!(m, Method::GET | Method::POST | Method::PATCH | Method::PUT | Method::DELETE) {
                    continue;
                }
                assert!(required(&m, path, false).is_some(), "{method} {path} has no scopes");
                checked += 1;
            }
        }
        assert!(checked >= 20, "checked {checked}");
    }

    #[test]
    fn bodies_need_pii_only_where_the_route_returns_them() {
        let dlq = "/v1/tenants/{customer_ref}/dlq";
        assert_eq!(required(&Method::GET, dlq, false).unwrap(), [Read]);
        assert_eq!(required(&Method::GET, dlq, true).unwrap(), [Read, Pii]);
        assert_eq!(required(&Method::GET, "/v1/tenants", true).unwrap(), [Read]);
        assert!(asks_for_bodies(Some("limit=5&body=true")));
        assert!(asks_for_bodies(Some("body=false&body=true")) && asks_for_bodies(Some("body")));
        assert!(
            !asks_for_bodies(Some("body=false")) && !asks_for_bodies(Some("nobody=true")) && !asks_for_bodies(None)
        );
    }
}

//! The typed contract: enums instead of free strings, typed timestamps, no internal ids, the
//! tenant with its account and limits, and each operation declaring only the answers it can give.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::Admin;

fn document() -> Value {
    serde_json::from_str(&wafleet_admin::openapi::document_json()).unwrap()
}

/// `schema.property`, also inside an `allOf` (a flattened struct).
fn property<'a>(doc: &'a Value, schema: &str, property: &str) -> &'a Value {
    let s = &doc["components"]["schemas"][schema];
    let parts = s["allOf"].as_array().map(|a| a.iter().collect()).unwrap_or_else(|| vec![s]);
    parts.into_iter().map(|p| &p["properties"][property]).find(|p| !p.is_null()).unwrap_or(&Value::Null)
}

/// The enum values of `schema.property` (following one `$ref`).
fn enum_of(doc: &Value, schema: &str, property_name: &str) -> Vec<String> {
    let prop = property(doc, schema, property_name);
    let target = match prop["$ref"].as_str() {
        Some(r) => &doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")],
        None => prop,
    };
    let values = target["enum"].as_array().or_else(|| target["oneOf"].as_array());
    let values = values.unwrap_or_else(|| panic!("{schema}.{property_name} is not an enum: {prop}"));
    values.iter().map(|v| v.as_str().or_else(|| v["enum"][0].as_str()).unwrap().to_owned()).collect()
}

#[test]
fn states_kinds_and_outcomes_are_enums_and_timestamps_are_date_times() {
    let doc = document();
    assert_eq!(enum_of(&doc, "Tenant", "status"), ["active", "disabled", "offboarded"]);
    assert_eq!(enum_of(&doc, "Tenant", "bot_kind"), ["echo", "rules", "http"]);
    assert_eq!(enum_of(&doc, "Tenant", "queue_type"), ["quorum", "classic"]);
    assert_eq!(enum_of(&doc, "Tenant", "auth_mode"), ["token", "open"]);
    assert_eq!(enum_of(&doc, "WebhookUrl", "status"), ["active", "disabled", "offboarded"]);
    assert_eq!(enum_of(&doc, "OutboxRow", "status"), ["unknown", "failed"]);
    assert_eq!(enum_of(&doc, "AuditRecord", "outcome"), ["ok", "error", "dry_run"]);
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in [("AuditRecord", "at"), ("TenantDetail", "created_at"), ("OutboxRow", "created_at")] {
        assert_eq!(property(&doc, schema, field)["format"], "date-time", "{schema}.{field}");
    }
    let detail = serde_json::to_string(&schemas["TenantDetail"]).unwrap();
    assert!(detail.contains("\"account\"") && detail.contains("TenantLimits"), "{detail}");
    let text = serde_json::to_string(&doc).unwrap();
    assert!(!text.contains("tenant_id"), "an internal id is in the contract");
}

#[test]
fn each_operation_declares_only_the_answers_it_can_give_and_429_says_when_to_retry() {
    let doc = document();
    let mut conflict_reads = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let has = |s: &str| responses.contains_key(s);
            if method == "get" {
                assert!(!has("413") && !has("415"), "GET {path} declares a body error");
                if has("409") {
                    conflict_reads.insert(path.as_str());
                }
                if !path.contains('{') && !op["parameters"].is_array() {
                    assert!(!has("400") && !has("404"), "GET {path} takes no parameter: {responses:?}");
                }
            }
            if !op["requestBody"].is_object() {
                assert!(!has("413") && !has("415"), "{method} {path} takes no body");
            }
            if let Some(limited) = responses.get("429") {
                assert!(limited["headers"]["Retry-After"].is_object(), "{method} {path}: 429 without Retry-After");
            }
        }
    }
    let expected: BTreeSet<&str> = [
        "/v1/tenants/{customer_ref}/bridge-status",
        "/v1/tenants/{customer_ref}/depth",
        "/v1/tenants/{customer_ref}/dlq",
    ]
    .into_iter()
    .collect();
    assert_eq!(conflict_reads, expected, "only reads that depend on the tenant's state declare 409");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_shows_its_account_and_limits_and_never_its_database_id() {
    let admin = Admin::new().await;
    admin.create_tenant("shown_t").await;
    let patched = admin
        .call(
            axum::http::Method::PATCH,
            "/v1/tenants/shown_t/limits",
            Some(&admin.full),
            Some(json!({"weight": 3, "max_per_min": 7})),
            &[],
        )
        .await;
    assert_eq!(patched.status.as_u16(), 204, "{}", patched.text);
    let shown = admin.get("/v1/tenants/shown_t").await;
    assert_eq!(shown.status.as_u16(), 200, "{}", shown.text);
    assert_eq!(shown.json["account"], "default");
    assert_eq!(shown.json["limits"], json!({"weight": 3, "max_per_min": 7}));
    assert_eq!((shown.json["status"].as_str(), shown.json["bot_kind"].as_str()), (Some("active"), Some("echo")));
    assert!(shown.json["created_at"].as_str().is_some_and(|t| t.contains('T')));
    let listed = admin.get("/v1/tenants").await;
    for body in [&shown.text, &listed.text] {
        assert!(!body.contains("tenant_id"), "{body}");
    }
    admin.env.cleanup().await;
}

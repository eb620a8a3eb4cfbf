//! `Idempotency-Key` on every state-changing request: a retry with the same key and request gets
//! the first answer and changes nothing more; the same key with another request is refused.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use wafleet_fleet::admin_tokens::{self, Scope, Scopes};

use crate::{Admin, Answer};

async fn post_with_key(admin: &Admin, token: &str, uri: &str, body: Value, key: &str) -> Answer {
    admin.call(Method::POST, uri, Some(token), Some(body), &[("idempotency-key", key)]).await
}

async fn commands_of(admin: &Admin, target: &str) -> Vec<String> {
    admin.audit_of(target).await.into_iter().map(|(_, command, _, _)| command).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_rotation_returns_the_same_url_and_bumps_the_generation_once() {
    let admin = Admin::new().await;
    admin.create_tenant("idem_rot").await;
    let base = json!({"base": admin.env.ingest_url});
    let uri = "/v1/tenants/idem_rot/rotate-url";
    let first = post_with_key(&admin, &admin.full, uri, base.clone(), "rotate-1").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let url = first.json["url"].as_str().unwrap().to_owned();
    assert_eq!(first.json["generation"], 2);
    let again = post_with_key(&admin, &admin.full, uri, base.clone(), "rotate-1").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.json, first.json, "the first answer, URL included");
    assert_eq!(admin.get("/v1/tenants/idem_rot").await.json["generation"], 2, "rotated once");
    assert_eq!(url, admin.env.webhook_url("idem_rot").await.unwrap(), "the returned URL is the live one");

    let other = post_with_key(&admin, &admin.full, uri, json!({"base": "https://other.example.com"}), "rotate-1").await;
    assert_eq!((other.status, other.problem()), (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused".into()));
    let elsewhere = post_with_key(&admin, &admin.full, "/v1/tenants/idem_rot/dlq/purge", json!({}), "rotate-1").await;
    assert_eq!(elsewhere.status, StatusCode::UNPROCESSABLE_ENTITY, "a key names one request: {}", elsewhere.text);
    assert_eq!(admin.get("/v1/tenants/idem_rot").await.json["generation"], 2, "the refused requests changed nothing");
    assert_eq!(commands_of(&admin, "idem_rot").await, ["tenants add", "tenants rotate-url"], "one rotation audited");

    // The URL is a credential: the stored answer holds its generation, never the URL.
    let stored: String = sqlx::query_scalar("select response::text from admin_idempotency where key = 'rotate-1'")
        .fetch_one(&admin.env.owner_pool)
        .await
        .unwrap();
    let token = url.rsplit('/').next().unwrap();
    assert!(!stored.contains(token) && stored.contains("\"generation\""), "{stored}");

    // A token that may not read credentials gets no URL, the first time or on a retry.
    let (_, writer) =
        admin_tokens::create(&admin.env.admin_pool, "writer", &Scopes::of([Scope::Write]).unwrap(), "test")
            .await
            .unwrap();
    let writer = secrecy::ExposeSecret::expose_secret(&writer).to_owned();
    for _ in 0..2 {
        let blind = post_with_key(&admin, &writer, uri, base.clone(), "rotate-blind").await;
        assert_eq!(blind.status, StatusCode::OK, "{}", blind.text);
        assert!(blind.json.get("url").is_none(), "{}", blind.text);
        assert_eq!(blind.json["generation"], 3);
    }
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_status_changes_purges_limits_and_offboarding_run_once() {
    let admin = Admin::new().await;
    admin.create_tenant("idem_ops").await;
    let full = admin.full.clone();
    for _ in 0..2 {
        let disabled = post_with_key(&admin, &full, "/v1/tenants/idem_ops/disable", json!({}), "dis-1").await;
        assert_eq!((disabled.status, disabled.json["status"].clone()), (StatusCode::OK, json!("disabled")));
        let purged = post_with_key(&admin, &full, "/v1/tenants/idem_ops/dlq/purge", json!({}), "purge-1").await;
        assert_eq!(purged.json["purged"], 0, "{}", purged.text);
        let limits = admin
            .call(
                Method::PATCH,
                "/v1/tenants/idem_ops/limits",
                Some(&full),
                Some(json!({"queue_max_bytes": 8192})),
                &[("idempotency-key", "limits-1")],
            )
            .await;
        assert_eq!(limits.status, StatusCode::NO_CONTENT, "{}", limits.text);
        assert!(limits.text.is_empty(), "a stored 204 is replayed without a body");
    }
    // Enabled in between: a retry of the disable must not disable it again.
    assert_eq!(admin.post("/v1/tenants/idem_ops/enable", json!({})).await.status, StatusCode::OK);
    let late = post_with_key(&admin, &full, "/v1/tenants/idem_ops/disable", json!({}), "dis-1").await;
    assert_eq!(late.json["status"], "disabled", "the first answer again");
    assert_eq!(admin.get("/v1/tenants/idem_ops").await.json["status"], "active", "but nothing ran");

    let first = post_with_key(&admin, &full, "/v1/tenants/idem_ops/offboard", json!({}), "off-1").await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    let again = post_with_key(&admin, &full, "/v1/tenants/idem_ops/offboard", json!({}), "off-1").await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.json["operation_id"], first.json["operation_id"], "the same operation, not a second one");
    assert_eq!(again.headers.get("location"), first.headers.get("location"));
    let operations: i64 = sqlx::query_scalar("select count(*) from admin_operations where target = 'idem_ops'")
        .fetch_one(&admin.env.owner_pool)
        .await
        .unwrap();
    assert_eq!(operations, 1);

    let commands = commands_of(&admin, "idem_ops").await;
    let count = |c: &str| commands.iter().filter(|x| x.as_str() == c).count();
    assert_eq!((count("tenants disable"), count("dlq purge"), count("tenants limits")), (1, 1, 1), "{commands:?}");
    admin.env.cleanup().await;
}

#[test]
fn every_state_changing_operation_declares_the_idempotency_key_header() {
    let doc: Value = serde_json::from_str(&wafleet_admin::openapi::document_json()).unwrap();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if !matches!(method.as_str(), "post" | "patch" | "put" | "delete") {
                continue;
            }
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let declared = params.iter().any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header");
            assert!(declared, "{method} {path} does not declare Idempotency-Key");
            checked += 1;
        }
    }
    assert!(checked >= 11, "checked {checked}");
}

//! The OpenAPI contract: the committed `openapi.json` is the generated document, every documented
//! operation is routed and guarded, and `/openapi.json` serves it.

use axum::http::{Method, StatusCode};

use crate::Admin;

fn committed_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.json")
}

#[test]
fn the_committed_openapi_json_is_the_document_generated_from_the_code() {
    let generated = wafleet_admin::openapi::document_json();
    if std::env::var("WAFLEET_UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(committed_path(), &generated).unwrap();
    }
    let committed = std::fs::read_to_string(committed_path()).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi.json differs from the API's code. Regenerate it with \
         `cargo run -q -p wafleet-admin -- --print-openapi > openapi.json` (or run this test with \
         WAFLEET_UPDATE_OPENAPI=1) and review the diff: it is the public contract"
    );
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_routed_and_every_v1_operation_needs_a_token() {
    let admin = Admin::new().await;
    let served = admin.call(Method::GET, "/openapi.json", None, None, &[]).await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(served.text, wafleet_admin::openapi::document_json());
    let doc = served.json;
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let uri =
            path.replace("{customer_ref}", "nobody").replace("{operation_id}", "0190b2f6-0000-7000-8000-000000000000");
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            let method: Method = method.to_uppercase().parse().unwrap();
            let answer = admin.call(method.clone(), &uri, None, None, &[]).await;
            if path.starts_with("/v1/") {
                assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {path}");
                let documented = &item[method.as_str().to_lowercase()]["responses"]["401"];
                assert!(documented.is_object(), "{method} {path} documents its 401");
            } else {
                assert_eq!(answer.status, StatusCode::OK, "{method} {path}: {}", answer.text);
            }
        }
    }
    assert!(operations >= 24, "{operations} operations documented");
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_to_start_as_a_role_that_can_bypass_row_level_security() {
    let admin = Admin::new().await;
    let mut endpoints = admin.env.endpoints.clone();
    endpoints.database_url = admin.env.owner_url.clone();
    let config = wafleet_admin::Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        ops_addr: "127.0.0.1:0".parse().unwrap(),
        header_timeout: std::time::Duration::from_secs(5),
        max_connections: 8,
        address_rate: wafleet_admin::RateLimit { per_second: 10.try_into().unwrap(), burst: 20.try_into().unwrap() },
        endpoints,
        signing_key: None,
        allow_unsafe_db_role: false,
        pool_size: 1,
        rate_per_sec: 10.try_into().unwrap(),
        rate_burst: 20.try_into().unwrap(),
        max_budget_wait: std::time::Duration::from_secs(1),
        directory: wafleet_fleet::accounts::DirectorySettings {
            default_base_url: admin.env.sim.base_url(),
            key_overrides: Default::default(),
            timeout: std::time::Duration::from_secs(3),
            budget: Default::default(),
            policy: wafleet_tests::test_account_policy(),
        },
        console_session: std::time::Duration::from_secs(60),
    };
    let refused = wafleet_admin::Application::build(config).await.err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(refused.contains("superuser"), "{refused}");
    admin.env.cleanup().await;
}

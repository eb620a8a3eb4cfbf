//! Admin tokens over HTTP: created with scopes (never beyond the creator's), shown once (never
//! replayed), listed without secrets, revoked, and audited.

use axum::http::{Method, StatusCode};
use secrecy::ExposeSecret as _;
use serde_json::json;
use wafleet_fleet::admin_tokens::{self, Scope, Scopes};

use crate::Admin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_created_over_http_is_shown_once_works_with_its_scopes_and_stops_when_revoked() {
    let admin = Admin::new().await;
    let key = [("Idempotency-Key", "mint-1")];
    let body = json!({"name": "ci-new", "scopes": ["read"]});
    let created = admin.call(Method::POST, "/v1/admin-tokens", Some(&admin.full), Some(body.clone()), &key).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let token = created.json["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("wfa_"), "{}", created.text);
    assert_eq!(
        (created.json["scopes"].clone(), created.json["created_by"].clone()),
        (json!(["read"]), json!("admin-token:ops"))
    );
    // A retry with the same key gets the same answer without the token, and mints nothing.
    let replayed = admin.call(Method::POST, "/v1/admin-tokens", Some(&admin.full), Some(body), &key).await;
    assert_eq!(replayed.status, StatusCode::CREATED, "{}", replayed.text);
    assert!(replayed.json.get("token").is_none() && !replayed.text.contains(&token), "{}", replayed.text);
    assert_eq!(replayed.json["name"], "ci-new");

    let with_new = |method: Method, uri: &'static str| admin.call(method, uri, Some(&token), None, &[]);
    assert_eq!(with_new(Method::GET, "/v1/tenants").await.status, StatusCode::OK);
    assert_eq!(with_new(Method::GET, "/v1/admin-tokens").await.status, StatusCode::FORBIDDEN, "read only");

    let listed = admin.get("/v1/admin-tokens").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let names: Vec<&str> =
        listed.json["items"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names.iter().filter(|n| **n == "ci-new").count(), 1, "one token minted: {names:?}");
    assert!(!listed.text.contains("wfa_") && !listed.text.contains("token_id"), "{}", listed.text);

    let revoked = admin.post("/v1/admin-tokens/ci-new/revoke", json!({})).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text);
    assert!(revoked.json["revoked_at"].is_string());
    assert_eq!(with_new(Method::GET, "/v1/tenants").await.status, StatusCode::UNAUTHORIZED);
    let again = admin.post("/v1/admin-tokens/ci-new/revoke", json!({})).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "no live token of that name: {}", again.text);

    let audit = admin.audit_of("ci-new").await;
    let commands: Vec<(&str, &str, &str)> =
        audit.iter().map(|(op, c, _, o)| (op.as_str(), c.as_str(), o.as_str())).collect();
    assert_eq!(
        commands,
        [
            ("admin-token:ops", "admin-tokens create", "ok"),
            ("admin-token:ops", "admin-tokens revoke", "ok"),
            ("admin-token:ops", "admin-tokens revoke", "error"),
        ]
    );
    assert!(audit.iter().all(|(_, _, args, _)| !args.to_string().contains("wfa_")), "the token is not recorded");
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_cannot_grant_scopes_it_does_not_hold() {
    let admin = Admin::new().await;
    let only_admin = Scopes::of([Scope::Admin]).unwrap();
    let (_, manager) = admin_tokens::create(&admin.env.admin_pool, "manager", &only_admin, "test").await.unwrap();
    let manager = manager.expose_secret().to_owned();
    let mint = |scopes: serde_json::Value| {
        let body = json!({"name": "minted", "scopes": scopes});
        admin.call(Method::POST, "/v1/admin-tokens", Some(&manager), Some(body), &[])
    };
    let wider = mint(json!(["admin", "write"])).await;
    assert_eq!((wider.status, wider.problem()), (StatusCode::FORBIDDEN, "insufficient-scope".to_owned()));
    assert!(wider.json["detail"].as_str().unwrap().contains("write"), "{}", wider.text);
    assert!(admin.audit_of("minted").await.is_empty(), "refused before the service: nothing audited");
    assert_eq!(mint(json!(["admin"])).await.status, StatusCode::CREATED);
    let empty = mint(json!([])).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST, "a token that may do nothing: {}", empty.text);
    let viewer = admin.call(Method::GET, "/v1/admin-tokens", Some(&admin.read_only), None, &[]).await;
    assert_eq!(viewer.status, StatusCode::FORBIDDEN, "token management needs admin");
    admin.env.cleanup().await;
}

//! Token scopes: for each scope, every route is allowed or 403; credential and PII reads are
//! audited; a rotation shows the new URL only to a token that may read credentials.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use secrecy::ExposeSecret as _;
use serde_json::{json, Value};
use wafleet_fleet::admin_tokens::{self, Scope, Scopes};

use crate::Admin;

/// Every route of the API: method, a URI on a tenant that does not exist (so an allowed call
/// changes nothing and answers 4xx, never 403), a body, and the scopes it needs.
fn routes() -> Vec<(Method, &'static str, Option<Value>, &'static [Scope])> {
    use Scope::{Admin, Credentials, Pii, Read, Write};
    let base = json!({"base": "https://hooks.example.com"});
    vec![
        (Method::GET, "/v1/tenants", None, &[Read]),
        (Method::POST, "/v1/tenants", Some(json!({})), &[Write]),
        (Method::GET, "/v1/tenants/nobody", None, &[Read]),
        (Method::POST, "/v1/tenants/nobody/disable", None, &[Write]),
        (Method::POST, "/v1/tenants/nobody/enable", None, &[Write]),
        (Method::POST, "/v1/tenants/nobody/bot", Some(json!({"bot": "echo"})), &[Write]),
        (Method::POST, "/v1/tenants/nobody/groups", Some(json!({"reply_in_groups": true})), &[Write]),
        (Method::PATCH, "/v1/tenants/nobody/limits", Some(json!({"queue_max_bytes": 4096})), &[Write]),
        (Method::POST, "/v1/tenants/nobody/rotate-url", Some(base.clone()), &[Write]),
        (Method::POST, "/v1/tenants/nobody/offboard", None, &[Write]),
        (Method::GET, "/v1/tenants/nobody/export", None, &[Pii]),
        (Method::POST, "/v1/tenants/nobody/erase", Some(json!({"contact": "447700900123"})), &[Write, Pii]),
        (Method::GET, "/v1/tenants/nobody/webhook-url?base=https://hooks.example.com", None, &[Credentials]),
        (Method::POST, "/v1/tenants/nobody/provision", Some(base), &[Write]),
        (Method::GET, "/v1/tenants/nobody/bridge-status", None, &[Write]),
        (Method::GET, "/v1/depth", None, &[Read]),
        (Method::GET, "/v1/tenants/nobody/depth", None, &[Read]),
        (Method::GET, "/v1/dlq", None, &[Read]),
        (Method::GET, "/v1/tenants/nobody/dlq", None, &[Read]),
        (Method::GET, "/v1/tenants/nobody/dlq?body=true", None, &[Read, Pii]),
        (Method::POST, "/v1/tenants/nobody/dlq/replay", Some(json!({"all": true})), &[Write]),
        (Method::POST, "/v1/tenants/nobody/dlq/purge", None, &[Write]),
        (Method::GET, "/v1/outbox", None, &[Read]),
        (Method::GET, "/v1/tenants/nobody/outbox", None, &[Read]),
        (Method::GET, "/v1/tenants/nobody/outbox?body=true", None, &[Read, Pii]),
        (Method::GET, "/v1/audit", None, &[Read]),
        (Method::GET, "/v1/tenants/nobody/rules", None, &[Read]),
        (Method::POST, "/v1/tenants/nobody/rules", Some(json!({"keyword": "k", "reply": "r"})), &[Write]),
        (Method::DELETE, "/v1/tenants/nobody/rules/k", None, &[Write]),
        (Method::POST, "/v1/retention/run", Some(json!({"days": 30})), &[Write]),
        (Method::POST, "/v1/bridges/reconcile", Some(json!({})), &[Write]),
        (Method::GET, "/v1/accounts", None, &[Read]),
        (Method::GET, "/v1/admin-tokens", None, &[Admin]),
        (Method::POST, "/v1/admin-tokens", Some(json!({"name": "minted", "scopes": ["admin"]})), &[Admin]),
        (Method::POST, "/v1/admin-tokens/nobody/revoke", None, &[Admin]),
        (Method::POST, "/v1/accounts", Some(json!({"name": "scoped", "key_ref": "env:WA_API_KEY"})), &[Write]),
        (Method::GET, "/v1/operations/0190b7a2-6f5e-7c3a-8000-000000000000", None, &[Read]),
    ]
}

async fn token(admin: &Admin, name: &str, scopes: &[Scope]) -> String {
    let scopes = Scopes::of(scopes.iter().copied()).unwrap();
    let (_, secret) = admin_tokens::create(&admin.env.admin_pool, name, &scopes, "test").await.unwrap();
    secret.expose_secret().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scope_allows_exactly_the_routes_that_need_no_other_scope() {
    let admin = Admin::new().await;
    let mut holders: Vec<(String, BTreeSet<Scope>)> = Vec::new();
    for scope in Scope::ALL {
        holders.push((token(&admin, scope.as_str(), &[scope]).await, [scope].into()));
    }
    holders.push((token(&admin, "eraser", &[Scope::Write, Scope::Pii]).await, [Scope::Write, Scope::Pii].into()));
    holders.push((admin.full.clone(), Scope::ALL.into()));
    let route_count = routes().len();
    // Every route of the OpenAPI document is in the table above.
    let doc: Value = serde_json::from_str(&wafleet_admin::openapi::document_json()).unwrap();
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.starts_with("/v1"))
        .map(|(_, ops)| ops.as_object().unwrap().len())
        .sum();
    assert_eq!(documented + 2, route_count, "two routes are listed twice (with ?body=true)");
    for (token, held) in &holders {
        for (method, uri, body, needs) in routes() {
            let answer = admin.call(method.clone(), uri, Some(token), body, &[]).await;
            let allowed = needs.iter().all(|s| held.contains(s));
            if allowed {
                let passed = answer.status != StatusCode::FORBIDDEN && !answer.status.is_server_error();
                assert!(passed, "{held:?}: {method} {uri}: {} {}", answer.status, answer.text);
            } else {
                assert_eq!(answer.status, StatusCode::FORBIDDEN, "{held:?}: {method} {uri}: {}", answer.text);
                assert_eq!(answer.problem(), "insufficient-scope");
            }
        }
    }
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_and_pii_reads_are_audited_and_a_rotation_shows_the_url_only_with_credentials() {
    let admin = Admin::new().await;
    admin.create_tenant("cred_t").await;
    let reader = token(&admin, "url-reader", &[Scope::Credentials]).await;
    let url = admin
        .call(Method::GET, "/v1/tenants/cred_t/webhook-url?base=https://hooks.example.com", Some(&reader), None, &[])
        .await;
    assert_eq!(url.status, StatusCode::OK, "{}", url.text);
    assert!(url.json["url"].as_str().unwrap().contains("/webhook/cred_t/"));
    let pii = token(&admin, "pii-reader", &[Scope::Read, Scope::Pii]).await;
    let letters = admin.call(Method::GET, "/v1/tenants/cred_t/dlq?body=true", Some(&pii), None, &[]).await;
    assert_eq!(letters.status, StatusCode::OK, "{}", letters.text);
    let metadata = admin.call(Method::GET, "/v1/tenants/cred_t/dlq", Some(&pii), None, &[]).await;
    assert_eq!(metadata.status, StatusCode::OK);

    let audit = admin.audit_of("cred_t").await;
    let reads: Vec<(&str, &str)> = audit
        .iter()
        .filter(|(_, cmd, _, _)| cmd != "tenants add")
        .map(|(op, cmd, _, _)| (op.as_str(), cmd.as_str()))
        .collect();
    assert_eq!(
        reads,
        [("admin-token:url-reader", "webhook-url"), ("admin-token:pii-reader", "dlq show")],
        "the credential read and the body read are recorded; the metadata read is not"
    );
    let everything = format!("{audit:?}");
    assert!(!everything.contains(url.json["url"].as_str().unwrap()), "the URL itself is not in the audit log");

    let writer = token(&admin, "writer", &[Scope::Write]).await;
    let base = json!({"base": "https://hooks.example.com"});
    let blind = admin.call(Method::POST, "/v1/tenants/cred_t/rotate-url", Some(&writer), Some(base.clone()), &[]).await;
    assert_eq!(blind.status, StatusCode::OK, "{}", blind.text);
    assert!(blind.json.get("url").is_none(), "no credential without the scope: {}", blind.text);
    assert!(blind.json["warning"].as_str().unwrap().contains("credentials"), "{}", blind.text);
    let both = token(&admin, "rotator", &[Scope::Write, Scope::Credentials]).await;
    let seen = admin.call(Method::POST, "/v1/tenants/cred_t/rotate-url", Some(&both), Some(base), &[]).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert!(seen.json["url"].as_str().unwrap().contains("/webhook/cred_t/"), "{}", seen.text);
    assert_eq!(admin.get("/v1/tenants/cred_t").await.json["generation"], 3, "both rotations happened");
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_inserted_the_old_way_gets_the_scopes_the_migration_gives_existing_tokens() {
    let admin = Admin::new().await;
    // A CLI of the previous release inserts `read_only` only; the table fills in the scopes.
    for (name, read_only) in [("old-full", false), ("old-viewer", true)] {
        sqlx::query(
            "insert into admin_tokens (token_id, name, token_hash, read_only, created_by) \
             values (gen_random_uuid(), $1, sha256($1::bytea), $2, 'old-cli')",
        )
        .bind(name)
        .bind(read_only)
        .execute(&admin.env.admin_pool)
        .await
        .unwrap();
    }
    let scopes: Vec<(String, Vec<String>)> =
        sqlx::query_as("select name, scopes from admin_tokens where created_by = 'old-cli' order by name")
            .fetch_all(&admin.env.owner_pool)
            .await
            .unwrap();
    assert_eq!(
        scopes,
        [
            ("old-full".to_owned(), Scopes::all().names().iter().map(|s| s.to_string()).collect::<Vec<_>>()),
            ("old-viewer".to_owned(), vec!["read".to_owned()]),
        ]
    );
    admin.env.cleanup().await;
}

//! Authentication, scopes, rate limit and the HTTP hardening of the admin API.

use axum::http::{Method, StatusCode};
use serde_json::json;
use wafleet_admin::RateLimit;
use wafleet_fleet::admin_tokens;

use crate::Admin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_malformed_unknown_and_revoked_tokens_all_get_the_same_401_problem() {
    let admin = Admin::new().await;
    let (_, doomed) =
        admin_tokens::create(&admin.env.admin_pool, "doomed", &admin_tokens::Scopes::all(), "test").await.unwrap();
    let doomed = secrecy::ExposeSecret::expose_secret(&doomed).to_owned();
    assert_eq!(admin.get("/v1/tenants").await.status, StatusCode::OK);
    assert_eq!(admin.call(Method::GET, "/v1/tenants", Some(&doomed), None, &[]).await.status, StatusCode::OK);
    admin_tokens::revoke(&admin.env.admin_pool, "doomed").await.unwrap();

    let unknown = format!("wfa_{}", "A".repeat(43));
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no header", vec![]),
        ("basic auth", vec![("authorization", "Basic b3BzOm9wcw==".to_owned())]),
        ("empty bearer", vec![("authorization", "Bearer ".to_owned())]),
        ("not a token", vec![("authorization", "Bearer hunter2".to_owned())]),
        ("unknown token", vec![("authorization", format!("Bearer {unknown}"))]),
        ("revoked token", vec![("authorization", format!("Bearer {doomed}"))]),
    ];
    for (case, headers) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for (method, uri) in [(Method::GET, "/v1/tenants"), (Method::POST, "/v1/tenants/nobody/disable")] {
            let answer = admin.call(method.clone(), uri, None, None, &headers).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{case}: {method} {uri}");
            assert_eq!(answer.problem(), "unauthorized", "{case}");
            assert!(answer.headers.get("www-authenticate").is_some_and(|v| v.as_bytes().starts_with(b"Bearer")));
            assert!(!answer.text.contains(&doomed) && !answer.text.contains("hunter2"), "{case}: token echoed");
        }
    }
    // The scheme is case-insensitive (RFC 9110).
    let lower = format!("bearer {}", admin.full);
    let answer = admin.call(Method::GET, "/v1/tenants", None, None, &[("authorization", &lower)]).await;
    assert_eq!(answer.status, StatusCode::OK);
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_reads_fleet_state_but_gets_403_on_every_mutating_endpoint() {
    let admin = Admin::new().await;
    admin.create_tenant("scope_a").await;
    let viewer = admin.read_only.clone();
    for uri in
        ["/v1/tenants", "/v1/tenants/scope_a", "/v1/tenants/scope_a/depth", "/v1/tenants/scope_a/dlq", "/v1/audit"]
    {
        let answer = admin.call(Method::GET, uri, Some(&viewer), None, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}: {}", answer.text);
    }
    let mutations = [
        ("/v1/tenants", json!({"customer_ref": "scope_b", "bridge": "scope_b"})),
        ("/v1/tenants/scope_a/disable", json!({})),
        ("/v1/tenants/scope_a/enable", json!({})),
        ("/v1/tenants/scope_a/rotate-url", json!({"base": "https://hooks.example.com"})),
        ("/v1/tenants/scope_a/offboard", json!({})),
        ("/v1/tenants/scope_a/erase", json!({"contact": "447700900123"})),
        ("/v1/tenants/scope_a/provision", json!({"base": "https://hooks.example.com"})),
        ("/v1/tenants/scope_a/dlq/replay", json!({"all": true})),
        ("/v1/tenants/scope_a/dlq/purge", json!({})),
        // Refused before the tenant is even looked up.
        ("/v1/tenants/nobody/disable", json!({})),
    ];
    for (uri, body) in mutations {
        let answer = admin.call(Method::POST, uri, Some(&viewer), Some(body), &[]).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{uri}: {}", answer.text);
        assert_eq!(answer.problem(), "insufficient-scope");
    }
    let tenant = admin.get("/v1/tenants/scope_a").await;
    assert_eq!(tenant.json["status"], "active", "nothing changed");
    assert_eq!(tenant.json["generation"], 1, "the URL was not rotated");
    assert!(admin.get("/v1/tenants/scope_b").await.status == StatusCode::NOT_FOUND);
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_rate_limit_gets_429_with_retry_after_and_other_tokens_are_unaffected() {
    let admin = Admin::with_rate(RateLimit { per_second: 1.try_into().unwrap(), burst: 3.try_into().unwrap() }).await;
    for _ in 0..3 {
        assert_eq!(admin.get("/v1/tenants").await.status, StatusCode::OK, "the burst passes");
    }
    // One token per second comes back, so within a few quick requests one is refused.
    let mut limited = admin.get("/v1/tenants").await;
    for _ in 0..10 {
        if limited.status != StatusCode::OK {
            break;
        }
        limited = admin.get("/v1/tenants").await;
    }
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.problem(), "rate-limited");
    let retry: u64 = limited.headers.get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let other = admin.call(Method::GET, "/v1/tenants", Some(&admin.read_only), None, &[]).await;
    assert_eq!(other.status, StatusCode::OK, "each token has its own bucket");
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_unknown_routes_and_methods_are_problems_and_no_cors_is_ever_granted() {
    let admin = Admin::new().await;
    let big = json!({"customer_ref": "big", "bridge": "x".repeat(70 * 1024)});
    let answer = admin.post("/v1/tenants", big).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.problem(), "payload-too-large");

    let answer = admin.get("/v1/nothing-here").await;
    assert_eq!((answer.status, answer.problem()), (StatusCode::NOT_FOUND, "not-found".to_owned()));
    let answer = admin.call(Method::DELETE, "/v1/tenants", Some(&admin.full), None, &[]).await;
    assert_eq!((answer.status, answer.problem()), (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed".to_owned()));

    let origin = [("origin", "https://evil.example"), ("access-control-request-method", "POST")];
    for method in [Method::OPTIONS, Method::GET] {
        let answer = admin.call(method.clone(), "/v1/tenants", Some(&admin.full), None, &origin).await;
        assert!(
            answer.headers.keys().all(|k| !k.as_str().starts_with("access-control-")),
            "{method}: {:?}",
            answer.headers
        );
    }
    // Answers that may carry credentials or personal data are never cached.
    assert_eq!(admin.get("/v1/tenants").await.headers.get("cache-control").unwrap(), "no-store");
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_a_token_shown_once_that_authenticates_until_it_is_revoked() {
    let admin = Admin::new().await;
    let created = admin.env.wafleet(&["admin-tokens", "create", "ci-bot", "--read-only"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let stdout = String::from_utf8_lossy(&created.stdout).into_owned();
    let token = stdout.lines().last().unwrap_or_default().to_owned();
    assert!(token.starts_with("wfa_") && token.len() == 47, "the token alone on the last line: {stdout:?}");

    let answer = admin.call(Method::GET, "/v1/tenants", Some(&token), None, &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    let write = admin.call(Method::POST, "/v1/tenants/x/disable", Some(&token), None, &[]).await;
    assert_eq!(write.status, StatusCode::FORBIDDEN, "created with --read-only");

    let again = admin.env.wafleet(&["admin-tokens", "create", "ci-bot", "--scopes", "read,write"]);
    assert!(!again.status.success(), "one live token per name");
    let listed = admin.env.wafleet(&["admin-tokens", "list", "--json"]);
    let listed_text = String::from_utf8_lossy(&listed.stdout).into_owned();
    let tokens: serde_json::Value = serde_json::from_str(&listed_text).unwrap();
    let ci = tokens.as_array().unwrap().iter().find(|t| t["name"] == "ci-bot").cloned().unwrap();
    assert_eq!(ci["scopes"], json!(["read"]), "--read-only is --scopes read");
    assert!(ci["last_used_at"].is_string(), "use is recorded: {ci}");
    assert!(!listed_text.contains(&token[4..]), "a listing never shows a token");

    let revoked = admin.env.wafleet(&["admin-tokens", "revoke", "ci-bot"]);
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    let answer = admin.call(Method::GET, "/v1/tenants", Some(&token), None, &[]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);

    // The token is stored only as its SHA-256, and the audit log names the command, never the token.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("select token_hash from admin_tokens where name = 'ci-bot'")
        .fetch_all(&admin.env.owner_pool)
        .await
        .unwrap();
    assert_eq!(stored, vec![admin_tokens::hash(&token).to_vec()]);
    let audit = admin.audit_of("ci-bot").await;
    let commands: Vec<(&str, &str, &str)> =
        audit.iter().map(|(op, cmd, _, outcome)| (op.as_str(), cmd.as_str(), outcome.as_str())).collect();
    assert_eq!(
        commands,
        vec![
            ("test-operator", "admin-tokens create", "ok"),
            ("test-operator", "admin-tokens create", "error"),
            ("test-operator", "admin-tokens revoke", "ok")
        ]
    );
    let everything: String = sqlx::query_scalar(
        "select coalesce(string_agg(arguments::text || coalesce(detail, ''), ' '), '') from audit_log",
    )
    .fetch_one(&admin.env.owner_pool)
    .await
    .unwrap();
    assert!(!everything.contains(&token[4..]));
    admin.env.cleanup().await;
}

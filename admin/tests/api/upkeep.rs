//! Rules, retention and bridge reconciliation over HTTP: the CLI's semantics and audit records,
//! scopes, idempotency, and rules that stay with their tenant.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::Admin;

async fn instance_id(admin: &Admin, customer_ref: &str) -> Option<i64> {
    sqlx::query_scalar("select instance_id from tenants where customer_ref = $1")
        .bind(customer_ref)
        .fetch_one(&admin.env.owner_pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_listed_added_and_removed_per_tenant_audited_and_never_across_tenants() {
    let admin = Admin::new().await;
    admin.create_tenant("rul_a").await;
    admin.create_tenant("rul_b").await;
    let add = |r: &'static str, keyword: &'static str, reply: &'static str| {
        admin.post_json(format!("/v1/tenants/{r}/rules"), json!({"keyword": keyword, "reply": reply}))
    };
    assert_eq!(add("rul_a", "hours", "9-17").await.status, StatusCode::NO_CONTENT);
    assert_eq!(add("rul_a", "hours", "8-18").await.status, StatusCode::NO_CONTENT, "same keyword: new reply");
    assert_eq!(add("rul_b", "price", "ask us").await.status, StatusCode::NO_CONTENT);
    let listed = admin.get("/v1/tenants/rul_a/rules").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let rules = listed.json["items"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{}", listed.text);
    assert_eq!((rules[0]["keyword"].as_str(), rules[0]["reply"].as_str()), (Some("hours"), Some("8-18")));

    // ISOLATION: tenant B's rule, named by its id or keyword under tenant A, removes nothing.
    let b_rule = admin.get("/v1/tenants/rul_b/rules").await.json["items"][0]["id"].as_i64().unwrap();
    for other in [b_rule.to_string(), "price".to_owned()] {
        let refused =
            admin.call(Method::DELETE, &format!("/v1/tenants/rul_a/rules/{other}"), Some(&admin.full), None, &[]).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    }
    assert_eq!(admin.get("/v1/tenants/rul_b/rules").await.json["items"].as_array().unwrap().len(), 1);

    let removed = admin.call(Method::DELETE, "/v1/tenants/rul_a/rules/hours", Some(&admin.full), None, &[]).await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.text);
    assert_eq!(removed.json, json!({"customer_ref": "rul_a", "keyword": "hours"}));
    assert!(admin.get("/v1/tenants/rul_a/rules").await.json["items"].as_array().unwrap().is_empty());

    // A read token may list, not change.
    let read = admin.call(Method::GET, "/v1/tenants/rul_b/rules", Some(&admin.read_only), None, &[]).await;
    assert_eq!(read.status, StatusCode::OK);
    let body = Some(json!({"keyword": "x", "reply": "y"}));
    let refused = admin.call(Method::POST, "/v1/tenants/rul_b/rules", Some(&admin.read_only), body, &[]).await;
    assert_eq!((refused.status, refused.problem()), (StatusCode::FORBIDDEN, "insufficient-scope".to_owned()));

    let audit = admin.audit_of("rul_a").await;
    let commands: Vec<(&str, &str, &str)> =
        audit.iter().map(|(op, c, _, outcome)| (op.as_str(), c.as_str(), outcome.as_str())).collect();
    assert_eq!(
        commands,
        [
            ("admin-token:ops", "tenants add", "ok"),
            ("admin-token:ops", "rules add", "ok"),
            ("admin-token:ops", "rules add", "ok"),
            ("admin-token:ops", "rules remove", "error"),
            ("admin-token:ops", "rules remove", "error"),
            ("admin-token:ops", "rules remove", "ok"),
        ]
    );
    assert!(audit.iter().all(|(_, _, args, _)| !args.to_string().contains("8-18")), "a reply is not recorded");
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_run_deletes_old_finished_replies_once_per_key_and_is_audited() {
    let admin = Admin::new().await;
    admin.create_tenant("ret_a").await;
    let old = chrono::Utc::now() - chrono::Duration::days(40);
    let bodies = vec!["old".to_owned(), "older".to_owned()];
    admin.env.queue_replies("ret_a", "15550009", &bodies, Some(old), Duration::from_secs(3600)).await;
    admin.env.queue_replies("ret_a", "15550009", &bodies[..1], None, Duration::from_secs(3600)).await;
    sqlx::query("update outbox set status = 'sent', updated_at = created_at")
        .execute(&admin.env.owner_pool)
        .await
        .unwrap();

    let key = [("Idempotency-Key", "retention-1")];
    let run = admin.call(Method::POST, "/v1/retention/run", Some(&admin.full), Some(json!({"days": 30})), &key).await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.text);
    assert_eq!((run.json["skipped"].as_bool(), run.json["outbox"].as_u64()), (Some(false), Some(2)), "{}", run.text);
    let again = admin.call(Method::POST, "/v1/retention/run", Some(&admin.full), Some(json!({"days": 30})), &key).await;
    assert_eq!(again.json, run.json, "a retried run answers the first run's report");
    let left: i64 = sqlx::query_scalar("select count(*) from outbox").fetch_one(&admin.env.owner_pool).await.unwrap();
    assert_eq!(left, 1, "the recent row stays");
    let runs: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where command = 'retention run' and operator = 'admin-token:ops' and outcome = 'ok'",
    )
    .fetch_one(&admin.env.owner_pool)
    .await
    .unwrap();
    assert_eq!(runs, 1, "one run, one record");
    for bad in [json!({"days": 0}), json!({})] {
        let refused = admin.post("/v1/retention/run", bad.clone()).await;
        assert!(refused.status.is_client_error(), "{bad}: {}", refused.text);
    }
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_reconciliation_reports_read_only_and_fix_records_ids_audited() {
    let admin = Admin::new().await;
    admin.create_tenant("rec_a").await;
    admin.env.sim.add_bridge("stray_x", None, None);
    let report = admin.post("/v1/bridges/reconcile", json!({})).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.text);
    let strays: Vec<&str> = report.json["bridges_without_tenant"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["customer_ref"].as_str().unwrap())
        .collect();
    assert_eq!(strays, ["stray_x"], "{}", report.text);
    assert_eq!(instance_id(&admin, "rec_a").await, None, "read-only without fix");
    let fixed = admin.post("/v1/bridges/reconcile", json!({"fix": true})).await;
    assert_eq!(fixed.status, StatusCode::OK, "{}", fixed.text);
    assert!(instance_id(&admin, "rec_a").await.is_some(), "fix records the listed id: {}", fixed.text);
    let audited: Vec<String> = sqlx::query_scalar("select command from audit_log where command like 'bridges%'")
        .fetch_all(&admin.env.owner_pool)
        .await
        .unwrap();
    assert_eq!(audited, ["bridges reconcile --fix"], "only the run that could change something is audited");
    let refused = admin.call(Method::POST, "/v1/bridges/reconcile", Some(&admin.read_only), Some(json!({})), &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_added_once_listed_without_keys_and_audited() {
    let admin = Admin::new().await;
    let base = admin.env.sim.base_url();
    let new = json!({"name": "acc_eu", "key_ref": "env:WA_API_KEY_EU", "base_url": base, "rate_per_min": 60,
                     "test_account": true});
    let added = admin.post("/v1/accounts", new.clone()).await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text);
    assert_eq!((added.json["name"].as_str(), added.json["created"].as_bool()), (Some("acc_eu"), Some(true)));
    let warnings = added.json["warnings"].to_string();
    assert!(warnings.contains("WA_API_KEY_EU"), "the unreadable key is said: {warnings}");
    let again = admin.post("/v1/accounts", new).await;
    assert_eq!((again.status, again.json["created"].as_bool()), (StatusCode::OK, Some(false)), "{}", again.text);
    let changed = json!({"name": "acc_eu", "key_ref": "env:WA_API_KEY_EU", "rate_per_min": 5});
    let refused = admin.post("/v1/accounts", changed).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "another account under the same name: {}", refused.text);
    let literal = admin.post("/v1/accounts", json!({"name": "acc_bad", "key_ref": "wak_live_secret"})).await;
    assert_eq!(literal.status, StatusCode::BAD_REQUEST, "a key is not a key reference: {}", literal.text);

    let listed = admin.get("/v1/accounts").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let eu = listed.json["items"].as_array().unwrap().iter().find(|a| a["name"] == "acc_eu").cloned().unwrap();
    assert_eq!(
        (eu["key_ref"].as_str(), eu["rate_per_min"].as_i64(), eu["tenants"].as_i64()),
        (Some("env:WA_API_KEY_EU"), Some(60), Some(0))
    );
    assert!(!listed.text.contains("account_id") && !listed.text.contains("\"id\""), "no internal id: {}", listed.text);
    let read = admin.call(Method::GET, "/v1/accounts", Some(&admin.read_only), None, &[]).await;
    assert_eq!(read.status, StatusCode::OK);
    let denied = admin
        .call(
            Method::POST,
            "/v1/accounts",
            Some(&admin.read_only),
            Some(json!({"name": "x", "key_ref": "env:WA_API_KEY"})),
            &[],
        )
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);

    let audit = admin.audit_of("acc_eu").await;
    let outcomes: Vec<(&str, &str)> = audit.iter().map(|(op, _, _, o)| (op.as_str(), o.as_str())).collect();
    assert_eq!(outcomes, [("admin-token:ops", "ok"), ("admin-token:ops", "ok"), ("admin-token:ops", "error")]);
    assert!(audit.iter().all(|(_, c, _, _)| c == "accounts add"));
    assert!(!admin.audit_of("acc_bad").await[0].2.to_string().is_empty(), "a refused add is audited too");
    admin.env.cleanup().await;
}

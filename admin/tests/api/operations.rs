//! Asynchronous offboarding: 202, an operation resource that moves pending → running →
//! succeeded or failed, the CLI's audit record, and runs cut by a restart.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use wafleet_tests::wait_until;

use crate::{Admin, Answer};

async fn finished(admin: &Admin, location: &str) -> Answer {
    wait_until(Duration::from_secs(30), || async {
        matches!(admin.get(location).await.json["status"].as_str(), Some("succeeded" | "failed"))
    })
    .await
    .unwrap_or_else(|e| panic!("operation not finished: {e}"));
    admin.get(location).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_answers_202_and_its_operation_moves_to_succeeded_with_every_step_audited() {
    let admin = Admin::new().await;
    admin.create_tenant("off_a").await;

    let dry = admin.post("/v1/tenants/off_a/offboard?dry_run=true", json!({})).await;
    assert_eq!(dry.status, StatusCode::ACCEPTED, "{}", dry.text);
    let location = dry.headers.get("location").unwrap().to_str().unwrap().to_owned();
    let op = finished(&admin, &location).await;
    assert_eq!(
        (op.json["status"].clone(), op.json["dry_run"].clone()),
        (json!("succeeded"), json!(true)),
        "{}",
        op.text
    );
    assert_eq!(op.json["steps"].as_array().unwrap().len(), 6);
    assert_eq!(admin.get("/v1/tenants/off_a").await.json["status"], "active", "a dry run changes nothing");

    let accepted = admin.post("/v1/tenants/off_a/offboard", json!({})).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    assert!(matches!(accepted.json["status"].as_str(), Some("pending" | "running")), "{}", accepted.text);
    let location = accepted.headers.get("location").unwrap().to_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/operations/{}", accepted.json["operation_id"].as_str().unwrap()));
    let op = finished(&admin, &location).await;
    assert_eq!(op.json["status"], "succeeded", "{}", op.text);
    assert_eq!(op.json["created_by"], "admin-token:ops");
    let steps: Vec<u64> = op.json["steps"].as_array().unwrap().iter().map(|s| s["number"].as_u64().unwrap()).collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    assert!(op.json["finished_at"].is_string());
    assert_eq!(admin.get("/v1/tenants/off_a").await.json["status"], "offboarded");
    assert!(admin.env.sim.bridges().iter().all(|b| b.customer_ref != "off_a"), "its bridge was deleted");

    let reused = admin.post("/v1/tenants", json!({"customer_ref": "off_a", "bridge": "off_a"})).await;
    assert_eq!(
        (reused.status, reused.problem()),
        (StatusCode::CONFLICT, "conflict".to_owned()),
        "a ref is never reused"
    );
    let gone = admin.get("/v1/tenants/off_a/depth").await;
    assert_eq!(gone.status, StatusCode::CONFLICT, "{}", gone.text);
    let unknown = admin.post("/v1/tenants/nobody/offboard", json!({})).await;
    assert_eq!((unknown.status, unknown.problem()), (StatusCode::NOT_FOUND, "tenant-not-found".to_owned()));

    let audit: Vec<(String, String, String)> = admin
        .audit_of("off_a")
        .await
        .into_iter()
        .filter(|(_, command, _, _)| command == "tenants offboard")
        .map(|(operator, command, _, outcome)| (operator, command, outcome))
        .collect();
    let by_token = |outcome: &str| ("admin-token:ops".to_owned(), "tenants offboard".to_owned(), outcome.to_owned());
    assert_eq!(audit, vec![by_token("dry_run"), by_token("ok")]);
    assert_eq!(admin.audit_of("nobody").await[0].3, "error", "a refused offboarding is audited too");
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_whose_run_died_is_reported_failed_and_resumable_when_read() {
    let admin = Admin::new().await;
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "insert into admin_operations (operation_id, kind, target, status, created_by, started_at, heartbeat_at) \
         values ($1, 'offboard', 'ghost', 'running', 'admin-token:ops', now() - interval '10 minutes', \
         now() - interval '10 minutes')",
    )
    .bind(id)
    .execute(&admin.env.owner_pool)
    .await
    .unwrap();
    let op = admin.get(&format!("/v1/operations/{id}")).await;
    assert_eq!(op.json["status"], "failed", "{}", op.text);
    assert!(op.json["error"].as_str().unwrap().contains("start it again"));
    admin.env.cleanup().await;
}

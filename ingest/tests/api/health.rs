//! `/healthz`, `/readyz`, `/metrics` and the JSON fallbacks.

use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::TestRouter;

#[tokio::test]
async fn healthz_answers_200_even_when_the_publisher_is_not_ready() {
    let app = TestRouter::new();
    app.publisher.set_ready(false);
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn readyz_follows_the_publisher_and_gives_a_reason_when_not_ready() {
    let app = TestRouter::new();
    let ready = app.get("/readyz").await;
    assert_eq!((ready.status, ready.json()), (StatusCode::OK, json!({"status": "ready"})));
    app.publisher.set_ready(false);
    let not_ready = app.get("/readyz").await;
    assert_eq!(not_ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(not_ready.json()["reason"], json!("publisher not ready"));
}

#[tokio::test]
async fn metrics_renders_without_an_installed_recorder() {
    let app = TestRouter::new();
    let answer = app.get("/metrics").await;
    assert_eq!((answer.status, answer.text.as_str()), (StatusCode::OK, ""));
}

#[tokio::test]
async fn unknown_routes_and_methods_get_short_json_errors() {
    let app = TestRouter::new();
    let missing = app.post_json("/webhook/cust_a", "{}").await;
    assert_eq!((missing.status, missing.error().as_str()), (StatusCode::NOT_FOUND, "not found"));
    let wrong_method = app.get(&app.url("cust_a", 1)).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.error(), "method not allowed");
    app.assert_nothing_published();
}

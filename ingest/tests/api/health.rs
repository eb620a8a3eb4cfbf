//! `/healthz`, `/readyz`, `/metrics` on the ops router, the JSON fallbacks, and the split of the
//! two ports: the webhook port serves no ops route and the ops port no webhook.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wafleet_ingest::{Application, FakePublisher};

use crate::helpers::{config, cref, generation, TestRouter};

#[tokio::test]
async fn healthz_answers_200_even_when_the_publisher_is_not_ready() {
    let app = TestRouter::new();
    app.publisher.set_ready(false);
    assert_eq!(app.ops_get("/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn readyz_follows_the_publisher_and_gives_a_reason_when_not_ready() {
    let app = TestRouter::new();
    let ready = app.ops_get("/readyz").await;
    assert_eq!((ready.status, ready.json()), (StatusCode::OK, json!({"status": "ready"})));
    app.publisher.set_ready(false);
    let not_ready = app.ops_get("/readyz").await;
    assert_eq!(not_ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(not_ready.json()["reason"], json!("publisher not ready"));
}

#[tokio::test]
async fn metrics_renders_without_an_installed_recorder() {
    let app = TestRouter::new();
    let answer = app.ops_get("/metrics").await;
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

#[tokio::test]
async fn the_webhook_router_serves_no_ops_route_and_the_ops_router_no_webhook() {
    let app = TestRouter::new();
    for path in ["/metrics", "/healthz", "/readyz", "/spoolz"] {
        let answer = app.get(path).await;
        assert_eq!((answer.status, answer.error().as_str()), (StatusCode::NOT_FOUND, "not found"), "{path}");
    }
    let webhook = app.send_ops(post_request(&app.url("cust_a", 1))).await;
    assert_eq!(webhook.status, StatusCode::NOT_FOUND);
    app.assert_nothing_published();
}

#[tokio::test]
async fn metrics_is_404_on_the_webhook_port_and_served_on_the_ops_port() {
    let mut config = config();
    config.addr = "127.0.0.1:0".parse().unwrap();
    let token = config.keyring.sign(&cref("cust_a"), generation(1));
    let publisher = Arc::new(FakePublisher::new());
    // The only test of this binary that installs the process-wide recorder.
    let handle = Some(wafleet_shared::telemetry::install_metrics().expect("no other recorder in this binary"));
    let app = Application::build_with_publisher(config, publisher.clone(), handle.clone()).await.unwrap();
    let (web, ops) = (format!("http://127.0.0.1:{}", app.port()), format!("http://127.0.0.1:{}", app.ops_port()));
    assert_ne!(app.port(), app.ops_port());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let http = reqwest::Client::new();

    let accepted =
        http.post(format!("{web}/webhook/cust_a/{token}")).json(&json!({"event": "message"})).send().await.unwrap();
    assert_eq!(accepted.status(), 200, "the webhook is served on the webhook port");
    for path in ["/metrics", "/healthz", "/readyz", "/spoolz"] {
        assert_eq!(http.get(format!("{web}{path}")).send().await.unwrap().status(), 404, "{path} on the webhook port");
        assert_eq!(http.get(format!("{ops}{path}")).send().await.unwrap().status(), 200, "{path} on the ops port");
    }
    let on_ops = http.post(format!("{ops}/webhook/cust_a/{token}")).json(&json!({})).send().await.unwrap();
    assert_eq!(on_ops.status(), 404, "the ops port takes no webhook");
    assert_eq!(publisher.published().len(), 1);
    let text = http.get(format!("{ops}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("wafleet_ingest_requests_total"), "the ops port renders the metrics: {text}");
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

fn post_request(uri: &str) -> Request<Body> {
    Request::post(uri).header("content-type", "application/json").body(Body::from("{}")).unwrap()
}

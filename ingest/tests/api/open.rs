//! The open route: off by default with a hint; when on, the body's top-level ref is the tenant
//! and anything else is dropped with 200.

use axum::http::StatusCode;
use serde_json::json;
use wafleet_shared::AuthMode;

use crate::helpers::{cref, TestRouter};

#[tokio::test]
async fn the_open_route_is_refused_with_a_hint_when_disabled() {
    let app = TestRouter::new();
    let answer = app.post_json("/webhook", json!({"customer_ref": "cust_a", "event": "message"}).to_string()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let hint = answer.json()["hint"].as_str().unwrap_or_default().to_owned();
    assert!(hint.contains("wafleet webhook-url <ref> --base <public url>"), "{hint}");
    app.assert_nothing_published();
}

#[tokio::test]
async fn an_enabled_open_route_publishes_under_the_body_ref_with_auth_open() {
    let app = TestRouter::with(|config| config.open_webhook = true);
    let body = json!({"customer_ref": "cust_a", "event": "message", "message_id": "M1", "bridge_id": "cust_b"});
    let answer = app.post_json("/webhook", body.to_string()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), json!({"status": "accepted"}));
    let (routing_key, envelope) = app.only_envelope();
    let v1 = envelope.into_v1();
    assert_eq!((routing_key, v1.customer_ref), (cref("cust_a"), cref("cust_a")));
    assert_eq!((v1.auth, v1.generation.get()), (AuthMode::Open, 0));
    assert_eq!(v1.provider_message_id.as_deref(), Some("M1"));
}

#[tokio::test]
async fn an_open_event_without_a_ref_is_dropped_with_200() {
    let app = TestRouter::with(|config| config.open_webhook = true);
    let body = json!({"event": "disconnected", "data": {"customer_ref": "cust_a"}});
    let answer = app.post_json("/webhook", body.to_string()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), json!({"status": "dropped"}));
    app.assert_nothing_published();
}

#[tokio::test]
async fn an_open_event_with_an_invalid_ref_is_dropped_with_200() {
    let app = TestRouter::with(|config| config.open_webhook = true);
    for bad in
        [json!("cust#a"), json!("*"), json!(""), json!("a".repeat(129)), json!(42), json!(null), json!(["cust_a"])]
    {
        let answer = app.post_json("/webhook", json!({"customer_ref": bad, "event": "message"}).to_string()).await;
        assert_eq!((answer.status, answer.json()), (StatusCode::OK, json!({"status": "dropped"})), "{bad}");
    }
    app.assert_nothing_published();
}

#[tokio::test]
async fn the_open_route_applies_the_same_body_checks() {
    let app = TestRouter::with(|config| config.open_webhook = true);
    let duplicate = app.post_json("/webhook", r#"{"customer_ref":"cust_a","customer_ref":"cust_b"}"#).await;
    assert_eq!(duplicate.status, StatusCode::BAD_REQUEST);
    let array = app.post_json("/webhook", r#"[{"customer_ref":"cust_a"}]"#).await;
    assert_eq!(array.status, StatusCode::BAD_REQUEST);
    let text = app.post("/webhook", Some("text/plain"), r#"{"customer_ref":"cust_a"}"#).await;
    assert_eq!(text.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    app.assert_nothing_published();
}

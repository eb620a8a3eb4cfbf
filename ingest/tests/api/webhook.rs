//! The signed route: authentication before the body, the body-ref rule, and every refusal.

use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::json;
use wafleet_ingest::FakeMode;
use wafleet_shared::AuthMode;

use crate::helpers::{cref, keyring, TestRouter, NEW_KEY, OLD_KEY};

#[tokio::test]
async fn a_valid_token_is_accepted_and_published_once_under_the_url_ref() {
    let app = TestRouter::new();
    let body = json!({"event": "message", "message_id": "3EB0A1", "body": "hi", "from_me": false});
    let answer = app.post_json(&app.url("cust_a", 3), body.to_string()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), json!({"status": "accepted"}));
    let (routing_key, envelope) = app.only_envelope();
    let v1 = envelope.into_v1();
    assert_eq!(routing_key, cref("cust_a"));
    assert_eq!(v1.customer_ref, cref("cust_a"));
    assert_eq!(v1.generation.get(), 3);
    assert_eq!(v1.auth, AuthMode::Token);
    assert_eq!(v1.event_type, "message");
    assert_eq!(v1.provider_message_id.as_deref(), Some("3EB0A1"));
    assert_eq!(v1.payload.to_value(), body);
}

#[tokio::test]
async fn a_bad_token_is_refused_before_a_ten_megabyte_non_json_body_is_read() {
    let app = TestRouter::new();
    let huge = vec![b'x'; 10 * 1024 * 1024];
    let answer = app.post("/webhook/cust_a/k2.1.AAAA", Some("text/plain"), huge).await;
    // 401, not 413 or 415: nothing about the body is looked at before the token.
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    app.assert_nothing_published();
}

#[tokio::test(start_paused = true)]
async fn a_bad_token_is_answered_without_waiting_for_a_body_that_never_ends() {
    let app = TestRouter::new();
    let never_ends = Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>());
    let started = tokio::time::Instant::now();
    let answer = app.post_json("/webhook/cust_a/not-a-token", never_ends).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(started.elapsed() < app.config.body_timeout, "the body must not be awaited");
}

#[tokio::test]
async fn a_token_for_tenant_a_is_refused_in_tenant_b_url() {
    let app = TestRouter::new();
    let url_a = app.url("cust_a", 1);
    let token_a = url_a.rsplit('/').next().unwrap_or_default();
    let answer = app.post_json(&format!("/webhook/cust_b/{token_a}"), r#"{"event":"message"}"#).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    app.assert_nothing_published();
}

#[tokio::test]
async fn an_older_generation_still_verifies_but_a_forged_generation_does_not() {
    let app = TestRouter::new();
    // Ingest only proves the URL was signed; the worker compares the generation with the tenant.
    let old = app.post_json(&app.url("cust_a", 1), r#"{"event":"message"}"#).await;
    assert_eq!(old.status, StatusCode::OK);
    assert_eq!(app.only_envelope().1.into_v1().generation.get(), 1);

    let forged = app.url("cust_a", 1).replacen(".1.", ".2.", 1);
    let answer = app.post_json(&forged, r#"{"event":"message"}"#).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.publisher.published().len(), 1);
}

#[tokio::test]
async fn a_token_signed_with_a_retired_key_is_refused() {
    let signer = keyring(OLD_KEY);
    let token = signer.sign(&cref("cust_a"), crate::helpers::generation(1));
    let rotated = TestRouter::new();
    let accepted = rotated.post_json(&format!("/webhook/cust_a/{token}"), "{}").await;
    assert_eq!(accepted.status, StatusCode::OK, "during rotation the old key still verifies");

    let retired = TestRouter::with(|config| config.keyring = std::sync::Arc::new(keyring(NEW_KEY)));
    let answer = retired.post_json(&format!("/webhook/cust_a/{token}"), "{}").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    retired.assert_nothing_published();
}

#[tokio::test]
async fn a_body_ref_that_differs_from_the_url_ref_is_refused() {
    let app = TestRouter::new();
    for body in [
        json!({"customer_ref": "cust_b", "event": "message"}),
        json!({"customer_ref": "CUST_A"}),
        json!({"customer_ref": null}),
        json!({"customer_ref": 7}),
    ] {
        let answer = app.post_json(&app.url("cust_a", 1), body.to_string()).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{body}");
    }
    app.assert_nothing_published();
    let same = app.post_json(&app.url("cust_a", 1), json!({"customer_ref": "cust_a"}).to_string()).await;
    assert_eq!(same.status, StatusCode::OK);
}

#[tokio::test]
async fn a_body_without_customer_ref_is_routed_by_the_url_ref() {
    let app = TestRouter::new();
    let answer = app.post_json(&app.url("cust_a", 1), r#"{"event":"disconnected"}"#).await;
    assert_eq!(answer.status, StatusCode::OK);
    let (routing_key, envelope) = app.only_envelope();
    let v1 = envelope.into_v1();
    assert_eq!((routing_key, v1.customer_ref), (cref("cust_a"), cref("cust_a")));
    assert_eq!(v1.event_type, "disconnected");
    assert_eq!(v1.provider_message_id, None);
}

#[tokio::test]
async fn body_fields_naming_another_tenant_never_route_the_event() {
    let app = TestRouter::new();
    let body = json!({
        "event": "message",
        "bridge_id": "cust_b",
        "instance": "cust_b",
        "phone": "447700900999",
        "chat_id": "cust_b@s.whatsapp.net",
        "data": {"customer_ref": "cust_b"},
        "list": [{"customer_ref": "cust_b"}],
    });
    let answer = app.post_json(&app.url("cust_a", 1), body.to_string()).await;
    assert_eq!(answer.status, StatusCode::OK);
    let (routing_key, envelope) = app.only_envelope();
    assert_eq!(routing_key, cref("cust_a"));
    assert_eq!(envelope.customer_ref(), &cref("cust_a"));
}

#[tokio::test]
async fn malformed_or_disguised_url_refs_are_refused_and_valid_odd_ones_accepted() {
    let app = TestRouter::new();
    let token = app.url("cust_a", 1).rsplit('/').next().unwrap_or_default().to_owned();
    let long = "a".repeat(129);
    for bad in ["%23", "*", "%00", "a%20b", "cust%00a", long.as_str(), "%EF%BD%83ust_a", "cust%5Fa", "cust%2Fa"] {
        let answer = app.post_json(&format!("/webhook/{bad}/{token}"), "{}").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{bad}");
    }
    // An encoded token is refused too, even when it decodes to the right one.
    let encoded_token = token.replacen('.', "%2E", 1);
    let answer = app.post_json(&format!("/webhook/cust_a/{encoded_token}"), "{}").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    app.assert_nothing_published();

    let max = "b".repeat(128);
    for good in ["a.b", "cust:1-x_Y", max.as_str()] {
        let answer = app.post_json(&app.url(good, 1), "{}").await;
        assert_eq!(answer.status, StatusCode::OK, "{good}");
    }
    let keys: Vec<String> = app.publisher.published().into_iter().map(|(key, _)| key.to_string()).collect();
    assert_eq!(keys, ["a.b", "cust:1-x_Y", max.as_str()]);
}

#[tokio::test]
async fn duplicate_customer_ref_keys_are_refused_with_400() {
    let app = TestRouter::new();
    for body in [
        r#"{"customer_ref":"cust_a","customer_ref":"cust_b"}"#,
        r#"{"customer_ref":"cust_b","customer_ref":"cust_a"}"#,
        r#"{"customer_ref":"cust_a","customer\u005fref":"cust_b"}"#,
    ] {
        let answer = app.post_json(&app.url("cust_a", 1), body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.error(), "body repeats a top-level key");
    }
    app.assert_nothing_published();
}

#[tokio::test]
async fn bodies_that_are_not_a_json_object_are_refused_with_400() {
    let app = TestRouter::new();
    let deep = "[".repeat(10_000);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "body is not valid JSON"),
        (b"{\"event\":\"message\"".to_vec(), "body is not valid JSON"),
        (b"{\"body\":\"\xff\xfe\"}".to_vec(), "body is not valid UTF-8"),
        (b"[{\"event\":\"message\"}]".to_vec(), "body must be a JSON object"),
        (b"\"message\"".to_vec(), "body must be a JSON object"),
        (deep.into_bytes(), "body is not valid JSON"),
        ("{\"a\":".repeat(10_000).into_bytes(), "body is not valid JSON"),
    ];
    for (body, error) in cases {
        let answer = app.post_json(&app.url("cust_a", 1), body).await;
        assert_eq!((answer.status, answer.error().as_str()), (StatusCode::BAD_REQUEST, error));
    }
    app.assert_nothing_published();
}

#[tokio::test]
async fn a_wrong_or_missing_content_type_is_refused_with_415() {
    let app = TestRouter::new();
    let url = app.url("cust_a", 1);
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let answer = app.post(&url, content_type, r#"{"event":"message"}"#).await;
        assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type:?}");
    }
    app.assert_nothing_published();
    let answer = app.post(&url, Some("Application/JSON; charset=UTF-8"), "{}").await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_declared_or_streamed() {
    let app = TestRouter::with(|config| config.body_limit_bytes = 64);
    let url = app.url("cust_a", 1);
    let big = format!(r#"{{"event":"message","body":"{}"}}"#, "x".repeat(100));
    let declared = app.post_json(&url, big.clone()).await;
    assert_eq!(declared.status, StatusCode::PAYLOAD_TOO_LARGE);
    let chunks = vec![Ok::<_, std::io::Error>(big[..40].to_owned()), Ok(big[40..].to_owned())];
    let streamed = app.post_json(&url, Body::from_stream(futures::stream::iter(chunks))).await;
    assert_eq!(streamed.status, StatusCode::PAYLOAD_TOO_LARGE);
    app.assert_nothing_published();
    let fits = app.post_json(&url, r#"{"event":"message"}"#).await;
    assert_eq!(fits.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_body_that_never_finishes_times_out_with_408() {
    let app = TestRouter::with(|config| config.body_timeout = Duration::from_millis(300));
    let first = futures::stream::iter([Ok::<_, std::io::Error>(b"{\"event\":".to_vec())]);
    let stalled = Body::from_stream(futures::StreamExt::chain(first, futures::stream::pending()));
    let started = tokio::time::Instant::now();
    let answer = app.post_json(&app.url("cust_a", 1), stalled).await;
    assert_eq!(answer.status, StatusCode::REQUEST_TIMEOUT);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(400), "{elapsed:?}");
    app.assert_nothing_published();
}

#[tokio::test]
async fn a_failing_publisher_answers_503_broker_unavailable() {
    let app = TestRouter::new();
    app.publisher.set_mode(FakeMode::Fail);
    let answer = app.post_json(&app.url("cust_a", 1), r#"{"event":"message"}"#).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json(), json!({"error": "broker unavailable"}));
}

#[tokio::test(start_paused = true)]
async fn a_hanging_publisher_answers_503_when_the_deadline_passes() {
    let app = TestRouter::with(|config| config.publish_timeout = Duration::from_millis(250));
    app.publisher.set_mode(FakeMode::Hang);
    let started = tokio::time::Instant::now();
    let answer = app.post_json(&app.url("cust_a", 1), r#"{"event":"message"}"#).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(250) && elapsed < Duration::from_millis(350), "{elapsed:?}");
}

#[tokio::test]
async fn error_bodies_never_echo_the_payload_or_the_token() {
    let app = TestRouter::with(|config| config.body_limit_bytes = 256);
    let marker = "SECRET_PAYLOAD_MARKER";
    let url = app.url("cust_a", 1);
    let token = url.rsplit('/').next().unwrap_or_default().to_owned();
    let answers = vec![
        app.post_json(&format!("/webhook/cust_b/{token}"), format!(r#"{{"x":"{marker}"}}"#)).await,
        app.post_json(&format!("/webhook/cust_a/{marker}"), "{}").await,
        app.post_json(&url, format!(r#"{{"customer_ref":"{marker}"}}"#)).await,
        app.post_json(&url, format!(r#"{{"{marker}":1,"{marker}":2}}"#)).await,
        app.post_json(&url, format!("{marker} not json")).await,
        app.post_json(&url, format!(r#"["{marker}"]"#)).await,
        app.post_json(&url, format!(r#"{{"x":"{marker}{}"}}"#, "y".repeat(300))).await,
        app.post(&url, Some("text/plain"), marker).await,
    ];
    for answer in answers {
        assert!(answer.status.is_client_error(), "{}", answer.status);
        assert!(!answer.text.contains(marker) && !answer.text.contains(&token), "{}", answer.text);
        assert!(answer.text.len() < 200 && !answer.error().is_empty(), "{}", answer.text);
    }
    app.assert_nothing_published();
}

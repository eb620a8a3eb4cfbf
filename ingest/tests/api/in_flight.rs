//! The bound on webhook bodies in flight (`WAFLEET_BODY_BYTES_IN_FLIGHT`).

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use wafleet_ingest::FakeMode;

use crate::helpers::TestRouter;

#[tokio::test]
async fn a_request_without_room_among_the_bodies_in_flight_waits_then_gets_503_and_nothing_is_published() {
    let app = TestRouter::with(|c| {
        c.body_limit_bytes = 4096;
        c.body_bytes_in_flight = 8192;
        c.body_timeout = Duration::from_millis(300);
        c.publish_timeout = Duration::from_secs(3);
    });
    app.publisher.set_mode(FakeMode::Hang);
    let url = app.url("cust_a", 1);
    let body = r#"{"event":"message","body":"held"}"#;
    assert!(body.len() < 4096);
    // Two requests declaring 4 KiB each fill the room while their publishes hang.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (router, url) = (app.router.clone(), url.clone());
            let body = format!("{body:<4096}");
            tokio::spawn(async move {
                let request = axum::http::Request::post(url)
                    .header("content-type", "application/json")
                    .header("content-length", body.len());
                tower::ServiceExt::oneshot(router, request.body(axum::body::Body::from(body)).unwrap()).await
            })
        })
        .collect();
    let full = Instant::now() + Duration::from_secs(5);
    while app.in_flight.free_kib() > 0 {
        assert!(Instant::now() < full, "two held requests fill the room");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let started = Instant::now();
    let refused = app.post_json(&url, r#"{"event":"message","body":"third"}"#).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.error(), "ingest busy; retry later");
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited for room first");

    // The held requests end (their publish deadline), which frees the room.
    app.publisher.set_mode(FakeMode::Accept);
    for request in held {
        assert_eq!(request.await.unwrap().unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(app.in_flight.free_kib(), 8);
    let accepted = app.post_json(&url, r#"{"event":"message","body":"fourth"}"#).await;
    assert_eq!(accepted.status, StatusCode::OK);
    let bodies: Vec<String> = app
        .publisher
        .envelopes()
        .into_iter()
        .map(|(_, e)| e.into_v1().payload.to_value()["body"].to_string())
        .collect();
    assert_eq!(bodies, ["\"fourth\""], "the refused body was never published");
}

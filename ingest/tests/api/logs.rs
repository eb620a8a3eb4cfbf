//! Logs name the route template and the tenant, never the token, the URL or the payload.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use wafleet_ingest::FakeMode;

use crate::helpers::TestRouter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn no_log_line_carries_the_token_or_the_payload_even_at_trace_level() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = TestRouter::with(|config| config.open_webhook = true);
    let marker = "PAYLOAD_MARKER_7731";
    let url = app.url("cust_a", 1);
    let token = url.rsplit('/').next().unwrap_or_default().to_owned();
    let body = format!(r#"{{"event":"message","body":"{marker}"}}"#);
    assert_eq!(app.post_json(&url, body.clone()).await.status, StatusCode::OK);
    assert_eq!(app.post_json(&format!("/webhook/cust_b/{token}"), body.clone()).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.post_json(&url, format!("{marker} not json")).await.status, StatusCode::BAD_REQUEST);
    let dropped = app.post_json("/webhook", format!(r#"{{"customer_ref":"bad#ref","body":"{marker}"}}"#)).await;
    assert_eq!(dropped.status, StatusCode::OK);
    app.publisher.set_mode(FakeMode::Fail);
    assert_eq!(app.post_json(&url, body).await.status, StatusCode::SERVICE_UNAVAILABLE);

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(logs.contains("/webhook/{customer_ref}/{token}"), "spans name the route template:\n{logs}");
    assert!(logs.contains("tenant=\"cust_a\""), "spans name the verified tenant:\n{logs}");
    assert!(logs.contains("\"bad#ref\""), "a dropped open event names its ref:\n{logs}");
    assert!(!logs.contains(&token), "token leaked:\n{logs}");
    assert!(!logs.contains(marker), "payload leaked:\n{logs}");
}

//! Events and envelopes as WA Bridges and ingest make them, for tests that post or publish them.

use wafleet_shared::{AuthMode, CustomerRef};

/// A v1 envelope of a `message` event for `customer_ref`, as ingest would publish it.
pub fn test_envelope(
    customer_ref: &str,
    body: &str,
    message_id: &str,
    received_at: chrono::DateTime<chrono::Utc>,
) -> wafleet_shared::Envelope {
    wafleet_shared::Envelope::V1(wafleet_shared::EnvelopeV1 {
        ingest_id: wafleet_shared::IngestId::new(),
        customer_ref: CustomerRef::parse(customer_ref).expect("valid ref"),
        generation: wafleet_shared::Generation::FIRST,
        auth: AuthMode::Token,
        received_at,
        event_type: "message".into(),
        provider_message_id: Some(message_id.into()),
        payload: message_event("15550000077", body, message_id).into(),
    })
}

/// A documented WA Bridges `message` event.
pub fn message_event(chat: &str, body: &str, message_id: &str) -> serde_json::Value {
    serde_json::json!({
        "event": "message",
        "message_id": message_id,
        "contact_id": format!("{chat}@s.whatsapp.net"),
        "phone": chat,
        "chat_id": format!("{chat}@s.whatsapp.net"),
        "name": "Test",
        "body": body,
        "type": "text",
        "media_type": "",
        "is_group": false,
        "from_me": false,
        "timestamp": 1_777_180_700
    })
}

/// POSTs `body` as JSON to `url` and returns the status.
pub async fn post_json(url: &str, body: &serde_json::Value) -> u16 {
    reqwest::Client::new().post(url).json(body).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

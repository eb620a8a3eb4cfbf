//! Request bodies and envelopes: documented WA Bridges `message` events padded to a size, with a
//! marker (`<tag>-<seq>`) at the start of the text, which the echo bot sends back and which
//! identifies the reply recorded at the simulator.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use wafleet_shared::envelope::Payload;
use wafleet_shared::{AuthMode, CustomerRef, Envelope, EnvelopeV1, Generation, IngestId};

/// The chat number of request `seq` (12 digits, 1:1 chat).
fn chat(seq: u64) -> String {
    format!("4477009{:05}", seq % 100_000)
}

/// A `message` webhook body of about `size` bytes whose text starts with `<tag>-<seq>`.
pub fn webhook_body(tag: &str, seq: u64, size: usize) -> Bytes {
    body_with_ref(None, tag, seq, size)
}

/// [`webhook_body`] carrying the top-level `customer_ref` WA Bridges adds to every event by
/// default: the naive ingest ceiling routes by it, and ingest checks it against the URL.
pub fn webhook_body_of(customer_ref: &str, tag: &str, seq: u64, size: usize) -> Bytes {
    body_with_ref(Some(customer_ref), tag, seq, size)
}

fn body_with_ref(customer_ref: Option<&str>, tag: &str, seq: u64, size: usize) -> Bytes {
    let build = |pad: usize| {
        let number = chat(seq);
        let mut event = serde_json::json!({
            "event": "message",
            "message_id": format!("BENCH{tag}{seq:012}"),
            "contact_id": format!("{number}@s.whatsapp.net"),
            "phone": number,
            "chat_id": format!("{number}@s.whatsapp.net"),
            "name": "Bench",
            "body": format!("{tag}-{seq} {}", "x".repeat(pad)),
            "type": "text",
            "media_type": "",
            "is_group": false,
            "from_me": false,
            "timestamp": 1_777_180_700
        });
        if let Some(r) = customer_ref {
            event["customer_ref"] = r.into();
        }
        event.to_string()
    };
    let base = build(0).len();
    Bytes::from(build(size.saturating_sub(base)))
}

/// The marker of a reply text (`<tag>-<seq>`), parsed back into `(tag, seq)`.
pub fn parse_marker(text: &str) -> Option<(&str, u64)> {
    let first = text.split_whitespace().next()?;
    let (tag, seq) = first.rsplit_once('-')?;
    Some((tag, seq.parse().ok()?))
}

/// The envelope ingest would publish for `body` (same encoder, so the same size on the broker).
pub fn envelope(
    customer_ref: &CustomerRef,
    generation: Generation,
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Vec<u8> {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    let provider_message_id = value.get("message_id").and_then(|v| v.as_str()).map(str::to_owned);
    // The body's own text, as ingest forwards it.
    let payload = Payload::from_json_text(String::from_utf8_lossy(body).into_owned()).unwrap_or_else(|_| value.into());
    Envelope::V1(EnvelopeV1 {
        ingest_id: IngestId::new(),
        customer_ref: customer_ref.clone(),
        generation,
        auth: AuthMode::Token,
        received_at,
        event_type: "message".into(),
        provider_message_id,
        payload,
    })
    .to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_size_and_marker() {
        for size in [600, 8192] {
            let b = webhook_body("e1", 42, size);
            assert_eq!(b.len(), size);
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
            assert_eq!(v["body"].as_str().and_then(parse_marker), Some(("e1", 42)));
        }
        let with_ref = webhook_body_of("bench_t00001", "e1", 42, 600);
        assert_eq!(with_ref.len(), 600);
        let v: serde_json::Value = serde_json::from_slice(&with_ref).unwrap_or_default();
        assert_eq!(v["customer_ref"], "bench_t00001");
        assert_eq!(parse_marker("a-b-7 xx"), Some(("a-b", 7)));
        assert_eq!(parse_marker("nothing"), None);
    }
}

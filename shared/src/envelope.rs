//! The queue message contract: one versioned enum, tagged by `"v"`. Add variants, never change old
//! ones, so old and new workers can run side by side during a rollout.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{CustomerRef, Generation, IngestId};

mod payload;

pub use payload::Payload;

/// How ingest authenticated the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Signed per-tenant URL (`/webhook/{ref}/{token}`).
    Token,
    /// The unauthenticated `/webhook` route; the worker accepts it only for `auth_mode = open` tenants.
    Open,
}

impl AuthMode {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Token => "token",
            AuthMode::Open => "open",
        }
    }

    /// Parses the database spelling.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "token" => Some(AuthMode::Token),
            "open" => Some(AuthMode::Open),
            _ => None,
        }
    }
}

/// Version 1 of the envelope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvelopeV1 {
    /// UUIDv7 fixed by ingest before publishing; the dedupe key.
    pub ingest_id: IngestId,
    /// The authenticated tenant. ISOLATION: only ever taken from the verified URL (or, for the
    /// open route, the body ref), never from any other payload field.
    pub customer_ref: CustomerRef,
    /// The URL generation the token was signed for (open events carry 0).
    pub generation: Generation,
    /// How ingest authenticated the event.
    pub auth: AuthMode,
    /// When ingest accepted the event.
    pub received_at: DateTime<Utc>,
    /// The webhook's `event` field (`message`, `connected`, ...), or `unknown`.
    pub event_type: String,
    /// The WA Bridges `message_id`, when present.
    pub provider_message_id: Option<String>,
    /// The webhook body as ingest received it (its JSON text, byte for byte).
    pub payload: Payload,
}

/// Every envelope version. Serialized with a `"v"` tag; read with [`Envelope::decode`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "v")]
pub enum Envelope {
    /// Version 1.
    #[serde(rename = "1")]
    V1(EnvelopeV1),
}

/// Why a message body is not an envelope this binary can process.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A version this binary does not know, probably written by a newer release. Leave it for a
    /// newer worker rather than dead-lettering it.
    #[error("unknown envelope version {0}")]
    UnknownVersion(String),
    /// Not an envelope at all: permanent.
    #[error("malformed envelope: {0}")]
    Malformed(#[source] serde_json::Error),
}

impl Envelope {
    /// Encodes for publishing.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a message body, telling unknown versions apart from garbage. The version is read
    /// first, then the version's own struct: serde's internally tagged enums buffer every field,
    /// which would turn the payload into a tree (and cannot hold its text at all).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            v: serde_json::Value,
        }
        match serde_json::from_slice::<VersionOnly>(bytes) {
            Ok(VersionOnly { v }) if v == serde_json::Value::String("1".into()) => {}
            Ok(VersionOnly { v }) => return Err(DecodeError::UnknownVersion(v.to_string())),
            Err(err) => return Err(DecodeError::Malformed(err)),
        }
        serde_json::from_slice::<EnvelopeV1>(bytes).map(Envelope::V1).map_err(DecodeError::Malformed)
    }

    /// The latest-version view every current consumer works with.
    pub fn into_v1(self) -> EnvelopeV1 {
        match self {
            Envelope::V1(v1) => v1,
        }
    }

    /// The tenant the envelope names.
    pub fn customer_ref(&self) -> &CustomerRef {
        match self {
            Envelope::V1(v1) => &v1.customer_ref,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(customer_ref: &str) -> Envelope {
        Envelope::V1(EnvelopeV1 {
            ingest_id: IngestId::new(),
            customer_ref: CustomerRef::parse(customer_ref).unwrap_or_else(|e| panic!("{e}")),
            generation: Generation::FIRST,
            auth: AuthMode::Token,
            received_at: Utc::now(),
            event_type: "message".into(),
            provider_message_id: Some("3EB0".into()),
            payload: serde_json::json!({"event": "message", "body": "hi"}).into(),
        })
    }

    #[test]
    fn v1_round_trips_with_its_tag() {
        let e = sample("cust_a");
        let bytes = e.to_bytes();
        assert!(String::from_utf8_lossy(&bytes).contains("\"v\":\"1\""));
        assert_eq!(Envelope::decode(&bytes).ok(), Some(e));
    }

    #[test]
    fn unknown_versions_are_told_apart_from_garbage() {
        assert!(matches!(Envelope::decode(br#"{"v":"2","x":1}"#), Err(DecodeError::UnknownVersion(_))));
        assert!(matches!(Envelope::decode(b"not json"), Err(DecodeError::Malformed(_))));
        assert!(matches!(Envelope::decode(br#"{"v":"1"}"#), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn envelope_with_an_invalid_ref_is_rejected_on_decode() {
        let mut json: serde_json::Value = serde_json::from_slice(&sample("ok").to_bytes()).unwrap_or_default();
        json["customer_ref"] = "a#b".into();
        let bytes = serde_json::to_vec(&json).unwrap_or_default();
        assert!(matches!(Envelope::decode(&bytes), Err(DecodeError::Malformed(_))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_v1_envelope_round_trips(r in "[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,127}", body in "\\PC{0,64}", gen in 0u64..i64::MAX as u64, open in any::<bool>()) {
            let mut e = sample(&r).into_v1();
            e.payload = serde_json::json!({"event": "message", "body": body}).into();
            e.generation = Generation::from_db(gen as i64).unwrap_or(Generation::FIRST);
            e.auth = if open { AuthMode::Open } else { AuthMode::Token };
            let e = Envelope::V1(e);
            prop_assert_eq!(Envelope::decode(&e.to_bytes()).ok(), Some(e));
        }

        #[test]
        fn nested_payloads_and_optional_fields_round_trip_unchanged(
            r in "[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,127}",
            payload in json_value(),
            event_type in "\\PC{0,16}",
            provider_id in prop::option::of("\\PC{0,32}"),
            received_ms in 0i64..4_102_444_800_000,
        ) {
            let mut e = sample(&r).into_v1();
            e.payload = payload.into();
            e.event_type = event_type;
            e.provider_message_id = provider_id;
            e.received_at = DateTime::from_timestamp_millis(received_ms).unwrap_or_default();
            let e = Envelope::V1(e);
            prop_assert_eq!(Envelope::decode(&e.to_bytes()).ok(), Some(e));
        }

        #[test]
        fn a_corrupted_envelope_never_panics_and_never_decodes_to_an_invalid_ref(
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = sample("cust_a").to_bytes();
            let at = at.index(bytes.len());
            bytes[at] = byte;
            if let Ok(e) = Envelope::decode(&bytes) {
                prop_assert!(CustomerRef::parse(e.customer_ref().as_str()).is_ok());
            }
        }
    }

    /// JSON without floats (serde_json reads floats best-effort, so their last bit may move).
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            "\\PC{0,16}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map("\\PC{0,8}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}

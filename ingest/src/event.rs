//! The verified event: the only type that can be published, and the only place that decides
//! which tenant an event belongs to.
//!
//! A [`VerifiedEvent`] is made either from a URL ref whose token verified (the body's
//! `customer_ref`, when present, must match it) or, on the open route, from the body's top-level
//! `customer_ref`. This module must not look at any other payload field to choose a tenant.

use serde_json::Value;
use wafleet_shared::{AuthMode, CustomerRef, Envelope, EnvelopeV1, Generation, IngestId};

use crate::error::Error;
use crate::payload::JsonObject;

/// An authenticated event, ready to be wrapped in an envelope. Its fields are private so that
/// nothing can change the tenant between verification and publishing.
#[derive(Debug)]
pub struct VerifiedEvent {
    customer_ref: CustomerRef,
    generation: Generation,
    auth: AuthMode,
    payload: JsonObject,
}

/// Why an open-route event was answered 200 but not published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// The body has no top-level `customer_ref`.
    MissingRef,
    /// The body's `customer_ref` is not a string or not a valid ref. Holds a log-safe rendering.
    InvalidRef(String),
}

impl Dropped {
    /// The `reason` label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Dropped::MissingRef => "missing_ref",
            Dropped::InvalidRef(_) => "invalid_ref",
        }
    }
}

impl VerifiedEvent {
    /// An event that arrived on `/webhook/{ref}/{token}` with a verified token.
    pub fn signed(url_ref: CustomerRef, generation: Generation, payload: JsonObject) -> Result<Self, Error> {
        // ISOLATION: the URL ref is the tenant. A body ref may only confirm it, byte for byte;
        // a different, non-string or null body ref refuses the whole event.
        match payload.customer_ref() {
            None => {}
            Some(Value::String(body_ref)) if body_ref == url_ref.as_str() => {}
            Some(_) => return Err(Error::RefMismatch),
        }
        Ok(Self { customer_ref: url_ref, generation, auth: AuthMode::Token, payload })
    }

    /// An event that arrived on the open `/webhook` route. The caller has checked that the open
    /// route is enabled; the worker still drops it unless the tenant's `auth_mode` is `open`.
    pub fn open(payload: JsonObject) -> Result<Self, Dropped> {
        // ISOLATION: on the open route the top-level `customer_ref` is the only tenant source;
        // there is no fallback tenant, so anything else is dropped.
        let customer_ref = match payload.customer_ref() {
            None => return Err(Dropped::MissingRef),
            Some(Value::String(raw)) => CustomerRef::parse(raw).map_err(|_| Dropped::InvalidRef(log_safe(raw)))?,
            Some(other) => return Err(Dropped::InvalidRef(format!("<{}>", json_type(other)))),
        };
        // Open events carry generation 0; "0" is canonical, so this never drops in practice.
        let generation = Generation::parse_canonical("0").ok_or(Dropped::MissingRef)?;
        Ok(Self { customer_ref, generation, auth: AuthMode::Open, payload })
    }

    /// The tenant this event belongs to.
    pub fn customer_ref(&self) -> &CustomerRef {
        &self.customer_ref
    }

    /// Wraps the event in a v1 envelope under `ingest_id`.
    pub fn into_envelope(self, ingest_id: IngestId, received_at: chrono::DateTime<chrono::Utc>) -> Envelope {
        let event_type = self.payload.event().unwrap_or("unknown").to_owned();
        let provider_message_id = self.payload.message_id().map(str::to_owned);
        Envelope::V1(EnvelopeV1 {
            ingest_id,
            customer_ref: self.customer_ref,
            generation: self.generation,
            auth: self.auth,
            received_at,
            event_type,
            provider_message_id,
            payload: self.payload.into_payload(),
        })
    }
}

/// An invalid ref, quoted and cut short, so a log line cannot be forged or flooded through it.
fn log_safe(raw: &str) -> String {
    let cut: String = raw.chars().take(64).collect();
    format!("{cut:?}")
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;

    fn object(value: Value) -> JsonObject {
        crate::payload::parse_object(&serde_json::to_vec(&value).unwrap()).unwrap()
    }

    fn cref(raw: &str) -> CustomerRef {
        CustomerRef::parse(raw).unwrap()
    }

    #[test]
    fn a_signed_event_keeps_the_url_ref_whatever_other_fields_say() {
        let body = object(json!({"bridge_id": "b", "instance": "i", "data": {"customer_ref": "cust_b"}}));
        let event = VerifiedEvent::signed(cref("cust_a"), Generation::FIRST, body).unwrap();
        assert_eq!(event.customer_ref().as_str(), "cust_a");
    }

    #[test]
    fn a_signed_event_refuses_any_body_ref_but_its_own() {
        for bad in [json!("cust_b"), json!("CUST_A"), json!(null), json!(1), json!(["cust_a"]), json!("cust_a ")] {
            let body = object(json!({ "customer_ref": bad }));
            let result = VerifiedEvent::signed(cref("cust_a"), Generation::FIRST, body);
            assert!(matches!(result, Err(Error::RefMismatch)), "{bad}");
        }
        let same = object(json!({"customer_ref": "cust_a"}));
        assert!(VerifiedEvent::signed(cref("cust_a"), Generation::FIRST, same).is_ok());
    }

    #[test]
    fn open_events_take_the_body_ref_or_are_dropped() {
        let event = VerifiedEvent::open(object(json!({"customer_ref": "cust_a"}))).unwrap();
        assert_eq!(event.customer_ref().as_str(), "cust_a");
        assert_eq!(VerifiedEvent::open(object(json!({"event": "x"}))).err(), Some(Dropped::MissingRef));
        let invalid = VerifiedEvent::open(object(json!({"customer_ref": "a\nb"}))).err();
        assert_eq!(invalid, Some(Dropped::InvalidRef("\"a\\nb\"".into())));
        let number = VerifiedEvent::open(object(json!({"customer_ref": 5}))).err();
        assert_eq!(number.map(|d| d.reason()), Some("invalid_ref"));
    }

    #[test]
    fn the_envelope_carries_event_type_and_provider_id_when_they_are_strings() {
        let body = object(json!({"event": "message", "message_id": "3EB0"}));
        let envelope = VerifiedEvent::signed(cref("a"), Generation::FIRST, body)
            .unwrap()
            .into_envelope(IngestId::new(), chrono::Utc::now());
        let v1 = envelope.into_v1();
        assert_eq!((v1.event_type.as_str(), v1.provider_message_id.as_deref()), ("message", Some("3EB0")));
        let body = object(json!({"event": 3, "message_id": 4}));
        let v1 = VerifiedEvent::open(object(json!({"customer_ref": "a"})))
            .unwrap()
            .into_envelope(IngestId::new(), chrono::Utc::now())
            .into_v1();
        assert_eq!((v1.event_type.as_str(), v1.auth, v1.generation.get()), ("unknown", AuthMode::Open, 0));
        let v1 = VerifiedEvent::signed(cref("a"), Generation::FIRST, body)
            .unwrap()
            .into_envelope(IngestId::new(), chrono::Utc::now());
        assert_eq!(v1.into_v1().provider_message_id, None);
    }
}

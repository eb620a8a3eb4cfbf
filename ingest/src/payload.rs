//! Checks a webhook body: UTF-8, JSON syntax, "must be an object", and a refusal of any repeated
//! top-level key, and keeps it as the text it arrived as. Only the top-level fields that ingest
//! itself needs (`customer_ref`, `event`, `message_id`) are read into values; the rest is scanned
//! and left alone, so an event costs no JSON tree and no re-encoding on its way to the broker.
//!
//! The repeated-key rule exists for tenant isolation: with
//! `{"customer_ref":"a","customer_ref":"b"}` two layers could otherwise read two different refs.
//! This module must not decide which tenant an event belongs to (see `event`).

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use wafleet_shared::envelope::Payload;

use crate::error::Error;

/// The body key that may name the tenant. Only ever read at the top level; which tenant it
/// names is decided in `event`.
pub const REF_KEY: &str = "customer_ref";

/// A webhook body that parsed as a JSON object with unique top-level keys: its text, and the
/// top-level fields ingest reads.
#[derive(Debug)]
pub struct JsonObject {
    text: String,
    customer_ref: Option<Value>,
    event: Option<Value>,
    message_id: Option<Value>,
}

impl JsonObject {
    /// The top-level `customer_ref`, as whatever JSON value it is.
    pub fn customer_ref(&self) -> Option<&Value> {
        self.customer_ref.as_ref()
    }

    /// The top-level `event`, when it is a string.
    pub fn event(&self) -> Option<&str> {
        self.event.as_ref().and_then(Value::as_str)
    }

    /// The top-level `message_id`, when it is a string.
    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_ref().and_then(Value::as_str)
    }

    /// The body's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The body as an envelope payload, byte for byte.
    pub fn into_payload(self) -> Payload {
        // Checked above as one JSON object; the second scan only confirms it.
        Payload::from_json_text(self.text).unwrap_or_else(|_| Payload::from(Value::Null))
    }
}

/// Parses `bytes` as a JSON object. Invalid UTF-8, invalid JSON (including nesting past
/// serde_json's recursion limit), a non-object, or a repeated top-level key is an error.
pub fn parse_object(bytes: &[u8]) -> Result<JsonObject, Error> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::InvalidUtf8)?;
    let duplicate = Cell::new(false);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    // serde_json keeps its recursion limit (128) here, also for the values it skips (`Skipped`),
    // so a deeply nested body fails cleanly instead of overflowing the stack.
    let parsed = ObjectSeed { duplicate: &duplicate }.deserialize(&mut deserializer);
    let top = match parsed {
        Ok(top) => top,
        Err(_) if duplicate.get() => return Err(Error::DuplicateKey),
        // The serde_json message may quote the input, so only the category is kept.
        Err(_) => return Err(Error::InvalidJson),
    };
    deserializer.end().map_err(|_| Error::InvalidJson)?;
    match top {
        TopLevel::Object(fields) => Ok(JsonObject {
            text: text.to_owned(),
            customer_ref: fields.customer_ref,
            event: fields.event,
            message_id: fields.message_id,
        }),
        TopLevel::Other => Err(Error::NotObject),
    }
}

#[derive(Default)]
struct TopFields {
    customer_ref: Option<Value>,
    event: Option<Value>,
    message_id: Option<Value>,
}

enum TopLevel {
    Object(TopFields),
    Other,
}

/// Visits the top-level value; `duplicate` is set when the error is a repeated key, so the caller
/// can tell it apart from a syntax error without parsing error messages.
struct ObjectSeed<'a> {
    duplicate: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = TopLevel;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<TopLevel, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = TopLevel;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<TopLevel, A::Error> {
        let mut seen = HashSet::new();
        let mut fields = TopFields::default();
        // Keys arrive unescaped, so `customer\u005fref` counts as a second `customer_ref`.
        while let Some(key) = access.next_key::<String>()? {
            let slot = match key.as_str() {
                REF_KEY => Some(0),
                "event" => Some(1),
                "message_id" => Some(2),
                _ => None,
            };
            if !seen.insert(key) {
                self.duplicate.set(true);
                return Err(de::Error::custom("duplicate top-level key"));
            }
            let slot = match slot {
                Some(0) => &mut fields.customer_ref,
                Some(1) => &mut fields.event,
                Some(_) => &mut fields.message_id,
                None => {
                    access.next_value::<Skipped>()?;
                    continue;
                }
            };
            *slot = Some(access.next_value::<Value>()?);
        }
        Ok(TopLevel::Object(fields))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<TopLevel, A::Error> {
        // Consume the array so that syntax errors inside it still surface as invalid JSON.
        while access.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TopLevel::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<TopLevel, E> {
        Ok(TopLevel::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<TopLevel, E> {
        Ok(TopLevel::Other)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<TopLevel, E> {
        Ok(TopLevel::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<TopLevel, E> {
        Ok(TopLevel::Other)
    }
}

/// A value read only to be checked and dropped. It goes through `deserialize_any`, which counts
/// nesting against serde_json's recursion limit; `IgnoredAny` skips without counting, so a body
/// nested past the limit would pass here and fail every later reader.
struct Skipped;

impl<'de> de::Deserialize<'de> for Skipped {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkippedVisitor)
    }
}

struct SkippedVisitor;

impl<'de> Visitor<'de> for SkippedVisitor {
    type Value = Skipped;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Skipped, A::Error> {
        while access.next_key::<IgnoredAny>()?.is_some() {
            access.next_value::<Skipped>()?;
        }
        Ok(Skipped)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Skipped, A::Error> {
        while access.next_element::<Skipped>()?.is_some() {}
        Ok(Skipped)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skipped, E> {
        Ok(Skipped)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skipped, E> {
        Ok(Skipped)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skipped, E> {
        Ok(Skipped)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skipped, E> {
        Ok(Skipped)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skipped, E> {
        Ok(Skipped)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Skipped, E> {
        Ok(Skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(body: &[u8]) -> &'static str {
        match parse_object(body) {
            Ok(_) => "object",
            Err(e) => e.reason(),
        }
    }

    #[test]
    fn objects_parse_read_only_top_level_fields_and_keep_their_text() -> Result<(), Error> {
        let text = r#"{"event":"message", "nested":{"customer_ref":"x"},"n":1.50,"message_id":7}"#;
        let object = parse_object(text.as_bytes())?;
        assert_eq!(object.event(), Some("message"));
        assert_eq!(object.customer_ref(), None, "a nested ref is not the top-level one");
        assert_eq!(object.message_id(), None, "not a string");
        assert_eq!(object.into_payload().json(), text);
        Ok(())
    }

    #[test]
    fn repeated_top_level_keys_are_refused_even_when_escaped() {
        assert_eq!(kind(br#"{"customer_ref":"a","customer_ref":"b"}"#), "duplicate_key");
        assert_eq!(kind(br#"{"customer_ref":"a","customer\u005fref":"b"}"#), "duplicate_key");
        assert_eq!(kind(br#"{"event":"x","event":"x"}"#), "duplicate_key");
    }

    #[test]
    fn non_objects_and_broken_json_are_told_apart() {
        assert_eq!(kind(b"[1,2]"), "not_object");
        assert_eq!(kind(b"\"s\""), "not_object");
        assert_eq!(kind(b"null"), "not_object");
        assert_eq!(kind(b"12"), "not_object");
        assert_eq!(kind(b"not json"), "invalid_json");
        assert_eq!(kind(b"{\"a\":1} trailing"), "invalid_json");
        assert_eq!(kind(b"[1,}"), "invalid_json");
        assert_eq!(kind(b""), "invalid_json");
        assert_eq!(kind(b"{\"a\":\"\xff\"}"), "invalid_utf8");
    }

    #[test]
    fn deep_nesting_is_invalid_json_not_a_crash() {
        assert_eq!(kind(&vec![b'['; 10_000]), "invalid_json");
        let deep_object = "{\"a\":".repeat(10_000);
        assert_eq!(kind(deep_object.as_bytes()), "invalid_json");
        // Past the limit inside a value that is only skipped, and just within it.
        let nested = |depth: usize| format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(kind(nested(200).as_bytes()), "invalid_json");
        assert_eq!(kind(nested(100).as_bytes()), "object");
    }
}

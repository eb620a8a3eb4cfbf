//! Turns a webhook body into a JSON object, with one rule for repeated keys.
//!
//! This module owns body parsing only: UTF-8, JSON syntax, "must be an object", and a refusal of
//! any repeated top-level key. The last rule exists for tenant isolation: with
//! `{"customer_ref":"a","customer_ref":"b"}` two layers could otherwise read two different refs.
//! It must not decide which tenant an event belongs to (see `event`).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::Error;

/// A webhook body that parsed as a JSON object with unique top-level keys.
pub type JsonObject = Map<String, Value>;

/// Parses `bytes` as a JSON object. Invalid UTF-8, invalid JSON (including nesting past
/// serde_json's recursion limit), a non-object, or a repeated top-level key is an error.
pub fn parse_object(bytes: &[u8]) -> Result<JsonObject, Error> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::InvalidUtf8)?;
    let duplicate = Cell::new(false);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    // serde_json keeps its recursion limit (128) here, so a deeply nested body fails cleanly
    // instead of overflowing the stack.
    let parsed = ObjectSeed { duplicate: &duplicate }.deserialize(&mut deserializer);
    let top = match parsed {
        Ok(top) => top,
        Err(_) if duplicate.get() => return Err(Error::DuplicateKey),
        // The serde_json message may quote the input, so only the category is kept.
        Err(_) => return Err(Error::InvalidJson),
    };
    deserializer.end().map_err(|_| Error::InvalidJson)?;
    match top {
        TopLevel::Object(object) => Ok(object),
        TopLevel::Other => Err(Error::NotObject),
    }
}

enum TopLevel {
    Object(JsonObject),
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
        let mut object = JsonObject::new();
        // Keys arrive unescaped, so `customer\u005fref` counts as a second `customer_ref`.
        while let Some(key) = access.next_key::<String>()? {
            if object.contains_key(&key) {
                self.duplicate.set(true);
                return Err(de::Error::custom("duplicate top-level key"));
            }
            let value: Value = access.next_value()?;
            object.insert(key, value);
        }
        Ok(TopLevel::Object(object))
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
    fn objects_parse_and_keep_every_field() -> Result<(), Error> {
        let object = parse_object(br#"{"event":"message","nested":{"customer_ref":"x"},"n":1}"#)?;
        assert_eq!(object.get("event"), Some(&Value::from("message")));
        assert_eq!(object.len(), 3);
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
    }
}

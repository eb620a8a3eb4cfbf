//! The webhook body inside an envelope, kept as the JSON text ingest received: it travels from
//! the socket to the broker and on to the worker as bytes, and only those that read it parse it
//! (the worker reads the few fields it uses; `dlq show` reads it whole).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// A JSON value kept as text. Compared by its text; `Debug` shows only its size, so a body never
/// reaches a log line through a `{:?}`.
#[derive(Clone)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// Keeps `text`, which must be one JSON value (checked: an error otherwise).
    pub fn from_json_text(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self)
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// Parses the whole value (for readers that show or compare it, not for the message path).
    pub fn to_value(&self) -> serde_json::Value {
        // Valid JSON by construction; nesting was bounded when ingest accepted it.
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }
}

impl From<serde_json::Value> for Payload {
    fn from(value: serde_json::Value) -> Self {
        // Serializing a Value cannot fail: its map keys are strings.
        Self(serde_json::value::to_raw_value(&value).unwrap_or_else(|_| null()))
    }
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("null is JSON"))
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({} bytes)", self.json().len())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_kept_byte_for_byte_and_debug_shows_only_the_size() {
        let text = r#"{ "body" : "secret", "n": 1.0 }"#;
        let payload = Payload::from_json_text(text.to_owned()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(payload.json(), text);
        assert_eq!(format!("{payload:?}"), format!("Payload({} bytes)", text.len()));
        assert_eq!(payload.to_value()["body"], "secret");
        assert!(Payload::from_json_text("{".to_owned()).is_err());
    }
}

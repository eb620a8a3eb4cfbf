//! The few fields of a webhook payload the message path reads.

use serde_json::value::RawValue;
use wafleet_shared::envelope::Payload;

/// Fields of the webhook payload the worker uses. Everything is optional: WA Bridges documents
/// few guarantees, and unknown fields are ignored.
#[derive(Debug, Default)]
pub(super) struct EventFields {
    pub(super) chat_id: Option<String>,
    pub(super) contact_id: Option<String>,
    pub(super) body: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) media_type: Option<String>,
    pub(super) from_me: bool,
    pub(super) is_group: bool,
    pub(super) name: Option<String>,
}

impl EventFields {
    /// Reads the fields from the payload's text, without building the rest of it. A field of
    /// another JSON type than expected reads as absent, as does a payload that is not an object.
    pub(super) fn from_payload(payload: &Payload) -> Self {
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Raw<'a> {
            #[serde(borrow)]
            chat_id: Option<&'a RawValue>,
            #[serde(borrow)]
            contact_id: Option<&'a RawValue>,
            #[serde(borrow)]
            body: Option<&'a RawValue>,
            #[serde(borrow, rename = "type")]
            kind: Option<&'a RawValue>,
            #[serde(borrow)]
            media_type: Option<&'a RawValue>,
            #[serde(borrow)]
            from_me: Option<&'a RawValue>,
            #[serde(borrow)]
            is_group: Option<&'a RawValue>,
            #[serde(borrow)]
            name: Option<&'a RawValue>,
        }
        let raw: Raw<'_> = serde_json::from_str(payload.json()).unwrap_or_default();
        let s = |v: Option<&RawValue>| v.and_then(|v| serde_json::from_str::<String>(v.get()).ok());
        let b = |v: Option<&RawValue>| v.and_then(|v| serde_json::from_str::<bool>(v.get()).ok()).unwrap_or(false);
        Self {
            chat_id: s(raw.chat_id),
            contact_id: s(raw.contact_id),
            body: s(raw.body),
            kind: s(raw.kind),
            media_type: s(raw.media_type).filter(|m| !m.is_empty()),
            from_me: b(raw.from_me),
            is_group: b(raw.is_group),
            name: s(raw.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> EventFields {
        EventFields::from_payload(&Payload::from_json_text(text.to_owned()).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn fields_of_the_expected_type_are_read_and_others_are_absent() {
        let f = fields(
            r#"{"chat_id":"1@c.us","body":"hi \"you\"","type":"chat","from_me":true,"is_group":"yes",
                "media_type":"","name":5,"nested":{"body":"not this"},"contact_id":null}"#,
        );
        assert_eq!(
            (f.chat_id.as_deref(), f.body.as_deref(), f.kind.as_deref()),
            (Some("1@c.us"), Some("hi \"you\""), Some("chat"))
        );
        assert!(f.from_me);
        assert!(!f.is_group, "a string is not a boolean");
        assert_eq!((f.media_type, f.name, f.contact_id), (None, None, None));
        assert!(fields("[1]").chat_id.is_none());
    }
}

//! What a WhatsApp message holds, read once from the event's `type`. The reference documents only
//! `text`; the other names are the ones WhatsApp bridges use for media, and any other value is
//! kept as it came, so a bot still sees it.

/// The kind of an inbound message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// Plain text (also an event without `type`, as older bridges send).
    Text,
    /// A picture; `body` may hold its caption.
    Image,
    /// A video; `body` may hold its caption.
    Video,
    /// A voice note or an audio file.
    Audio,
    /// A file; `body` may hold its caption.
    Document,
    /// A sticker.
    Sticker,
    /// A shared location.
    Location,
    /// A shared contact card.
    Contact,
    /// A type this release does not name.
    Other(String),
}

impl MessageKind {
    /// The kind named by an event's `type` field.
    pub fn parse(raw: Option<&str>) -> Self {
        match raw.map(str::trim) {
            None | Some("" | "text" | "chat" | "conversation") => Self::Text,
            Some("image") => Self::Image,
            Some("video") => Self::Video,
            Some("audio" | "ptt" | "voice") => Self::Audio,
            Some("document") => Self::Document,
            Some("sticker") => Self::Sticker,
            Some("location") => Self::Location,
            Some("contact" | "vcard") => Self::Contact,
            Some(other) => Self::Other(other.to_owned()),
        }
    }

    /// The name a bot receives: the known kinds in lower case, any other as it came.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Document => "document",
            Self::Sticker => "sticker",
            Self::Location => "location",
            Self::Contact => "contact",
            Self::Other(raw) => raw,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_name_maps_to_its_kind_and_back_and_an_unknown_one_is_kept() {
        for name in ["text", "image", "video", "audio", "document", "sticker", "location", "contact"] {
            assert_eq!(MessageKind::parse(Some(name)).as_str(), name);
        }
        assert_eq!(MessageKind::parse(None), MessageKind::Text);
        assert_eq!(MessageKind::parse(Some("ptt")), MessageKind::Audio);
        assert_eq!(MessageKind::parse(Some("poll_creation")), MessageKind::Other("poll_creation".into()));
        assert_eq!(MessageKind::parse(Some("poll_creation")).as_str(), "poll_creation");
    }
}

//! Inbound `message` events of every type. The reference documents the fields of a `message`
//! event but only the `text` value of `type` (with `media_type` empty); the media names here are
//! the ones WhatsApp bridges use, and one unnamed type stands for whatever else may come.

use chrono::Utc;
use serde_json::{json, Value};

/// Split a `chat` into (phone digits, JID): bare digits become `<digits>@s.whatsapp.net`.
pub(crate) fn phone_and_jid(chat: &str) -> (String, String) {
    match chat.split_once('@') {
        Some((user, _)) => (user.to_owned(), chat.to_owned()),
        None => (chat.to_owned(), format!("{chat}@s.whatsapp.net")),
    }
}

/// One inbound message, for [`crate::Simulator::fire_inbound`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// The conversation: a phone number or JID; a group's JID ends in `@g.us`.
    pub chat: String,
    /// The member who wrote (phone or JID); `None`: the chat itself, as in a 1:1 chat.
    pub sender: Option<String>,
    /// `type`.
    pub kind: String,
    /// `media_type` (empty for text).
    pub media_type: String,
    /// `body`: the text, or a caption (empty for none).
    pub body: String,
}

impl Inbound {
    /// A text message.
    pub fn text(chat: &str, body: &str) -> Self {
        Self::media(chat, "text", "", body)
    }

    /// A message of `kind` with `media_type` and a caption (`""` for none).
    pub fn media(chat: &str, kind: &str, media_type: &str, caption: &str) -> Self {
        Self {
            chat: chat.to_owned(),
            sender: None,
            kind: kind.to_owned(),
            media_type: media_type.to_owned(),
            body: caption.to_owned(),
        }
    }

    /// The same message, written in group `group` (a JID ending in `@g.us`) by `member`.
    pub fn in_group(mut self, group: &str, member: &str) -> Self {
        self.chat = group.to_owned();
        self.sender = Some(member.to_owned());
        self
    }

    /// One message of each type from `chat`: text, image with and without a caption, video,
    /// audio, document, sticker, location, contact, and a type this simulator does not name.
    pub fn every_type(chat: &str) -> Vec<Self> {
        vec![
            Self::text(chat, "plain text"),
            Self::media(chat, "image", "image/jpeg", "a caption"),
            Self::media(chat, "image", "image/jpeg", ""),
            Self::media(chat, "video", "video/mp4", ""),
            Self::media(chat, "audio", "audio/ogg", ""),
            Self::media(chat, "document", "application/pdf", "invoice.pdf"),
            Self::media(chat, "sticker", "image/webp", ""),
            Self::media(chat, "location", "", ""),
            Self::media(chat, "contact", "", ""),
            Self::media(chat, "poll_creation", "", ""),
        ]
    }

    /// The `message` event, with every documented field.
    pub(crate) fn event(&self, message_id: &str) -> Value {
        let (_, chat_jid) = phone_and_jid(&self.chat);
        let (phone, contact_jid) = phone_and_jid(self.sender.as_deref().unwrap_or(&self.chat));
        json!({
            "event": "message",
            "message_id": message_id,
            "contact_id": contact_jid,
            "phone": phone,
            "chat_id": chat_jid,
            "name": format!("Contact {phone}"),
            "body": self.body,
            "type": self.kind,
            "media_type": self.media_type,
            "is_group": chat_jid.ends_with("@g.us"),
            "from_me": false,
            "timestamp": Utc::now().timestamp(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_message_names_the_group_as_chat_and_the_member_as_contact() {
        let event = Inbound::text("x", "hi").in_group("120363000000000001@g.us", "15550001111").event("M1");
        assert_eq!(event["chat_id"], "120363000000000001@g.us");
        assert_eq!(event["contact_id"], "15550001111@s.whatsapp.net");
        assert_eq!(event["phone"], "15550001111");
        assert_eq!(event["is_group"], true);
    }

    #[test]
    fn every_type_holds_each_kind_once_with_the_documented_text_shape() {
        let all = Inbound::every_type("15550002222");
        let kinds: Vec<&str> = all.iter().map(|m| m.kind.as_str()).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "image").count(), 2, "with and without a caption");
        for kind in ["text", "video", "audio", "document", "sticker", "location", "contact", "poll_creation"] {
            assert!(kinds.contains(&kind), "{kind}");
        }
        let text = all[0].event("M2");
        assert_eq!((text["type"].as_str(), text["media_type"].as_str()), (Some("text"), Some("")));
        assert_eq!(text["chat_id"], text["contact_id"]);
    }
}

//! Outbound webhook traffic: building documented `message` events, firing arbitrary events at a
//! bridge's `webhook_url` (optionally tagged with `customer_ref`, as the tenant-routing guide
//! says the real service does) and the fire-and-forget `from_me` echo after a send. Every event
//! leaves through [`tag_event`], so the `webhook_customer_ref` setting governs all of them. It
//! never logs event bodies.

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::inbound::{phone_and_jid, Inbound};
use crate::model::{Bridge, RecordedSend};
use crate::{Simulator, WebhookRef};

/// A documented inbound text `message` event from `chat` (not from the bridge's own account).
pub(crate) fn inbound_message_event(chat: &str, body: &str, message_id: &str) -> Value {
    Inbound::text(chat, body).event(message_id)
}

/// The `from_me: true` `message` event the real service emits for the bridge's own send, before
/// [`tag_event`] adds its `customer_ref`.
pub(crate) fn echo_event(bridge: &Bridge, send: &RecordedSend) -> Value {
    let (_, chat_jid) = phone_and_jid(&send.chat);
    json!({
        "event": "message",
        "message_id": send.message_id,
        "contact_id": bridge.jid(),
        "phone": bridge.phone(),
        "chat_id": chat_jid,
        "name": bridge.display_name(),
        "body": send.body,
        "type": "text",
        "media_type": "",
        "is_group": send.chat.ends_with("@g.us"),
        "from_me": true,
        "timestamp": send.at.timestamp(),
    })
}

/// Shape the top-level `customer_ref` of an event object about to be posted. Under
/// [`WebhookRef::Include`] it is added when `include` (replacing any value already there) and
/// otherwise left as the caller wrote it; under [`WebhookRef::Omit`] it is removed whoever put it
/// there, so a client's handling of its absence is tested for every event.
pub(crate) fn tag_event(event: Value, customer_ref: &str, include: bool, setting: WebhookRef) -> Result<Value> {
    let mut object: Map<String, Value> = match event {
        Value::Object(object) => object,
        _ => return Err(Error::BadRequest("event must be a JSON object".into())),
    };
    match setting {
        WebhookRef::Include if include => {
            object.insert("customer_ref".into(), Value::String(customer_ref.to_owned()));
        }
        WebhookRef::Include => {}
        WebhookRef::Omit => {
            object.remove("customer_ref");
        }
    }
    Ok(Value::Object(object))
}

impl Simulator {
    /// The bridge's webhook URL and the `webhook_customer_ref` setting, read under one lock.
    fn webhook_target(&self, bridge: &str) -> Result<(String, WebhookRef)> {
        let state = self.lock();
        let found = state.get(bridge).ok_or(Error::NotFound("instance not found"))?;
        let url = found.webhook_url.clone().ok_or_else(|| Error::NoWebhook(bridge.to_owned()))?;
        Ok((url, state.config.webhook_customer_ref))
    }

    /// POST `event` to `bridge`'s webhook as `application/json`, adding a top-level
    /// `customer_ref` when `include_customer_ref`; returns the HTTP status the receiver answered.
    /// Under [`WebhookRef::Omit`] the event leaves without any top-level `customer_ref`.
    pub async fn fire(&self, bridge: &str, event: Value, include_customer_ref: bool) -> anyhow::Result<u16> {
        Ok(self.fire_event(bridge, event, include_customer_ref).await?)
    }

    /// Build a documented inbound `message` event from `chat` with `body` (a random
    /// `message_id` unless given) and fire it like [`Simulator::fire`].
    pub async fn fire_message(
        &self,
        bridge: &str,
        chat: &str,
        body: &str,
        message_id: Option<&str>,
        include_customer_ref: bool,
    ) -> anyhow::Result<u16> {
        let id = message_id.map_or_else(random_message_id, str::to_owned);
        Ok(self.fire_event(bridge, inbound_message_event(chat, body, &id), include_customer_ref).await?)
    }

    /// Fire one inbound message of any type (see [`Inbound`]) like [`Simulator::fire`].
    pub async fn fire_inbound(
        &self,
        bridge: &str,
        message: &Inbound,
        include_customer_ref: bool,
    ) -> anyhow::Result<u16> {
        Ok(self.fire_event(bridge, message.event(&random_message_id()), include_customer_ref).await?)
    }

    pub(crate) async fn fire_event(&self, bridge: &str, event: Value, include_customer_ref: bool) -> Result<u16> {
        let (url, setting) = self.webhook_target(bridge)?;
        let event = tag_event(event, bridge, include_customer_ref, setting)?;
        // The URL path may carry the receiver's secret token, so it is stripped from the error.
        let response = self.http().post(&url).json(&event).send().await.map_err(|e| Error::Webhook(e.without_url()))?;
        let status = response.status().as_u16();
        tracing::debug!(%bridge, status, "event fired");
        Ok(status)
    }

    /// Deliver the `from_me` echo of `send` on a spawned task; failures are only logged, as the
    /// real service does not retry webhooks either.
    pub(crate) fn spawn_echo(&self, bridge: &Bridge, send: &RecordedSend) {
        let Some(url) = bridge.webhook_url.clone() else { return };
        let setting = self.lock().config.webhook_customer_ref;
        // The echo is always an object, so tagging cannot fail; the `else` only keeps this total.
        let Ok(event) = tag_event(echo_event(bridge, send), &bridge.customer_ref, true, setting) else { return };
        let http = self.http().clone();
        let customer_ref = bridge.customer_ref.clone();
        tokio::spawn(async move {
            match http.post(&url).json(&event).send().await {
                Ok(response) => {
                    tracing::debug!(bridge = %customer_ref, status = response.status().as_u16(), "echo delivered")
                }
                Err(error) => {
                    let error = error.without_url();
                    tracing::warn!(bridge = %customer_ref, %error, "echo delivery failed");
                }
            }
        });
    }
}

/// A random inbound message id in the style of WhatsApp web ids (`3EB0` + 16 hex digits).
pub(crate) fn random_message_id() -> String {
    format!("3EB0{:016X}", crate::random_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_message_event_has_every_documented_field() {
        let event = inbound_message_event("15559876543", "hello", "MID1");
        for field in [
            "event",
            "message_id",
            "contact_id",
            "phone",
            "chat_id",
            "name",
            "body",
            "type",
            "media_type",
            "is_group",
            "from_me",
            "timestamp",
        ] {
            assert!(event.get(field).is_some(), "missing {field}");
        }
        assert_eq!(event["chat_id"], "15559876543@s.whatsapp.net");
        assert_eq!(event["phone"], "15559876543");
        assert_eq!(event["from_me"], false);
        assert!(event.get("customer_ref").is_none());
    }

    #[test]
    fn tagging_adds_or_leaves_out_customer_ref() {
        let tagged = tag_event(json!({"event": "disconnected"}), "cust_1", true, WebhookRef::Include).ok();
        assert_eq!(tagged, Some(json!({"event": "disconnected", "customer_ref": "cust_1"})));
        let forged = json!({"event": "disconnected", "customer_ref": "forged"});
        let untagged = tag_event(forged, "cust_1", false, WebhookRef::Include).ok();
        assert_eq!(untagged, Some(json!({"event": "disconnected", "customer_ref": "forged"})));
        assert!(matches!(tag_event(json!([1]), "cust_1", true, WebhookRef::Include), Err(Error::BadRequest(_))));
    }

    #[test]
    fn omit_removes_customer_ref_from_every_event_and_changes_nothing_else() {
        let forged = json!({"event": "disconnected", "customer_ref": "forged", "reason": "x"});
        for include in [true, false] {
            let omitted = tag_event(forged.clone(), "cust_1", include, WebhookRef::Omit).ok();
            assert_eq!(omitted, Some(json!({"event": "disconnected", "reason": "x"})), "include {include}");
        }
        assert!(matches!(tag_event(json!("x"), "cust_1", false, WebhookRef::Omit), Err(Error::BadRequest(_))));
    }

    #[test]
    fn the_echo_carries_customer_ref_only_through_tagging() {
        let bridge = Bridge {
            id: 42,
            customer_ref: "cust_1".into(),
            webhook_url: None,
            api_key: "sk".into(),
            status: "connected".into(),
            created_at: chrono::Utc::now(),
        };
        let send = RecordedSend {
            bridge: "cust_1".into(),
            chat: "15559876543".into(),
            body: "hi".into(),
            message_id: "SIM1".into(),
            api_key: "sk".into(),
            at: chrono::Utc::now(),
        };
        let echo = echo_event(&bridge, &send);
        assert!(echo.get("customer_ref").is_none());
        let included = tag_event(echo.clone(), "cust_1", true, WebhookRef::Include).ok();
        let mut expected = echo.clone();
        expected["customer_ref"] = json!("cust_1");
        assert_eq!(included, Some(expected));
        assert_eq!(tag_event(echo.clone(), "cust_1", true, WebhookRef::Omit).ok(), Some(echo));
    }

    #[test]
    fn random_message_ids_differ() {
        assert_ne!(random_message_id(), random_message_id());
    }
}

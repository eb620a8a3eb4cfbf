//! The per-bridge `/proxy/*` behaviour: resolving the bridge for the calling account, applying
//! the proxy rate limit and injected faults, validating and recording text sends. HTTP framing
//! lives in `api`; this module decides outcomes.

use chrono::Utc;
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::limiter::Bucket;
use crate::model::{Bridge, Fault, RecordedSend};
use crate::{NotConnectedSend, Simulator};

/// WhatsApp's own ceiling on text length; longer bodies are refused like an API would.
const MAX_BODY_CHARS: usize = 65_536;

/// `200` answer of `POST /proxy/send/text` (documented shape).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SendTextResponse {
    pub(crate) message_id: String,
    pub(crate) timestamp: i64,
}

/// A validated `send/text` request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SendTextRequest {
    pub(crate) chat: String,
    pub(crate) body: String,
}

impl SendTextRequest {
    /// Parse `{"chat": "<digits or JID>", "body": "<text>"}`, answering 400 on anything else.
    pub(crate) fn parse(raw: &[u8]) -> Result<Self> {
        let value: Value =
            serde_json::from_slice(raw).map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))?;
        let chat = value.get("chat").and_then(Value::as_str).unwrap_or_default();
        if !is_valid_chat(chat) {
            return Err(Error::BadRequest("chat must be digits with country code (or a WhatsApp JID)".into()));
        }
        let body = value.get("body").and_then(Value::as_str).unwrap_or_default();
        if body.is_empty() {
            return Err(Error::BadRequest("body must be a non-empty string".into()));
        }
        if body.chars().count() > MAX_BODY_CHARS {
            return Err(Error::BadRequest("body is too long".into()));
        }
        Ok(Self { chat: chat.to_owned(), body: body.to_owned() })
    }
}

/// Digits with country code and no `+` (documented), or a user/group JID (accepted leniently,
/// since whether the API takes JIDs is undocumented).
pub(crate) fn is_valid_chat(chat: &str) -> bool {
    let digits = |s: &str| (6..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    match chat.split_once('@') {
        None => digits(chat),
        Some((user, "s.whatsapp.net")) => digits(user),
        Some((group, "g.us")) => {
            !group.is_empty() && group.bytes().all(|b| b.is_ascii_digit() || b == b'-') && group.len() <= 40
        }
        Some(_) => false,
    }
}

impl Simulator {
    /// Resolve the bridge and charge the proxy bucket. The cross-account check runs first so a
    /// foreign-key attempt is recorded even when the account is also over its limit.
    pub(crate) fn admit_proxy(&self, api_key: &str, key: &str, endpoint: &str) -> Result<Bridge> {
        let mut state = self.lock();
        let bridge = state.proxy_bridge(api_key, key, endpoint);
        state.admit(api_key, Bucket::Proxy)?;
        bridge
    }

    fn take_fault(&self, bridge: &str) -> Option<Fault> {
        self.lock().take_fault(bridge)
    }

    fn injected(&self, fault: &Fault) -> Error {
        self.lock().faulted += 1;
        Error::Injected { status: fault.status, retry_after: fault.retry_after }
    }

    /// `GET /proxy/status`.
    pub(crate) async fn proxy_status(&self, api_key: &str, key: &str) -> Result<Value> {
        let bridge = self.admit_proxy(api_key, key, "status")?;
        if let Some(fault) = self.take_fault(key) {
            delay(&fault).await;
            if fault.is_error() {
                return Err(self.injected(&fault));
            }
        }
        // Re-read: the status may have changed while a delay fault held the request.
        let bridge = self.lock().get(key).cloned().unwrap_or(bridge);
        Ok(if bridge.status == "connected" {
            json!({
                "status": "connected",
                "phone": bridge.phone(),
                "jid": bridge.jid(),
                "name": bridge.display_name(),
            })
        } else {
            json!({ "status": bridge.status })
        })
    }

    /// `POST /proxy/send/text`.
    pub(crate) async fn send_text(&self, api_key: &str, key: &str, raw: &[u8]) -> Result<SendTextResponse> {
        *self.lock().attempts.entry(key.to_owned()).or_insert(0) += 1;
        let bridge = self.admit_proxy(api_key, key, "send/text")?;
        let request = SendTextRequest::parse(raw)?;
        if bridge.status != "connected" {
            let refusal = match self.lock().config.send_when_not_connected {
                NotConnectedSend::Accept => None,
                NotConnectedSend::Conflict => Some(409),
                NotConnectedSend::Unavailable => Some(503),
            };
            if let Some(status) = refusal {
                return Err(Error::Injected { status, retry_after: None });
            }
        }
        let _in_flight = SendInFlight::enter(self, key);
        match self.take_fault(key) {
            Some(fault) if fault.is_error() && fault.record_then_fail => {
                // The message reached the person; only the answer is lost.
                self.record_send(&bridge, api_key, request);
                delay(&fault).await;
                Err(self.injected(&fault))
            }
            Some(fault) if fault.is_error() => {
                delay(&fault).await;
                Err(self.injected(&fault))
            }
            Some(fault) => {
                delay(&fault).await;
                Ok(self.record_send(&bridge, api_key, request))
            }
            None => Ok(self.record_send(&bridge, api_key, request)),
        }
    }

    fn record_send(&self, bridge: &Bridge, api_key: &str, request: SendTextRequest) -> SendTextResponse {
        let at = Utc::now();
        let message_id = self.next_message_id();
        let send = RecordedSend {
            bridge: bridge.customer_ref.clone(),
            chat: request.chat,
            body: request.body,
            message_id: message_id.clone(),
            api_key: api_key.to_owned(),
            at,
        };
        let echo = {
            let mut state = self.lock();
            state.sends.push(send.clone());
            state.config.echo_from_me
        };
        self.notify_sends_changed();
        if echo {
            self.spawn_echo(bridge, &send);
        }
        tracing::debug!(bridge = %bridge.customer_ref, %message_id, "send recorded");
        SendTextResponse { message_id, timestamp: at.timestamp() }
    }
}

/// Counts one admitted send request as in flight until it is answered (or its future dropped).
struct SendInFlight<'a> {
    sim: &'a Simulator,
    key: String,
}

impl<'a> SendInFlight<'a> {
    fn enter(sim: &'a Simulator, key: &str) -> Self {
        let mut state = sim.lock();
        state.sends_in_flight += 1;
        state.max_sends_in_flight = state.max_sends_in_flight.max(state.sends_in_flight);
        let now = {
            let n = state.bridge_sends_in_flight.entry(key.to_owned()).or_insert(0);
            *n += 1;
            *n
        };
        let max = state.max_bridge_sends_in_flight.entry(key.to_owned()).or_insert(0);
        *max = (*max).max(now);
        Self { sim, key: key.to_owned() }
    }
}

impl Drop for SendInFlight<'_> {
    fn drop(&mut self) {
        let mut state = self.sim.lock();
        state.sends_in_flight = state.sends_in_flight.saturating_sub(1);
        if let Some(n) = state.bridge_sends_in_flight.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

async fn delay(fault: &Fault) {
    if let Some(ms) = fault.delay_ms.filter(|ms| *ms > 0) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_accepts_digits_and_jids_but_not_plus_or_letters() {
        assert!(is_valid_chat("15559876543"));
        assert!(is_valid_chat("15559876543@s.whatsapp.net"));
        assert!(is_valid_chat("120363025246125486@g.us"));
        for bad in ["", "+15559876543", "1555abc6543", "123", "15559876543@example.com", "@g.us"] {
            assert!(!is_valid_chat(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn send_request_without_body_or_with_bad_json_is_a_bad_request() {
        assert!(matches!(SendTextRequest::parse(br#"{"chat":"15559876543"}"#), Err(Error::BadRequest(_))));
        assert!(matches!(SendTextRequest::parse(br#"{"chat":"15559876543","body":""}"#), Err(Error::BadRequest(_))));
        assert!(matches!(SendTextRequest::parse(br#"{"chat":15559876543,"body":"hi"}"#), Err(Error::BadRequest(_))));
        assert!(matches!(SendTextRequest::parse(b"not json"), Err(Error::BadRequest(_))));
        let ok = SendTextRequest::parse(br#"{"chat":"15559876543","body":"hi"}"#);
        assert_eq!(ok.ok(), Some(SendTextRequest { chat: "15559876543".into(), body: "hi".into() }));
    }
}

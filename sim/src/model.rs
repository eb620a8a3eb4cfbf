//! Plain data the simulator stores and exposes: bridges, recorded sends, rejected cross-account
//! attempts, injected faults and stats. These types carry no behaviour beyond small builders, so
//! tests can construct, compare and (de)serialize them freely.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One simulated bridge (the API's "instance").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bridge {
    /// Numeric id assigned by the simulator (the first bridge gets 42).
    pub id: i64,
    /// Caller-chosen key used in `/api/instances/{customer_ref}/proxy/*` paths.
    pub customer_ref: String,
    /// Where inbound events for this bridge are posted, if anywhere.
    pub webhook_url: Option<String>,
    /// The account (API key) that owns the bridge.
    pub api_key: String,
    /// Session status reported by `/proxy/status`; `"connected"` unless changed.
    pub status: String,
    /// When the bridge was registered.
    pub created_at: DateTime<Utc>,
}

impl Bridge {
    /// The bridge's own simulated phone number, derived from its id (`1555000` + 4 digits).
    pub fn phone(&self) -> String {
        format!("1555000{:04}", self.id.rem_euclid(10_000))
    }

    /// The bridge's own JID, `<phone>@s.whatsapp.net`.
    pub fn jid(&self) -> String {
        format!("{}@s.whatsapp.net", self.phone())
    }

    /// The bridge's simulated WhatsApp display name.
    pub fn display_name(&self) -> String {
        format!("Sim {}", self.customer_ref)
    }
}

/// A send the simulator accepted (it "reached the person").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedSend {
    /// The bridge key (`customer_ref`) the send went out on.
    pub bridge: String,
    /// Recipient exactly as the client sent it in `chat`.
    pub chat: String,
    /// Message text.
    pub body: String,
    /// The `message_id` answered to the client.
    pub message_id: String,
    /// The API key that made the call.
    pub api_key: String,
    /// When the send was recorded.
    pub at: DateTime<Utc>,
}

/// A proxy call with a valid key on a bridge owned by another key, answered 403.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedAttempt {
    /// The bridge key from the path.
    pub bridge: String,
    /// The (foreign) API key that tried to use the bridge.
    pub api_key: String,
    /// Which proxy endpoint was called, e.g. `"send/text"` or `"status"`.
    pub endpoint: String,
    /// When the attempt happened.
    pub at: DateTime<Utc>,
}

/// An injected failure for `/proxy/send/text` and `/proxy/status`.
///
/// `status: 0` means "no error": only `delay_ms` applies and the request is answered normally.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// HTTP status to answer (429, 500, 502, 503, 400, …) or 0 for delay-only.
    #[serde(default)]
    pub status: u16,
    /// `Retry-After` header (seconds) to send with the error; none when `None`.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// How many requests the fault affects; `None` means until cleared.
    #[serde(default)]
    pub remaining: Option<u32>,
    /// Respond this many milliseconds late.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Record the send (and echo it) before answering the error: a send that reached the person
    /// but whose response was lost. Only meaningful for sends.
    #[serde(default)]
    pub record_then_fail: bool,
}

impl Fault {
    /// A fault answering `status` until cleared.
    pub fn new(status: u16) -> Self {
        Self { status, ..Self::default() }
    }

    /// A fault that only delays responses by `delay_ms` and then answers normally.
    pub fn delay_only(delay_ms: u64) -> Self {
        Self { delay_ms: Some(delay_ms), ..Self::default() }
    }

    /// Limit the fault to the next `n` affected requests.
    pub fn with_remaining(mut self, n: u32) -> Self {
        self.remaining = Some(n);
        self
    }

    /// Send `Retry-After: secs` with the error.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Delay each affected response by `ms` milliseconds.
    pub fn with_delay_ms(mut self, ms: u64) -> Self {
        self.delay_ms = Some(ms);
        self
    }

    /// Record the send before failing (see [`Fault::record_then_fail`]).
    pub fn with_record_then_fail(mut self) -> Self {
        self.record_then_fail = true;
        self
    }

    /// Whether the fault answers an error (as opposed to only delaying).
    pub fn is_error(&self) -> bool {
        self.status != 0
    }

    /// Check that `status` is 0 or a real HTTP status code.
    pub fn validate(&self) -> Result<(), String> {
        match self.status {
            0 | 100..=599 => Ok(()),
            other => Err(format!("fault status {other} is not 0 or an HTTP status code")),
        }
    }
}

/// Counters a test or benchmark can read from `GET /_sim/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// Proxy calls that arrived in each window since start (rate-limited ones included); the
    /// last entry is the current, still-open window.
    pub proxy_calls_per_window: Vec<u32>,
    /// Requests answered 429 by the rate limiter, per-key buckets and per-IP floor alike (injected
    /// 429s are not counted here).
    pub rejected_429: u64,
    /// Requests answered with an injected error fault.
    pub faulted: u64,
    /// Number of recorded sends.
    pub sends: usize,
    /// Number of cross-account attempts answered 403.
    pub rejected_attempts: usize,
    /// Configured window length in seconds.
    pub window_secs: f64,
    /// Most send requests in flight at once, over all bridges.
    pub max_sends_in_flight: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_json_with_only_a_status_uses_defaults_for_the_rest() {
        let fault: Fault = serde_json::from_str(r#"{"status":503}"#).unwrap_or_default();
        assert_eq!(fault, Fault::new(503));
        assert!(fault.is_error());
    }

    #[test]
    fn delay_only_fault_is_not_an_error() {
        let fault: Fault = serde_json::from_str(r#"{"delay_ms":250}"#).unwrap_or_else(|_| Fault::new(1));
        assert_eq!(fault, Fault::delay_only(250));
        assert!(!fault.is_error());
    }

    #[test]
    fn fault_status_outside_http_range_is_invalid() {
        assert!(Fault::new(42).validate().is_err());
        assert!(Fault::new(0).validate().is_ok());
        assert!(Fault::new(502).with_record_then_fail().validate().is_ok());
    }

    #[test]
    fn bridge_phone_and_jid_derive_from_the_id() {
        let bridge = Bridge {
            id: 42,
            customer_ref: "cust_1".into(),
            webhook_url: None,
            api_key: "k".into(),
            status: "connected".into(),
            created_at: Utc::now(),
        };
        assert_eq!(bridge.phone(), "15550000042");
        assert_eq!(bridge.jid(), "15550000042@s.whatsapp.net");
    }
}

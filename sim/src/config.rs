//! Simulator configuration: which API keys exist, how long a rate-limit "minute" lasts, the three
//! per-key limits, the per-IP floor, the webhook timeout and optional behaviours. It owns
//! validation of those values and nothing else; the binary maps its CLI flags onto [`SimConfig`].

use std::time::Duration;

/// How a [`crate::Simulator`] behaves. `Default` matches the documented WA Bridges limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// API keys accepted in `Authorization: Bearer <key>`; each key is one account. The first one
    /// owns bridges registered without an explicit key.
    pub api_keys: Vec<String>,
    /// Disable every rate limit, the per-IP floor included (calls are still counted and logged).
    pub unlimited: bool,
    /// Length of one rate-limit window, the API's "minute". Tests and benchmarks compress it.
    pub window: Duration,
    /// After a successful send, post a `from_me: true` `message` event to the bridge's webhook.
    pub echo_from_me: bool,
    /// `/api/instances/{key}/proxy/*` calls allowed per key per window (documented: 120).
    pub proxy_per_window: u32,
    /// Other `/api/*` calls allowed per key per window (documented: 120).
    pub other_per_window: u32,
    /// `POST /api/instances` calls allowed per key per window (documented: 10).
    pub provision_per_window: u32,
    /// What a send on a bridge that is not `connected` gets. The reference does not say.
    pub send_when_not_connected: NotConnectedSend,
    /// What `:id` of `GET`/`DELETE /api/instances/:id` names. The reference does not say.
    pub instance_id: InstanceIdKind,
    /// `/api/*` calls allowed per client address per window, across all keys and buckets
    /// (documented: 300 per minute per IP, "a global floor" on top of the per-key limits).
    pub per_ip_per_window: u32,
    /// A request header naming the client instead of the TCP peer address, when present and
    /// non-empty. Every test runs on loopback, so this lets one test stand in for several egress
    /// IPs. `None` (the default): the peer address always names the client.
    pub client_ip_header: Option<String>,
    /// How long `fire` and echo deliveries wait for the webhook receiver (documented: 10 s, after
    /// which the delivery counts as failed and the event is dropped).
    pub webhook_timeout: Duration,
}

/// The answer to `POST /proxy/send/text` on a bridge whose status is not `connected`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum NotConnectedSend {
    /// Accepted and recorded as if the session were up (the lenient reading).
    #[default]
    Accept,
    /// 409, nothing recorded.
    Conflict,
    /// 503, nothing recorded.
    Unavailable,
}

/// The identifier `/api/instances/:id` resolves. The reference calls it `:id` while its proxy
/// paths take the `customer_ref`, so each reading is a setting and a client must work with each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum InstanceIdKind {
    /// The numeric id first, then the `customer_ref` (the lenient reading).
    #[default]
    Either,
    /// Only the numeric id; a `customer_ref` there is 404.
    Id,
    /// Only the `customer_ref`; a numeric id there is 404 (unless a bridge's ref is that number).
    Ref,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            api_keys: vec!["sk_test_default".to_owned()],
            unlimited: false,
            window: Duration::from_secs(60),
            echo_from_me: false,
            proxy_per_window: 120,
            other_per_window: 120,
            provision_per_window: 10,
            send_when_not_connected: NotConnectedSend::Accept,
            instance_id: InstanceIdKind::Either,
            per_ip_per_window: 300,
            client_ip_header: None,
            webhook_timeout: Duration::from_secs(10),
        }
    }
}

impl SimConfig {
    /// The key that owns bridges registered without one: the first configured key.
    pub fn default_api_key(&self) -> Option<&str> {
        self.api_keys.first().map(String::as_str)
    }

    /// Reject configurations the simulator cannot serve: no keys, a blank key, a zero window or
    /// webhook timeout, or a client header that is not a header name.
    pub fn validate(&self) -> Result<(), String> {
        if self.api_keys.is_empty() {
            return Err("at least one API key is required".to_owned());
        }
        if self.api_keys.iter().any(|k| k.trim().is_empty()) {
            return Err("API keys must not be blank".to_owned());
        }
        if self.window.is_zero() {
            return Err("the rate-limit window must be longer than zero".to_owned());
        }
        if self.webhook_timeout.is_zero() {
            return Err("the webhook timeout must be longer than zero".to_owned());
        }
        if let Some(header) = &self.client_ip_header {
            if axum::http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(format!("client IP header {header:?} is not a valid header name"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_matches_the_documented_limits() {
        let c = SimConfig::default();
        assert_eq!((c.proxy_per_window, c.other_per_window, c.provision_per_window), (120, 120, 10));
        assert_eq!(c.window, Duration::from_secs(60));
        assert_eq!(c.default_api_key(), Some("sk_test_default"));
        assert!(!c.unlimited && !c.echo_from_me);
        // Reference §3: 300 per minute per IP; §8.2: a 10 s webhook timeout.
        assert_eq!(c.per_ip_per_window, 300);
        assert_eq!(c.webhook_timeout, Duration::from_secs(10));
        assert_eq!(c.client_ip_header, None);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn config_without_keys_or_with_zero_window_is_rejected() {
        let no_keys = SimConfig { api_keys: vec![], ..SimConfig::default() };
        assert!(no_keys.validate().is_err());
        let blank = SimConfig { api_keys: vec![" ".into()], ..SimConfig::default() };
        assert!(blank.validate().is_err());
        let zero = SimConfig { window: Duration::ZERO, ..SimConfig::default() };
        assert!(zero.validate().is_err());
        let no_timeout = SimConfig { webhook_timeout: Duration::ZERO, ..SimConfig::default() };
        assert!(no_timeout.validate().is_err());
    }

    #[test]
    fn a_client_header_that_is_not_a_header_name_is_rejected() {
        let header = SimConfig { client_ip_header: Some("x client".into()), ..SimConfig::default() };
        assert!(header.validate().is_err());
        let good_header = SimConfig { client_ip_header: Some("x-client-ip".into()), ..SimConfig::default() };
        assert!(good_header.validate().is_ok());
    }
}

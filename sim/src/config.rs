//! Simulator configuration: which API keys exist, how long a rate-limit "minute" lasts and whether
//! it is fixed or sliding, the three per-key limits, the per-IP floor, the webhook timeout and
//! optional behaviours. It owns
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
    /// Whether the limits count in fixed windows or a sliding one. The reference says "per
    /// minute" and not which, so a client must keep to the limits under either.
    pub window_kind: WindowKind,
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
    /// Which statuses the undocumented API errors get. The reference documents only 200, 204
    /// and 429, so 400/401/403/404/409 are guesses a client must not rely on.
    pub error_statuses: ErrorStatuses,
    /// The one status every undocumented API error answers under [`ErrorStatuses::Uniform`]
    /// (400–599, not 429, which means "rate limited").
    pub uniform_error_status: u16,
    /// Whether the events posted to webhooks carry a top-level `customer_ref`. The tenant-routing
    /// guide says every inbound payload does; the webhook reference lists it in no event.
    pub webhook_customer_ref: WebhookRef,
}

/// How the rate limits (every per-key bucket and the per-IP floor) count "per minute".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum WindowKind {
    /// Windows aligned to the simulator's start; a counter resets at each boundary, so a full
    /// burst at the end of one window and another at the start of the next are both admitted.
    /// `Retry-After` runs to the window's end.
    #[default]
    Fixed,
    /// A request is admitted only if fewer than the limit were admitted in the last window;
    /// `Retry-After` runs until the oldest of those leaves it.
    Sliding,
}

/// Whether webhook events carry the bridge's `customer_ref` at the top level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum WebhookRef {
    /// As the tenant-routing guide says: fired events get it unless the caller leaves it out,
    /// and the `from_me` echo has it.
    #[default]
    Include,
    /// As the webhook reference shows: no event leaves with a top-level `customer_ref`, not even
    /// one whose caller supplied it, so a client must attribute events by its webhook URL.
    Omit,
}

/// The statuses of `/api/*` errors the reference does not document (bad request, bad key,
/// foreign bridge, unknown bridge or route, conflict). Injected faults and 429 never change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ErrorStatuses {
    /// 400, 401, 403, 404, 405 and 409, each where a REST API would conventionally use it.
    #[default]
    Conventional,
    /// Every undocumented error answers [`SimConfig::uniform_error_status`], so a client that
    /// branches on those codes is caught.
    Uniform,
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
            window_kind: WindowKind::Fixed,
            echo_from_me: false,
            proxy_per_window: 120,
            other_per_window: 120,
            provision_per_window: 10,
            send_when_not_connected: NotConnectedSend::Accept,
            instance_id: InstanceIdKind::Either,
            per_ip_per_window: 300,
            client_ip_header: None,
            webhook_timeout: Duration::from_secs(10),
            error_statuses: ErrorStatuses::Conventional,
            uniform_error_status: 400,
            webhook_customer_ref: WebhookRef::Include,
        }
    }
}

impl SimConfig {
    /// The key that owns bridges registered without one: the first configured key.
    pub fn default_api_key(&self) -> Option<&str> {
        self.api_keys.first().map(String::as_str)
    }

    /// Reject configurations the simulator cannot serve: no keys, a blank key, a zero window or
    /// webhook timeout, a client header that is not a header name, or a uniform error status that
    /// is not an error or would read as a rate limit.
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
        if !(400..=599).contains(&self.uniform_error_status) || self.uniform_error_status == 429 {
            return Err("the uniform error status must be 400-599 and not 429".to_owned());
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
        // Conventional stays the default so suites written against it keep their meaning.
        assert_eq!((c.error_statuses, c.uniform_error_status), (ErrorStatuses::Conventional, 400));
        // The readings the simulator always had stay the defaults: fixed windows, tagged events.
        assert_eq!((c.window_kind, c.webhook_customer_ref), (WindowKind::Fixed, WebhookRef::Include));
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

    #[test]
    fn a_uniform_error_status_that_is_no_error_or_reads_as_a_rate_limit_is_rejected() {
        for status in [200, 399, 429, 600] {
            let config = SimConfig { uniform_error_status: status, ..SimConfig::default() };
            assert!(config.validate().is_err(), "{status}");
        }
        assert!(SimConfig { uniform_error_status: 422, ..SimConfig::default() }.validate().is_ok());
    }
}

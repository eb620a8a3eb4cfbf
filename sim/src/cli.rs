//! Command-line flags and environment variables of the `wafleet-sim` binary, and their mapping
//! onto [`SimConfig`]. Kept in the library so the parsing is unit-tested.

use std::net::SocketAddr;
use std::time::Duration;

use clap::builder::FalseyValueParser;
use clap::{ArgAction, Parser};

use crate::{ErrorStatuses, InstanceIdKind, NotConnectedSend, SimConfig, WebhookRef, WindowKind};

/// `wafleet-sim`: a WA Bridges API simulator for demos and benchmarks.
#[derive(Debug, Clone, Parser)]
#[command(name = "wafleet-sim", version, about)]
pub struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "WAFLEET_SIM_ADDR", default_value = "127.0.0.1:9090")]
    pub addr: SocketAddr,
    /// Accepted API key(s); repeat the flag or separate with commas. The first owns `--bridge`s.
    #[arg(
        long = "api-key",
        env = "WA_API_KEY",
        value_delimiter = ',',
        default_value = "sk_test_default",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub api_keys: Vec<String>,
    /// Disable all rate limits, the per-IP floor included.
    #[arg(long, env = "WAFLEET_SIM_UNLIMITED", action = ArgAction::SetTrue, value_parser = FalseyValueParser::new())]
    pub unlimited: bool,
    /// Length in seconds of one rate-limit window (the API's "minute").
    #[arg(long, env = "WAFLEET_SIM_WINDOW_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub window_secs: u64,
    /// How every limit, the per-IP floor included, counts per window: `fixed` (windows aligned to
    /// the start) or `sliding` (at most the limit in any last window).
    #[arg(long, env = "WAFLEET_SIM_WINDOW_KIND", value_enum, default_value_t = WindowKind::Fixed)]
    pub window_kind: WindowKind,
    /// Post a `from_me: true` message event to the bridge's webhook after every successful send.
    #[arg(long, env = "WAFLEET_SIM_ECHO_FROM_ME", action = ArgAction::SetTrue, value_parser = FalseyValueParser::new())]
    pub echo_from_me: bool,
    /// Proxy calls allowed per key per window.
    #[arg(long, env = "WAFLEET_SIM_PROXY_PER_WINDOW", default_value_t = 120)]
    pub proxy_per_window: u32,
    /// Other `/api/*` calls allowed per key per window.
    #[arg(long, env = "WAFLEET_SIM_OTHER_PER_WINDOW", default_value_t = 120)]
    pub other_per_window: u32,
    /// `POST /api/instances` calls allowed per key per window.
    #[arg(long, env = "WAFLEET_SIM_PROVISION_PER_WINDOW", default_value_t = 10)]
    pub provision_per_window: u32,
    /// What a send on a bridge that is not `connected` gets: `accept`, `conflict` (409) or
    /// `unavailable` (503).
    #[arg(long, env = "WAFLEET_SIM_SEND_WHEN_NOT_CONNECTED", value_enum, default_value_t = NotConnectedSend::Accept)]
    pub send_when_not_connected: NotConnectedSend,
    /// What `/api/instances/:id` resolves: `either` (numeric id, then customer_ref), `id` or `ref`.
    #[arg(long, env = "WAFLEET_SIM_INSTANCE_ID", value_enum, default_value_t = InstanceIdKind::Either)]
    pub instance_id: InstanceIdKind,
    /// `/api/*` calls allowed per client address per window, across all keys (the per-IP floor).
    #[arg(long, env = "WAFLEET_SIM_PER_IP_PER_WINDOW", default_value_t = 300)]
    pub per_ip_per_window: u32,
    /// A request header whose value names the client for the per-IP floor instead of the peer
    /// address (for tests on loopback that stand in for several egress IPs).
    #[arg(long, env = "WAFLEET_SIM_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,
    /// Seconds a webhook receiver has to answer before the delivery counts as failed.
    #[arg(long, env = "WAFLEET_SIM_WEBHOOK_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_timeout_secs: u64,
    /// Statuses of the undocumented `/api/*` errors: `conventional` (400/401/403/404/405/409) or
    /// `uniform` (all `--uniform-error-status`).
    #[arg(long, env = "WAFLEET_SIM_ERROR_STATUSES", value_enum, default_value_t = ErrorStatuses::Conventional)]
    pub error_statuses: ErrorStatuses,
    /// The one status of every undocumented `/api/*` error under `--error-statuses uniform`.
    #[arg(long, env = "WAFLEET_SIM_UNIFORM_ERROR_STATUS", default_value_t = 400, value_parser = uniform_status)]
    pub uniform_error_status: u16,
    /// Whether webhook events carry a top-level `customer_ref`: `include` or `omit` (from every
    /// event, the `from_me` echo and caller-supplied ones included).
    #[arg(long, env = "WAFLEET_SIM_WEBHOOK_CUSTOMER_REF", value_enum, default_value_t = WebhookRef::Include)]
    pub webhook_customer_ref: WebhookRef,
    /// Pre-register a bridge as `<customer_ref>=<webhook_url>` (or just `<customer_ref>`);
    /// repeatable.
    #[arg(long = "bridge", value_parser = parse_bridge_spec)]
    pub bridges: Vec<BridgeSpec>,
}

/// One `--bridge` flag value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    /// The bridge key.
    pub customer_ref: String,
    /// Where its inbound events go, if anywhere.
    pub webhook_url: Option<String>,
}

/// Parse `<customer_ref>=<webhook_url>` or a bare `<customer_ref>`.
pub fn parse_bridge_spec(raw: &str) -> Result<BridgeSpec, String> {
    let (customer_ref, url) = match raw.split_once('=') {
        Some((r, u)) => (r.trim(), Some(u.trim())),
        None => (raw.trim(), None),
    };
    if customer_ref.is_empty() {
        return Err("customer_ref must not be empty".into());
    }
    let webhook_url = match url.filter(|u| !u.is_empty()) {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => Some(u.to_owned()),
        Some(_) => return Err("webhook_url must be an http(s) URL".into()),
        None => None,
    };
    Ok(BridgeSpec { customer_ref: customer_ref.to_owned(), webhook_url })
}

/// An HTTP error status that cannot be mistaken for the documented 429.
fn uniform_status(raw: &str) -> Result<u16, String> {
    let status: u16 = raw.parse().map_err(|_| format!("{raw:?} is not a status code"))?;
    if !(400..=599).contains(&status) || status == 429 {
        return Err("must be 400-599 and not 429".into());
    }
    Ok(status)
}

impl Cli {
    /// The simulator configuration these flags describe.
    pub fn sim_config(&self) -> SimConfig {
        SimConfig {
            api_keys: self.api_keys.iter().map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()).collect(),
            unlimited: self.unlimited,
            window: Duration::from_secs(self.window_secs),
            window_kind: self.window_kind,
            echo_from_me: self.echo_from_me,
            proxy_per_window: self.proxy_per_window,
            other_per_window: self.other_per_window,
            provision_per_window: self.provision_per_window,
            send_when_not_connected: self.send_when_not_connected,
            instance_id: self.instance_id,
            per_ip_per_window: self.per_ip_per_window,
            client_ip_header: self
                .client_ip_header
                .as_deref()
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_owned),
            webhook_timeout: Duration::from_secs(self.webhook_timeout_secs),
            error_statuses: self.error_statuses,
            uniform_error_status: self.uniform_error_status,
            webhook_customer_ref: self.webhook_customer_ref,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn bridge_flag_accepts_ref_with_or_without_a_webhook() {
        let spec = parse_bridge_spec("cust_1=http://127.0.0.1:8080/wa/cust_1/tok").unwrap();
        assert_eq!(spec.customer_ref, "cust_1");
        assert_eq!(spec.webhook_url.as_deref(), Some("http://127.0.0.1:8080/wa/cust_1/tok"));
        assert_eq!(parse_bridge_spec("cust_2").unwrap().webhook_url, None);
        assert!(parse_bridge_spec("=http://x").is_err());
        assert!(parse_bridge_spec("c=ftp://x").is_err());
    }

    #[test]
    fn flags_map_onto_the_sim_config() {
        let cli = Cli::try_parse_from([
            "wafleet-sim",
            "--addr",
            "127.0.0.1:0",
            "--api-key",
            "sk_a,sk_b",
            "--api-key",
            "sk_c",
            "--unlimited",
            "--window-secs",
            "6",
            "--echo-from-me",
            "--instance-id",
            "ref",
            "--send-when-not-connected",
            "conflict",
            "--per-ip-per-window",
            "40",
            "--client-ip-header",
            "x-client-ip",
            "--webhook-timeout-secs",
            "3",
            "--error-statuses",
            "uniform",
            "--uniform-error-status",
            "422",
            "--window-kind",
            "sliding",
            "--webhook-customer-ref",
            "omit",
            "--bridge",
            "cust_1=http://h/x",
            "--bridge",
            "cust_2",
        ])
        .unwrap();
        let config = cli.sim_config();
        assert_eq!(config.api_keys, ["sk_a", "sk_b", "sk_c"]);
        assert!(config.unlimited && config.echo_from_me);
        assert_eq!(config.instance_id, InstanceIdKind::Ref);
        assert_eq!(config.send_when_not_connected, NotConnectedSend::Conflict);
        assert_eq!(config.window, Duration::from_secs(6));
        assert_eq!(config.per_ip_per_window, 40);
        assert_eq!(config.client_ip_header.as_deref(), Some("x-client-ip"));
        assert_eq!(config.webhook_timeout, Duration::from_secs(3));
        assert_eq!((config.error_statuses, config.uniform_error_status), (ErrorStatuses::Uniform, 422));
        assert_eq!((config.window_kind, config.webhook_customer_ref), (WindowKind::Sliding, WebhookRef::Omit));
        assert_eq!(cli.bridges.len(), 2);
    }

    #[test]
    fn defaults_match_the_documented_api() {
        let cli = Cli::try_parse_from(["wafleet-sim"]).unwrap();
        let config = cli.sim_config();
        assert_eq!(cli.addr.to_string(), "127.0.0.1:9090");
        assert_eq!(config.window, Duration::from_secs(60));
        assert_eq!((config.proxy_per_window, config.other_per_window, config.provision_per_window), (120, 120, 10));
        assert!(cli.bridges.is_empty());
        // The flags' defaults are the library's, so the binary is as strict as the reference.
        assert_eq!((config.per_ip_per_window, config.webhook_timeout), (300, Duration::from_secs(10)));
        assert_eq!(config.client_ip_header, None);
        assert_eq!((config.error_statuses, config.uniform_error_status), (ErrorStatuses::Conventional, 400));
        assert_eq!((config.window_kind, config.webhook_customer_ref), (WindowKind::Fixed, WebhookRef::Include));
        assert_eq!(config, SimConfig { api_keys: config.api_keys.clone(), ..SimConfig::default() });
    }

    #[test]
    fn the_open_point_flags_take_their_defaults_by_name_and_refuse_unknown_values() {
        // An unknown reading must fail at start rather than silently fall back to the default.
        let cli = Cli::try_parse_from(["wafleet-sim", "--window-kind", "fixed", "--webhook-customer-ref", "include"]);
        let config = cli.unwrap().sim_config();
        assert_eq!((config.window_kind, config.webhook_customer_ref), (WindowKind::Fixed, WebhookRef::Include));
        assert!(Cli::try_parse_from(["wafleet-sim", "--window-kind", "rolling"]).is_err());
        assert!(Cli::try_parse_from(["wafleet-sim", "--webhook-customer-ref", "nested"]).is_err());
    }

    #[test]
    fn zero_window_is_refused() {
        assert!(Cli::try_parse_from(["wafleet-sim", "--window-secs", "0"]).is_err());
        assert!(Cli::try_parse_from(["wafleet-sim", "--webhook-timeout-secs", "0"]).is_err());
    }

    #[test]
    fn a_uniform_error_status_that_is_no_error_or_reads_as_a_rate_limit_is_refused() {
        for status in ["200", "429", "600", "x"] {
            assert!(Cli::try_parse_from(["wafleet-sim", "--uniform-error-status", status]).is_err(), "{status}");
        }
    }
}

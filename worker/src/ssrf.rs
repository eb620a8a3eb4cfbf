//! The SSRF guard of the HTTP bot's client. A tenant chooses its bot URL, so the worker must not
//! become a way into the cluster, the VPC or a cloud metadata service.
//!
//! * [`TargetPolicy::check_url`] runs before every request: scheme `http`/`https`, no
//!   credentials in the URL, a port on the allow-list, and an IP-literal host checked like a
//!   resolved address (reqwest does not call the resolver for IP literals).
//! * [`GuardedResolver`] is the client's DNS resolver: it resolves the name, drops every address
//!   the policy refuses, and hands reqwest only the addresses that passed, so the connection goes
//!   to an address that was checked. A second lookup by someone else (DNS rebinding) cannot swap
//!   it.
//!
//! It must not be bypassed: the bot client is built with this resolver, without redirects and
//! without proxies from the environment (`crate::bots::http`).

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Why a target was refused. The label of `wafleet_http_bot_refused_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not `http` or `https`.
    Scheme,
    /// The URL has a user name or password.
    Credentials,
    /// The URL has no host.
    NoHost,
    /// The port is not on `WAFLEET_HTTP_BOT_PORTS`.
    Port,
    /// An address in a refused range; the string names the range.
    Address(&'static str),
}

impl Refusal {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheme => "scheme",
            Self::Credentials => "credentials",
            Self::NoHost => "no_host",
            Self::Port => "port",
            Self::Address(range) => range,
        }
    }
}

/// A refused bot target. Names the host (configuration, not a secret), never the full URL, which
/// may carry a token in its query.
#[derive(Clone, Debug, thiserror::Error)]
#[error("bot target {host} refused: {}", .reason.as_str())]
pub struct Refused {
    /// The URL's host.
    pub host: String,
    /// Why.
    pub reason: Refusal,
}

/// Where the HTTP bot may connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetPolicy {
    /// `WAFLEET_HTTP_BOT_ALLOW_PRIVATE`: also allow loopback, private (RFC 1918, ULA), CGNAT and
    /// link-local addresses. Development only. Metadata, unspecified, multicast, broadcast and
    /// reserved addresses stay refused.
    pub allow_private: bool,
    /// `WAFLEET_HTTP_BOT_PORTS`: ports a bot URL may use.
    pub ports: Vec<u16>,
}

impl TargetPolicy {
    /// Checks scheme, credentials, port and an IP-literal host; a host name is checked when it is
    /// resolved ([`GuardedResolver`]).
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        let host = url.host_str().unwrap_or_default().to_owned();
        let refuse = |reason| Err(Refused { host: host.clone(), reason });
        if !matches!(url.scheme(), "http" | "https") {
            return refuse(Refusal::Scheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return refuse(Refusal::Credentials);
        }
        match url.port_or_known_default() {
            Some(port) if self.ports.contains(&port) => {}
            _ => return refuse(Refusal::Port),
        }
        let ip = match url.host() {
            None => return refuse(Refusal::NoHost),
            Some(Host::Domain(_)) => return Ok(()),
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        };
        match check_ip(ip, self.allow_private) {
            Ok(()) => Ok(()),
            Err(range) => refuse(Refusal::Address(range)),
        }
    }
}

/// Whether the bot may connect to `ip`; `Err` names the refused range.
pub fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), &'static str> {
    match classify(ip) {
        Class::Public => Ok(()),
        Class::Private(_) if allow_private => Ok(()),
        Class::Private(range) | Class::Never(range) => Err(range),
    }
}

/// Address classes: public; private ones (allowed by `WAFLEET_HTTP_BOT_ALLOW_PRIVATE`); and
/// ones never dialled.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    Public,
    Private(&'static str),
    Never(&'static str),
}

fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let [a, b, c, _] = ip.octets();
    // Cloud metadata (AWS, GCP, Azure, OpenStack) sits inside link-local: checked first, never allowed.
    if ip == Ipv4Addr::new(169, 254, 169, 254) {
        return Class::Never("metadata");
    }
    match (a, b, c) {
        (0, _, _) => Class::Never("unspecified"),
        (127, _, _) => Class::Private("loopback"),
        (10, _, _) => Class::Private("private"),
        (172, 16..=31, _) => Class::Private("private"),
        (192, 168, _) => Class::Private("private"),
        (100, 64..=127, _) => Class::Private("cgnat"),
        (169, 254, _) => Class::Private("link_local"),
        (224..=239, _, _) => Class::Never("multicast"),
        (255, 255, 255) if ip == Ipv4Addr::BROADCAST => Class::Never("broadcast"),
        (240..=255, _, _) => Class::Never("reserved"),
        // IETF protocol assignments, benchmarking, documentation.
        (192, 0, 0) | (198, 18..=19, _) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Class::Never("reserved"),
        _ => Class::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Class::Never("unspecified");
    }
    if ip.is_loopback() {
        return Class::Private("loopback");
    }
    // AWS's IPv6 metadata endpoint sits inside the unique-local range: checked first.
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        return Class::Never("metadata");
    }
    // Addresses that embed an IPv4 address are judged by it: mapped (::ffff:a.b.c.d),
    // deprecated compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) reach that IPv4 host.
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if s[..5] == [0, 0, 0, 0, 0] && (s[5] == 0xffff || s[5] == 0) {
        return classify_v4(embedded(s[6], s[7]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded(s[6], s[7]));
    }
    // 6to4 (2002:AABB:CCDD::/48) embeds a.b.c.d in its prefix.
    if s[0] == 0x2002 {
        return classify_v4(embedded(s[1], s[2]));
    }
    match s[0] {
        0xfc00..=0xfdff => Class::Private("unique_local"),
        0xfe80..=0xfebf => Class::Private("link_local"),
        // Deprecated site-local: treated like unique-local.
        0xfec0..=0xfeff => Class::Private("unique_local"),
        0xff00..=0xffff => Class::Never("multicast"),
        // Local-use NAT64 (64:ff9b:1::/48) translates to private IPv4 space.
        0x0064 if s[1] == 0xff9b && s[2] == 1 => Class::Private("private"),
        // Teredo (2001::/32) tunnels to an IPv4 host we cannot see; documentation (2001:db8::/32).
        0x2001 if s[1] == 0 => Class::Never("reserved"),
        0x2001 if s[1] == 0x0db8 => Class::Never("reserved"),
        // Discard-only (100::/64).
        0x0100 if s[1..4] == [0, 0, 0] => Class::Never("reserved"),
        _ => Class::Public,
    }
}

type LookupFuture = Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;

/// Name lookup used by the resolver: the system's resolver in production, a fixed table in tests.
pub type Lookup = Arc<dyn Fn(String) -> LookupFuture + Send + Sync>;

/// The bot client's DNS resolver: resolves, filters with [`check_ip`], returns only the
/// addresses that passed. A name with none left is refused ([`Refused`] in the error chain).
#[derive(Clone)]
pub struct GuardedResolver {
    allow_private: bool,
    lookup: Lookup,
}

impl fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedResolver").field("allow_private", &self.allow_private).finish_non_exhaustive()
    }
}

impl GuardedResolver {
    /// A resolver using the system's resolver (`getaddrinfo` on a blocking thread).
    pub fn system(allow_private: bool) -> Self {
        let lookup: Lookup = Arc::new(|host: String| {
            Box::pin(async move {
                let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
                Ok(addrs.map(|a| a.ip()).collect())
            })
        });
        Self { allow_private, lookup }
    }

    /// A resolver with its own lookup (tests, fixed mappings).
    pub fn with_lookup(allow_private: bool, lookup: Lookup) -> Self {
        Self { allow_private, lookup }
    }

    /// Resolves `host` and keeps the allowed addresses (port 0: reqwest fills in the URL's).
    pub async fn resolve_allowed(&self, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let ips = (self.lookup)(host.to_owned()).await.map_err(ResolveError::Lookup)?;
        let mut refused = None;
        let allowed: Vec<SocketAddr> = ips
            .into_iter()
            .filter(|ip| match check_ip(*ip, self.allow_private) {
                Ok(()) => true,
                Err(range) => {
                    refused.get_or_insert(range);
                    false
                }
            })
            .map(|ip| SocketAddr::new(ip, 0))
            .collect();
        match (allowed.is_empty(), refused) {
            (false, _) => Ok(allowed),
            (true, Some(range)) => {
                Err(ResolveError::Refused(Refused { host: host.to_owned(), reason: Refusal::Address(range) }))
            }
            (true, None) => Err(ResolveError::Lookup(std::io::Error::other("the name has no addresses"))),
        }
    }
}

/// Why a bot host could not be resolved to a dialable address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Every address the name resolves to is refused.
    #[error(transparent)]
    Refused(Refused),
    /// The lookup itself failed (unknown name, resolver down): possibly temporary.
    #[error("name lookup failed")]
    Lookup(#[source] std::io::Error),
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            match this.resolve_allowed(&host).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                Err(ResolveError::Refused(refused)) => {
                    Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>)
                }
                Err(e) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            }
        })
    }
}

/// The [`Refused`] somewhere in `error`'s source chain, if the guard refused the target.
pub fn find_refusal<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(ip: &str) -> Option<&'static str> {
        check_ip(ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}")), false).err()
    }

    #[test]
    fn loopback_private_cgnat_link_local_and_unique_local_addresses_are_refused_by_default() {
        for (ip, range) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("::1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.254", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "cgnat"),
            ("100.127.255.255", "cgnat"),
            ("169.254.10.1", "link_local"),
            ("fe80::1", "link_local"),
            ("fc00::1", "unique_local"),
            ("fd12:3456::1", "unique_local"),
        ] {
            assert_eq!(refused(ip), Some(range), "{ip}");
            assert_eq!(check_ip(ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), true), Ok(()), "{ip} dev");
        }
    }

    #[test]
    fn metadata_unspecified_multicast_and_reserved_addresses_are_refused_even_when_private_targets_are_allowed() {
        for (ip, range) in [
            ("169.254.169.254", "metadata"),
            ("fd00:ec2::254", "metadata"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("192.0.2.10", "reserved"),
            ("2001:db8::1", "reserved"),
            ("2001:0:4136:e378::1", "reserved"),
        ] {
            let addr: IpAddr = ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
            assert_eq!(check_ip(addr, false), Err(range), "{ip}");
            assert_eq!(check_ip(addr, true), Err(range), "{ip} with allow_private");
        }
    }

    #[test]
    fn ipv6_forms_that_embed_an_ipv4_address_are_judged_by_that_address() {
        assert_eq!(refused("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(refused("::ffff:169.254.169.254"), Some("metadata"));
        assert_eq!(refused("::ffff:10.0.0.1"), Some("private"));
        assert_eq!(refused("64:ff9b::10.0.0.1"), Some("private"));
        assert_eq!(refused("64:ff9b:1::1"), Some("private"));
        assert_eq!(refused("2002:7f00:1::"), Some("loopback"));
        assert_eq!(refused("2002:a9fe:a9fe::"), Some("metadata"));
        assert_eq!(refused("::ffff:93.184.216.34"), None);
    }

    #[test]
    fn public_addresses_pass() {
        for ip in ["93.184.216.34", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111", "2a00:1450::1"] {
            assert_eq!(refused(ip), None, "{ip}");
        }
    }

    fn policy(allow_private: bool) -> TargetPolicy {
        TargetPolicy { allow_private, ports: vec![443, 80] }
    }

    fn check(policy: &TargetPolicy, url: &str) -> Result<(), Refusal> {
        let url = Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        policy.check_url(&url).map_err(|r| r.reason)
    }

    #[test]
    fn urls_are_checked_for_scheme_credentials_port_and_ip_literal_hosts() {
        let p = policy(false);
        assert_eq!(check(&p, "https://bot.example.com/hook"), Ok(()));
        assert_eq!(check(&p, "http://bot.example.com/hook"), Ok(()));
        assert_eq!(check(&p, "ftp://bot.example.com/hook"), Err(Refusal::Scheme));
        assert_eq!(check(&p, "https://user:pw@bot.example.com/"), Err(Refusal::Credentials));
        assert_eq!(check(&p, "https://bot.example.com:8443/"), Err(Refusal::Port));
        assert_eq!(check(&p, "http://127.0.0.1/"), Err(Refusal::Address("loopback")));
        // The URL parser normalises decimal and hex spellings to the IPv4 address they mean.
        assert_eq!(check(&p, "http://2130706433/"), Err(Refusal::Address("loopback")));
        assert_eq!(check(&p, "http://0x7f.1/"), Err(Refusal::Address("loopback")));
        assert_eq!(check(&p, "http://[::ffff:169.254.169.254]/"), Err(Refusal::Address("metadata")));
        assert_eq!(check(&p, "http://169.254.169.254/latest/meta-data/"), Err(Refusal::Address("metadata")));
        assert_eq!(check(&policy(true), "http://127.0.0.1/"), Ok(()));
        assert_eq!(check(&policy(true), "http://169.254.169.254/"), Err(Refusal::Address("metadata")));
    }

    fn fixed(ips: &'static [&'static str]) -> Lookup {
        Arc::new(move |_host: String| {
            Box::pin(async move { Ok(ips.iter().filter_map(|ip| ip.parse().ok()).collect::<Vec<IpAddr>>()) })
                as LookupFuture
        })
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_private_address_is_refused_unless_private_targets_are_allowed() {
        let strict = GuardedResolver::with_lookup(false, fixed(&["10.0.0.7"]));
        match strict.resolve_allowed("bot.internal.example").await {
            Err(ResolveError::Refused(r)) => assert_eq!(r.reason, Refusal::Address("private")),
            other => panic!("expected a refusal, got {other:?}"),
        }
        let dev = GuardedResolver::with_lookup(true, fixed(&["10.0.0.7"]));
        assert_eq!(
            dev.resolve_allowed("bot.internal.example").await.ok(),
            Some(vec!["10.0.0.7:0".parse().unwrap_or_else(|_| unreachable!())])
        );
    }

    #[tokio::test]
    async fn only_the_allowed_addresses_of_a_mixed_answer_are_handed_to_the_client() {
        let resolver = GuardedResolver::with_lookup(false, fixed(&["127.0.0.1", "93.184.216.34", "169.254.169.254"]));
        let addrs = resolver.resolve_allowed("rebind.example").await.unwrap_or_default();
        assert_eq!(
            addrs,
            vec![SocketAddr::new("93.184.216.34".parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), 0)]
        );
    }

    #[tokio::test]
    async fn the_system_resolver_refuses_localhost() {
        let resolver = GuardedResolver::system(false);
        assert!(matches!(resolver.resolve_allowed("localhost").await, Err(ResolveError::Refused(_))));
    }

    #[tokio::test]
    async fn a_client_with_the_guarded_resolver_never_connects_to_a_refused_name() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let client = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver::with_lookup(false, fixed(&["127.0.0.1"]))))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let error = client
            .get(format!("http://bot.example.test:{port}/"))
            .send()
            .await
            .err()
            .unwrap_or_else(|| panic!("the request must fail"));
        let refusal = find_refusal(&error).map(|r| r.reason);
        assert_eq!(refusal, Some(Refusal::Address("loopback")));
        // Nothing was accepted on the listener.
        let accepted = tokio::time::timeout(std::time::Duration::from_millis(50), listener.accept()).await;
        assert!(accepted.is_err(), "the client connected to a refused address");
    }
}

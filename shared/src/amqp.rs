//! AMQP connection helpers shared by ingest, worker and CLI.
//!
//! `AMQP_URL` names one cluster: a single URL (a Kubernetes Service in front of the nodes, the
//! default) or a comma-separated list of the nodes' URLs, as other RabbitMQ clients accept.
//! [`connect`] starts on a shuffled endpoint, so a fleet of processes spreads over the nodes, and
//! tries the next one when an endpoint does not answer; callers reconnect through it when their
//! connection breaks, so they move to another node when theirs goes away. Nothing here ever logs
//! or returns a password.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use rand::seq::SliceRandom as _;

/// Bound of one endpoint's connection attempt (TCP, TLS and the AMQP handshake), so a node that
/// drops packets instead of refusing them does not hold the whole list up.
pub const ENDPOINT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The AMQP endpoints of one cluster, parsed from `AMQP_URL`. Every endpoint names the same
/// vhost. `Debug` shows the endpoints without their passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpEndpoints {
    urls: Vec<String>,
    vhost: String,
}

/// Why `AMQP_URL` cannot be used. The texts never quote a URL, which holds a password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointsError {
    /// Nothing but separators and whitespace.
    #[error("AMQP_URL names no endpoint")]
    Empty,
    /// One entry of the list does not parse (the parser's own message quotes the URL).
    #[error(
        "AMQP_URL endpoint {position} is not a valid amqp:// or amqps:// URL \
         (a comma inside a password must be written %2C)"
    )]
    Invalid {
        /// 1-based position in the list.
        position: usize,
    },
    /// The endpoints disagree on the vhost.
    #[error(
        "AMQP_URL endpoints name different vhosts ({first:?} first, {other:?} at endpoint {position}): \
         the endpoints of one cluster share one vhost, taken from each URL's path"
    )]
    VhostMismatch {
        /// The first endpoint's vhost.
        first: String,
        /// The 1-based position of the first endpoint that differs.
        position: usize,
        /// Its vhost.
        other: String,
    },
}

/// Why one endpoint could not be connected to.
#[derive(Debug, thiserror::Error)]
pub enum EndpointFailure {
    /// The connection or the AMQP handshake failed.
    #[error("connection failed")]
    Amqp(#[source] lapin::Error),
    /// No answer within [`ENDPOINT_CONNECT_TIMEOUT`].
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// A failed [`connect`].
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `AMQP_URL` itself cannot be used.
    #[error(transparent)]
    Endpoints(#[from] EndpointsError),
    /// Every endpoint was tried and none answered.
    #[error("no AMQP endpoint could be connected to ({tried} tried, the last {endpoint})")]
    Unreachable {
        /// How many endpoints were tried.
        tried: usize,
        /// The last endpoint tried, without its password.
        endpoint: String,
        /// Why the last one failed.
        #[source]
        source: EndpointFailure,
    },
}

impl ConnectError {
    /// The broker's own error of the last attempt, when there was one (to tell a refused login
    /// or vhost from a node that is down).
    pub fn amqp(&self) -> Option<&lapin::Error> {
        match self {
            ConnectError::Unreachable { source: EndpointFailure::Amqp(e), .. } => Some(e),
            _ => None,
        }
    }
}

impl AmqpEndpoints {
    /// Parses a single URL or a comma-separated list of URLs of one cluster. Whitespace around
    /// entries and empty entries are ignored.
    pub fn parse(raw: &str) -> Result<Self, EndpointsError> {
        let urls: Vec<String> = raw.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
        let Some(first) = urls.first() else { return Err(EndpointsError::Empty) };
        let vhost = vhost_of(first);
        for (index, url) in urls.iter().enumerate() {
            let position = index + 1;
            if url.parse::<lapin::uri::AMQPUri>().is_err() {
                return Err(EndpointsError::Invalid { position });
            }
            let other = vhost_of(url);
            if other != vhost {
                return Err(EndpointsError::VhostMismatch { first: vhost, position, other });
            }
        }
        Ok(Self { urls, vhost })
    }

    /// The vhost every endpoint names.
    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// How many endpoints the list has.
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// Always false: a parsed list has at least one endpoint.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The endpoints without their passwords, in the configured order (for logs).
    pub fn redacted(&self) -> Vec<String> {
        self.urls.iter().map(|u| redact_url(u)).collect()
    }

    /// Every endpoint once, in a fresh random order: where an attempt starts and what it tries
    /// next.
    fn shuffled(&self) -> Vec<&str> {
        let mut order: Vec<&str> = self.urls.iter().map(String::as_str).collect();
        order.shuffle(&mut rand::rng());
        order
    }

    /// Connects to the first endpoint that answers, in a shuffled order. A refused login or
    /// vhost on one node is tried on the others too: during a rolling restart a node may answer
    /// before its users and vhosts are synchronised.
    pub async fn connect(&self, connection_name: &str) -> Result<Connection, ConnectError> {
        let order = self.shuffled();
        let mut last = None;
        let mut tried = 0;
        for url in &order {
            tried += 1;
            match connect_one(url, connection_name).await {
                Ok(connection) => {
                    if last.is_some() {
                        tracing::info!(endpoint = %redact_url(url), "connected to another AMQP endpoint");
                    }
                    return Ok(connection);
                }
                Err(failure) => {
                    if order.len() > 1 {
                        tracing::warn!(endpoint = %redact_url(url), error = %failure, "AMQP endpoint unavailable; trying the next");
                    }
                    last = Some((redact_url(url), failure));
                }
            }
        }
        let (endpoint, source) = last.unwrap_or_else(|| (String::new(), EndpointFailure::Timeout(Duration::ZERO)));
        Err(ConnectError::Unreachable { tried, endpoint, source })
    }
}

impl std::fmt::Debug for AmqpEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpEndpoints").field("urls", &self.redacted()).field("vhost", &self.vhost).finish()
    }
}

async fn connect_one(url: &str, connection_name: &str) -> Result<Connection, EndpointFailure> {
    let properties = ConnectionProperties::default()
        .with_connection_name(connection_name.into())
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    match tokio::time::timeout(ENDPOINT_CONNECT_TIMEOUT, Connection::connect(url, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(EndpointFailure::Amqp(e)),
        Err(_) => Err(EndpointFailure::Timeout(ENDPOINT_CONNECT_TIMEOUT)),
    }
}

/// Opens an AMQP connection driven by the current tokio runtime to one of the endpoints of
/// `amqp_url` (one URL or a comma-separated list, see [`AmqpEndpoints`]).
pub async fn connect(amqp_url: &str, connection_name: &str) -> Result<Connection, ConnectError> {
    AmqpEndpoints::parse(amqp_url)?.connect(connection_name).await
}

/// How long [`close`] waits for a closed connection's I/O thread to finish.
const IO_THREAD_EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Closes `connection` and waits (bounded) until lapin's I/O thread has finished with it.
///
/// `Connection::close` returns when the broker confirms, while lapin's I/O thread still runs its
/// last turn on the tokio reactor. A short-lived process (the CLI) whose runtime stops in that
/// window makes the thread log "A Tokio 1.x context was found, but it is being shutdown" at
/// ERROR after a successful command. The join runs on its own thread: it must not block the
/// runtime that drives the I/O thread's socket, and a detached thread never holds the process.
pub async fn close(connection: Connection) {
    let _ = connection.close(200, "done").await;
    let (done, finished) = tokio::sync::oneshot::channel();
    let joiner = std::thread::Builder::new().name("amqp-close".into()).spawn(move || {
        let _ = connection.run();
        let _ = done.send(());
    });
    if joiner.is_ok() {
        let _ = tokio::time::timeout(IO_THREAD_EXIT_TIMEOUT, finished).await;
    }
}

/// The vhost named by an AMQP URL (`/` when the URL has no path), percent-decoded. For a list,
/// the first endpoint's ([`AmqpEndpoints::parse`] refuses lists whose vhosts differ).
pub fn vhost_of(amqp_url: &str) -> String {
    let first = amqp_url.split(',').map(str::trim).find(|u| !u.is_empty()).unwrap_or("");
    let after_scheme = first.split_once("://").map(|(_, rest)| rest).unwrap_or(first);
    let path = after_scheme.split_once('/').map(|(_, p)| p).unwrap_or("");
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() {
        return "/".to_owned();
    }
    percent_decode(path)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URL (or a comma-separated list of URLs) with every password replaced, safe to log.
pub fn redact_url(url: &str) -> String {
    if url.contains(',') {
        return url.split(',').map(|u| redact_one(u.trim())).collect::<Vec<_>>().join(",");
    }
    redact_one(url)
}

fn redact_one(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn vhost_is_read_from_the_url_path() {
        assert_eq!(vhost_of("amqp://guest:guest@127.0.0.1:5672"), "/");
        assert_eq!(vhost_of("amqp://guest:guest@127.0.0.1:5672/%2f"), "/");
        assert_eq!(vhost_of("amqp://g:g@h:5672/wafleet_t1?heartbeat=10"), "wafleet_t1");
        assert_eq!(vhost_of(" amqp://g:g@a:5672/v1, amqp://g:g@b:5673/v1"), "v1");
    }

    #[test]
    fn redacted_urls_hide_the_password() {
        assert_eq!(redact_url("amqp://u:secret@h:5672/v"), "amqp://u:***@h:5672/v");
        assert_eq!(redact_url("amqp://h:5672"), "amqp://h:5672");
        assert_eq!(
            redact_url("amqp://u:s1@a:5672/v,amqp://u:s2@b:5673/v"),
            "amqp://u:***@a:5672/v,amqp://u:***@b:5673/v"
        );
    }

    #[test]
    fn a_single_url_is_a_list_of_one() {
        let endpoints = AmqpEndpoints::parse("amqp://u:p@rabbitmq.svc:5672/%2f").unwrap();
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints.vhost(), "/");
        assert_eq!(endpoints.shuffled(), vec!["amqp://u:p@rabbitmq.svc:5672/%2f"]);
    }

    #[test]
    fn a_list_keeps_every_endpoint_and_ignores_blanks() {
        let raw = " amqp://u:p@a:5672/prod ,amqp://u:p@b:5672/prod,, amqp://u:p@c:5672/prod ,";
        let endpoints = AmqpEndpoints::parse(raw).unwrap();
        assert_eq!(endpoints.len(), 3);
        assert_eq!(endpoints.vhost(), "prod");
        let mut tried = endpoints.shuffled();
        tried.sort_unstable();
        assert_eq!(tried, vec!["amqp://u:p@a:5672/prod", "amqp://u:p@b:5672/prod", "amqp://u:p@c:5672/prod"]);
    }

    #[test]
    fn the_start_endpoint_is_shuffled() {
        let endpoints = AmqpEndpoints::parse("amqp://a/v,amqp://b/v,amqp://c/v").unwrap();
        let firsts: std::collections::HashSet<&str> = (0..200).map(|_| endpoints.shuffled()[0]).collect();
        // 200 draws of 3 leave one out with probability 3·(2/3)^200: never.
        assert_eq!(firsts.len(), 3, "every endpoint is sometimes first: {firsts:?}");
    }

    #[test]
    fn endpoints_of_different_vhosts_are_refused_by_position() {
        let refused = AmqpEndpoints::parse("amqp://u:p@a/prod,amqp://u:p@b/prod,amqp://u:p@c/%2f").unwrap_err();
        assert_eq!(refused, EndpointsError::VhostMismatch { first: "prod".into(), position: 3, other: "/".into() });
        assert!(refused.to_string().contains("different vhosts"), "{refused}");
        // No path is the default vhost, like %2f.
        assert!(AmqpEndpoints::parse("amqp://a:5672,amqp://b:5672/%2f").is_ok());
    }

    #[test]
    fn refusals_never_quote_a_password() {
        let cases = [
            ("", EndpointsError::Empty),
            (" , ,", EndpointsError::Empty),
            ("amqp://u:secret@a/v,http://u:secret@b/v", EndpointsError::Invalid { position: 2 }),
            ("amqp://u:sec,ret@a/v", EndpointsError::Invalid { position: 1 }),
            (
                "amqp://u:secret@a/v,amqp://u:secret@b/w",
                EndpointsError::VhostMismatch { first: "v".into(), position: 2, other: "w".into() },
            ),
        ];
        for (raw, expected) in cases {
            let refused = AmqpEndpoints::parse(raw).unwrap_err();
            assert_eq!(refused, expected, "{raw}");
            assert!(!refused.to_string().contains("secret"), "{refused}");
        }
        let endpoints = AmqpEndpoints::parse("amqp://u:secret@a/v,amqp://u:secret@b/v").unwrap();
        assert!(!format!("{endpoints:?}").contains("secret"));
    }

    #[tokio::test]
    async fn connect_moves_past_endpoints_that_refuse() {
        // Port 1 on loopback refuses at once; with nothing listening anywhere, every endpoint is
        // tried and the error names how many, without a password.
        let refused = connect("amqp://u:secret@127.0.0.1:1/v,amqp://u:secret@127.0.0.1:2/v", "test").await.unwrap_err();
        match &refused {
            ConnectError::Unreachable { tried, endpoint, .. } => {
                assert_eq!(*tried, 2);
                assert!(endpoint.contains(":***@127.0.0.1:"), "{endpoint}");
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        assert!(!refused.to_string().contains("secret"));
        assert!(matches!(connect(",", "test").await, Err(ConnectError::Endpoints(EndpointsError::Empty))));
    }
}

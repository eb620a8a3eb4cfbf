//! Ingest settings, parsed once at start by the binary and validated here.
//!
//! This module owns the names, defaults and parsing of every ingest environment variable:
//! [`IngestArgs`] declares them for `clap` (so `--help` lists each one with its variable and
//! default), and [`Config::from_lookup`] validates the raw values. Ingest-specific values stay
//! strings until then, so a bad value is reported as [`Error::Config`] naming the variable and
//! never echoed (the signing keyring and the AMQP URL are secrets). Nothing here reads the
//! environment: `main` parses it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::{ExposeSecret as _, SecretString};
use wafleet_shared::settings::{AmqpSettings, SigningSettings, TelemetrySettings};
use wafleet_shared::Keyring;

use crate::error::Error;
use crate::spool::SpoolSettings;

/// AMQP URL used when `AMQP_URL` is unset (a local broker, default vhost).
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Listen address used when `WAFLEET_INGEST_ADDR` is unset.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// Ops listen address (health, readiness, spool status, metrics) when `WAFLEET_INGEST_OPS_ADDR`
/// is unset: loopback, so a default install never shows metrics on the public webhook network.
pub const DEFAULT_OPS_ADDR: &str = "127.0.0.1:9080";
/// Default body limit: WA Bridges events are small; 256 KiB leaves room for long texts.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 262_144;
/// Default of `WAFLEET_BODY_BYTES_IN_FLIGHT`: 16 MiB.
pub const DEFAULT_BODY_BYTES_IN_FLIGHT: usize = 16 * 1024 * 1024;
/// Default time allowed to read a body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_millis(5_000);
/// Default deadline for publish plus confirm. WA Bridges gives up after 10 s (§8.2).
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_millis(2_000);
/// Default interval between passive checks that `wa.inbound` still exists.
pub const DEFAULT_READY_RECHECK: Duration = Duration::from_millis(5_000);
/// The spool directory of a packaged install (the Kubernetes PVC mount); the default only when it
/// exists, so a local run never needs root.
pub const SYSTEM_SPOOL_DIR: &str = "/var/lib/wafleet/spool";
/// The spool directory otherwise: relative to the working directory (ignored by git).
pub const LOCAL_SPOOL_DIR: &str = ".wafleet-spool";
/// Default bound on the spool's size: 1 GiB, hours of a busy fleet's events.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1024 * 1024 * 1024;
/// Default segment size: small enough that a drained segment is deleted soon, large enough that
/// creating segments (one directory fsync each) is rare.
pub const DEFAULT_SPOOL_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Default time the shutdown spends draining the spool before leaving the rest on disk. Keep it
/// well under the pod's termination grace period (30 s by default).
pub const DEFAULT_SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// `wafleet-ingest`: the webhook edge. Every setting is a flag and an environment variable.
#[derive(Parser, Clone, Debug)]
#[command(name = "wafleet-ingest", version, about)]
pub struct IngestArgs {
    /// The broker.
    #[command(flatten)]
    pub amqp: AmqpSettings,
    /// The webhook keyring (required here).
    #[command(flatten)]
    pub signing: SigningSettings,
    /// Logs and traces.
    #[command(flatten)]
    pub telemetry: TelemetrySettings,
    /// Webhook listen address (host:port; port 0 picks a free port); serves only the webhook routes.
    #[arg(long, env = "WAFLEET_INGEST_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: String,
    /// Ops listen address for /healthz, /readyz, /spoolz and /metrics (host:port; port 0 picks a free port).
    #[arg(long, env = "WAFLEET_INGEST_OPS_ADDR", default_value = DEFAULT_OPS_ADDR)]
    pub ops_addr: String,
    /// Also accept `POST /webhook` with the ref taken from the body (tenants added with `--auth open`).
    #[arg(long, env = "WAFLEET_OPEN_WEBHOOK", default_value = "false")]
    pub open_webhook: String,
    /// Larger bodies get 413.
    #[arg(long, env = "WAFLEET_BODY_LIMIT_BYTES", default_value = "262144")]
    pub body_limit_bytes: String,
    /// Webhook bodies handled at once (bytes); a request waits for room, then gets 503.
    #[arg(long, env = "WAFLEET_BODY_BYTES_IN_FLIGHT", default_value = "16777216")]
    pub body_bytes_in_flight: String,
    /// A body that takes longer (milliseconds) gets 408.
    #[arg(long, env = "WAFLEET_BODY_TIMEOUT_MS", default_value = "5000")]
    pub body_timeout_ms: String,
    /// A client must send its request headers within this time (milliseconds).
    #[arg(long, env = "WAFLEET_HEADER_TIMEOUT_MS", default_value = "5000")]
    pub header_timeout_ms: String,
    /// Open connections at most; more clients wait in the accept backlog.
    #[arg(long, env = "WAFLEET_MAX_CONNECTIONS", default_value = "4096")]
    pub max_connections: String,
    /// One deadline around publish and confirm (milliseconds).
    #[arg(long, env = "WAFLEET_PUBLISH_TIMEOUT_MS", default_value = "2000")]
    pub publish_timeout_ms: String,
    /// How often `/readyz` re-checks that `wa.inbound` exists (milliseconds).
    #[arg(long, env = "WAFLEET_READY_RECHECK_MS", default_value = "5000")]
    pub ready_recheck_ms: String,
    /// Development only: declare `wa.inbound` (in production ingest has no configure rights).
    #[arg(long, env = "WAFLEET_INGEST_DECLARE_TOPOLOGY", default_value = "false")]
    pub declare_topology: String,
    /// The disk spool that takes events while the broker cannot confirm them.
    #[arg(long, env = "WAFLEET_SPOOL_ENABLED", default_value = "true")]
    pub spool_enabled: String,
    /// Spool folder, one ingest per folder [default: /var/lib/wafleet/spool if it exists, else ./.wafleet-spool].
    #[arg(long, env = "WAFLEET_SPOOL_DIR")]
    pub spool_dir: Option<String>,
    /// Full spool: 503 and `/readyz` not ready.
    #[arg(long, env = "WAFLEET_SPOOL_MAX_BYTES", default_value = "1073741824")]
    pub spool_max_bytes: String,
    /// Segment size; a segment is deleted once the broker confirmed all its records.
    #[arg(long, env = "WAFLEET_SPOOL_SEGMENT_BYTES", default_value = "8388608")]
    pub spool_segment_bytes: String,
    /// One tenant's share of the spool while its own queue is full; past it, 503 for that tenant only [default: a tenth of WAFLEET_SPOOL_MAX_BYTES].
    #[arg(long, env = "WAFLEET_SPOOL_TENANT_MAX_BYTES")]
    pub spool_tenant_max_bytes: Option<String>,
    /// On shutdown, how long (seconds) to keep draining the spool; the rest stays on disk.
    #[arg(long, env = "WAFLEET_SHUTDOWN_DRAIN_SECS", default_value = "10")]
    pub shutdown_drain_secs: String,
    /// Without a command: serve webhooks.
    #[command(subcommand)]
    pub command: Option<IngestCommand>,
}

/// What `wafleet-ingest` can do besides serving webhooks.
#[derive(Subcommand, Clone, Debug)]
pub enum IngestCommand {
    /// Publish every record of a spool folder to the broker (AMQP_URL), then exit: 0 once the
    /// folder is empty, non-zero with what is left. Serves no HTTP; needs no signing key.
    Drain(DrainArgs),
}

/// `wafleet-ingest drain`.
#[derive(Args, Clone, Debug)]
pub struct DrainArgs {
    /// The spool folder to empty (e.g. the PVC of a removed StatefulSet replica); it must exist.
    #[arg(long)]
    pub spool_dir: PathBuf,
    /// Give up after this many seconds with records left (exit status 1).
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

/// What `wafleet-ingest drain` needs: the broker and its deadlines. No keyring, no listener.
#[derive(Clone, Debug)]
pub struct DrainConfig {
    /// `AMQP_URL`, as for serving.
    pub amqp_url: SecretString,
    /// `WAFLEET_PUBLISH_TIMEOUT_MS`: one deadline over each publish and its confirm.
    pub publish_timeout: Duration,
    /// `WAFLEET_READY_RECHECK_MS`: how often the publisher re-checks `wa.inbound`.
    pub ready_recheck: Duration,
    /// The folder to empty.
    pub spool_dir: PathBuf,
    /// How long to try before giving up.
    pub timeout: Duration,
}

impl DrainConfig {
    /// Validates the settings the drain uses, by variable name (as [`Config::from_lookup`]).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>, args: &DrainArgs) -> Result<Self, Error> {
        let mut amqp_url = SecretString::from(DEFAULT_AMQP_URL);
        if let Some(url) = lookup("AMQP_URL") {
            wafleet_shared::amqp::AmqpEndpoints::parse(&url).map_err(Error::AmqpUrl)?;
            amqp_url = SecretString::from(url);
        }
        let ms = |var| parse_positive(&lookup, var).map(|v| v.map(Duration::from_millis));
        Ok(Self {
            amqp_url,
            publish_timeout: ms("WAFLEET_PUBLISH_TIMEOUT_MS")?.unwrap_or(DEFAULT_PUBLISH_TIMEOUT),
            ready_recheck: ms("WAFLEET_READY_RECHECK_MS")?.unwrap_or(DEFAULT_READY_RECHECK),
            spool_dir: args.spool_dir.clone(),
            timeout: Duration::from_secs(args.timeout_secs),
        })
    }
}

impl IngestArgs {
    /// The raw value of variable `var` as parsed (flag, environment or default).
    pub fn lookup(&self, var: &str) -> Option<String> {
        let value = match var {
            "AMQP_URL" => &self.amqp.amqp_url,
            "WAFLEET_SIGNING_KEY" => {
                return self
                    .signing
                    .signing_key
                    .as_ref()
                    .map(|k| k.expose_secret().to_owned())
                    .filter(|k| !k.is_empty())
            }
            "WAFLEET_INGEST_ADDR" => &self.addr,
            "WAFLEET_INGEST_OPS_ADDR" => &self.ops_addr,
            "WAFLEET_OPEN_WEBHOOK" => &self.open_webhook,
            "WAFLEET_BODY_LIMIT_BYTES" => &self.body_limit_bytes,
            "WAFLEET_BODY_TIMEOUT_MS" => &self.body_timeout_ms,
            "WAFLEET_BODY_BYTES_IN_FLIGHT" => &self.body_bytes_in_flight,
            "WAFLEET_HEADER_TIMEOUT_MS" => &self.header_timeout_ms,
            "WAFLEET_MAX_CONNECTIONS" => &self.max_connections,
            "WAFLEET_PUBLISH_TIMEOUT_MS" => &self.publish_timeout_ms,
            "WAFLEET_READY_RECHECK_MS" => &self.ready_recheck_ms,
            "WAFLEET_INGEST_DECLARE_TOPOLOGY" => &self.declare_topology,
            "WAFLEET_SPOOL_ENABLED" => &self.spool_enabled,
            "WAFLEET_SPOOL_DIR" => return self.spool_dir.clone(),
            "WAFLEET_SPOOL_MAX_BYTES" => &self.spool_max_bytes,
            "WAFLEET_SPOOL_SEGMENT_BYTES" => &self.spool_segment_bytes,
            "WAFLEET_SPOOL_TENANT_MAX_BYTES" => return self.spool_tenant_max_bytes.clone(),
            "WAFLEET_SHUTDOWN_DRAIN_SECS" => &self.shutdown_drain_secs,
            _ => return None,
        };
        Some(value.clone())
    }
}

/// Every ingest setting. Fields are public so tests can build a `Config` without the environment
/// (see [`Config::new`]).
#[derive(Clone, Debug)]
pub struct Config {
    /// `AMQP_URL`: the broker, including credentials and vhost; one URL or a comma-separated list
    /// of one cluster's node URLs. Secret because it holds a password.
    pub amqp_url: SecretString,
    /// `WAFLEET_INGEST_ADDR`: where the webhook routes are served. Port 0 picks a free port.
    pub addr: SocketAddr,
    /// `WAFLEET_INGEST_OPS_ADDR` (default `127.0.0.1:9080`): where `/healthz`, `/readyz`,
    /// `/spoolz` and `/metrics` are served, never on the webhook port. Port 0 picks a free port.
    pub ops_addr: SocketAddr,
    /// `WAFLEET_SIGNING_KEY` (required): `key_id:secret[,key_id:secret...]`; the first key signs,
    /// every key verifies, so a rotation keeps old URLs working until their key is removed.
    pub keyring: Arc<Keyring>,
    /// `WAFLEET_OPEN_WEBHOOK` (default false): accept `POST /webhook` with the ref taken from the body.
    pub open_webhook: bool,
    /// `WAFLEET_BODY_LIMIT_BYTES` (default 262144): larger bodies get 413.
    pub body_limit_bytes: usize,
    /// `WAFLEET_BODY_TIMEOUT_MS` (default 5000): a body not fully read by then gets 408.
    pub body_timeout: Duration,
    /// `WAFLEET_BODY_BYTES_IN_FLIGHT` (default 16 MiB, at least `WAFLEET_BODY_LIMIT_BYTES`): the
    /// webhook bodies being handled at once, by declared length (reserved before reading) or, for
    /// a body without one, by its size once read, so memory stays bounded whatever the connection
    /// count. A request waits for room up to `WAFLEET_BODY_TIMEOUT_MS`, then gets 503.
    pub body_bytes_in_flight: usize,
    /// `WAFLEET_HEADER_TIMEOUT_MS` (default 5000): a client must send its request headers within
    /// this time (slowloris on headers).
    pub header_timeout: Duration,
    /// `WAFLEET_MAX_CONNECTIONS` (default 4096): open connections at most.
    pub max_connections: usize,
    /// `WAFLEET_PUBLISH_TIMEOUT_MS` (default 2000): one deadline over `basic_publish` and its confirm.
    pub publish_timeout: Duration,
    /// `WAFLEET_INGEST_DECLARE_TOPOLOGY` (default false, development only): declare `wa.inbound`,
    /// its alternate exchange and `wa.unrouted`. In production topology belongs to `wafleet migrate`.
    pub declare_topology: bool,
    /// `WAFLEET_READY_RECHECK_MS` (default 5000): how often readiness re-checks `wa.inbound`.
    pub ready_recheck: Duration,
    /// `WAFLEET_SPOOL_ENABLED` (default true): spool events the broker does not confirm in time,
    /// instead of answering 503. [`Config::new`] leaves it off: an embedding process (a test
    /// harness running several ingests) must give each one its own directory.
    pub spool_enabled: bool,
    /// `WAFLEET_SPOOL_DIR` (default `/var/lib/wafleet/spool` when that directory exists, else
    /// `.wafleet-spool` in the working directory): one ingest process per directory (locked).
    pub spool_dir: PathBuf,
    /// `WAFLEET_SPOOL_MAX_BYTES` (default 1 GiB): past it, events the broker refuses get 503 and
    /// `/readyz` reports "spool full".
    pub spool_max_bytes: u64,
    /// `WAFLEET_SPOOL_SEGMENT_BYTES` (default 8 MiB): size at which a new segment file is started.
    pub spool_segment_bytes: u64,
    /// `WAFLEET_SPOOL_TENANT_MAX_BYTES` (default: a tenth of the spool): how much of the spool one
    /// tenant may hold while its own queue refuses its events (full); past it, 503 for that tenant.
    pub spool_tenant_max_bytes: Option<u64>,
    /// `WAFLEET_SHUTDOWN_DRAIN_SECS` (default 10; 0 skips): on shutdown, how long to keep
    /// draining the spool to the broker. What remains stays on disk for the next start.
    pub shutdown_drain: Duration,
}

impl Config {
    /// A config with every default and the given keyring, for tests and embedding.
    pub fn new(keyring: Keyring) -> Self {
        Self {
            amqp_url: SecretString::from(DEFAULT_AMQP_URL),
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ops_addr: SocketAddr::from(([127, 0, 0, 1], 9080)),
            keyring: Arc::new(keyring),
            open_webhook: false,
            body_limit_bytes: DEFAULT_BODY_LIMIT_BYTES,
            body_bytes_in_flight: DEFAULT_BODY_BYTES_IN_FLIGHT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            header_timeout: Duration::from_secs(5),
            max_connections: 4096,
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            declare_topology: false,
            ready_recheck: DEFAULT_READY_RECHECK,
            spool_enabled: false,
            spool_dir: default_spool_dir(),
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            spool_segment_bytes: DEFAULT_SPOOL_SEGMENT_BYTES,
            spool_tenant_max_bytes: None,
            shutdown_drain: DEFAULT_SHUTDOWN_DRAIN,
        }
    }

    /// The spool's directory and bounds.
    pub fn spool_settings(&self) -> SpoolSettings {
        SpoolSettings {
            dir: self.spool_dir.clone(),
            max_bytes: self.spool_max_bytes,
            segment_bytes: self.spool_segment_bytes,
            // A tenth: a few tenants can flood at once and most of the spool stays for outages.
            tenant_max_bytes: self.spool_tenant_max_bytes.unwrap_or(self.spool_max_bytes / 10),
        }
    }

    /// Validates the settings the binary parsed.
    pub fn from_args(args: &IngestArgs) -> Result<Self, Error> {
        Self::from_lookup(|name| args.lookup(name))
    }

    /// Reads and validates every setting through `lookup` (by variable name: the parsed
    /// arguments, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let signing_key =
            lookup("WAFLEET_SIGNING_KEY").ok_or(Error::Config { var: "WAFLEET_SIGNING_KEY", reason: "is required" })?;
        let keyring = Keyring::parse(&SecretString::from(signing_key))?;
        let mut config = Self::new(keyring);
        if let Some(url) = lookup("AMQP_URL") {
            // Validated here because the URL parser's own error quotes the URL, password included;
            // a list must name one vhost (the endpoints of one cluster).
            wafleet_shared::amqp::AmqpEndpoints::parse(&url).map_err(Error::AmqpUrl)?;
            config.amqp_url = SecretString::from(url);
        }
        (config.addr, config.ops_addr) = parse_addrs(&lookup)?;
        config.open_webhook = parse_bool(&lookup, "WAFLEET_OPEN_WEBHOOK")?.unwrap_or(false);
        config.declare_topology = parse_bool(&lookup, "WAFLEET_INGEST_DECLARE_TOPOLOGY")?.unwrap_or(false);
        if let Some(limit) = parse_positive(&lookup, "WAFLEET_BODY_LIMIT_BYTES")? {
            config.body_limit_bytes = usize::try_from(limit)
                .map_err(|_| Error::Config { var: "WAFLEET_BODY_LIMIT_BYTES", reason: "is too large" })?;
        }
        config.body_bytes_in_flight = parse_in_flight(&lookup, config.body_limit_bytes)?;
        if let Some(ms) = parse_positive(&lookup, "WAFLEET_BODY_TIMEOUT_MS")? {
            config.body_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = parse_positive(&lookup, "WAFLEET_HEADER_TIMEOUT_MS")? {
            config.header_timeout = Duration::from_millis(ms);
        }
        if let Some(n) = parse_positive(&lookup, "WAFLEET_MAX_CONNECTIONS")? {
            config.max_connections = usize::try_from(n)
                .map_err(|_| Error::Config { var: "WAFLEET_MAX_CONNECTIONS", reason: "is too large" })?;
        }
        if let Some(ms) = parse_positive(&lookup, "WAFLEET_PUBLISH_TIMEOUT_MS")? {
            config.publish_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = parse_positive(&lookup, "WAFLEET_READY_RECHECK_MS")? {
            config.ready_recheck = Duration::from_millis(ms);
        }
        config.spool_enabled = parse_bool(&lookup, "WAFLEET_SPOOL_ENABLED")?.unwrap_or(true);
        if let Some(dir) = lookup("WAFLEET_SPOOL_DIR") {
            let dir = dir.trim();
            if dir.is_empty() {
                return Err(Error::Config { var: "WAFLEET_SPOOL_DIR", reason: "must not be empty" });
            }
            config.spool_dir = PathBuf::from(dir);
        }
        if let Some(bytes) = parse_positive(&lookup, "WAFLEET_SPOOL_MAX_BYTES")? {
            config.spool_max_bytes = bytes;
        }
        if let Some(bytes) = parse_positive(&lookup, "WAFLEET_SPOOL_SEGMENT_BYTES")? {
            config.spool_segment_bytes = bytes;
        }
        if let Some(bytes) = parse_positive(&lookup, "WAFLEET_SPOOL_TENANT_MAX_BYTES")? {
            if bytes > config.spool_max_bytes {
                return Err(Error::Config {
                    var: "WAFLEET_SPOOL_TENANT_MAX_BYTES",
                    reason: "must be at most WAFLEET_SPOOL_MAX_BYTES",
                });
            }
            config.spool_tenant_max_bytes = Some(bytes);
        }
        // Deleting a segment is the only way space comes back, so at least two must fit.
        if config.spool_segment_bytes.saturating_mul(2) > config.spool_max_bytes {
            return Err(Error::Config {
                var: "WAFLEET_SPOOL_SEGMENT_BYTES",
                reason: "must be at most half of WAFLEET_SPOOL_MAX_BYTES",
            });
        }
        if let Some(raw) = lookup("WAFLEET_SHUTDOWN_DRAIN_SECS") {
            let secs = raw.trim().parse::<u64>().map_err(|_| Error::Config {
                var: "WAFLEET_SHUTDOWN_DRAIN_SECS",
                reason: "must be a whole number of seconds",
            })?;
            config.shutdown_drain = Duration::from_secs(secs);
        }
        Ok(config)
    }
}

/// The webhook and ops listen addresses, which must differ: metrics on the webhook port would
/// show to whoever can post webhooks.
fn parse_addrs(lookup: &impl Fn(&str) -> Option<String>) -> Result<(SocketAddr, SocketAddr), Error> {
    let addr = lookup("WAFLEET_INGEST_ADDR").unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    let addr: SocketAddr = addr
        .trim()
        .parse()
        .map_err(|_| Error::Config { var: "WAFLEET_INGEST_ADDR", reason: "must be host:port, e.g. 0.0.0.0:8080" })?;
    let ops = lookup("WAFLEET_INGEST_OPS_ADDR").unwrap_or_else(|| DEFAULT_OPS_ADDR.to_owned());
    let ops: SocketAddr = ops.trim().parse().map_err(|_| Error::Config {
        var: "WAFLEET_INGEST_OPS_ADDR",
        reason: "must be host:port, e.g. 0.0.0.0:9080",
    })?;
    if ops.port() != 0 && ops.port() == addr.port() {
        return Err(Error::Config {
            var: "WAFLEET_INGEST_OPS_ADDR",
            reason: "must use another port than WAFLEET_INGEST_ADDR",
        });
    }
    Ok((addr, ops))
}

/// `/var/lib/wafleet/spool` when it exists (packaged install, PVC mount), else `.wafleet-spool`.
pub fn default_spool_dir() -> PathBuf {
    let system = Path::new(SYSTEM_SPOOL_DIR);
    if system.is_dir() {
        system.to_path_buf()
    } else {
        PathBuf::from(LOCAL_SPOOL_DIR)
    }
}

fn parse_bool(lookup: &impl Fn(&str) -> Option<String>, var: &'static str) -> Result<Option<bool>, Error> {
    let Some(raw) = lookup(var) else { return Ok(None) };
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(Some(true)),
        "0" | "false" | "no" | "off" | "" => Ok(Some(false)),
        _ => Err(Error::Config { var, reason: "must be true or false" }),
    }
}

/// `WAFLEET_BODY_BYTES_IN_FLIGHT`, which must hold at least one body of the allowed size.
fn parse_in_flight(lookup: &impl Fn(&str) -> Option<String>, body_limit: usize) -> Result<usize, Error> {
    let var = "WAFLEET_BODY_BYTES_IN_FLIGHT";
    let bytes = match parse_positive(lookup, var)? {
        Some(bytes) => usize::try_from(bytes).map_err(|_| Error::Config { var, reason: "is too large" })?,
        None => DEFAULT_BODY_BYTES_IN_FLIGHT,
    };
    if bytes < body_limit {
        // Otherwise a body of the allowed size could never be read.
        return Err(Error::Config { var, reason: "must be at least WAFLEET_BODY_LIMIT_BYTES" });
    }
    Ok(bytes)
}

fn parse_positive(lookup: &impl Fn(&str) -> Option<String>, var: &'static str) -> Result<Option<u64>, Error> {
    let Some(raw) = lookup(var) else { return Ok(None) };
    match raw.trim().parse::<u64>() {
        Ok(0) | Err(_) => Err(Error::Config { var, reason: "must be a positive integer" }),
        Ok(value) => Ok(Some(value)),
    }
}

#[cfg(test)]
mod tests;

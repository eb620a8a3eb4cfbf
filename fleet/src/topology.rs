//! Broker topology owned by `wafleet migrate`, `wafleet tenants add` and the reconciler (never by
//! ingest): exchanges, per-tenant queues, and the policies that carry dead-lettering, delivery
//! limit and overflow, so they can change without redeclaring queues.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ExchangeKind};
use serde_json::json;
use wafleet_shared::topology::{
    self as names, QueueType, DLQ_PATTERN, DLX_EXCHANGE, INBOUND_EXCHANGE, QUARANTINE_EXCHANGE, QUARANTINE_QUEUE,
    TENANT_QUEUES_PATTERN, UNROUTED_EXCHANGE, UNROUTED_QUEUE,
};
use wafleet_shared::CustomerRef;

use crate::error::{Error, ManagementError, Result, SetupError};

/// Name of the policy on every tenant queue.
pub const TENANT_POLICY: &str = "wafleet-tenant-queues";
/// Name of the policy on every per-tenant dead-letter queue.
pub const DLQ_POLICY: &str = "wafleet-dlq";
/// Name of the policy on every retry tier queue.
pub const RETRY_POLICY: &str = "wafleet-retry-tiers";
/// Default bound of every tenant queue (`WAFLEET_TENANT_QUEUE_MAX_BYTES`): 256 MiB of message
/// bodies, about a day of a busy tenant's events, far below a node's disk alarm for a few tenants
/// flooding at once. Past it the queue refuses publishes (ingest spools within the tenant's share).
pub const DEFAULT_TENANT_QUEUE_MAX_BYTES: u64 = 268_435_456;
/// Priority of a per-tenant override policy: above [`TENANT_POLICY`] (0), which it replaces for
/// that one queue (RabbitMQ applies only the highest-priority matching policy).
pub const TENANT_OVERRIDE_PRIORITY: u8 = 10;
/// Delivery limit: only a crash-loop backstop (the worker's own retry tiers come first).
pub const DELIVERY_LIMIT: u32 = 20;
/// Delivery limit of dead-letter queues: browsing (`dlq list/show`) returns messages, and
/// RabbitMQ 4.x applies a default limit of 20 to quorum queues, after which a DLQ (which has no
/// DLX of its own) would drop them. A huge explicit limit keeps them on 3.x and 4.x alike.
pub const DLQ_DELIVERY_LIMIT: u32 = 1_000_000;

/// A retry tier: `wa.retry.<label>` (a fanout exchange and a quorum queue of the same name).
/// Messages wait there for `delay` (per-message expiration), then the tier's policy dead-letters
/// them to `wa.inbound` with their routing key (the tenant's ref) unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryTier {
    /// Name suffix, e.g. `5s`.
    pub label: String,
    /// How long a message waits in this tier.
    pub delay: std::time::Duration,
}

impl RetryTier {
    /// The exchange and queue name.
    pub fn name(&self) -> String {
        format!("{}.{}", names::RETRY_EXCHANGE, self.label)
    }

    /// Parses `5s,30s,2m,10m` (units `ms`, `s`, `m`, `h`).
    /// Parses `WAFLEET_RETRY_TIERS` (e.g. `5s,30s,2m,10m`); at least one tier is required.
    pub fn parse_tiers(raw: &str) -> Result<Vec<RetryTier>> {
        let tiers = Self::parse_list(raw)?;
        if tiers.is_empty() {
            return Err(Error::Config("WAFLEET_RETRY_TIERS must name at least one tier".into()));
        }
        Ok(tiers)
    }

    /// Parses a comma-separated list of tier labels (may be empty).
    pub fn parse_list(raw: &str) -> Result<Vec<RetryTier>> {
        raw.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|label| {
                let split = label.find(|c: char| !c.is_ascii_digit()).unwrap_or(label.len());
                let (digits, unit) = label.split_at(split);
                let n: u64 =
                    digits.parse().map_err(|_| Error::Config(format!("retry tier {label:?}: expected e.g. 30s")))?;
                let delay = match unit {
                    "ms" => std::time::Duration::from_millis(n),
                    "s" => std::time::Duration::from_secs(n),
                    "m" => std::time::Duration::from_secs(n * 60),
                    "h" => std::time::Duration::from_secs(n * 3600),
                    _ => return Err(Error::Config(format!("retry tier {label:?}: unit must be ms, s, m or h"))),
                };
                Ok(RetryTier { label: label.to_owned(), delay })
            })
            .collect()
    }
}

/// The default tiers: 5 s, 30 s, 2 min, 10 min.
pub const DEFAULT_RETRY_TIERS: &str = "5s,30s,2m,10m";

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() }
}

fn queue_type_args(queue_type: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-queue-type"), AMQPValue::LongString(queue_type.as_str().into()));
    args
}

/// The arguments of `wa.inbound`. Ingest's development mode declares it with exactly these, so
/// both declarations agree (a mismatch closes the channel).
pub fn inbound_exchange_args() -> FieldTable {
    let mut args = FieldTable::default();
    // ISOLATION: an unknown routing key falls through to wa.unrouted, never to another tenant.
    args.insert(ShortString::from("alternate-exchange"), AMQPValue::LongString(UNROUTED_EXCHANGE.into()));
    args
}

/// Declares the fleet-wide exchanges and queues. Idempotent.
pub async fn declare_base(channel: &Channel) -> Result<()> {
    let durable_exchange = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare(UNROUTED_EXCHANGE, ExchangeKind::Fanout, durable_exchange, FieldTable::default()).await?;
    channel.queue_declare(UNROUTED_QUEUE, durable(), FieldTable::default()).await?;
    channel
        .queue_bind(UNROUTED_QUEUE, UNROUTED_EXCHANGE, "", QueueBindOptions::default(), FieldTable::default())
        .await?;
    channel.exchange_declare(INBOUND_EXCHANGE, ExchangeKind::Direct, durable_exchange, inbound_exchange_args()).await?;
    channel.exchange_declare(DLX_EXCHANGE, ExchangeKind::Direct, durable_exchange, FieldTable::default()).await?;
    declare_quarantine(channel).await
}

/// Declares `wa.quarantine` (queue) and the fanout exchange of the same name bound to it.
/// Idempotent; the worker declares it too, so a fleet migrated before the exchange existed
/// still quarantines.
pub async fn declare_quarantine(channel: &Channel) -> Result<()> {
    let durable_exchange = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel.queue_declare(QUARANTINE_QUEUE, durable(), FieldTable::default()).await?;
    channel
        .exchange_declare(QUARANTINE_EXCHANGE, ExchangeKind::Fanout, durable_exchange, FieldTable::default())
        .await?;
    channel
        .queue_bind(QUARANTINE_QUEUE, QUARANTINE_EXCHANGE, "", QueueBindOptions::default(), FieldTable::default())
        .await?;
    Ok(())
}

/// Initial replica count of each tenant's quorum queues (`x-quorum-initial-group-size`). Three
/// is the production shape (three nodes: one may be lost, or restarted in a rolling upgrade,
/// with the majority intact). RabbitMQ caps it at the cluster's node count when the queue is
/// declared, so a single node gets one member; a queue declared while the cluster was smaller
/// is grown with `rabbitmq-queues grow`. A queue type's argument, not a policy: 3.10 has no
/// policy key for it.
pub const QUORUM_INITIAL_GROUP_SIZE: i64 = 3;

/// The declare arguments of a tenant's queue and DLQ.
fn tenant_queue_args(queue_type: QueueType) -> FieldTable {
    let mut args = queue_type_args(queue_type);
    if queue_type == QueueType::Quorum {
        args.insert(
            ShortString::from("x-quorum-initial-group-size"),
            AMQPValue::LongLongInt(QUORUM_INITIAL_GROUP_SIZE),
        );
    }
    args
}

/// Whether `queue` exists, asked on a throwaway channel: a missing queue closes the channel
/// it was asked on (404), which must not be the caller's.
async fn queue_exists(connection: &Connection, queue: &str) -> Result<bool> {
    let probe = connection.create_channel().await?;
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    match probe.queue_declare(queue, passive, FieldTable::default()).await {
        Ok(_) => {
            let _ = probe.close(200, "probe done").await;
            Ok(true)
        }
        Err(lapin::Error::ProtocolError(p)) if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)) => {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Declares `wa.tenant.<ref>` and `wa.dlq.<ref>` when missing and binds them by the exact ref.
/// An existing queue is left as it is: queues declared before the group size was explicit
/// have no `x-quorum-initial-group-size`, and redeclaring them with it would fail and close
/// `channel` (arguments must be equal), so only a missing queue is declared, with it.
/// ISOLATION: the binding key is the tenant's own ref, so only its messages can land here.
pub async fn declare_tenant(
    connection: &Connection,
    channel: &Channel,
    customer_ref: &CustomerRef,
    queue_type: QueueType,
) -> Result<()> {
    let queues =
        [(names::tenant_queue(customer_ref), INBOUND_EXCHANGE), (names::dlq_queue(customer_ref), DLX_EXCHANGE)];
    for (queue, exchange) in queues {
        if !queue_exists(connection, &queue).await? {
            channel.queue_declare(&queue, durable(), tenant_queue_args(queue_type)).await?;
        }
        channel
            .queue_bind(&queue, exchange, customer_ref.as_str(), QueueBindOptions::default(), FieldTable::default())
            .await?;
    }
    Ok(())
}

/// Declares the retry tiers. Idempotent.
pub async fn declare_retry_tiers(channel: &Channel, tiers: &[RetryTier]) -> Result<()> {
    let durable_exchange = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    for tier in tiers {
        let name = tier.name();
        channel.exchange_declare(&name, ExchangeKind::Fanout, durable_exchange, FieldTable::default()).await?;
        channel.queue_declare(&name, durable(), queue_type_args(QueueType::Quorum)).await?;
        channel.queue_bind(&name, &name, "", QueueBindOptions::default(), FieldTable::default()).await?;
    }
    Ok(())
}

/// Client for the RabbitMQ management HTTP API (policies, vhosts, queue stats).
///
/// `RABBITMQ_API_URL` may list several nodes' management URLs (comma-separated); every node
/// serves the whole cluster's API. The client starts on a random one and moves to the next
/// when a node cannot be connected to, remembering the one that answered.
#[derive(Clone)]
pub struct Management {
    http: reqwest::Client,
    bases: Arc<[url::Url]>,
    /// Index into `bases` of the node tried first.
    current: Arc<AtomicUsize>,
    vhost: String,
}

impl Management {
    /// `api_url` like `http://user:pass@127.0.0.1:15672`, or a comma-separated list of such URLs
    /// of one cluster; `vhost` from `AMQP_URL`.
    pub fn new(api_url: &str, vhost: &str) -> Result<Self> {
        let bases = api_url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| url::Url::parse(u).map_err(|e| Error::from(SetupError::ManagementUrl(e))))
            .collect::<Result<Vec<_>>>()?;
        if bases.is_empty() {
            return Err(SetupError::ManagementUrlBase.into());
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            // A stopped node refuses at once; one that drops packets must not use the whole
            // request bound before the next node is tried.
            .connect_timeout(std::time::Duration::from_secs(3))
            .no_proxy()
            .build()
            .map_err(Error::Http)?;
        let start = rand::random_range(0..bases.len());
        Ok(Self { http, bases: bases.into(), current: Arc::new(AtomicUsize::new(start)), vhost: vhost.to_owned() })
    }

    fn url(base: &url::Url, segments: &[&str]) -> Result<url::Url> {
        let mut url = base.clone();
        url.set_username("").map_err(|()| SetupError::ManagementUrlBase)?;
        url.set_password(None).map_err(|()| SetupError::ManagementUrlBase)?;
        url.path_segments_mut()
            .map_err(|()| SetupError::ManagementUrlBase)?
            .pop_if_empty()
            .push("api")
            .extend(segments);
        Ok(url)
    }

    fn auth(base: &url::Url, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let user = percent_encoding::percent_decode_str(base.username()).decode_utf8_lossy().into_owned();
        let password =
            base.password().map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned());
        request.basic_auth(user, password)
    }

    /// Sends one request to the current node, and to each next one while a node cannot be
    /// connected to (nothing was sent to it, so any method may be tried again).
    async fn send(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::Response> {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for step in 0..self.bases.len() {
            let index = (start + step) % self.bases.len();
            let base = &self.bases[index];
            let mut request = Self::auth(base, self.http.request(method.clone(), Self::url(base, segments)?));
            if !query.is_empty() {
                request = request.query(query);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(response);
                }
                Err(e) if e.is_connect() && step + 1 < self.bases.len() => {
                    // The URL without its credentials (Self::url drops them), never the password.
                    tracing::warn!(node = %Self::url(base, &[])?, "management API node unreachable; trying the next");
                    last = Some(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map(Error::from).unwrap_or_else(|| SetupError::ManagementUrlBase.into()))
    }

    async fn put(&self, segments: &[&str], body: serde_json::Value) -> Result<()> {
        let response = self.send(reqwest::Method::PUT, segments, &[], Some(&body)).await?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(
                ManagementError::Status { method: "PUT", path: segments.join("/"), status, body: Some(text) }.into()
            );
        }
        Ok(())
    }

    /// GET a JSON document; `Ok(None)` on 404.
    pub async fn get_json(&self, segments: &[&str]) -> Result<Option<serde_json::Value>> {
        self.get_json_query(segments, &[]).await
    }

    /// [`Self::get_json`] with query parameters (`columns=…` keeps a listing of thousands of
    /// queues small).
    pub async fn get_json_query(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Option<serde_json::Value>> {
        let response = self.send(reqwest::Method::GET, segments, query, None).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(ManagementError::Status {
                method: "GET",
                path: segments.join("/"),
                status: response.status(),
                body: None,
            }
            .into());
        }
        Ok(Some(response.json().await?))
    }

    /// Applies the tenant-queue and DLQ policies with the default tenant-queue bound. Anchored
    /// patterns; `.` escaped.
    pub async fn apply_policies(&self) -> Result<()> {
        self.apply_policies_with(DEFAULT_TENANT_QUEUE_MAX_BYTES).await
    }

    /// Like [`Management::apply_policies`], with `tenant_queue_max_bytes` as every tenant queue's
    /// bound (per-tenant overrides are separate policies, see [`tenant_override_policy`]).
    pub async fn apply_policies_with(&self, tenant_queue_max_bytes: u64) -> Result<()> {
        self.put(&["policies", &self.vhost, TENANT_POLICY], tenant_policy(tenant_queue_max_bytes)).await?;
        self.put(
            &["policies", &self.vhost, DLQ_POLICY],
            json!({
                "pattern": DLQ_PATTERN,
                "apply-to": "queues",
                "priority": 0,
                // Dead letters are kept until an operator replays or purges them; no DLX of their own.
                "definition": {"overflow": "reject-publish", "delivery-limit": DLQ_DELIVERY_LIMIT}
            }),
        )
        .await?;
        self.put(&["policies", &self.vhost, RETRY_POLICY], retry_policy()).await
    }

    /// Sets (`Some`) or removes (`None`) the bound of one tenant's queue: a policy of its own,
    /// with every other key of the tenant-queue policy (see [`tenant_override_policy`]).
    pub async fn set_tenant_queue_bound(&self, customer_ref: &CustomerRef, max_bytes: Option<u64>) -> Result<()> {
        let name = tenant_override_name(customer_ref);
        match max_bytes {
            Some(bytes) => {
                self.put(&["policies", &self.vhost, &name], tenant_override_policy(customer_ref, bytes)).await
            }
            None => self.delete(&["policies", &self.vhost, &name]).await,
        }
    }

    /// DELETE; a 404 (already gone) is success.
    async fn delete(&self, segments: &[&str]) -> Result<()> {
        let response = self.send(reqwest::Method::DELETE, segments, &[], None).await?;
        if response.status().is_success() || response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(ManagementError::Status {
            method: "DELETE",
            path: segments.join("/"),
            status: response.status(),
            body: None,
        }
        .into())
    }

    /// Whether the tenant-queue policy exists in the vhost.
    pub async fn policies_present(&self) -> Result<bool> {
        Ok(self.get_json(&["policies", &self.vhost, TENANT_POLICY]).await?.is_some())
    }

    /// Creates a vhost and grants `user` full rights on it (tests and the demo).
    pub async fn create_vhost(&self, user: &str) -> Result<()> {
        let vhost = self.vhost.clone();
        self.put(&["vhosts", &vhost], json!({})).await?;
        self.put(&["permissions", &vhost, user], json!({"configure": ".*", "write": ".*", "read": ".*"})).await
    }

    /// Deletes the vhost (tests and the demo).
    pub async fn delete_vhost(&self) -> Result<()> {
        let response = self.send(reqwest::Method::DELETE, &["vhosts", &self.vhost], &[], None).await?;
        if response.status().is_success() || response.status() == reqwest::StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(ManagementError::Status {
                method: "DELETE",
                path: "vhost".into(),
                status: response.status(),
                body: None,
            }
            .into())
        }
    }
}

/// The policy on every retry tier: expired messages go back through `wa.inbound` with their
/// routing key, so they return to their own tenant's queue.
pub fn retry_policy() -> serde_json::Value {
    json!({
        "pattern": r"^wa\.retry\.",
        "apply-to": "queues",
        "priority": 0,
        "definition": {
            // ISOLATION: the routing key (the tenant's ref) is kept, so the binding of
            // wa.inbound sends the message back to its own tenant queue and nowhere else.
            "dead-letter-exchange": INBOUND_EXCHANGE,
            "overflow": "reject-publish",
            "dead-letter-strategy": "at-least-once"
        }
    })
}

/// The policy on every tenant queue, bounded at `max_bytes`.
pub fn tenant_policy(max_bytes: u64) -> serde_json::Value {
    tenant_queue_policy(TENANT_QUEUES_PATTERN, 0, max_bytes)
}

/// The policy name of `customer_ref`'s queue bound override.
pub fn tenant_override_name(customer_ref: &CustomerRef) -> String {
    format!("{TENANT_POLICY}.{customer_ref}")
}

/// The override policy of one tenant's queue: exactly `wa.tenant.<ref>`, at a higher priority.
/// RabbitMQ applies only one policy per queue, so it is built by the same function as the
/// fleet-wide policy and carries every other key (dead-lettering, delivery limit, overflow).
pub fn tenant_override_policy(customer_ref: &CustomerRef, max_bytes: u64) -> serde_json::Value {
    let pattern = format!("^{}$", escape_pattern(&names::tenant_queue(customer_ref)));
    tenant_queue_policy(&pattern, TENANT_OVERRIDE_PRIORITY, max_bytes)
}

/// Escapes every character of `literal` that is not a letter, digit or `_`, so a policy pattern
/// matches it literally (refs may hold `.`, `:` and `-`).
fn escape_pattern(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len() * 2);
    for c in literal.chars() {
        if !(c.is_ascii_alphanumeric() || c == '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The one definition of a tenant-queue policy (fleet-wide and per-tenant override alike).
fn tenant_queue_policy(pattern: &str, priority: u8, max_bytes: u64) -> serde_json::Value {
    json!({
        "pattern": pattern,
        "apply-to": "queues",
        "priority": priority,
        "definition": {
            "dead-letter-exchange": DLX_EXCHANGE,
            "delivery-limit": DELIVERY_LIMIT,
            // A full tenant queue refuses new publishes (ingest spools) instead of dropping the head.
            "overflow": "reject-publish",
            "dead-letter-strategy": "at-least-once",
            // ISOLATION: one tenant's backlog is bounded, so a flood cannot fill the broker's disk
            // or memory (an alarm blocks publishing for every tenant).
            "max-length-bytes": max_bytes
        }
    })
}

#[cfg(test)]
mod tests;

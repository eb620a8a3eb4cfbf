//! Broker topology owned by `wafleet migrate`, `wafleet tenants add` and the reconciler (never by
//! ingest): exchanges, per-tenant queues, and the policies that carry dead-lettering, delivery
//! limit and overflow, so they can change without redeclaring queues.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};
use serde_json::json;
use wafleet_shared::topology::{
    self as names, QueueType, DLQ_PATTERN, DLX_EXCHANGE, INBOUND_EXCHANGE, QUARANTINE_QUEUE, TENANT_QUEUES_PATTERN,
    UNROUTED_EXCHANGE, UNROUTED_QUEUE,
};
use wafleet_shared::CustomerRef;

use crate::error::{Error, Result};

/// Name of the policy on every tenant queue.
pub const TENANT_POLICY: &str = "wafleet-tenant-queues";
/// Name of the policy on every per-tenant dead-letter queue.
pub const DLQ_POLICY: &str = "wafleet-dlq";
/// Delivery limit: only a crash-loop backstop (the worker's own retry tiers come first).
pub const DELIVERY_LIMIT: u32 = 20;

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
    channel.queue_declare(QUARANTINE_QUEUE, durable(), FieldTable::default()).await?;
    Ok(())
}

/// Declares `wa.tenant.<ref>` and `wa.dlq.<ref>` and binds them by the exact ref.
/// ISOLATION: the binding key is the tenant's own ref, so only its messages can land here.
pub async fn declare_tenant(channel: &Channel, customer_ref: &CustomerRef, queue_type: QueueType) -> Result<()> {
    let queue = names::tenant_queue(customer_ref);
    channel.queue_declare(&queue, durable(), queue_type_args(queue_type)).await?;
    channel
        .queue_bind(&queue, INBOUND_EXCHANGE, customer_ref.as_str(), QueueBindOptions::default(), FieldTable::default())
        .await?;
    let dlq = names::dlq_queue(customer_ref);
    channel.queue_declare(&dlq, durable(), queue_type_args(queue_type)).await?;
    channel
        .queue_bind(&dlq, DLX_EXCHANGE, customer_ref.as_str(), QueueBindOptions::default(), FieldTable::default())
        .await?;
    Ok(())
}

/// Client for the RabbitMQ management HTTP API (policies, vhosts, queue stats).
#[derive(Clone)]
pub struct Management {
    http: reqwest::Client,
    base: url::Url,
    vhost: String,
}

impl Management {
    /// `api_url` like `http://user:pass@127.0.0.1:15672`; `vhost` from `AMQP_URL`.
    pub fn new(api_url: &str, vhost: &str) -> Result<Self> {
        let base = url::Url::parse(api_url).map_err(|e| Error::Config(format!("RABBITMQ_API_URL: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .no_proxy()
            .build()
            .map_err(Error::Http)?;
        Ok(Self { http, base, vhost: vhost.to_owned() })
    }

    fn url(&self, segments: &[&str]) -> Result<url::Url> {
        let mut url = self.base.clone();
        url.set_username("").map_err(|_| Error::Config("RABBITMQ_API_URL cannot hold credentials".into()))?;
        url.set_password(None).map_err(|_| Error::Config("RABBITMQ_API_URL cannot hold credentials".into()))?;
        url.path_segments_mut()
            .map_err(|_| Error::Config("RABBITMQ_API_URL must be an http(s) URL".into()))?
            .pop_if_empty()
            .push("api")
            .extend(segments);
        Ok(url)
    }

    fn auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let user = percent_encoding::percent_decode_str(self.base.username()).decode_utf8_lossy().into_owned();
        let password =
            self.base.password().map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned());
        request.basic_auth(user, password)
    }

    async fn put(&self, segments: &[&str], body: serde_json::Value) -> Result<()> {
        let response = self.auth(self.http.put(self.url(segments)?)).json(&body).send().await?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(Error::Management(format!("PUT {} -> {status}: {text}", segments.join("/"))));
        }
        Ok(())
    }

    /// GET a JSON document; `Ok(None)` on 404.
    pub async fn get_json(&self, segments: &[&str]) -> Result<Option<serde_json::Value>> {
        let response = self.auth(self.http.get(self.url(segments)?)).send().await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(Error::Management(format!("GET {} -> {}", segments.join("/"), response.status())));
        }
        Ok(Some(response.json().await?))
    }

    /// Applies the tenant-queue and DLQ policies. Anchored patterns; `.` escaped.
    pub async fn apply_policies(&self) -> Result<()> {
        self.put(&["policies", &self.vhost, TENANT_POLICY], tenant_policy()).await?;
        self.put(
            &["policies", &self.vhost, DLQ_POLICY],
            json!({
                "pattern": DLQ_PATTERN,
                "apply-to": "queues",
                "priority": 0,
                // Dead letters are kept until an operator replays or purges them; no DLX of their own.
                "definition": {"overflow": "reject-publish"}
            }),
        )
        .await
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
        let response = self.auth(self.http.delete(self.url(&["vhosts", &self.vhost])?)).send().await?;
        if response.status().is_success() || response.status() == reqwest::StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(Error::Management(format!("DELETE vhost -> {}", response.status())))
        }
    }
}

/// The policy on every tenant queue.
pub fn tenant_policy() -> serde_json::Value {
    json!({
        "pattern": TENANT_QUEUES_PATTERN,
        "apply-to": "queues",
        "priority": 0,
        "definition": {
            "dead-letter-exchange": DLX_EXCHANGE,
            "delivery-limit": DELIVERY_LIMIT,
            // A full tenant queue refuses new publishes (ingest spools) instead of dropping the head.
            "overflow": "reject-publish",
            "dead-letter-strategy": "at-least-once"
        }
    })
}

//! Against a real RabbitMQ (`WAFLEET_TEST_AMQP_BASE` and `RABBITMQ_API_URL`, else the local broker,
//! else a container: `wafleet_test_services`): each test gets its own vhost through the management
//! API and connects to it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt as _;

use lapin::options::{BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ExchangeKind};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use wafleet_ingest::{Application, Config};
use wafleet_shared::topology::{tenant_queue, INBOUND_EXCHANGE};
use wafleet_shared::{AuthMode, Envelope};

use crate::helpers::{config, cref, generation};

pub(crate) const OVERALL: Duration = Duration::from_secs(20);

/// A throwaway vhost, deleted by [`with_vhost`] whatever the test outcome.
#[derive(Clone)]
pub(crate) struct TestVhost {
    pub(crate) name: String,
    api: reqwest::Client,
    api_base: reqwest::Url,
    api_user: String,
    api_password: String,
    pub(crate) amqp_url: String,
}

impl TestVhost {
    async fn create() -> anyhow::Result<Self> {
        let mut api_base = reqwest::Url::parse(&wafleet_test_services::rabbitmq().api_url)?;
        let api_user = api_base.username().to_owned();
        let api_password = api_base.password().unwrap_or_default().to_owned();
        let _ = api_base.set_username("");
        let _ = api_base.set_password(None);
        let name = format!("wafleet-ingest-test-{}", uuid::Uuid::now_v7().simple());
        let vhost = Self {
            amqp_url: amqp_url_for(&name),
            name,
            api: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
            api_base,
            api_user,
            api_password,
        };
        vhost.put(&format!("api/vhosts/{}", vhost.name), json!({})).await?;
        let permissions = json!({"configure": ".*", "write": ".*", "read": ".*"});
        vhost.put(&format!("api/permissions/{}/{}", vhost.name, vhost.api_user), permissions).await?;
        Ok(vhost)
    }

    async fn put(&self, path: &str, body: Value) -> anyhow::Result<()> {
        let url = self.api_base.join(path)?;
        let response =
            self.api.put(url).basic_auth(&self.api_user, Some(&self.api_password)).json(&body).send().await?;
        anyhow::ensure!(response.status().is_success(), "PUT {path}: {}", response.status());
        Ok(())
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = self.api_base.join(path)?;
        let response = self.api.get(url).basic_auth(&self.api_user, Some(&self.api_password)).send().await?;
        Ok(response.error_for_status()?.json().await?)
    }

    /// Closes every client connection of this vhost from the broker side, as a broker restart would.
    async fn close_connections(&self) -> anyhow::Result<usize> {
        let connections = self.get(&format!("api/vhosts/{}/connections", self.name)).await?;
        let names: Vec<String> = connections
            .as_array()
            .map(|all| all.iter().filter_map(|c| c["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        for name in &names {
            let url = self.api_base.join("api/connections/")?.join(&percent_encode(name))?;
            self.api.delete(url).basic_auth(&self.api_user, Some(&self.api_password)).send().await?;
        }
        Ok(names.len())
    }

    async fn delete(&self) {
        if let Ok(url) = self.api_base.join(&format!("api/vhosts/{}", self.name)) {
            let _ = self.api.delete(url).basic_auth(&self.api_user, Some(&self.api_password)).send().await;
        }
    }

    pub(crate) async fn channel(&self) -> anyhow::Result<(Connection, Channel)> {
        let connection = wafleet_shared::amqp::connect(&self.amqp_url, "wafleet-ingest-test").await?;
        let channel = connection.create_channel().await?;
        Ok((connection, channel))
    }

    pub(crate) fn config(&self) -> Config {
        let mut config = config();
        config.amqp_url = SecretString::from(self.amqp_url.clone());
        config.addr = "127.0.0.1:0".parse().unwrap_or(config.addr);
        config.declare_topology = false;
        config.ready_recheck = Duration::from_millis(100);
        config
    }
}

/// Encodes a connection name (`127.0.0.1:1234 -> 127.0.0.1:5672`) as one path segment.
fn percent_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The tests' broker with `vhost` as the vhost.
fn amqp_url_for(vhost: &str) -> String {
    let base = &wafleet_test_services::rabbitmq().amqp_base;
    let (scheme, rest) = base.split_once("://").unwrap_or(("amqp", base.as_str()));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{authority}/{vhost}")
}

/// Runs `test` in a fresh vhost and deletes the vhost afterwards, even when the test panics.
pub(crate) async fn with_vhost<F, Fut>(test: F)
where
    F: FnOnce(TestVhost) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let vhost = TestVhost::create().await.expect("create a test vhost (is RabbitMQ running?)");
    let outcome = AssertUnwindSafe(test(vhost.clone())).catch_unwind().await;
    vhost.delete().await;
    match outcome {
        Ok(result) => result.unwrap(),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

pub(crate) async fn declare_inbound(channel: &Channel) -> anyhow::Result<()> {
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare(INBOUND_EXCHANGE, ExchangeKind::Direct, durable, FieldTable::default()).await?;
    Ok(())
}

pub(crate) async fn declare_tenant_queue(channel: &Channel, customer_ref: &str) -> anyhow::Result<String> {
    let queue = tenant_queue(&cref(customer_ref));
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(&queue, durable, FieldTable::default()).await?;
    channel
        .queue_bind(&queue, INBOUND_EXCHANGE, customer_ref, QueueBindOptions::default(), FieldTable::default())
        .await?;
    Ok(queue)
}

/// Polls `/readyz` (on the ops base URL) until `accept` holds for (status, body), or fails after [`OVERALL`].
pub(crate) async fn wait_for_readyz(ops: &str, accept: impl Fn(u16, &Value) -> bool) -> anyhow::Result<(u16, Value)> {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + OVERALL;
    let mut last = String::from("no answer");
    loop {
        if let Ok(response) = client.get(format!("{ops}/readyz")).send().await {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if accept(status, &body) {
                return Ok((status, body));
            }
            last = format!("{status} {body}");
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "readyz never matched; last {last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn post_webhook(url: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    let response = reqwest::Client::new().post(url).json(body).send().await?;
    Ok((response.status().as_u16(), response.json().await.unwrap_or(Value::Null)))
}

/// Starts ingest; returns the webhook base URL, the ops base URL, the stop token and the task.
pub(crate) async fn start(
    config: Config,
) -> anyhow::Result<(String, String, CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let app = Application::build(config).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let ops = format!("http://127.0.0.1:{}", app.ops_port());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    Ok((base, ops, shutdown, server))
}

pub(crate) async fn stop(
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    shutdown.cancel();
    tokio::time::timeout(OVERALL, server).await??
}

#[tokio::test]
async fn an_accepted_webhook_lands_in_its_tenant_queue_on_the_real_broker() {
    with_vhost(|vhost| async move {
        let (_connection, channel) = vhost.channel().await?;
        declare_inbound(&channel).await?;
        let queue_a = declare_tenant_queue(&channel, "cust_a").await?;
        let queue_b = declare_tenant_queue(&channel, "cust_b").await?;
        let config = vhost.config();
        let token = config.keyring.sign(&cref("cust_a"), generation(4));
        let (base, ops, shutdown, server) = start(config).await?;

        let (status, _) = wait_for_readyz(&ops, |status, _| status == 200).await?;
        assert_eq!(status, 200);
        let body = json!({"event": "message", "message_id": "3EB0REAL", "bridge_id": "cust_b"});
        let (status, answer) = post_webhook(&format!("{base}/webhook/cust_a/{token}"), &body).await?;
        assert_eq!((status, answer), (200, json!({"status": "accepted"})));

        let deadline = tokio::time::Instant::now() + OVERALL;
        let message = loop {
            if let Some(message) = channel.basic_get(&queue_a, BasicGetOptions { no_ack: true }).await? {
                break message;
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "message never reached {queue_a}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let v1 = Envelope::decode(&message.delivery.data)?.into_v1();
        assert_eq!((v1.customer_ref, v1.generation.get(), v1.auth), (cref("cust_a"), 4, AuthMode::Token));
        assert_eq!(v1.provider_message_id.as_deref(), Some("3EB0REAL"));
        let properties = &message.delivery.properties;
        assert_eq!(properties.delivery_mode(), &Some(2));
        assert_eq!(properties.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
        let ingest_id = v1.ingest_id.to_string();
        assert_eq!(properties.message_id().as_ref().map(|s| s.as_str()), Some(ingest_id.as_str()));
        let other = channel.basic_get(&queue_b, BasicGetOptions { no_ack: true }).await?;
        assert!(other.is_none(), "nothing may reach another tenant's queue");

        stop(shutdown, server).await
    })
    .await;
}

#[tokio::test]
async fn readyz_is_503_until_wa_inbound_exists_and_publishing_is_refused_meanwhile() {
    with_vhost(|vhost| async move {
        let config = vhost.config();
        let token = config.keyring.sign(&cref("cust_a"), generation(1));
        let (base, ops, shutdown, server) = start(config).await?;

        // Connected, but the passive declare finds no exchange.
        let (status, body) =
            wait_for_readyz(&ops, |_, body| body["reason"] == json!("exchange wa.inbound not confirmed")).await?;
        assert_eq!(status, 503);
        assert_eq!(body["status"], json!("not ready"));
        let (status, answer) = post_webhook(&format!("{base}/webhook/cust_a/{token}"), &json!({})).await?;
        assert_eq!((status, answer), (503, json!({"error": "broker unavailable"})));

        let (_connection, channel) = vhost.channel().await?;
        declare_inbound(&channel).await?;
        wait_for_readyz(&ops, |status, _| status == 200).await?;
        stop(shutdown, server).await
    })
    .await;
}

#[tokio::test]
async fn an_unroutable_event_is_not_acknowledged_as_accepted() {
    with_vhost(|vhost| async move {
        // wa.inbound without an alternate exchange and without a queue for this tenant:
        // the mandatory publish comes back, and a returned message is not a success.
        let (_connection, channel) = vhost.channel().await?;
        declare_inbound(&channel).await?;
        let config = vhost.config();
        let token = config.keyring.sign(&cref("cust_nobody"), generation(1));
        let (base, ops, shutdown, server) = start(config).await?;
        wait_for_readyz(&ops, |status, _| status == 200).await?;
        let (status, answer) = post_webhook(&format!("{base}/webhook/cust_nobody/{token}"), &json!({})).await?;
        assert_eq!((status, answer), (503, json!({"error": "broker unavailable"})));
        // The shared channel survives a return: the next routable publish works.
        declare_tenant_queue(&channel, "cust_nobody").await?;
        let (status, _) = post_webhook(&format!("{base}/webhook/cust_nobody/{token}"), &json!({})).await?;
        assert_eq!(status, 200);
        stop(shutdown, server).await
    })
    .await;
}

#[tokio::test]
async fn the_publisher_reconnects_after_the_broker_drops_its_connection() {
    with_vhost(|vhost| async move {
        let config = vhost.config();
        let token = config.keyring.sign(&cref("cust_a"), generation(1));
        let (base, ops, shutdown, server) = start(config).await?;
        // Declared by a short-lived connection, so only ingest's connection remains afterwards.
        {
            let (connection, channel) = vhost.channel().await?;
            declare_inbound(&channel).await?;
            declare_tenant_queue(&channel, "cust_a").await?;
            connection.close(200, "done").await?;
        }
        wait_for_readyz(&ops, |status, _| status == 200).await?;

        // The management API lists a new connection with a short delay: poll until one is closed.
        let deadline = tokio::time::Instant::now() + OVERALL;
        while vhost.close_connections().await? == 0 {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "ingest's connection never listed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wait_for_readyz(&ops, |status, _| status == 503).await?;
        wait_for_readyz(&ops, |status, _| status == 200).await?;
        let (status, _) = post_webhook(&format!("{base}/webhook/cust_a/{token}"), &json!({})).await?;
        assert_eq!(status, 200);
        stop(shutdown, server).await
    })
    .await;
}

#[tokio::test]
async fn a_deleted_exchange_makes_ingest_unready_until_it_is_declared_again() {
    with_vhost(|vhost| async move {
        let (_connection, channel) = vhost.channel().await?;
        declare_inbound(&channel).await?;
        let queue = declare_tenant_queue(&channel, "cust_a").await?;
        let config = vhost.config();
        let token = config.keyring.sign(&cref("cust_a"), generation(1));
        let (base, ops, shutdown, server) = start(config).await?;
        let url = format!("{base}/webhook/cust_a/{token}");
        wait_for_readyz(&ops, |status, _| status == 200).await?;

        channel.exchange_delete(INBOUND_EXCHANGE, Default::default()).await?;
        // Whether the publish meets the missing exchange (which closes the shared channel) or
        // the re-check got there first, the event is not accepted.
        let (status, _) = post_webhook(&url, &json!({})).await?;
        assert_eq!(status, 503, "publishing to a deleted exchange is not accepted");
        wait_for_readyz(&ops, |_, body| body["reason"] == json!("exchange wa.inbound not confirmed")).await?;

        declare_inbound(&channel).await?;
        declare_tenant_queue(&channel, "cust_a").await?;
        wait_for_readyz(&ops, |status, _| status == 200).await?;
        let (status, _) = post_webhook(&url, &json!({"event": "after"})).await?;
        assert_eq!(status, 200, "a fresh publishing channel was opened");
        let message = channel.basic_get(&queue, BasicGetOptions { no_ack: true }).await?;
        let event_type = message.map(|m| Envelope::decode(&m.delivery.data).map(|e| e.into_v1().event_type));
        assert_eq!(event_type.transpose()?.as_deref(), Some("after"));
        stop(shutdown, server).await
    })
    .await;
}

/// Concurrent requests share one publishing channel, and the broker confirms its publishes in
/// the order the frames reached it. With a tenant whose queue nacks every message next to one
/// whose queue takes every message, a nack or ack settling the wrong request would show as a
/// 200 for the full tenant (an event answered as accepted that no queue holds) or a 503 for the
/// other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishes_each_get_their_own_ack_or_nack() {
    const PER_TENANT: usize = 150;
    with_vhost(|vhost| async move {
        let (_connection, channel) = vhost.channel().await?;
        declare_inbound(&channel).await?;
        let open_queue = declare_tenant_queue(&channel, "cust_open").await?;
        let mut full = FieldTable::default();
        full.insert("x-max-length".into(), lapin::types::AMQPValue::LongLongInt(0));
        full.insert("x-overflow".into(), lapin::types::AMQPValue::LongString("reject-publish".into()));
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        let full_queue = tenant_queue(&cref("cust_full"));
        channel.queue_declare(&full_queue, durable, full).await?;
        channel
            .queue_bind(&full_queue, INBOUND_EXCHANGE, "cust_full", QueueBindOptions::default(), FieldTable::default())
            .await?;
        let mut config = vhost.config();
        config.spool_enabled = false;
        let open_url = format!("/webhook/cust_open/{}", config.keyring.sign(&cref("cust_open"), generation(1)));
        let full_url = format!("/webhook/cust_full/{}", config.keyring.sign(&cref("cust_full"), generation(1)));
        let (base, ops, shutdown, server) = start(config).await?;
        wait_for_readyz(&ops, |status, _| status == 200).await?;

        let client = reqwest::Client::new();
        let requests = (0..PER_TENANT * 2).map(|i| {
            let (tenant, path) = if i % 2 == 0 { ("cust_open", &open_url) } else { ("cust_full", &full_url) };
            let (client, url) = (client.clone(), format!("{base}{path}"));
            tokio::spawn(async move {
                let body = json!({"event": "message", "message_id": format!("3EB0{i:04}")});
                let status = client.post(url).json(&body).send().await.map(|r| r.status().as_u16());
                (tenant, status)
            })
        });
        let mut answers = std::collections::BTreeMap::<(&str, u16), usize>::new();
        for request in requests.collect::<Vec<_>>() {
            let (tenant, status) = request.await?;
            *answers.entry((tenant, status?)).or_default() += 1;
        }
        let expected = [(("cust_full", 503), PER_TENANT), (("cust_open", 200), PER_TENANT)];
        assert_eq!(answers, expected.into_iter().collect(), "every request answered by its own confirm");
        let held = channel.queue_declare(&open_queue, passive(), FieldTable::default()).await?.message_count();
        assert_eq!(held as usize, PER_TENANT, "every 200 is a message in the open tenant's queue");
        stop(shutdown, server).await
    })
    .await;
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions { passive: true, durable: true, ..QueueDeclareOptions::default() }
}

//! Least-privilege broker credentials: the users made by `scripts/rabbitmq-users.sh`
//! can each do their service's job and nothing more. Ingest may publish to `wa.inbound` (and pass
//! its readiness check) but cannot read a tenant queue, declare anything, or reach a queue
//! through the default exchange; the worker has no management API access; only the CLI may
//! apply policies, and no service may manage users.

use std::time::Duration;

use futures::FutureExt;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use wafleet_fleet::topology::Management;
use wafleet_shared::topology::QueueType;
use wafleet_shared::{AuthMode, CustomerRef, Envelope, EnvelopeV1, Generation, IngestId, Keyring};
use wafleet_tests::{message_event, post_json, rabbit_api, wait_until, EnvOptions, TestEnv, TEST_SIGNING_KEY};

const TENANT: &str = "bu_a";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/rabbitmq-users.sh");

/// The users of one test (made by the script from the manifest), suffixed with its vhost so parallel runs never collide.
pub(crate) struct Users {
    suffix: String,
    ingest: String,
    worker: String,
    cli: String,
    keda: String,
}

impl Users {
    pub(crate) fn new(env: &TestEnv) -> Self {
        let password = || uuid::Uuid::now_v7().simple().to_string();
        Self {
            suffix: format!("_{}", env.name),
            ingest: password(),
            worker: password(),
            cli: password(),
            keda: password(),
        }
    }

    pub(crate) fn name(&self, service: &str) -> String {
        format!("wafleet-{service}{}", self.suffix)
    }

    pub(crate) fn password(&self, service: &str) -> &str {
        match service {
            "ingest" => &self.ingest,
            "worker" => &self.worker,
            "keda" => &self.keda,
            _ => &self.cli,
        }
    }

    /// The environment's AMQP URL with this service's credentials.
    pub(crate) fn amqp_url(&self, env: &TestEnv, service: &str) -> String {
        with_credentials(&env.amqp_url, &self.name(service), self.password(service))
    }

    /// The management API URL with this service's credentials.
    pub(crate) fn api_url(&self, service: &str) -> String {
        with_credentials(&rabbit_api(), &self.name(service), self.password(service))
    }

    pub(crate) async fn script(&self, env: &TestEnv, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new("bash")
            .arg(SCRIPT)
            .args(args)
            .env("RABBITMQ_API_URL", rabbit_api())
            .env("WAFLEET_RABBITMQ_VHOST", &env.name)
            .env("WAFLEET_RABBITMQ_USER_SUFFIX", &self.suffix)
            .env("WAFLEET_INGEST_AMQP_PASSWORD", &self.ingest)
            .env("WAFLEET_WORKER_AMQP_PASSWORD", &self.worker)
            .env("WAFLEET_CLI_AMQP_PASSWORD", &self.cli)
            .env("WAFLEET_KEDA_AMQP_PASSWORD", &self.keda)
            .output()
            .await
            .unwrap()
    }
}

fn with_credentials(url: &str, user: &str, password: &str) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_username(user).unwrap();
    url.set_password(Some(password)).unwrap();
    url.to_string()
}

fn envelope(customer_ref: &str) -> Vec<u8> {
    Envelope::V1(EnvelopeV1 {
        ingest_id: IngestId::new(),
        customer_ref: CustomerRef::parse(customer_ref).unwrap(),
        generation: Generation::FIRST,
        auth: AuthMode::Token,
        received_at: chrono::Utc::now(),
        event_type: "message".into(),
        provider_message_id: Some("BU-1".into()),
        payload: message_event("15550008001", "permissions", "BU-1").into(),
    })
    .to_bytes()
}

/// The broker refused the operation with ACCESS_REFUSED (403).
fn assert_refused<T: std::fmt::Debug>(result: Result<T, lapin::Error>, what: &str) {
    match result {
        Ok(value) => panic!("{what} was allowed: {value:?}"),
        Err(err) => {
            let text = format!("{err} {err:?}").to_ascii_uppercase();
            assert!((text.contains("ACCESS") && text.contains("REFUSED")) || text.contains("403"), "{what}: {err}");
        }
    }
}

/// Publishes with confirms and says whether the broker acked it.
async fn publish_acked(channel: &Channel, exchange: &str, routing_key: &str, body: &[u8]) -> bool {
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    match channel
        .basic_publish(exchange, routing_key, options, body, BasicProperties::default().with_delivery_mode(2))
        .await
    {
        Err(_) => false,
        Ok(confirm) => {
            matches!(tokio::time::timeout(Duration::from_secs(5), confirm).await, Ok(Ok(Confirmation::Ack(None))))
        }
    }
}

async fn confirm_channel(connection: &Connection) -> Channel {
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    channel
}

/// Ready messages in `queue`, read as the administrator.
async fn depth(env: &TestEnv, queue: &str) -> u32 {
    let connection = wafleet_shared::amqp::connect(&env.amqp_url, "broker-users-admin").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let count = channel.queue_declare(queue, options, FieldTable::default()).await.unwrap().message_count();
    let _ = connection.close(200, "done").await;
    count
}

async fn http_status(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_user_can_do_its_job_and_nothing_more() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    env.add_tenant(TENANT, TENANT).await.unwrap();
    let users = Users::new(&env);
    let created = users.script(&env, &[]).await;
    assert!(created.status.success(), "rabbitmq-users.sh failed: {}", String::from_utf8_lossy(&created.stderr));
    let printed = String::from_utf8_lossy(&created.stdout).into_owned() + &String::from_utf8_lossy(&created.stderr);
    for service in ["ingest", "worker", "cli", "keda"] {
        assert!(!printed.contains(users.password(service)), "the script printed a password");
    }
    broker_users_equal_the_manifest(&env, &users).await;

    // Every check runs before the users are deleted, even when one fails.
    let outcome = std::panic::AssertUnwindSafe(async {
        ingest_user_can_only_publish_to_wa_inbound(&env, &users).await;
        worker_user_owns_wa_topology_but_not_the_management_api(&env, &users).await;
        cli_user_may_apply_policies_but_not_manage_users(&env, &users).await;
    })
    .catch_unwind()
    .await;

    let deleted = users.script(&env, &["--delete"]).await;
    let http = reqwest::Client::new();
    for service in ["ingest", "worker", "cli", "keda"] {
        let url = format!("{}/api/users/{}", rabbit_api_base(), users.name(service));
        assert_eq!(
            http_status(http.get(url).basic_auth("guest", Some("guest"))).await,
            404,
            "user {service} was deleted"
        );
    }
    env.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
}

const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/k8s/examples/rabbitmq-topology.yaml");

/// The `User` and `Permission` objects of the deploy manifest, as `{name: {tags, permissions}}`
/// (`permissions` null for a user with none on the vhost).
fn manifest_users() -> serde_json::Map<String, serde_json::Value> {
    const READ: &str = r#"import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
perms = {d["spec"]["userReference"]["name"]: d["spec"]["permissions"] for d in docs if d["kind"] == "Permission"}
print(json.dumps({d["metadata"]["name"]: {"tags": sorted(d["spec"].get("tags") or []), "permissions": perms.get(d["metadata"]["name"])} for d in docs if d["kind"] == "User"}))"#;
    let out = std::process::Command::new("python3").args(["-c", READ, MANIFEST]).output().unwrap();
    assert!(out.status.success(), "reading the manifest: {}", String::from_utf8_lossy(&out.stderr));
    match serde_json::from_slice(&out.stdout).unwrap() {
        serde_json::Value::Object(users) => users,
        other => panic!("manifest users: {other}"),
    }
}

/// What the script made on the broker is exactly the manifest: the same users (the four services
/// of this test), tags and vhost permissions, so local runs and production cannot drift.
async fn broker_users_equal_the_manifest(env: &TestEnv, users: &Users) {
    let manifest = manifest_users();
    let names: Vec<&str> = manifest.keys().map(String::as_str).collect();
    assert_eq!(names, ["wafleet-cli", "wafleet-ingest", "wafleet-keda", "wafleet-worker"], "the users of the manifest");
    let http = reqwest::Client::new();
    let get = |path: String| {
        let request = http.get(format!("{}/api/{path}", rabbit_api_base())).basic_auth("guest", Some("guest"));
        async move {
            let response = request.send().await.unwrap();
            if response.status() == 404 {
                return serde_json::Value::Null;
            }
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    for (name, want) in &manifest {
        let service = name.trim_start_matches("wafleet-");
        let user = get(format!("users/{}", users.name(service))).await;
        let mut tags: Vec<String> = match &user["tags"] {
            serde_json::Value::Array(tags) => tags.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect(),
            serde_json::Value::String(tags) => tags.split(',').filter(|t| !t.is_empty()).map(str::to_owned).collect(),
            other => panic!("{name}: no such user on the broker ({other})"),
        };
        tags.sort();
        assert_eq!(serde_json::json!(tags), want["tags"], "{name}: tags on the broker and in the manifest");
        let permissions = get(format!("permissions/{}/{}", env.name, users.name(service))).await;
        if want["permissions"].is_null() {
            assert!(permissions.is_null(), "{name} has vhost permissions the manifest does not grant: {permissions}");
            continue;
        }
        for right in ["configure", "write", "read"] {
            assert_eq!(
                permissions[right].as_str().unwrap_or("<missing>"),
                want["permissions"][right].as_str().unwrap_or(""),
                "{name}: {right} on the broker and in the manifest"
            );
        }
    }
}

fn rabbit_api_base() -> String {
    let mut url = url::Url::parse(&rabbit_api()).unwrap();
    url.set_username("").unwrap();
    url.set_password(None).unwrap();
    url.as_str().trim_end_matches('/').to_owned()
}

async fn ingest_user_can_only_publish_to_wa_inbound(env: &TestEnv, users: &Users) {
    let url = users.amqp_url(env, "ingest");
    let connection = wafleet_shared::amqp::connect(&url, "ingest-permissions").await.unwrap();
    let queue = format!("wa.tenant.{TENANT}");

    // Its readiness check, a passive declare of wa.inbound, needs no configure right.
    let channel = connection.create_channel().await.unwrap();
    let passive = ExchangeDeclareOptions { passive: true, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare("wa.inbound", ExchangeKind::Direct, passive, FieldTable::default()).await.unwrap();

    // No read: it cannot take a tenant's messages.
    let channel = connection.create_channel().await.unwrap();
    assert_refused(channel.basic_get(&queue, BasicGetOptions::default()).await, "ingest basic_get on a tenant queue");
    // No configure: no queue, exchange or binding of its own.
    let channel = connection.create_channel().await.unwrap();
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    assert_refused(
        channel.queue_declare("wa.tenant.evil", durable, FieldTable::default()).await,
        "ingest declares a queue",
    );
    let channel = connection.create_channel().await.unwrap();
    let exchange = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    assert_refused(
        channel.exchange_declare("wa.evil", ExchangeKind::Fanout, exchange, FieldTable::default()).await,
        "ingest declares an exchange",
    );
    let channel = connection.create_channel().await.unwrap();
    assert_refused(
        channel
            .queue_bind(&queue, "wa.inbound", "another_ref", QueueBindOptions::default(), FieldTable::default())
            .await,
        "ingest binds a tenant queue to another key",
    );
    // No write anywhere but wa.inbound: the default exchange would address a queue by name.
    let channel = confirm_channel(&connection).await;
    assert!(!publish_acked(&channel, "", &queue, &envelope(TENANT)).await, "ingest published into a queue by name");
    let channel = confirm_channel(&connection).await;
    assert!(!publish_acked(&channel, "wa.dlx", TENANT, &envelope(TENANT)).await, "ingest published to wa.dlx");
    assert_eq!(depth(env, &queue).await, 0, "nothing reached the tenant queue");

    // What it is for: confirmed publishes to wa.inbound, routed to the tenant's queue, and
    // unknown refs to wa.unrouted through the alternate exchange.
    let channel = confirm_channel(&connection).await;
    assert!(publish_acked(&channel, "wa.inbound", TENANT, &envelope(TENANT)).await, "publish to wa.inbound");
    assert!(publish_acked(&channel, "wa.inbound", "bu_ghost", &envelope("bu_ghost")).await, "unknown ref");
    assert_eq!(depth(env, &queue).await, 1);
    assert_eq!(depth(env, "wa.unrouted").await, 1, "the alternate exchange needs no extra right");
    let _ = connection.close(200, "done").await;

    // The real ingest with these credentials becomes ready and accepts a webhook.
    let keyring = Keyring::parse(&SecretString::from(TEST_SIGNING_KEY)).unwrap();
    let token = keyring.sign(&CustomerRef::parse(TENANT).unwrap(), Generation::FIRST);
    let mut config = wafleet_ingest::config::Config::new(keyring);
    config.amqp_url = SecretString::from(url);
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.ops_addr = "127.0.0.1:0".parse().unwrap();
    config.ready_recheck = Duration::from_millis(200);
    let app = wafleet_ingest::startup::Application::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let ops = format!("http://127.0.0.1:{}", app.ops_port());
    let stop = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(stop.clone()));
    let http = reqwest::Client::new();
    let ready =
        wait_until(Duration::from_secs(20), || async { http_status(http.get(format!("{ops}/readyz"))).await == 200 })
            .await;
    let mut event = message_event("15550008001", "through least privilege", "BU-2");
    event["customer_ref"] = TENANT.into();
    let status = post_json(&format!("{base}/webhook/{TENANT}/{token}"), &event).await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    ready.expect("ingest with publish-only credentials becomes ready");
    assert_eq!(status, 200, "ingest with publish-only credentials accepts a webhook");
    assert_eq!(depth(env, &queue).await, 2);
}

async fn worker_user_owns_wa_topology_but_not_the_management_api(env: &TestEnv, users: &Users) {
    // No management tag: the HTTP API refuses it outright.
    let http = reqwest::Client::new();
    let (name, password) = (users.name("worker"), users.password("worker").to_owned());
    for path in ["overview".to_owned(), format!("queues/{}", env.name), format!("policies/{}", env.name)] {
        let status =
            http_status(http.get(format!("{}/api/{path}", rabbit_api_base())).basic_auth(&name, Some(&password))).await;
        assert!(matches!(status, 401 | 403), "worker reached the management API {path}: {status}");
    }
    let management = Management::new(&users.api_url("worker"), &env.name).unwrap();
    assert!(management.apply_policies().await.is_err(), "the worker cannot apply policies");

    let connection = wafleet_shared::amqp::connect(&users.amqp_url(env, "worker"), "worker-permissions").await.unwrap();
    // It may declare and bind a tenant's queues (the reconciler does).
    let channel = connection.create_channel().await.unwrap();
    wafleet_fleet::topology::declare_tenant(
        &connection,
        &channel,
        &CustomerRef::parse("bu_b").unwrap(),
        QueueType::Quorum,
    )
    .await
    .unwrap();
    // It consumes tenant queues.
    let got = channel.basic_get(&format!("wa.tenant.{TENANT}"), BasicGetOptions::default()).await.unwrap();
    let delivery = got.expect("a message to read").delivery;
    delivery.acker.ack(BasicAckOptions::default()).await.unwrap();
    // The wa.unrouted sweep requeues through the wa.unrouted exchange: no amq.default right needed.
    let channel = confirm_channel(&connection).await;
    let (retention, publish_timeout) = (Duration::from_secs(3600), Duration::from_secs(5));
    let report =
        wafleet_worker::reconciler::sweep_unrouted(&env.admin_pool, &connection, &channel, retention, publish_timeout)
            .await
            .unwrap();
    assert_eq!(report.requeued, 1, "the unknown ref's event waits again in wa.unrouted: {report:?}");
    assert_eq!(depth(env, "wa.unrouted").await, 1);
    // Nothing outside wa.*.
    let channel = connection.create_channel().await.unwrap();
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    assert_refused(
        channel.queue_declare("evil", durable, FieldTable::default()).await,
        "worker declares a non-wa queue",
    );
    let channel = confirm_channel(&connection).await;
    assert!(!publish_acked(&channel, "amq.topic", "x", b"{}").await, "worker published outside wa.*");
    let _ = connection.close(200, "done").await;
}

async fn cli_user_may_apply_policies_but_not_manage_users(env: &TestEnv, users: &Users) {
    let management = Management::new(&users.api_url("cli"), &env.name).unwrap();
    management.apply_policies().await.expect("the CLI (policymaker) applies policies");
    assert!(management.policies_present().await.unwrap());
    let http = reqwest::Client::new();
    let (name, password) = (users.name("cli"), users.password("cli").to_owned());
    let user_url = format!("{}/api/users/{}_x", rabbit_api_base(), name);
    let status = http_status(
        http.put(&user_url)
            .basic_auth(&name, Some(&password))
            .json(&serde_json::json!({"password": "x", "tags": "administrator"})),
    )
    .await;
    assert!(matches!(status, 401 | 403), "the CLI created a user: {status}");
    let permissions = format!("{}/api/permissions/{}/{}", rabbit_api_base(), env.name, users.name("ingest"));
    let status = http_status(
        http.put(&permissions)
            .basic_auth(&name, Some(&password))
            .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"})),
    )
    .await;
    assert!(matches!(status, 401 | 403), "the CLI widened ingest's permissions: {status}");
}

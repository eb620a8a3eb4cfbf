//! The `http` bot: signed requests to the tenant's own bot URL, retries after a
//! timeout, replies only to the message's chat, and the SSRF guard (no redirects, no private
//! targets without the development opt-in). The bots are wiremock servers on 127.0.0.1.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;
use wafleet_fleet::bot_settings;
use wafleet_fleet::tenant::{BotKind, NewTenant};
use wafleet_shared::topology::QueueType;
use wafleet_shared::{AuthMode, CustomerRef};
use wafleet_tests::{counter_value, wait_until, EnvOptions, TestEnv};
use wafleet_worker::bots::HttpBotConfig;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Client settings for a bot on 127.0.0.1:`ports` (development opt-in on, short timeout).
fn local_bot_options(ports: &[u16], allow_private: bool) -> EnvOptions {
    EnvOptions {
        http_bot: Some(HttpBotConfig {
            timeout: Duration::from_millis(700),
            ports: ports.to_vec(),
            allow_private,
            ..HttpBotConfig::default()
        }),
        ..EnvOptions::default()
    }
}

fn port_of(server: &MockServer) -> u16 {
    server.address().port()
}

/// Adds an `http` tenant in-process, registers its bridge at the simulator, returns the secret.
async fn add_http_tenant(env: &TestEnv, customer_ref: &str, url: &str, allow_other_chats: bool) -> String {
    let new = NewTenant {
        customer_ref: CustomerRef::parse(customer_ref).unwrap(),
        bridge: customer_ref.into(),
        bot_kind: BotKind::Http,
        auth_mode: AuthMode::Token,
        queue_type: QueueType::Quorum,
    };
    let http = bot_settings::http_settings(BotKind::Http, Some(url), allow_other_chats).unwrap();
    let outcome = bot_settings::add_tenant(
        &env.admin_pool,
        &env.endpoints,
        &new,
        wafleet_fleet::accounts::DEFAULT_ACCOUNT,
        http.as_ref(),
    )
    .await
    .unwrap();
    let hook = env.webhook_url(customer_ref).await.unwrap();
    env.sim.add_bridge(customer_ref, Some(&hook), None);
    outcome.secret.expect("a new http tenant gets a secret").expose_secret().to_owned()
}

async fn outcome_of(env: &TestEnv, customer_ref: &str) -> Option<String> {
    sqlx::query_scalar(
        "select p.outcome from processed_events p join tenants t using (tenant_id) where t.customer_ref = $1 limit 1",
    )
    .bind(customer_ref)
    .fetch_optional(&env.owner_pool)
    .await
    .unwrap()
}

/// Hex HMAC-SHA256, computed here independently of the worker's signing code.
fn expected_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("v1={hex}")
}

/// A bot that answers only requests signed with the secret it learns after the tenant is added.
struct VerifyingBot {
    secret: Arc<OnceLock<String>>,
}

impl Respond for VerifyingBot {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let (Some(secret), timestamp, signature) =
            (self.secret.get(), header("x-wafleet-timestamp"), header("x-wafleet-signature"))
        else {
            return ResponseTemplate::new(401);
        };
        if signature != expected_signature(secret, timestamp, &request.body) {
            return ResponseTemplate::new(401);
        }
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let text = format!("bot says: {}", body["text"].as_str().unwrap_or_default());
        ResponseTemplate::new(200).set_body_json(serde_json::json!({"replies": [{"text": text}]}))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_bot_gets_a_request_signed_with_its_tenants_secret_and_its_reply_goes_to_the_same_chat_on_its_own_bridge(
) {
    let bot = MockServer::start().await;
    let secret = Arc::new(OnceLock::new());
    Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/hook"))
        .respond_with(VerifyingBot { secret: secret.clone() })
        .mount(&bot)
        .await;
    let env = TestEnv::with(local_bot_options(&[port_of(&bot)], true)).await.unwrap();
    env.add_tenant("hb_echo", "hb_echo").await.unwrap();
    // Through the CLI: the secret is printed once, alone on the last line.
    let out = env.wafleet(&[
        "tenants",
        "add",
        "hb_sig",
        "--bridge",
        "hb_sig",
        "--bot",
        "http",
        "--bot-url",
        &format!("{}/hook", bot.uri()),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let printed = stdout.lines().last().unwrap().trim().to_owned();
    assert!(printed.starts_with(bot_settings::SECRET_PREFIX), "{stdout}");
    secret.set(printed.clone()).unwrap();
    // Adding the same tenant again changes nothing and shows no secret.
    let again = env.wafleet(&[
        "tenants",
        "add",
        "hb_sig",
        "--bridge",
        "hb_sig",
        "--bot",
        "http",
        "--bot-url",
        &format!("{}/hook", bot.uri()),
    ]);
    assert!(again.status.success());
    assert!(!String::from_utf8_lossy(&again.stdout).contains(bot_settings::SECRET_PREFIX));
    env.sim.add_bridge("hb_sig", Some(&env.webhook_url("hb_sig").await.unwrap()), None);

    assert_eq!(env.sim.fire_message("hb_sig", "15550000201", "hello bot", Some("HB-SIG-1"), true).await.unwrap(), 200);
    let sends = env.sim.wait_for_sends("hb_sig", 1, Duration::from_secs(20)).await;
    assert_eq!(sends.len(), 1, "the signed request was answered");
    assert_eq!(sends[0].body, "bot says: hello bot");
    assert_eq!(sends[0].chat, "15550000201");
    env.wait_idle(1).await.unwrap();
    assert!(env.sim.sends_for("hb_echo").is_empty(), "nothing on another tenant's bridge");

    let requests = bot.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let request: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(request["customer_ref"], "hb_sig");
    assert_eq!(request["chat_id"], "15550000201@s.whatsapp.net");
    assert_eq!(request["text"], "hello bot");
    assert_eq!(request["message_id"], "HB-SIG-1");
    assert!(request["sender_name"].is_string());
    let timestamp = requests[0].headers.get("x-wafleet-timestamp").unwrap().to_str().unwrap();
    let age = chrono::Utc::now().timestamp() - timestamp.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "timestamp is the time of the request");
    // The secret is stored for the worker but never exported with the tenant's data.
    let mut export = Vec::new();
    wafleet_fleet::retention::export(&env.admin_pool, &CustomerRef::parse("hb_sig").unwrap(), &mut export)
        .await
        .unwrap();
    assert!(!String::from_utf8(export).unwrap().contains(&printed));
    env.cleanup().await;
}

/// Answers after 3 s the first time (beyond the client's timeout), at once afterwards.
struct SlowOnce {
    calls: Arc<AtomicU32>,
}

impl Respond for SlowOnce {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        let answer =
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"replies": [{"text": "late but here"}]}));
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            answer.set_delay(Duration::from_secs(3))
        } else {
            answer
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_http_bot_times_out_and_the_message_is_answered_once_from_the_next_retry_tier() {
    let bot = MockServer::start().await;
    let calls = Arc::new(AtomicU32::new(0));
    Mock::given(wiremock::matchers::method("POST")).respond_with(SlowOnce { calls: calls.clone() }).mount(&bot).await;
    let env = TestEnv::with(local_bot_options(&[port_of(&bot)], true)).await.unwrap();
    add_http_tenant(&env, "hb_slow", &format!("{}/hook", bot.uri()), false).await;
    let timeouts = counter_value("wafleet_http_bot_requests_total", &[("outcome", "timeout")]);

    assert_eq!(env.sim.fire_message("hb_slow", "15550000202", "are you there", None, true).await.unwrap(), 200);
    let sends = env.sim.wait_for_sends("hb_slow", 1, Duration::from_secs(20)).await;
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].body, "late but here");
    env.wait_idle(1).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one timed-out call, one retry");
    assert!(counter_value("wafleet_http_bot_requests_total", &[("outcome", "timeout")]) > timeouts);
    assert_eq!(env.sim.sends_for("hb_slow").len(), 1, "answered once");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_reply_naming_another_chat_is_dropped_and_counted_unless_the_tenant_allows_other_chats() {
    let bot = MockServer::start().await;
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"replies": [
            {"text": "to you"},
            {"text": "to someone else", "chat_id": "15550009999@s.whatsapp.net"},
        ]})))
        .mount(&bot)
        .await;
    let env = TestEnv::with(local_bot_options(&[port_of(&bot)], true)).await.unwrap();
    add_http_tenant(&env, "hb_strict", &format!("{}/hook", bot.uri()), false).await;
    add_http_tenant(&env, "hb_open", &format!("{}/hook", bot.uri()), true).await;
    let rejected = counter_value("wafleet_http_bot_replies_rejected_total", &[("reason", "other_chat")]);

    env.sim.fire_message("hb_strict", "15550000203", "hi", None, true).await.unwrap();
    env.sim.fire_message("hb_open", "15550000204", "hi", None, true).await.unwrap();
    env.sim.wait_for_sends("hb_open", 2, Duration::from_secs(20)).await;
    env.wait_idle(2).await.unwrap();

    let strict = env.sim.sends_for("hb_strict");
    assert_eq!(strict.len(), 1, "{strict:?}");
    assert_eq!((strict[0].chat.as_str(), strict[0].body.as_str()), ("15550000203", "to you"));
    assert!(counter_value("wafleet_http_bot_replies_rejected_total", &[("reason", "other_chat")]) > rejected);
    let mut open: Vec<(String, String)> = env.sim.sends_for("hb_open").into_iter().map(|s| (s.chat, s.body)).collect();
    open.sort();
    assert_eq!(
        open,
        vec![("15550000204".into(), "to you".into()), ("15550009999".into(), "to someone else".into())],
        "with allow_other_chats the reply reaches the other chat, on the tenant's own bridge"
    );
    let elsewhere: Vec<_> = env.sim.all_sends().into_iter().filter(|s| s.chat == "15550009999").collect();
    assert!(elsewhere.iter().all(|s| s.bridge == "hb_open"), "{elsewhere:?}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_loopback_is_not_followed_and_nothing_reaches_the_redirect_target() {
    let target = MockServer::start().await;
    Mock::given(wiremock::matchers::any()).respond_with(ResponseTemplate::new(200)).mount(&target).await;
    let bot = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(302).insert_header("Location", format!("{}/steal", target.uri()).as_str()))
        .mount(&bot)
        .await;
    // Both ports allowed and private targets allowed: only the no-redirect rule stands in the way.
    let env = TestEnv::with(local_bot_options(&[port_of(&bot), port_of(&target)], true)).await.unwrap();
    add_http_tenant(&env, "hb_redirect", &format!("{}/hook", bot.uri()), false).await;

    env.sim.fire_message("hb_redirect", "15550000205", "follow me", None, true).await.unwrap();
    wait_until(Duration::from_secs(20), || async { outcome_of(&env, "hb_redirect").await.is_some() }).await.unwrap();
    assert_eq!(
        outcome_of(&env, "hb_redirect").await.as_deref(),
        Some("bot_failed"),
        "a redirect is a permanent failure"
    );
    assert_eq!(bot.received_requests().await.unwrap().len(), 1, "asked once, not retried");
    assert!(target.received_requests().await.unwrap().is_empty(), "the redirect target was never contacted");
    assert!(env.sim.sends_for("hb_redirect").is_empty());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_urls_resolving_to_loopback_or_naming_it_are_refused_without_the_development_opt_in() {
    let bot = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"replies": [{"text": "leak"}]})))
        .mount(&bot)
        .await;
    let port = port_of(&bot);
    // The port is allowed; only the address rules refuse the target.
    let env = TestEnv::with(local_bot_options(&[port, 80], false)).await.unwrap();
    add_http_tenant(&env, "hb_localhost", &format!("http://localhost:{port}/hook"), false).await;
    add_http_tenant(&env, "hb_literal", &format!("http://127.0.0.1:{port}/hook"), false).await;
    add_http_tenant(&env, "hb_metadata", "http://169.254.169.254/latest/meta-data/", false).await;
    let refused = counter_value("wafleet_http_bot_refused_total", &[]);

    for (i, tenant) in ["hb_localhost", "hb_literal", "hb_metadata"].into_iter().enumerate() {
        env.sim.fire_message(tenant, &format!("1555000021{i}"), "hi", None, true).await.unwrap();
    }
    for tenant in ["hb_localhost", "hb_literal", "hb_metadata"] {
        wait_until(Duration::from_secs(20), || async { outcome_of(&env, tenant).await.is_some() }).await.unwrap();
        assert_eq!(outcome_of(&env, tenant).await.as_deref(), Some("bot_failed"), "{tenant}");
    }
    assert!(bot.received_requests().await.unwrap().is_empty(), "the local bot was never contacted");
    assert!(counter_value("wafleet_http_bot_refused_total", &[]) >= refused + 3.0);
    assert!(env.sim.all_sends().is_empty());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_bot_switches_a_tenant_to_http_rotates_its_secret_and_forgets_both_when_leaving_http() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    env.add_tenant("hb_switch", "hb_switch").await.unwrap();
    let stored = || async {
        sqlx::query_as::<_, (String, Option<String>, Option<String>, serde_json::Value)>(
            "select bot_kind, bot_url, bot_secret, bot_config from tenants where customer_ref = 'hb_switch'",
        )
        .fetch_one(&env.owner_pool)
        .await
        .unwrap()
    };
    let last_line = |out: &std::process::Output| {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_owned()
    };

    let missing_url = env.wafleet(&["tenants", "set-bot", "hb_switch", "--bot", "http"]);
    assert!(!missing_url.status.success(), "switching to http needs a URL");
    let first = last_line(&env.wafleet(&[
        "tenants",
        "set-bot",
        "hb_switch",
        "--bot",
        "http",
        "--bot-url",
        "https://bot.example.com/hook?token=abc",
        "--allow-other-chats",
        "true",
    ]));
    let (kind, url, secret, config) = stored().await;
    assert_eq!(kind, "http");
    assert_eq!(url.as_deref(), Some("https://bot.example.com/hook?token=abc"));
    assert_eq!(secret.as_deref(), Some(first.as_str()), "the printed secret is the stored one");
    assert_eq!(config["allow_other_chats"], true);

    // A new URL keeps the secret; --rotate-secret replaces it.
    let same =
        env.wafleet(&["tenants", "set-bot", "hb_switch", "--bot", "http", "--bot-url", "https://bot2.example.com/"]);
    assert!(!String::from_utf8_lossy(&same.stdout).contains(bot_settings::SECRET_PREFIX));
    assert_eq!(stored().await.2.as_deref(), Some(first.as_str()));
    let rotated = last_line(&env.wafleet(&["tenants", "set-bot", "hb_switch", "--bot", "http", "--rotate-secret"]));
    assert!(rotated.starts_with(bot_settings::SECRET_PREFIX) && rotated != first);
    assert_eq!(stored().await.2.as_deref(), Some(rotated.as_str()));

    let back = env.wafleet(&["tenants", "set-bot", "hb_switch", "--bot", "echo"]);
    assert!(back.status.success());
    let (kind, url, secret, config) = stored().await;
    assert_eq!((kind.as_str(), url, secret), ("echo", None, None));
    assert!(config.get("allow_other_chats").is_none());

    // The audit log has the commands, the URL's origin only, and never a secret.
    let audit: Vec<String> =
        sqlx::query_scalar("select arguments::text from audit_log where command = 'tenants set-bot'")
            .fetch_all(&env.owner_pool)
            .await
            .unwrap();
    assert_eq!(audit.len(), 5, "{audit:?}");
    assert!(
        audit.iter().all(|a| !a.contains(&first) && !a.contains(&rotated) && !a.contains("token=abc")),
        "{audit:?}"
    );
    env.cleanup().await;
}

/// The http bot receives every message with its type, media type and sender, a group message
/// included; what it answers is its own choice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_bot_receives_every_message_type_with_its_type_media_type_and_sender() {
    let bot = MockServer::start().await;
    Mock::given(wiremock::matchers::method("POST")).respond_with(ResponseTemplate::new(200)).mount(&bot).await;
    let env = TestEnv::with(local_bot_options(&[port_of(&bot)], true)).await.unwrap();
    add_http_tenant(&env, "hb_types", &format!("{}/hook", bot.uri()), false).await;
    let mut sent = wafleet_sim::Inbound::every_type("15550000801");
    sent.push(wafleet_sim::Inbound::text("x", "in a group").in_group("120363000000000801@g.us", "15550000802"));
    for message in &sent {
        assert_eq!(env.sim.fire_inbound("hb_types", message, true).await.unwrap(), 200);
    }
    wait_until(Duration::from_secs(30), || async { bot.received_requests().await.unwrap().len() >= sent.len() })
        .await
        .unwrap();
    let mut received: Vec<serde_json::Value> =
        bot.received_requests().await.unwrap().iter().map(|r| serde_json::from_slice(&r.body).unwrap()).collect();
    assert_eq!(received.len(), sent.len(), "each message once");
    let key = |v: &serde_json::Value| format!("{}|{}|{}", v["type"], v["media_type"], v["text"]);
    received.sort_by_key(key);
    let mut expected: Vec<serde_json::Value> = sent
        .iter()
        .map(|m| {
            serde_json::json!({"type": m.kind, "text": m.body,
                               "media_type": if m.media_type.is_empty() { serde_json::Value::Null } else { m.media_type.clone().into() }})
        })
        .collect();
    expected.sort_by_key(key);
    for (got, want) in received.iter().zip(&expected) {
        assert_eq!(
            (&got["type"], &got["media_type"], &got["text"]),
            (&want["type"], &want["media_type"], &want["text"])
        );
    }
    let group = received.iter().find(|r| r["is_group"] == true).expect("the group message");
    assert_eq!(group["chat_id"], "120363000000000801@g.us");
    assert_eq!(group["contact_id"], "15550000802@s.whatsapp.net", "the member, not the group");
    env.cleanup().await;
}

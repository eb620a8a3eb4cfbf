//! Routing edges: quarantine of mismatched envelopes, unrouted events waiting for their tenant,
//! redelivery, and the open webhook route.

use std::time::Duration;

use wafleet_fleet::tenant::BotKind;
use wafleet_shared::{AuthMode, CustomerRef, Generation};
use wafleet_tests::{counter_value, message_event, post_json, wait_until, EnvOptions, TestEnv};

fn envelope_for(customer_ref: &str, body: &str, message_id: &str) -> wafleet_shared::Envelope {
    wafleet_tests::test_envelope(customer_ref, body, message_id, chrono::Utc::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_naming_another_tenant_is_quarantined_and_never_processed() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant("qa", "qa").await.unwrap();
    env.add_tenant("qb", "qb").await.unwrap();
    // An envelope for A placed straight into B's queue (bypassing the exchange) must not run.
    let bytes = envelope_for("qa", "smuggled", "Q1").to_bytes();
    env.publish_raw("", "wa.tenant.qb", &bytes).await;
    wait_until(Duration::from_secs(20), || async { env.queue_depth("wa.quarantine").await == 1 }).await.unwrap();
    assert!(env.sim.all_sends().is_empty());
    assert_eq!(env.count("select count(*) from processed_events").await, 0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_envelope_is_recorded_once_and_sent_once() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant("redo", "redo").await.unwrap();
    let bytes = envelope_for("redo", "only once", "R1").to_bytes();
    // The same envelope (same ingest id) delivered three times, as after a worker crash.
    for _ in 0..3 {
        env.publish_raw("wa.inbound", "redo", &bytes).await;
    }
    env.sim.wait_for_sends("redo", 1, Duration::from_secs(20)).await;
    wait_until(Duration::from_secs(20), || async { env.queue_depth("wa.tenant.redo").await == 0 }).await.unwrap();
    env.wait_idle(1).await.unwrap();
    assert_eq!(env.sim.sends_for("redo").len(), 1);
    assert_eq!(env.count("select count(*) from outbox").await, 1);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_for_a_tenant_added_later_waits_in_unrouted_and_then_reaches_only_its_own_queue() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant("present", "present").await.unwrap();
    // Signed URL for a ref whose tenant does not exist yet: accepted, parked in wa.unrouted.
    let keyring =
        wafleet_shared::Keyring::parse(&secrecy::SecretString::from(wafleet_tests::TEST_SIGNING_KEY)).unwrap();
    let token = keyring.sign(&CustomerRef::parse("late").unwrap(), Generation::FIRST);
    let url = format!("{}/webhook/late/{token}", env.ingest_url);
    assert_eq!(post_json(&url, &message_event("15550000031", "early bird", "L1")).await, 200);
    wait_until(Duration::from_secs(10), || async {
        counter_value("wafleet_unrouted_total", &[("reason", "unknown_tenant")]) >= 1.0
    })
    .await
    .unwrap();
    assert!(env.sim.all_sends().is_empty());
    env.add_tenant("late", "late").await.unwrap();
    let sends = env.sim.wait_for_sends("late", 1, Duration::from_secs(20)).await;
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].body, "early bird");
    assert!(env.sim.sends_for("present").is_empty());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_route_events_reach_open_tenants_and_are_dropped_for_token_tenants() {
    let env = TestEnv::with(EnvOptions { open_webhook: true, ..EnvOptions::default() }).await.unwrap();
    env.add_tenant_with("opened", "opened", BotKind::Echo, AuthMode::Open).await.unwrap();
    env.add_tenant("tokenonly", "tokenonly").await.unwrap();
    let open_url = format!("{}/webhook", env.ingest_url);
    let before = counter_value("wafleet_worker_dropped_total", &[("reason", "open_auth_not_allowed")]);
    let mut to_token = message_event("15550000041", "sneaky", "O1");
    to_token["customer_ref"] = "tokenonly".into();
    assert_eq!(post_json(&open_url, &to_token).await, 200);
    let mut to_open = message_event("15550000042", "welcome", "O2");
    to_open["customer_ref"] = "opened".into();
    assert_eq!(post_json(&open_url, &to_open).await, 200);
    let sends = env.sim.wait_for_sends("opened", 1, Duration::from_secs(20)).await;
    assert_eq!(sends[0].body, "welcome");
    wait_until(Duration::from_secs(20), || async {
        counter_value("wafleet_worker_dropped_total", &[("reason", "open_auth_not_allowed")]) > before
    })
    .await
    .unwrap();
    assert!(env.sim.sends_for("tokenonly").is_empty());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_bot_answers_from_its_own_tenants_rules_only() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant_with("shop_a", "shop_a", BotKind::Rules, AuthMode::Token).await.unwrap();
    env.add_tenant_with("shop_b", "shop_b", BotKind::Rules, AuthMode::Token).await.unwrap();
    let a = CustomerRef::parse("shop_a").unwrap();
    let b = CustomerRef::parse("shop_b").unwrap();
    wafleet_fleet::service::add_rule(&env.admin_pool, &a, "hours", "A opens at 9").await.unwrap();
    wafleet_fleet::service::add_rule(&env.admin_pool, &b, "hours", "B opens at 10").await.unwrap();
    wafleet_fleet::service::add_rule(&env.admin_pool, &b, "price", "B is cheap").await.unwrap();
    env.sim.fire_message("shop_a", "15550000051", "what are your HOURS?", None, true).await.unwrap();
    env.sim.fire_message("shop_a", "15550000051", "price?", None, true).await.unwrap();
    let sends = env.sim.wait_for_sends("shop_a", 1, Duration::from_secs(20)).await;
    env.wait_idle(2).await.unwrap();
    assert_eq!(sends[0].body, "A opens at 9");
    assert_eq!(env.sim.sends_for("shop_a").len(), 1, "B's price rule never answers A");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_confirmed_succeeds_only_when_a_queue_took_the_message() {
    use wafleet_shared::publish::{publish_confirmed, PublishError, Target};
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let connection = wafleet_shared::amqp::connect(&env.amqp_url, "publish-confirmed-test").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(lapin::options::ConfirmSelectOptions::default()).await.unwrap();
    let properties = || lapin::BasicProperties::default().with_delivery_mode(2);
    let timeout = Duration::from_secs(5);

    // A queue that exists (declared by migrate, nothing consumes it here) takes the message.
    let to_quarantine = Target { exchange: "", routing_key: "wa.quarantine" };
    publish_confirmed(&channel, to_quarantine, b"{}", properties(), timeout).await.unwrap();
    assert_eq!(env.queue_depth("wa.quarantine").await, 1);

    // No queue by that name: the broker returns the mandatory message, which is not a success.
    let to_nobody = Target { exchange: "", routing_key: "wa.tenant.nobody" };
    let returned = publish_confirmed(&channel, to_nobody, b"{}", properties(), timeout).await;
    assert!(matches!(returned, Err(PublishError::Returned { reply_code: 312, .. })), "{returned:?}");

    // A channel without confirms can never report success.
    let unconfirmed = connection.create_channel().await.unwrap();
    let result = publish_confirmed(&unconfirmed, to_quarantine, b"{}", properties(), timeout).await;
    assert!(matches!(result, Err(PublishError::NotConfirming)), "{result:?}");

    let _ = connection.close(200, "done").await;
    env.cleanup().await;
}

/// The reference only assumes that WA Bridges repeats `customer_ref` in webhook bodies. On the
/// signed route the tenant comes from the URL, so an event without it is answered on its own
/// bridge all the same (events with it are every other test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_without_customer_ref_in_the_body_are_answered_on_the_urls_tenant_bridge() {
    let sim = wafleet_sim::SimConfig {
        api_keys: vec![wafleet_tests::TEST_API_KEY.into()],
        unlimited: true,
        webhook_customer_ref: wafleet_sim::WebhookRef::Omit,
        ..wafleet_sim::SimConfig::default()
    };
    let env = TestEnv::with(EnvOptions { sim: Some(sim), ..EnvOptions::default() }).await.unwrap();
    env.add_tenant("noref_a", "noref_a").await.unwrap();
    env.add_tenant("noref_b", "noref_b").await.unwrap();
    for (i, tenant) in ["noref_a", "noref_b", "noref_a"].into_iter().enumerate() {
        let status = env.sim.fire_message(tenant, "15550000400", &format!("{tenant} {i}"), None, true).await.unwrap();
        assert_eq!(status, 200, "an event without customer_ref is accepted on the signed route");
    }
    wait_until(Duration::from_secs(20), || async { env.sim.all_sends().len() == 3 }).await.unwrap();
    for send in env.sim.all_sends() {
        assert!(send.body.contains(&send.bridge), "{} answered on {}", send.body, send.bridge);
    }
    env.cleanup().await;
}

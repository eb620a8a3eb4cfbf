//! End-to-end isolation suite: simulator → ingest → RabbitMQ → worker → Postgres → simulator,
//! with real services and one database and vhost per test.

use std::time::Duration;

use wafleet_tests::{counter_value, message_event, post_json, wait_until, EnvOptions, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_for_tenant_a_never_sends_on_tenant_b_bridge() {
    let env = TestEnv::new().await.unwrap();
    // At WA Bridges a bridge's key is its customer_ref; the webhook body repeats it.
    env.add_tenant("cust_a", "cust_a").await.unwrap();
    let url_b = env.add_tenant("cust_b", "cust_b").await.unwrap();
    assert!(url_b.contains("/webhook/cust_b/"));

    // A's event carries B's bridge key, phone and chat id in every field it can.
    let mut event = message_event("15550000002", "hello from A", "MSG-A-1");
    event["bridge_id"] = "cust_b".into();
    event["instance"] = "cust_b".into();
    event["nested"] =
        serde_json::json!({"customer_ref": "cust_b", "bridge": "cust_b", "list": [{"customer_ref": "cust_b"}]});
    assert_eq!(env.sim.fire("cust_a", event, true).await.unwrap(), 200);

    let sends = env.sim.wait_for_sends("cust_a", 1, Duration::from_secs(20)).await;
    assert_eq!(sends.len(), 1, "A's reply arrives on A's bridge");
    assert_eq!(sends[0].body, "hello from A");
    assert_eq!(sends[0].chat, "15550000002");
    env.wait_idle(1).await.unwrap();
    assert!(env.sim.sends_for("cust_b").is_empty(), "nothing was sent on B's bridge");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_tenants_each_get_only_their_own_replies_while_one_queue_is_backed_up() {
    let mut env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    env.add_tenant("bridge-1", "bridge-1").await.unwrap();
    env.add_tenant("bridge-2", "bridge-2").await.unwrap();
    env.add_tenant("bridge-3", "bridge-3").await.unwrap();
    // t3's queue backs up while no worker runs.
    for i in 0..40 {
        let status = env.sim.fire_message("bridge-3", "15550000003", &format!("t3-{i}"), None, true).await.unwrap();
        assert_eq!(status, 200);
    }
    env.start_worker().await.unwrap();
    let mut posts = Vec::new();
    for i in 0..20 {
        for (bridge, chat) in [("bridge-1", "15550000001"), ("bridge-2", "15550000002")] {
            let sim = env.sim.clone();
            posts.push(tokio::spawn(async move {
                sim.fire_message(bridge, chat, &format!("{bridge}-{i}"), None, i % 2 == 0).await.unwrap()
            }));
        }
    }
    for p in posts {
        assert_eq!(p.await.unwrap(), 200);
    }
    env.wait_idle(80).await.unwrap();
    for (bridge, chat, n) in
        [("bridge-1", "15550000001", 20), ("bridge-2", "15550000002", 20), ("bridge-3", "15550000003", 40)]
    {
        let sends = env.sim.sends_for(bridge);
        assert_eq!(sends.len(), n, "{bridge}");
        let prefix = if bridge == "bridge-3" { "t3-".to_owned() } else { format!("{bridge}-") };
        assert!(sends.iter().all(|s| s.chat == chat && s.body.starts_with(&prefix)), "{bridge} got a foreign reply");
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_token_for_an_unknown_tenant_is_accepted_dropped_and_counted() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant("known", "known").await.unwrap();
    // A correctly signed URL for a ref that has no tenant row.
    let keyring =
        wafleet_shared::Keyring::parse(&secrecy::SecretString::from(wafleet_tests::TEST_SIGNING_KEY)).unwrap();
    let ghost = wafleet_shared::CustomerRef::parse("ghost").unwrap();
    let token = keyring.sign(&ghost, wafleet_shared::Generation::FIRST);
    let before = counter_value("wafleet_unrouted_total", &[("reason", "unknown_tenant")]);
    let status =
        post_json(&format!("{}/webhook/ghost/{token}", env.ingest_url), &message_event("15550000009", "hi", "G1"))
            .await;
    assert_eq!(status, 200);
    // No queue exists for it: the alternate exchange keeps it in wa.unrouted, never another tenant's queue.
    env.sim.fire_message("known", "15550000008", "ping", None, true).await.unwrap();
    env.wait_idle(1).await.unwrap();
    assert_eq!(env.sim.all_sends().len(), 1);
    assert_eq!(env.sim.sends_for("known").len(), 1);
    wait_until(Duration::from_secs(20), || async {
        counter_value("wafleet_unrouted_total", &[("reason", "unknown_tenant")]) > before
    })
    .await
    .expect("the unknown tenant's event is counted");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_disabled_before_processing_gets_no_reply_and_is_counted() {
    let mut env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    env.add_tenant("soon_off", "soon_off").await.unwrap();
    env.add_tenant("stays_on", "stays_on").await.unwrap();
    assert_eq!(env.sim.fire_message("soon_off", "15550000011", "hi", None, true).await.unwrap(), 200);
    wafleet_fleet::service::set_status(
        &env.admin_pool,
        &wafleet_shared::CustomerRef::parse("soon_off").unwrap(),
        wafleet_fleet::tenant::TenantStatus::Disabled,
    )
    .await
    .unwrap();
    let before = counter_value("wafleet_worker_dropped_total", &[("reason", "disabled")]);
    env.start_worker().await.unwrap();
    env.sim.fire_message("stays_on", "15550000012", "hi", None, true).await.unwrap();
    env.sim.wait_for_sends("stays_on", 1, Duration::from_secs(20)).await;
    wait_until(Duration::from_secs(20), || async {
        counter_value("wafleet_worker_dropped_total", &[("reason", "disabled")]) > before
    })
    .await
    .unwrap();
    assert!(env.sim.sends_for("soon_off").is_empty());
    env.cleanup().await;
}

/// The worker keeps a tenant's row between messages (built-in bots) and checks it is unchanged
/// when it records: a disable committed since stops the next message, and a rotated URL's new
/// generation is accepted (the kept row knew only the old one) while the old one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_row_the_worker_keeps_is_never_trusted_past_a_change() {
    let env = TestEnv::new().await.unwrap();
    let old_url = env.add_tenant("kept", "kept").await.unwrap();
    let kept = wafleet_shared::CustomerRef::parse("kept").unwrap();
    let event = |body: &str, id: &str| message_event("15550000420", body, id);
    let set_status = |status| wafleet_fleet::service::set_status(&env.admin_pool, &kept, status);
    assert_eq!(post_json(&old_url, &event("first", "KEPT-1")).await, 200);
    env.sim.wait_for_sends("kept", 1, Duration::from_secs(20)).await;

    set_status(wafleet_fleet::tenant::TenantStatus::Disabled).await.unwrap();
    let dropped = |reason: &'static str| move || counter_value("wafleet_worker_dropped_total", &[("reason", reason)]);
    let (disabled, mismatched) = (dropped("disabled"), dropped("generation_mismatch"));
    let before = disabled();
    assert_eq!(post_json(&old_url, &event("while disabled", "KEPT-2")).await, 200);
    wait_until(Duration::from_secs(20), || async { disabled() > before }).await.expect("dropped as disabled");

    set_status(wafleet_fleet::tenant::TenantStatus::Active).await.unwrap();
    let out = env.wafleet(&["tenants", "rotate-url", "kept", "--base", &env.ingest_url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new_url = String::from_utf8_lossy(&out.stdout).lines().last().unwrap().trim().to_owned();
    assert_eq!(post_json(&new_url, &event("after rotation", "KEPT-3")).await, 200);
    env.sim.wait_for_sends("kept", 2, Duration::from_secs(20)).await;
    let before = mismatched();
    assert_eq!(post_json(&old_url, &event("via the old url", "KEPT-4")).await, 200);
    wait_until(Duration::from_secs(20), || async { mismatched() > before }).await.expect("dropped as rotated");

    let bodies: Vec<String> = env.sim.sends_for("kept").into_iter().map(|s| s.body).collect();
    assert_eq!(bodies, ["first", "after rotation"]);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_provider_message_posted_twice_is_recorded_once_and_sent_once() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant("dup", "dup").await.unwrap();
    for _ in 0..3 {
        assert_eq!(env.sim.fire_message("dup", "15550000009", "once", Some("SAME-ID"), true).await.unwrap(), 200);
    }
    env.sim.fire_message("dup", "15550000009", "marker", Some("OTHER-ID"), true).await.unwrap();
    env.sim.wait_for_sends("dup", 2, Duration::from_secs(20)).await;
    env.wait_idle(2).await.unwrap();
    // Let any straggling duplicate finish before counting.
    wait_until(Duration::from_secs(10), || async {
        env.count("select count(*) from outbox where status in ('pending','sending')").await == 0
    })
    .await
    .unwrap();
    let sends = env.sim.sends_for("dup");
    assert_eq!(sends.iter().filter(|s| s.body == "once").count(), 1);
    assert_eq!(env.count("select count(*) from outbox where body = 'once'").await, 1);
    env.cleanup().await;
}

//! Flood: one tenant floods while no worker runs. Its queue stops at its own bound (an override
//! of the tenant-queue policy, which must still dead-letter), then its share of ingest's spool
//! fills, then it alone gets 503. Another tenant keeps getting 200 and is delivered, `/readyz`
//! stays ready, the broker raises no alarm, and once a worker runs every accepted event is
//! answered exactly once on its own bridge.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use wafleet_fleet::service;
use wafleet_fleet::topology::{tenant_override_name, Management, RetryTier, DEFAULT_RETRY_TIERS, TENANT_POLICY};
use wafleet_shared::CustomerRef;
use wafleet_tests::*;

/// The flooding tenant's queue bound: a handful of events.
const QUEUE_BOUND: u64 = 4096;
/// Its share of ingest's spool: a dozen more.
const SPOOL_SHARE: u64 = 10 * 1024;
/// Posts after which the flood must have reached 503.
const MAX_POSTS: usize = 400;

async fn effective_policy(management: &Management, vhost: &str, queue: &str) -> Option<(String, Value)> {
    let q = management.get_json(&["queues", vhost, queue]).await.ok()??;
    let name = q.get("policy")?.as_str()?.to_owned();
    Some((name, q.get("effective_policy_definition")?.clone()))
}

/// Nodes with a memory or disk alarm (the management API's `/api/nodes`).
async fn alarmed_nodes(management: &Management) -> Vec<String> {
    let nodes = management.get_json(&["nodes"]).await.expect("nodes").expect("nodes listed");
    nodes
        .as_array()
        .expect("array")
        .iter()
        .filter(|n| n["mem_alarm"] == Value::Bool(true) || n["disk_free_alarm"] == Value::Bool(true))
        .map(|n| n["name"].to_string())
        .collect()
}

fn event(n: usize, tag: &str) -> Value {
    // Some padding, so the queue bound and the share are reached within a few dozen posts.
    message_event("15550000042", &format!("{tag}-{n} {}", "x".repeat(200)), &format!("{tag}-{n}"))
}

#[tokio::test]
async fn a_flooding_tenant_ends_in_503_alone_while_another_keeps_200_and_every_accepted_event_is_answered_once() {
    let mut env = TestEnv::with(EnvOptions {
        no_worker: true,
        ingest_spool_tenant_max_bytes: Some(SPOOL_SHARE),
        ..Default::default()
    })
    .await
    .unwrap();
    let flood_url = env.add_tenant("flood_a", "flood_a").await.unwrap();
    let calm_url = env.add_tenant("calm_b", "calm_b").await.unwrap();
    let flood = CustomerRef::parse("flood_a").unwrap();
    service::set_tenant_queue_bound(&env.admin_pool, &env.endpoints, &flood, Some(QUEUE_BOUND)).await.unwrap();

    // The override replaces the fleet-wide policy on exactly this queue and still dead-letters.
    let management = env.endpoints.management().unwrap();
    let override_name = tenant_override_name(&flood);
    wait_until(Duration::from_secs(20), || async {
        let applied = effective_policy(&management, &env.name, "wa.tenant.flood_a").await;
        applied.is_some_and(|(name, _)| name == override_name)
    })
    .await
    .expect("the override policy applies to wa.tenant.flood_a");
    let (_, definition) = effective_policy(&management, &env.name, "wa.tenant.flood_a").await.unwrap();
    assert_eq!(definition["max-length-bytes"], QUEUE_BOUND);
    assert_eq!(definition["overflow"], "reject-publish");
    assert_eq!(definition["dead-letter-exchange"], "wa.dlx");
    assert_eq!(definition["dead-letter-strategy"], "at-least-once");
    assert!(definition["delivery-limit"].is_number(), "{definition}");
    let calm_policy = effective_policy(&management, &env.name, "wa.tenant.calm_b").await.unwrap();
    assert_eq!(calm_policy.0, TENANT_POLICY, "the other tenant keeps the fleet-wide policy");
    let stored: Option<i64> = sqlx::query_scalar("select queue_max_bytes from tenants where customer_ref = 'flood_a'")
        .fetch_one(&env.owner_pool)
        .await
        .unwrap();
    assert_eq!(stored, Some(QUEUE_BOUND as i64));

    let refused_before = counter_value("wafleet_ingest_spool_refused_total", &[("reason", "tenant_share")]);
    let mut accepted: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut flood_503 = 0;
    for n in 0..MAX_POSTS {
        match post_json(&flood_url, &event(n, "flood")).await {
            200 => accepted.entry("flood_a").or_default().push(format!("flood-{n}")),
            503 => flood_503 += 1,
            other => panic!("flood post {n}: unexpected {other}"),
        }
        assert_eq!(post_json(&calm_url, &event(n, "calm")).await, 200, "calm_b post {n} during the flood");
        accepted.entry("calm_b").or_default().push(format!("calm-{n}"));
        if flood_503 >= 3 {
            break;
        }
    }
    let flood_ok = accepted["flood_a"].len();
    assert_eq!(flood_503, 3, "the flood never reached 503 within {MAX_POSTS} posts ({flood_ok} accepted)");
    assert!(flood_ok >= 5, "the queue bound and the spool share take some events first: {flood_ok}");
    assert!(
        counter_value("wafleet_ingest_spool_refused_total", &[("reason", "tenant_share")]) >= refused_before + 3.0,
        "the refusals are counted by reason"
    );
    // The queue stopped at its bound; the rest of the flood's accepted events wait in the spool.
    assert!(env.queue_depth("wa.tenant.flood_a").await < flood_ok as u32);
    let ready = reqwest::get(format!("{}/readyz", env.ingest_ops_url)).await.unwrap();
    assert_eq!(ready.status(), 200, "a tenant's full share never makes ingest unready");
    assert_eq!(alarmed_nodes(&management).await, Vec::<String>::new(), "no broker alarm");

    env.start_worker().await.unwrap();
    for (bridge, ids) in &accepted {
        let sends = env.sim.wait_for_sends(bridge, ids.len(), Duration::from_secs(90)).await;
        assert_eq!(sends.len(), ids.len(), "{bridge}: every accepted event answered");
        for id in ids {
            let answers = sends.iter().filter(|s| s.body.starts_with(&format!("{id} "))).count();
            assert_eq!(answers, 1, "{bridge}: {id} answered {answers} times");
        }
    }
    env.wait_idle((accepted["flood_a"].len() + accepted["calm_b"].len()) as i64).await.unwrap();
    for (bridge, ids) in &accepted {
        assert_eq!(env.sim.sends_for(bridge).len(), ids.len(), "{bridge}: nothing answered twice");
    }
    assert_eq!(alarmed_nodes(&management).await, Vec::<String>::new(), "no broker alarm");
    env.cleanup().await;
}

#[tokio::test]
async fn a_queue_with_its_own_bound_still_dead_letters_a_rejected_message_to_its_own_dlq() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..Default::default() }).await.unwrap();
    env.add_tenant("bound_a", "bound_a").await.unwrap();
    let bounded = CustomerRef::parse("bound_a").unwrap();
    service::set_tenant_queue_bound(&env.admin_pool, &env.endpoints, &bounded, Some(QUEUE_BOUND)).await.unwrap();
    let management = env.endpoints.management().unwrap();
    let override_name = tenant_override_name(&bounded);
    wait_until(Duration::from_secs(20), || async {
        effective_policy(&management, &env.name, "wa.tenant.bound_a").await.is_some_and(|(n, _)| n == override_name)
    })
    .await
    .expect("the override policy applies");

    // An override left by an older release (no dead-letter keys) is rebuilt by `wafleet migrate`.
    let stale = serde_json::json!({"pattern": r"^wa\.tenant\.bound_a$", "apply-to": "queues", "priority": 10,
                                   "definition": {"max-length-bytes": QUEUE_BOUND}});
    let mut policy_url = url::Url::parse(&rabbit_api()).unwrap();
    let (user, password) = (policy_url.username().to_owned(), policy_url.password().map(str::to_owned));
    policy_url.set_username("").unwrap();
    policy_url.set_password(None).unwrap();
    policy_url.path_segments_mut().unwrap().pop_if_empty().extend(["api", "policies", &env.name, &override_name]);
    let put = reqwest::Client::new().put(policy_url).basic_auth(user, password).json(&stale).send().await.unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let tiers = RetryTier::parse_tiers(DEFAULT_RETRY_TIERS).unwrap();
    service::migrate(&env.owner_url, &env.roles(), &env.endpoints, &tiers).await.unwrap();
    let rebuilt = management.get_json(&["policies", &env.name, &override_name]).await.unwrap().unwrap();
    assert_eq!(rebuilt["definition"]["dead-letter-exchange"], "wa.dlx", "{rebuilt}");
    assert_eq!(rebuilt["definition"]["max-length-bytes"], QUEUE_BOUND, "the tenant keeps its own bound");

    let envelope = test_envelope("bound_a", "poison", "P1", chrono::Utc::now());
    env.publish_raw("wa.inbound", "bound_a", &envelope.to_bytes()).await;
    let conn = wafleet_shared::amqp::connect(&env.amqp_url, "test").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let message = loop {
        if let Some(message) = channel.basic_get("wa.tenant.bound_a", Default::default()).await.unwrap() {
            break message;
        }
        assert!(tokio::time::Instant::now() < deadline, "the message never reached wa.tenant.bound_a");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A reject without requeue is how the worker dead-letters; the override must keep the DLX.
    let reject = lapin::options::BasicRejectOptions { requeue: false };
    message.delivery.acker.reject(reject).await.unwrap();
    let _ = conn.close(200, "done").await;
    wait_until(Duration::from_secs(20), || async { env.queue_depth("wa.dlq.bound_a").await == 1 })
        .await
        .expect("the rejected message reached wa.dlq.bound_a through the override's dead-letter exchange");
    env.cleanup().await;
}

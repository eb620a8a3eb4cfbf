//! Consume-side failures: retry tiers, per-tenant dead letters and replay, unknown envelope
//! versions, stale messages, and Postgres and broker outages through a TCP fault proxy.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use wafleet_fleet::dlq::{self, Selection};
use wafleet_fleet::tenant::Tenant;
use wafleet_shared::CustomerRef;
use wafleet_tests::fault_proxy::FaultProxy;
use wafleet_tests::{wait_until, EnvOptions, TestEnv};
use wafleet_worker::bots::{self, Bot, BotError, BotFactory, InboundMessage, Reply, TenantScope};

/// Built-in bots, except that a message saying "poison" panics until `fixed` is set, and one
/// saying "slow" hangs on its first run only.
#[derive(Default)]
struct FlakyBots {
    fixed: AtomicBool,
    slow_runs: AtomicU32,
    poison_runs: AtomicU32,
}

struct Flaky(Arc<FlakyBots>, Box<dyn Bot>);

#[async_trait]
impl Bot for Flaky {
    async fn handle(&self, scope: &TenantScope, message: &InboundMessage) -> Result<Vec<Reply>, BotError> {
        if message.body.contains("poison") {
            self.0.poison_runs.fetch_add(1, Ordering::SeqCst);
            if !self.0.fixed.load(Ordering::SeqCst) {
                panic!("poisoned by the test");
            }
        }
        if message.body.contains("slow") && self.0.slow_runs.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        self.1.handle(scope, message).await
    }
}

struct FlakyFactory(Arc<FlakyBots>);

impl BotFactory for FlakyFactory {
    fn bot_for(&self, tenant: &Tenant) -> Box<dyn Bot> {
        Box::new(Flaky(self.0.clone(), bots::bot_for(tenant.bot_kind())))
    }
}

fn flaky_env(state: &Arc<FlakyBots>) -> EnvOptions {
    EnvOptions {
        bots: Some(Arc::new(FlakyFactory(state.clone()))),
        bot_timeout: Some(Duration::from_millis(500)),
        ..EnvOptions::default()
    }
}

fn envelope(customer_ref: &str, body: &str, received_at: chrono::DateTime<chrono::Utc>) -> wafleet_shared::Envelope {
    wafleet_tests::test_envelope(customer_ref, body, &format!("ID-{body}"), received_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_message_lands_in_its_own_dlq_after_the_retry_tiers_while_other_tenants_keep_flowing() {
    let state = Arc::new(FlakyBots::default());
    let env = TestEnv::with(flaky_env(&state)).await.unwrap();
    env.add_tenant("poisoned", "poisoned").await.unwrap();
    env.add_tenant("healthy", "healthy").await.unwrap();
    assert_eq!(env.sim.fire_message("poisoned", "15550000101", "poison pill", Some("PZ1"), true).await.unwrap(), 200);
    for i in 0..10 {
        env.sim.fire_message("healthy", "15550000102", &format!("fine {i}"), None, true).await.unwrap();
    }
    assert_eq!(env.sim.wait_for_sends("healthy", 10, Duration::from_secs(20)).await.len(), 10);
    let a = CustomerRef::parse("poisoned").unwrap();
    wait_until(Duration::from_secs(30), || async { env.queue_depth("wa.dlq.poisoned").await == 1 }).await.unwrap();
    // First run plus one per retry tier (three in tests), then the DLQ.
    assert_eq!(state.poison_runs.load(Ordering::SeqCst), 4);
    assert_eq!(env.queue_depth("wa.dlq.healthy").await, 0);
    let listed = dlq::list(&env.admin_pool, &env.amqp_url, Some(&a)).await.unwrap();
    assert_eq!(listed[0].count, 1);
    assert_eq!(listed[0].reasons.get("retries_exhausted"), Some(&1));
    let shown = dlq::show(&env.amqp_url, &a, 10, false).await.unwrap();
    assert_eq!(shown[0].attempts, 3);
    assert_eq!(shown[0].history.len(), 4, "{:?}", shown[0].history);
    assert!(shown[0].payload.is_none(), "metadata only unless asked");
    assert!(env.sim.sends_for("poisoned").is_empty());

    // The fix ships; replay delivers the message once, and a second replay finds nothing.
    state.fixed.store(true, Ordering::SeqCst);
    let dry = dlq::replay(&env.admin_pool, &env.amqp_url, &a, &Selection::All, true).await.unwrap();
    assert_eq!(dry.moved.len(), 1);
    assert_eq!(env.queue_depth("wa.dlq.poisoned").await, 1, "a dry run moves nothing");
    let report = dlq::replay(&env.admin_pool, &env.amqp_url, &a, &Selection::All, false).await.unwrap();
    assert_eq!(report.moved.len(), 1);
    let sends = env.sim.wait_for_sends("poisoned", 1, Duration::from_secs(20)).await;
    assert_eq!(sends[0].body, "poison pill");
    let again = dlq::replay(&env.admin_pool, &env.amqp_url, &a, &Selection::All, false).await.unwrap();
    assert!(again.moved.is_empty());
    env.wait_idle(11).await.unwrap();
    assert_eq!(env.sim.sends_for("poisoned").len(), 1);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_naming_another_tenant_is_never_replayed_into_it() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant("dlq_a", "dlq_a").await.unwrap();
    env.add_tenant("dlq_b", "dlq_b").await.unwrap();
    // A's envelope sitting in B's DLQ (as if something upstream misrouted it).
    env.publish_raw("wa.dlx", "dlq_b", &envelope("dlq_a", "misplaced", chrono::Utc::now()).to_bytes()).await;
    wait_until(Duration::from_secs(10), || async { env.queue_depth("wa.dlq.dlq_b").await == 1 }).await.unwrap();
    let b = CustomerRef::parse("dlq_b").unwrap();
    let report = dlq::replay(&env.admin_pool, &env.amqp_url, &b, &Selection::All, false).await.unwrap();
    assert!(report.moved.is_empty());
    assert!(report.skipped[0].1.contains("another tenant"), "{:?}", report.skipped);
    assert_eq!(env.queue_depth("wa.dlq.dlq_b").await, 1, "it stays dead");
    assert!(env.sim.all_sends().is_empty());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bot_times_out_then_succeeds_from_a_retry_tier() {
    let state = Arc::new(FlakyBots::default());
    let env = TestEnv::with(flaky_env(&state)).await.unwrap();
    env.add_tenant("sloth", "sloth").await.unwrap();
    env.sim.fire_message("sloth", "15550000111", "slow start", None, true).await.unwrap();
    let sends = env.sim.wait_for_sends("sloth", 1, Duration::from_secs(20)).await;
    assert_eq!(sends.len(), 1);
    assert_eq!(state.slow_runs.load(Ordering::SeqCst), 2, "timed out once, then answered");
    assert_eq!(env.queue_depth("wa.dlq.sloth").await, 0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_message_goes_straight_to_the_dlq_and_a_newer_envelope_version_is_left_alone() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant("garbled", "garbled").await.unwrap();
    env.publish_raw("wa.inbound", "garbled", b"this is not an envelope").await;
    wait_until(Duration::from_secs(20), || async { env.queue_depth("wa.dlq.garbled").await == 1 }).await.unwrap();
    let shown = dlq::show(&env.amqp_url, &CustomerRef::parse("garbled").unwrap(), 10, false).await.unwrap();
    assert_eq!(shown[0].reason, "undecodable");
    assert_eq!(shown[0].attempts, 0, "no retries for a permanent failure");

    // A version-2 envelope from a newer release: parked for a newer worker, never dead-lettered.
    env.publish_raw("wa.inbound", "garbled", br#"{"v":"2","customer_ref":"garbled"}"#).await;
    wait_until(Duration::from_secs(20), || async {
        env.queue_depth("wa.retry.300ms").await + env.queue_depth("wa.tenant.garbled").await >= 1
    })
    .await
    .unwrap();
    assert_eq!(env.queue_depth("wa.dlq.garbled").await, 1, "only the garbage is dead");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_message_is_recorded_without_an_auto_reply() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant("late_reply", "late_reply").await.unwrap();
    let old = chrono::Utc::now() - chrono::Duration::hours(2);
    env.publish_raw("wa.inbound", "late_reply", &envelope("late_reply", "from yesterday", old).to_bytes()).await;
    env.sim.fire_message("late_reply", "15550000121", "fresh", None, true).await.unwrap();
    env.sim.wait_for_sends("late_reply", 1, Duration::from_secs(20)).await;
    env.wait_idle(2).await.unwrap();
    let outcome: String =
        sqlx::query_scalar("select outcome from processed_events where provider_message_id = 'ID-from yesterday'")
            .fetch_one(&env.owner_pool)
            .await
            .unwrap();
    assert_eq!(outcome, "stale");
    let bodies: Vec<String> = env.sim.sends_for("late_reply").into_iter().map(|s| s.body).collect();
    assert_eq!(bodies, vec!["fresh".to_owned()]);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_holds_messages_without_a_busy_loop_and_resumes_without_loss_or_duplicates() {
    let proxy = FaultProxy::start(wafleet_tests::pg_addr()).await.unwrap();
    let env = TestEnv::with(EnvOptions { worker_db_via: Some(proxy.addr()), ..EnvOptions::default() }).await.unwrap();
    env.add_tenant("pg_cut", "pg_cut").await.unwrap();
    env.sim.fire_message("pg_cut", "15550000131", "before", None, true).await.unwrap();
    env.sim.wait_for_sends("pg_cut", 1, Duration::from_secs(20)).await;

    proxy.refuse();
    for i in 0..10 {
        assert_eq!(
            env.sim.fire_message("pg_cut", "15550000131", &format!("during {i}"), None, true).await.unwrap(),
            200
        );
    }
    // While Postgres is away the worker holds: messages wait in the queue, nothing is sent, and
    // reconnect attempts back off instead of spinning.
    let attempts_before = proxy.connections();
    wait_until(Duration::from_secs(10), || async { env.queue_depth("wa.tenant.pg_cut").await == 10 }).await.unwrap();
    let window = std::time::Instant::now();
    let _ = wait_until(Duration::from_secs(4), || async { false }).await;
    let attempts = proxy.connections() - attempts_before;
    assert!(attempts < 40, "{attempts} connection attempts in {:?}: a busy loop", window.elapsed());
    assert_eq!(env.sim.sends_for("pg_cut").len(), 1);

    proxy.restore();
    let sends = env.sim.wait_for_sends("pg_cut", 11, Duration::from_secs(60)).await;
    assert_eq!(sends.len(), 11);
    env.wait_idle(11).await.unwrap();
    let unknown = env.count("select count(*) from outbox where status <> 'sent'").await;
    assert_eq!(unknown, 0, "an outage alone never produces unknown or failed sends");
    let mut bodies: Vec<String> = env.sim.sends_for("pg_cut").into_iter().map(|s| s.body).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 11, "no reply sent twice");
    proxy.stop();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_consumes_again_after_the_broker_connection_is_cut_and_restored() {
    let proxy = FaultProxy::start(wafleet_tests::amqp_addr()).await.unwrap();
    let env = TestEnv::with(EnvOptions { worker_amqp_via: Some(proxy.addr()), ..EnvOptions::default() }).await.unwrap();
    env.add_tenant("mq_cut", "mq_cut").await.unwrap();
    env.sim.fire_message("mq_cut", "15550000141", "before", None, true).await.unwrap();
    env.sim.wait_for_sends("mq_cut", 1, Duration::from_secs(20)).await;
    proxy.refuse();
    // Ingest still reaches the broker directly, so events queue up while the worker is cut off.
    for i in 0..5 {
        assert_eq!(
            env.sim.fire_message("mq_cut", "15550000141", &format!("during {i}"), None, true).await.unwrap(),
            200
        );
    }
    wait_until(Duration::from_secs(10), || async { env.queue_depth("wa.tenant.mq_cut").await == 5 }).await.unwrap();
    proxy.restore();
    let sends = env.sim.wait_for_sends("mq_cut", 6, Duration::from_secs(60)).await;
    assert_eq!(sends.len(), 6, "consumers really consume again after recovery");
    proxy.stop();
    env.cleanup().await;
}

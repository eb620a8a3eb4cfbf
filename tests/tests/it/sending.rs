//! The outbox sender's outcomes against the simulator's injected faults.

use std::time::Duration;

use wafleet_fleet::tenant::TenantStatus;
use wafleet_shared::CustomerRef;
use wafleet_sim::{Fault, SimConfig};
use wafleet_tests::{wait_until, EnvOptions, TestEnv, TEST_API_KEY};
use wafleet_worker::sender::SenderConfig;

async fn outbox_status(env: &TestEnv) -> Vec<String> {
    sqlx::query_scalar("select status from outbox order by outbox_id").fetch_all(&env.owner_pool).await.unwrap()
}

async fn wait_status(env: &TestEnv, expected: &str) {
    wait_until(Duration::from_secs(20), || async { outbox_status(env).await == vec![expected.to_owned()] })
        .await
        .unwrap_or_else(|_| panic!("outbox never reached {expected}"));
}

/// A 503 may come after the message went out (the reference does not say it cannot): the
/// bridge's `from_me` echo of it marks the reply `sent`, and it is never resent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_after_the_send_is_marked_sent_by_its_echo_and_never_resent() {
    let sim =
        SimConfig { api_keys: vec![TEST_API_KEY.into()], unlimited: true, echo_from_me: true, ..SimConfig::default() };
    let env = TestEnv::with(EnvOptions { sim: Some(sim), ..EnvOptions::default() }).await.unwrap();
    env.add_tenant("echo503", "echo503").await.unwrap();
    env.sim.set_fault(Some(Fault::new(503).with_record_then_fail().with_remaining(1)));
    env.sim.fire_message("echo503", "15550000067", "answered 503 but delivered", None, true).await.unwrap();
    wait_status(&env, "sent").await;
    let error: Option<String> =
        sqlx::query_scalar("select last_error from outbox").fetch_one(&env.owner_pool).await.unwrap();
    assert_eq!(error.as_deref(), Some("reconciled from the bridge's from_me echo"));
    // `sent` is final: no resend can follow, so one recorded send means the person got it once.
    assert_eq!(env.sim.sends_for("echo503").len(), 1);
    assert_eq!(env.sim.attempts_for("echo503"), 1);
    env.cleanup().await;
}

/// A 503 before anything went out: no echo comes, and the reply is resent once the echo window
/// (3 s in the test environment) has passed, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_before_the_send_is_resent_after_the_echo_window_and_delivered_once() {
    let sim =
        SimConfig { api_keys: vec![TEST_API_KEY.into()], unlimited: true, echo_from_me: true, ..SimConfig::default() };
    let env = TestEnv::with(EnvOptions { sim: Some(sim), ..EnvOptions::default() }).await.unwrap();
    env.add_tenant("late503", "late503").await.unwrap();
    env.sim.set_fault(Some(Fault::new(503).with_remaining(1)));
    env.sim.fire_message("late503", "15550000068", "refused then resent", None, true).await.unwrap();
    wait_status(&env, "sent").await;
    assert_eq!(env.sim.sends_for("late503").len(), 1, "delivered exactly once");
    assert_eq!(env.sim.attempts_for("late503"), 2, "one refused attempt, then one send");
    let first_to_second: f64 =
        sqlx::query_scalar("select extract(epoch from sent_at - created_at)::float8 from outbox")
            .fetch_one(&env.owner_pool)
            .await
            .unwrap();
    assert!(first_to_second >= 3.0, "resent only after the echo window: {first_to_second:.2}s");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_503_is_retried_until_the_reply_is_delivered_once() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant("retry503", "retry503").await.unwrap();
    env.sim.set_fault(Some(Fault::new(503).with_remaining(2)));
    env.sim.fire_message("retry503", "15550000061", "eventually", None, true).await.unwrap();
    wait_status(&env, "sent").await;
    assert_eq!(env.sim.sends_for("retry503").len(), 1);
    assert_eq!(env.sim.attempts_for("retry503"), 3, "two refused attempts, then one send");
    env.cleanup().await;
}

/// A refused API key (401, e.g. during a key rotation) sent nothing: the reply waits and goes out
/// once the key works again, instead of failing for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_api_key_is_retried_and_the_reply_goes_out_once_the_key_works() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant("rotating", "rotating").await.unwrap();
    env.sim.set_fault(Some(Fault::new(401).with_remaining(2)));
    env.sim.fire_message("rotating", "15550000066", "after rotation", None, true).await.unwrap();
    wait_status(&env, "sent").await;
    assert_eq!(env.sim.sends_for("rotating").len(), 1);
    assert_eq!(env.sim.attempts_for("rotating"), 3, "two refused attempts, then one send");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_502_after_the_send_marks_the_reply_unknown_and_never_resends() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant("lost502", "lost502").await.unwrap();
    env.sim.set_fault(Some(Fault::new(502).with_record_then_fail()));
    env.sim.fire_message("lost502", "15550000062", "maybe delivered", None, true).await.unwrap();
    wait_status(&env, "unknown").await;
    env.sim.set_fault(None);
    // Give a (wrong) resend every chance to happen before checking it did not.
    env.sim.fire_message("lost502", "15550000062", "next", None, true).await.unwrap();
    env.sim.wait_for_sends("lost502", 2, Duration::from_secs(20)).await;
    let bodies: Vec<String> = env.sim.sends_for("lost502").into_iter().map(|s| s.body).collect();
    assert_eq!(bodies.iter().filter(|b| b.as_str() == "maybe delivered").count(), 1);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_400_marks_the_reply_failed() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant("bad400", "bad400").await.unwrap();
    env.sim.set_fault(Some(Fault::new(400)));
    env.sim.fire_message("bad400", "15550000063", "refused", None, true).await.unwrap();
    wait_status(&env, "failed").await;
    assert_eq!(env.sim.attempts_for("bad400"), 1);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_send_waits_for_retry_after_and_then_goes_out_once() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant("slowdown", "slowdown").await.unwrap();
    env.sim.set_fault(Some(Fault::new(429).with_retry_after(1).with_remaining(1)));
    env.sim.fire_message("slowdown", "15550000064", "patience", None, true).await.unwrap();
    wait_status(&env, "sent").await;
    assert_eq!(env.sim.sends_for("slowdown").len(), 1);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_of_a_tenant_disabled_before_the_send_is_cancelled() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant("goner", "goner").await.unwrap();
    // Keep the reply waiting in the outbox (503s), disable the tenant, then let the bridge recover.
    env.sim.set_fault(Some(Fault::new(503)));
    env.sim.fire_message("goner", "15550000065", "too late", None, true).await.unwrap();
    wait_until(Duration::from_secs(20), || async { env.sim.attempts_for("goner") >= 1 }).await.unwrap();
    wafleet_fleet::service::set_status(&env.admin_pool, &CustomerRef::parse("goner").unwrap(), TenantStatus::Disabled)
        .await
        .unwrap();
    env.sim.set_fault(None);
    wait_status(&env, "cancelled").await;
    assert!(env.sim.sends_for("goner").is_empty());
    env.cleanup().await;
}

/// `WAFLEET_SENDER_CONCURRENCY` (4 in this worker): sends of different tenants overlap, but a
/// tenant never has two sends in flight, so its replies reach its bridge in outbox order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_of_different_tenants_overlap_but_one_tenants_replies_go_one_at_a_time_in_order() {
    let env = TestEnv::new().await.unwrap();
    let tenants = ["lane_a", "lane_b", "lane_c", "lane_d"];
    for t in tenants {
        env.add_tenant(t, t).await.unwrap();
    }
    // Slow answers make overlapping sends visible to the simulator's in-flight counters.
    env.sim.set_fault(Some(Fault::delay_only(150)));
    for i in 0..3 {
        for t in tenants {
            assert_eq!(env.sim.fire_message(t, "15550000070", &format!("{t} {i}"), None, true).await.unwrap(), 200);
        }
    }
    for t in tenants {
        assert_eq!(env.sim.wait_for_sends(t, 3, Duration::from_secs(30)).await.len(), 3, "{t} got all replies");
    }
    assert!(
        env.sim.stats().max_sends_in_flight >= 2,
        "sends of different tenants overlap (max in flight {})",
        env.sim.stats().max_sends_in_flight
    );
    for t in tenants {
        assert_eq!(env.sim.max_sends_in_flight_for(t), 1, "{t} had two sends in flight at once");
        let queued: Vec<String> = sqlx::query_scalar(
            "select o.body from outbox o join tenants t using (tenant_id) where t.customer_ref = $1 \
             order by o.created_at, o.outbox_id",
        )
        .bind(t)
        .fetch_all(&env.owner_pool)
        .await
        .unwrap();
        let sent: Vec<String> = env.sim.sends_for(t).into_iter().map(|s| s.body).collect();
        assert_eq!(sent, queued, "{t}'s replies left in outbox order");
    }
    env.cleanup().await;
}

/// A round of the dispatcher grants every free send slot a reply in one commit and writes the
/// finished sends' outcomes together in one more (rows changed by one transaction share its
/// `xmin` and its `now()`): replies of five tenants, four slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_grants_every_free_slot_in_one_commit_and_writes_their_outcomes_in_one_more() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    for t in 0..5 {
        let tenant = format!("round{t}");
        env.add_tenant(&tenant, &tenant).await.unwrap();
        env.queue_replies(&tenant, "15550000201", &[format!("round reply {t}")], None, Duration::from_secs(3600)).await;
    }
    let sender = env.sender(SenderConfig::default(), None);
    let (accounts, _) = sender.accounts().refresh().await.unwrap();
    assert_eq!(sender.send_round(&accounts[0], 4).await.unwrap(), 4);
    let rows: Vec<(String, String, Option<chrono::DateTime<chrono::Utc>>)> =
        sqlx::query_as("select status, xmin::text, attempted_at from outbox").fetch_all(&env.owner_pool).await.unwrap();
    let sent: Vec<_> = rows.iter().filter(|(status, ..)| status == "sent").collect();
    assert_eq!(sent.len(), 4, "{rows:?}");
    assert_eq!(rows.iter().filter(|(status, ..)| status == "pending").count(), 1);
    let distinct = |values: Vec<String>| values.into_iter().collect::<std::collections::HashSet<_>>().len();
    assert_eq!(
        distinct(sent.iter().map(|r| format!("{:?}", r.2)).collect()),
        1,
        "claimed in one transaction: {rows:?}"
    );
    assert_eq!(distinct(sent.iter().map(|r| r.1.clone()).collect()), 1, "written in one transaction: {rows:?}");
    assert_eq!(env.sim.all_sends().len(), 4);
    assert_eq!(sender.send_round(&accounts[0], 4).await.unwrap(), 1, "the fifth in the next round");
    assert_eq!(sender.send_round(&accounts[0], 4).await.unwrap(), 0);
    assert_eq!(env.sim.all_sends().len(), 5);
    env.cleanup().await;
}

//! A bridge's connection state recovers by itself. WA Bridges delivers `connected` and
//! `disconnected` at most once; the sender holds a disconnected bridge's replies, re-checks its
//! status with backoff while replies wait, and sends them when it answers `connected`. What a send
//! on a bridge that is not connected gets is left open by the reference: each simulator answer is
//! tested.

use std::time::Duration;

use wafleet_sim::{NotConnectedSend, SimConfig};
use wafleet_tests::{wait_until, EnvOptions, TestEnv, TEST_API_KEY};

async fn env_with(send_when_not_connected: NotConnectedSend) -> TestEnv {
    let sim = SimConfig {
        api_keys: vec![TEST_API_KEY.into()],
        unlimited: true,
        echo_from_me: true,
        send_when_not_connected,
        ..SimConfig::default()
    };
    TestEnv::with(EnvOptions { sim: Some(sim), ..EnvOptions::default() }).await.unwrap()
}

async fn bridge_state(env: &TestEnv, customer_ref: &str) -> String {
    sqlx::query_scalar("select bridge_state from tenants where customer_ref = $1")
        .bind(customer_ref)
        .fetch_one(&env.owner_pool)
        .await
        .unwrap()
}

async fn outbox_statuses(env: &TestEnv) -> Vec<String> {
    sqlx::query_scalar("select status from outbox order by outbox_id").fetch_all(&env.owner_pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_replies_go_out_when_a_recheck_finds_the_bridge_connected_although_its_event_was_lost() {
    let env = env_with(NotConnectedSend::Conflict).await;
    env.add_tenant("lost_evt", "lost_evt").await.unwrap();
    env.sim.set_bridge_status("lost_evt", "disconnected");
    assert_eq!(env.sim.fire("lost_evt", serde_json::json!({"event": "disconnected"}), true).await.unwrap(), 200);
    wait_until(Duration::from_secs(20), || async { bridge_state(&env, "lost_evt").await == "disconnected" })
        .await
        .unwrap();
    env.sim.fire_message("lost_evt", "15550000701", "held until connected", None, true).await.unwrap();
    wait_until(Duration::from_secs(20), || async { outbox_statuses(&env).await == ["pending"] }).await.unwrap();
    // Re-checks run (1 s, then 2 s in the test environment) and find the bridge still down.
    wait_until(Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i32>("select bridge_recheck_failures from tenants where customer_ref = 'lost_evt'")
            .fetch_one(&env.owner_pool)
            .await
            .unwrap()
            >= 2
    })
    .await
    .unwrap();
    assert_eq!(env.sim.attempts_for("lost_evt"), 0, "no send is tried while the bridge is disconnected");

    // The session comes back, and its `connected` event is lost: only a re-check can see it.
    env.sim.set_bridge_status("lost_evt", "connected");
    env.sim.wait_for_sends("lost_evt", 1, Duration::from_secs(20)).await;
    wait_until(Duration::from_secs(20), || async { outbox_statuses(&env).await == ["sent"] }).await.unwrap();
    assert_eq!(bridge_state(&env, "lost_evt").await, "connected");
    assert_eq!(env.sim.sends_for("lost_evt").len(), 1);
    env.cleanup().await;
}

/// The bridge's session is down but wafleet never heard (the `disconnected` event was lost), so
/// the send is tried. Each answer the simulator can give ends with the reply delivered exactly
/// once, after the bridge is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_on_a_bridge_that_is_not_connected_is_held_not_failed_whatever_the_api_answers() {
    for (answer, expect_held_state) in
        [(NotConnectedSend::Conflict, true), (NotConnectedSend::Unavailable, false), (NotConnectedSend::Accept, false)]
    {
        let env = env_with(answer).await;
        env.add_tenant("down", "down").await.unwrap();
        env.sim.set_bridge_status("down", "disconnected");
        env.sim.fire_message("down", "15550000702", "sent once", None, true).await.unwrap();
        if answer == NotConnectedSend::Accept {
            // The lenient API records it as sent; nothing is held.
            env.sim.wait_for_sends("down", 1, Duration::from_secs(20)).await;
            wait_until(Duration::from_secs(20), || async { outbox_statuses(&env).await == ["sent"] }).await.unwrap();
        } else {
            wait_until(Duration::from_secs(20), || async { env.sim.attempts_for("down") >= 1 }).await.unwrap();
            wait_until(Duration::from_secs(20), || async { outbox_statuses(&env).await == ["pending"] })
                .await
                .unwrap_or_else(|_| panic!("{answer:?}: held as pending, never failed"));
            if expect_held_state {
                assert_eq!(bridge_state(&env, "down").await, "disconnected", "{answer:?}: a 409 marks the bridge");
            }
            assert!(env.sim.sends_for("down").is_empty(), "{answer:?}");
            env.sim.set_bridge_status("down", "connected");
            env.sim.wait_for_sends("down", 1, Duration::from_secs(30)).await;
            wait_until(Duration::from_secs(30), || async { outbox_statuses(&env).await == ["sent"] })
                .await
                .unwrap_or_else(|_| panic!("{answer:?}: sent after the bridge is back"));
        }
        assert_eq!(env.sim.sends_for("down").len(), 1, "{answer:?}: delivered exactly once");
        env.cleanup().await;
    }
}

//! Message types and groups with the built-in bots: they answer text only, and in a group only
//! when the tenant turned it on. The simulator fires every type the reference's `message` event
//! can carry (only `text` is documented; the media names are the bridges' usual ones).

use std::time::Duration;

use wafleet_fleet::service;
use wafleet_shared::CustomerRef;
use wafleet_sim::Inbound;
use wafleet_tests::{wait_until, TestEnv};

async fn processed(env: &TestEnv, outcome: &str) -> i64 {
    sqlx::query_scalar("select count(*) from processed_events where outcome = $1")
        .bind(outcome)
        .fetch_one(&env.owner_pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_in_bot_answers_text_only_and_records_every_other_type_without_a_reply() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant("types", "types").await.unwrap();
    let every = Inbound::every_type("15550000811");
    for message in &every {
        assert_eq!(env.sim.fire_inbound("types", message, true).await.unwrap(), 200);
    }
    let others = (every.len() - 1) as i64;
    wait_until(Duration::from_secs(30), || async { processed(&env, "no_text").await == others }).await.unwrap();
    let sends = env.sim.wait_for_sends("types", 1, Duration::from_secs(20)).await;
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].body, "plain text", "the echo answers the text, not the image's caption");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_in_bot_answers_in_a_group_only_after_the_tenant_turns_it_on() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant("grouped", "grouped").await.unwrap();
    let group = "120363000000000812@g.us";
    let asked = Inbound::text("x", "anyone there?").in_group(group, "15550000812");
    assert_eq!(env.sim.fire_inbound("grouped", &asked, true).await.unwrap(), 200);
    wait_until(Duration::from_secs(20), || async { processed(&env, "group").await == 1 }).await.unwrap();
    assert!(env.sim.sends_for("grouped").is_empty(), "off by default: no reply into the group");

    let out = env.wafleet(&["tenants", "groups", "grouped", "on"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again = Inbound::text("x", "still there?").in_group(group, "15550000813");
    assert_eq!(env.sim.fire_inbound("grouped", &again, true).await.unwrap(), 200);
    let sends = env.sim.wait_for_sends("grouped", 1, Duration::from_secs(20)).await;
    assert_eq!((sends[0].chat.as_str(), sends[0].body.as_str()), (group, "still there?"), "answered in the group");

    service::set_reply_in_groups(&env.admin_pool, &CustomerRef::parse("grouped").unwrap(), false).await.unwrap();
    let later = Inbound::text("x", "and now?").in_group(group, "15550000814");
    assert_eq!(env.sim.fire_inbound("grouped", &later, true).await.unwrap(), 200);
    wait_until(Duration::from_secs(20), || async { processed(&env, "group").await == 2 }).await.unwrap();
    assert_eq!(env.sim.sends_for("grouped").len(), 1, "off again");
    env.cleanup().await;
}

//! Consumers come back: a tenant consumer the broker ends (`basic.cancel`) is
//! subscribed again within seconds, and a publish that makes the broker close the worker's shared
//! publisher channel does not stop other tenants' retries.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use wafleet_fleet::dlq;
use wafleet_shared::topology::QueueType;
use wafleet_shared::CustomerRef;
use wafleet_tests::poison::{Poison, PoisonFactory};
use wafleet_tests::{counter_value, test_envelope, wait_until, EnvOptions, TestEnv};
use wafleet_worker::metric::{
    WORKER_CONSUMER_RESUBSCRIBED_TOTAL, WORKER_PUBLISHER_REOPENED_TOTAL, WORKER_TENANT_CONSUMING,
};

fn consuming(tenant: &str) -> f64 {
    counter_value(WORKER_TENANT_CONSUMING, &[("tenant", tenant)])
}

/// Deletes `queue` as the administrator, and with `declare_again` declares the tenant's queues
/// again at once (as an operator, or a node coming back, would).
async fn delete_queue(env: &TestEnv, tenant: &str, queue_type: QueueType, declare_again: bool) {
    let connection = wafleet_shared::amqp::connect(&env.amqp_url, "consumer-cancel-admin").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.queue_delete(&format!("wa.tenant.{tenant}"), QueueDeleteOptions::default()).await.unwrap();
    if declare_again {
        let tenant = CustomerRef::parse(tenant).unwrap();
        wafleet_fleet::topology::declare_tenant(&connection, &channel, &tenant, queue_type).await.unwrap();
    }
    let _ = connection.close(200, "done").await;
}

/// Sends one event before and one after `disrupt`, and checks the second is answered within
/// seconds, the re-subscription counted and the consuming gauge back at 1.
async fn consumed_again_after(env: &TestEnv, tenant: &str, disrupt: impl std::future::Future<Output = ()>) {
    env.sim.fire_message(tenant, "15550001501", "before", None, true).await.unwrap();
    env.sim.wait_for_sends(tenant, 1, Duration::from_secs(20)).await;
    wait_until(Duration::from_secs(10), || async { consuming(tenant) == 1.0 }).await.expect("consumed");
    let resubscribed = counter_value(WORKER_CONSUMER_RESUBSCRIBED_TOTAL, &[("tenant", tenant)]);
    disrupt.await;
    env.sim.fire_message(tenant, "15550001501", "after", None, true).await.unwrap();
    let sends = env.sim.wait_for_sends(tenant, 2, Duration::from_secs(10)).await;
    assert_eq!(sends.len(), 2, "{tenant}: the event after the cancel is processed within seconds");
    assert_eq!(sends[1].body, "after");
    assert!(
        counter_value(WORKER_CONSUMER_RESUBSCRIBED_TOTAL, &[("tenant", tenant)]) > resubscribed,
        "{tenant}: the re-subscription is counted"
    );
    wait_until(Duration::from_secs(10), || async { consuming(tenant) == 1.0 })
        .await
        .expect("the consuming gauge returns to 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_queue_deleted_or_deleted_and_declared_again_is_consumed_again_within_seconds() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant("cc_a", "cc_a").await.unwrap();
    env.add_tenant_through(&env.endpoints, "cc_c", QueueType::Classic).await.unwrap();

    // A classic queue deleted and declared again: the broker sends basic.cancel.
    consumed_again_after(&env, "cc_c", delete_queue(&env, "cc_c", QueueType::Classic, true)).await;
    // A quorum queue deleted: RabbitMQ 3.10 sends no basic.cancel; the worker's check finds the
    // queue gone, declares it again and subscribes.
    consumed_again_after(&env, "cc_a", delete_queue(&env, "cc_a", QueueType::Quorum, false)).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_that_closes_the_shared_channel_does_not_stop_other_tenants_retries() {
    let poison = Arc::new(Poison::default());
    let options = EnvOptions { bots: Some(Arc::new(PoisonFactory(poison.clone()))), ..EnvOptions::default() };
    let env = TestEnv::with(options).await.unwrap();
    env.add_tenant("cc_q", "cc_q").await.unwrap();
    env.add_tenant("cc_r", "cc_r").await.unwrap();
    // The worker's session is up (it consumes and publishes) before the exchange disappears.
    env.sim.fire_message("cc_r", "15550001502", "warm up", None, true).await.unwrap();
    env.sim.wait_for_sends("cc_r", 1, Duration::from_secs(20)).await;
    let reopened = counter_value(WORKER_PUBLISHER_REOPENED_TOTAL, &[]);

    // Every quarantine publish now goes to a missing exchange: the broker closes the shared
    // publisher channel with 404 each time, and the quarantined message is requeued.
    let connection = wafleet_shared::amqp::connect(&env.amqp_url, "consumer-cancel-admin").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.exchange_delete("wa.quarantine", ExchangeDeleteOptions::default()).await.unwrap();
    env.publish_raw("", "wa.tenant.cc_q", &test_envelope("cc_r", "smuggled", "CC-Q1", chrono::Utc::now()).to_bytes())
        .await;
    env.sim.fire_message("cc_r", "15550001502", "poison pill", Some("CC-P1"), true).await.unwrap();

    // The other tenant's message still goes through every retry tier and the worker's own
    // dead-lettering (attempts 3, reason retries_exhausted), each a publish on the shared channel.
    wait_until(Duration::from_secs(40), || async { env.queue_depth("wa.dlq.cc_r").await == 1 }).await.unwrap();
    let shown = dlq::show(&env.amqp_url, &CustomerRef::parse("cc_r").unwrap(), 10, false).await.unwrap();
    // Three tier publishes went through (a channel that stayed closed would have requeued it in
    // place until the delivery limit, with no attempt counted). The last hop may race one 404
    // and fall back to the queue's own dead-lettering, so the reason is not asserted.
    assert_eq!(shown[0].attempts, 3, "{shown:?}");
    assert!(counter_value(WORKER_PUBLISHER_REOPENED_TOTAL, &[]) > reopened, "the closed channel was reopened");

    // The exchange is back: the quarantined envelope lands where it belongs.
    wafleet_fleet::topology::declare_quarantine(&channel).await.unwrap();
    let _ = connection.close(200, "done").await;
    wait_until(Duration::from_secs(20), || async { env.queue_depth("wa.quarantine").await == 1 }).await.unwrap();
    assert!(env.sim.sends_for("cc_q").is_empty());
    env.cleanup().await;
}

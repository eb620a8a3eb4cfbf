//! The whole fleet with exactly the broker rights of the deploy manifest: users made
//! by `scripts/rabbitmq-users.sh` from `deploy/k8s/examples/rabbitmq-topology.yaml`, which grant
//! the worker and the CLI `^wa\.` and no write on `amq.default`. The side paths (unrouted sweep,
//! DLQ replay, quarantine) must all work with those rights, and a replayed message that fails
//! again must still find its way back into its own DLQ.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use lapin::options::{BasicGetOptions, BasicNackOptions, BasicRejectOptions};
use lapin::types::AMQPValue;
use wafleet_fleet::dlq::{self, Selection};
use wafleet_fleet::endpoints::Endpoints;
use wafleet_shared::topology::QueueType;
use wafleet_shared::CustomerRef;
use wafleet_tests::poison::{Poison, PoisonFactory};
use wafleet_tests::{test_envelope, wait_until, EnvOptions, TestEnv};

use crate::broker_users::Users;

/// The CLI's endpoints with the manifest's `wafleet-cli` user.
fn cli_endpoints(env: &TestEnv, users: &Users) -> Endpoints {
    Endpoints {
        database_url: env.endpoints.database_url.clone(),
        amqp_url: users.amqp_url(env, "cli"),
        rabbitmq_api_url: users.api_url("cli"),
    }
}

/// Whether the message waiting in `wa.unrouted` carries the sweep's "seen" mark: the sweep moved
/// it to the tail through a publish the worker's rights allow. Read as the administrator and put back.
async fn unrouted_was_requeued_by_the_sweep(env: &TestEnv) -> bool {
    let connection = wafleet_shared::amqp::connect(&env.amqp_url, "manifest-admin").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let got = channel.basic_get("wa.unrouted", BasicGetOptions { no_ack: false }).await.unwrap();
    let seen = got.is_some_and(|m| {
        let headers = m.delivery.properties.headers().clone().unwrap_or_default();
        matches!(headers.inner().get("x-wafleet-unrouted-seen"), Some(AMQPValue::Boolean(true)))
    });
    let _ = channel.basic_nack(0, BasicNackOptions { multiple: true, requeue: true }).await;
    let _ = connection.close(200, "done").await;
    seen
}

/// Takes the one message of `queue` as the administrator and rejects it without requeue, so the
/// broker dead-letters it by the queue's policy with the routing key it was published with.
async fn broker_dead_letters_the_head_of(env: &TestEnv, queue: &str) {
    let connection = wafleet_shared::amqp::connect(&env.amqp_url, "manifest-admin").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let message = channel.basic_get(queue, BasicGetOptions { no_ack: false }).await.unwrap().expect("a message");
    message.delivery.acker.reject(BasicRejectOptions { requeue: false }).await.unwrap();
    let _ = connection.close(200, "done").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_manifests_rights_unrouted_events_replays_and_quarantine_all_work_and_spare_other_tenants() {
    let poison = Arc::new(Poison::default());
    let options =
        EnvOptions { no_worker: true, bots: Some(Arc::new(PoisonFactory(poison.clone()))), ..EnvOptions::default() };
    let mut env = TestEnv::with(options).await.unwrap();
    let users = Users::new(&env);
    let created = users.script(&env, &[]).await;
    assert!(created.status.success(), "rabbitmq-users.sh failed: {}", String::from_utf8_lossy(&created.stderr));
    env.worker_config.amqp_url = users.amqp_url(&env, "worker");
    env.worker_config.rabbitmq_api_url = users.api_url("worker");
    env.start_worker().await.unwrap();
    let cli = cli_endpoints(&env, &users);

    let outcome = std::panic::AssertUnwindSafe(async {
        unknown_ref_waits_in_unrouted_until_tenants_add(&env, &cli).await;
        quarantine_does_not_stop_other_tenants_retries(&env, &cli, &poison).await;
        replay_moves_the_message_and_a_second_failure_puts_it_back(&mut env, &cli, &poison).await;
    })
    .catch_unwind()
    .await;
    let _ = users.script(&env, &["--delete"]).await;
    env.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The reconciler runs as `wafleet-worker`: it requeues the unknown ref's event through the
/// `wa.unrouted` exchange and, after `tenants add`, routes it through `wa.inbound`.
async fn unknown_ref_waits_in_unrouted_until_tenants_add(env: &TestEnv, cli: &Endpoints) {
    let event = test_envelope("mp_late", "waited", "MP-LATE", chrono::Utc::now()).to_bytes();
    env.publish_raw("wa.inbound", "mp_late", &event).await;
    wait_until(Duration::from_secs(20), || unrouted_was_requeued_by_the_sweep(env))
        .await
        .expect("the sweep requeues the unknown ref's event with the worker's rights");
    assert_eq!(env.queue_depth("wa.unrouted").await, 1, "it waits in wa.unrouted");
    env.add_tenant_through(cli, "mp_late", QueueType::Quorum).await.unwrap();
    let sends = env.sim.wait_for_sends("mp_late", 1, Duration::from_secs(20)).await;
    assert_eq!(sends.len(), 1, "delivered after tenants add");
    assert_eq!(sends[0].body, "waited");
    assert_eq!(env.queue_depth("wa.unrouted").await, 0);
}

/// An envelope naming another tenant is quarantined through `wa.quarantine` (no default
/// exchange), and meanwhile another tenant's message goes through every retry tier and its DLQ.
async fn quarantine_does_not_stop_other_tenants_retries(env: &TestEnv, cli: &Endpoints, poison: &Poison) {
    env.add_tenant_through(cli, "mp_q", QueueType::Quorum).await.unwrap();
    env.add_tenant_through(cli, "mp_dlq", QueueType::Quorum).await.unwrap();
    let smuggled = test_envelope("mp_late", "smuggled", "MP-Q1", chrono::Utc::now()).to_bytes();
    env.publish_raw("", "wa.tenant.mp_q", &smuggled).await;
    let runs_before = poison.runs.load(Ordering::SeqCst);
    env.sim.fire_message("mp_dlq", "15550001401", "poison pill", Some("MP-P1"), true).await.unwrap();
    wait_until(Duration::from_secs(20), || async { env.queue_depth("wa.quarantine").await == 1 })
        .await
        .expect("the quarantine publish is allowed");
    wait_until(Duration::from_secs(30), || async { env.queue_depth("wa.dlq.mp_dlq").await == 1 }).await.unwrap();
    let shown = dlq::show(&env.amqp_url, &CustomerRef::parse("mp_dlq").unwrap(), 10, false).await.unwrap();
    // Retried through all three tiers and dead-lettered by the worker: every side-path publish
    // of the shared channel went through while the other tenant's envelope was quarantined.
    assert_eq!((shown[0].reason.as_str(), shown[0].attempts), ("retries_exhausted", 3), "{shown:?}");
    assert_eq!(poison.runs.load(Ordering::SeqCst) - runs_before, 4, "first run plus one per tier");
    assert!(env.sim.sends_for("mp_q").is_empty(), "a quarantined envelope is never processed");
}

/// `dlq replay` as `wafleet-cli` moves the message through `wa.inbound`; rejected again, the
/// broker's own dead-lettering (`wa.dlx`, by the routing key) puts it back in `wa.dlq.<ref>`.
async fn replay_moves_the_message_and_a_second_failure_puts_it_back(
    env: &mut TestEnv,
    cli: &Endpoints,
    poison: &Poison,
) {
    let tenant = CustomerRef::parse("mp_dlq").unwrap();
    // Stopped, so the replayed message waits in the tenant queue for the broker-side failure.
    env.stop_worker().await;
    let report = dlq::replay(&env.admin_pool, &cli.amqp_url, &tenant, &Selection::All, false).await.unwrap();
    assert_eq!(report.moved.len(), 1, "{report:?}");
    assert_eq!(env.queue_depth("wa.dlq.mp_dlq").await, 0);
    assert_eq!(env.queue_depth("wa.tenant.mp_dlq").await, 1, "replayed into its own queue");
    broker_dead_letters_the_head_of(env, "wa.tenant.mp_dlq").await;
    wait_until(Duration::from_secs(10), || async { env.queue_depth("wa.dlq.mp_dlq").await == 1 })
        .await
        .expect("a replayed message that fails again is dead-lettered back into its own DLQ");

    // Fixed: replayed once more, it is answered once.
    poison.fixed.store(true, Ordering::SeqCst);
    env.start_worker().await.unwrap();
    let report = dlq::replay(&env.admin_pool, &cli.amqp_url, &tenant, &Selection::All, false).await.unwrap();
    assert_eq!(report.moved.len(), 1, "{report:?}");
    let sends = env.sim.wait_for_sends("mp_dlq", 1, Duration::from_secs(20)).await;
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].body, "poison pill");
}

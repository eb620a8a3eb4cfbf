//! Endpoint lists and explicit quorum replication on the single node: a dead endpoint in
//! `AMQP_URL` costs nothing but a refused connection, and a queue declared before the group
//! size became explicit keeps working.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use wafleet_shared::topology::QueueType;
use wafleet_shared::CustomerRef;
use wafleet_tests::{message_event, post_json, EnvOptions, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_worker_deliver_through_a_list_with_a_dead_endpoint() {
    // 127.0.0.1:1 refuses at once: a node that is down. Each process starts on a shuffled
    // endpoint, so half the connections try it first and must move on.
    let nodes = vec!["127.0.0.1:1".parse().unwrap(), wafleet_tests::amqp_addr()];
    let options =
        EnvOptions { ingest_amqp_nodes: Some(nodes.clone()), worker_amqp_nodes: Some(nodes), ..EnvOptions::default() };
    let env = TestEnv::with(options).await.unwrap();
    let url = env.add_tenant("list_a", "list_a").await.unwrap();
    for i in 0..10 {
        let status = post_json(&url, &message_event("15554000001", &format!("l{i}"), &format!("L{i}"))).await;
        assert_eq!(status, 200);
    }
    let sends = env.sim.wait_for_sends("list_a", 10, Duration::from_secs(30)).await;
    assert_eq!(sends.len(), 10, "every event answered through the list");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_declared_without_a_group_size_is_left_as_it_is_and_new_ones_get_three() {
    let env = TestEnv::new().await.unwrap();
    let connection = wafleet_shared::amqp::connect(&env.amqp_url, "group-size-test").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    // As a release before the group size was explicit declared it.
    let mut legacy = FieldTable::default();
    legacy.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare("wa.tenant.legacy_q", durable, legacy).await.unwrap();
    let legacy_ref = CustomerRef::parse("legacy_q").unwrap();
    wafleet_fleet::topology::declare_tenant(&connection, &channel, &legacy_ref, QueueType::Quorum).await.unwrap();
    assert!(channel.status().connected(), "the existing queue did not close the shared channel");
    // A new tenant's queues carry the explicit size.
    env.add_tenant("fresh_q", "fresh_q").await.unwrap();
    let management = env.endpoints.management().unwrap();
    for queue in ["wa.tenant.fresh_q", "wa.dlq.fresh_q"] {
        let info = management.get_json(&["queues", &env.name, queue]).await.unwrap().unwrap();
        assert_eq!(info["arguments"]["x-quorum-initial-group-size"], 3, "{queue}: {}", info["arguments"]);
    }
    let info = management.get_json(&["queues", &env.name, "wa.tenant.legacy_q"]).await.unwrap().unwrap();
    assert!(info["arguments"].get("x-quorum-initial-group-size").is_none());
    // The worker's session declares every tenant again: both are consumed.
    let url = env.add_tenant("legacy_q", "legacy_q").await.unwrap();
    assert_eq!(post_json(&url, &message_event("15554000002", "hi", "LQ1")).await, 200);
    assert_eq!(env.sim.wait_for_sends("legacy_q", 1, Duration::from_secs(30)).await.len(), 1);
    let _ = connection.close(200, "done").await;
    env.cleanup().await;
}

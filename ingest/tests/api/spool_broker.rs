//! The spool against the local RabbitMQ (own vhost per test): events spooled while the broker is
//! unreachable or `wa.inbound` is missing reach their tenant queue later, across a restart and
//! across a crash that skipped every shutdown step.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use lapin::options::BasicGetOptions;
use lapin::Channel;
use secrecy::SecretString;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wafleet_ingest::{Config, LapinPublisher, Spool, SpoolError};
use wafleet_shared::{AuthMode, Envelope, EnvelopeV1, Generation, IngestId};

use crate::broker::{
    declare_inbound, declare_tenant_queue, post_webhook, start, stop, wait_for_readyz, with_vhost, TestVhost, OVERALL,
};
use crate::helpers::{cref, generation};

pub(crate) fn spool_config(vhost: &TestVhost, dir: &Path) -> Config {
    let mut config = vhost.config();
    config.spool_enabled = true;
    config.spool_dir = dir.to_path_buf();
    config.publish_timeout = Duration::from_millis(500);
    config
}

/// Ingest ids in the spool directory's segment files (the envelopes are JSON inside records).
pub(crate) fn spooled_ids(dir: &Path) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for item in std::fs::read_dir(dir).unwrap() {
        let path = item.unwrap().path();
        if path.extension().is_some_and(|x| x == "seg") {
            let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
            for piece in text.split("\"ingest_id\":\"").skip(1) {
                ids.insert(piece.split('"').next().unwrap_or_default().to_owned());
            }
        }
    }
    ids
}

pub(crate) fn segment_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "seg"))
        .count()
}

/// Takes `count` messages from `queue`, polling under [`OVERALL`], and returns their envelopes.
pub(crate) async fn take_messages(channel: &Channel, queue: &str, count: usize) -> anyhow::Result<Vec<EnvelopeV1>> {
    let deadline = tokio::time::Instant::now() + OVERALL;
    let mut taken = Vec::new();
    while taken.len() < count {
        match channel.basic_get(queue, BasicGetOptions { no_ack: true }).await? {
            Some(message) => taken.push(Envelope::decode(&message.delivery.data)?.into_v1()),
            None => {
                anyhow::ensure!(tokio::time::Instant::now() < deadline, "{queue} has {} of {count}", taken.len());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    Ok(taken)
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + OVERALL;
    while !check() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn events_spooled_while_the_broker_is_unreachable_arrive_after_a_restart_with_the_right_url() {
    with_vhost(|vhost| async move {
        let dir = tempfile::tempdir()?;
        let mut config = spool_config(&vhost, dir.path());
        // Nothing listens on port 1: every publish fails at once with "not connected".
        config.amqp_url = SecretString::from(format!("amqp://guest:guest@127.0.0.1:1/{}", vhost.name));
        config.shutdown_drain = Duration::ZERO;
        let url_path = format!("/webhook/cust_a/{}", config.keyring.sign(&cref("cust_a"), generation(2)));
        let (base, _ops, shutdown, server) = start(config.clone()).await?;
        for n in 0..3 {
            let body = json!({"event": "message", "message_id": format!("OFFLINE{n}")});
            let (status, answer) = post_webhook(&format!("{base}{url_path}"), &body).await?;
            assert_eq!((status, answer), (200, json!({"status": "accepted"})));
        }
        stop(shutdown, server).await?;
        let spooled = spooled_ids(dir.path());
        assert_eq!(spooled.len(), 3);

        let (_connection, channel) = vhost.channel().await?;
        declare_inbound(&channel).await?;
        let queue = declare_tenant_queue(&channel, "cust_a").await?;
        config.amqp_url = SecretString::from(vhost.amqp_url.clone());
        let (_base, ops, shutdown, server) = start(config).await?;
        let arrived = take_messages(&channel, &queue, 3).await?;
        let ids: BTreeSet<String> = arrived.iter().map(|v1| v1.ingest_id.to_string()).collect();
        assert_eq!(ids, spooled, "the same ingest ids, so the worker can dedupe");
        assert!(arrived.iter().all(|v1| v1.customer_ref == cref("cust_a") && v1.generation.get() == 2));
        let mut providers: Vec<String> = arrived.into_iter().filter_map(|v1| v1.provider_message_id).collect();
        providers.sort();
        assert_eq!(providers, ["OFFLINE0", "OFFLINE1", "OFFLINE2"]);
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + OVERALL;
        loop {
            let spoolz: serde_json::Value = client.get(format!("{ops}/spoolz")).send().await?.json().await?;
            if spoolz["records"] == json!(0) && segment_count(dir.path()) == 0 {
                break;
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "spool never emptied: {spoolz}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop(shutdown, server).await
    })
    .await;
}

#[tokio::test]
async fn events_spooled_while_wa_inbound_is_missing_drain_once_it_is_declared() {
    with_vhost(|vhost| async move {
        let dir = tempfile::tempdir()?;
        let config = spool_config(&vhost, dir.path());
        let url_path = format!("/webhook/cust_b/{}", config.keyring.sign(&cref("cust_b"), generation(1)));
        let (base, ops, shutdown, server) = start(config).await?;
        // Connected but never ready: the rollout would stop here, yet nothing sent is lost.
        wait_for_readyz(&ops, |_, body| body["reason"] == json!("exchange wa.inbound not confirmed")).await?;
        let (status, _) = post_webhook(&format!("{base}{url_path}"), &json!({"event": "message"})).await?;
        assert_eq!(status, 200);
        let spooled = spooled_ids(dir.path());
        assert_eq!(spooled.len(), 1);

        let (_connection, channel) = vhost.channel().await?;
        declare_inbound(&channel).await?;
        let queue = declare_tenant_queue(&channel, "cust_b").await?;
        wait_for_readyz(&ops, |status, _| status == 200).await?;
        let arrived = take_messages(&channel, &queue, 1).await?;
        assert_eq!(BTreeSet::from([arrived[0].ingest_id.to_string()]), spooled);
        stop(shutdown, server).await?;
        assert_eq!(segment_count(dir.path()), 0, "shutdown leaves no drained segment to re-send");
        Ok(())
    })
    .await;
}

fn envelope(customer_ref: &str, provider_id: &str) -> (IngestId, Vec<u8>) {
    let ingest_id = IngestId::new();
    let bytes = Envelope::V1(EnvelopeV1 {
        ingest_id,
        customer_ref: cref(customer_ref),
        generation: Generation::parse_canonical("1").unwrap(),
        auth: AuthMode::Token,
        received_at: chrono::Utc::now(),
        event_type: "message".into(),
        provider_message_id: Some(provider_id.into()),
        payload: json!({"event": "message"}).into(),
    })
    .to_bytes();
    (ingest_id, bytes)
}

#[tokio::test]
async fn records_fsynced_before_a_crash_are_recovered_and_drained_on_the_next_start() {
    with_vhost(|vhost| async move {
        let (_connection, channel) = vhost.channel().await?;
        declare_inbound(&channel).await?;
        let queue_a = declare_tenant_queue(&channel, "cust_a").await?;
        let queue_b = declare_tenant_queue(&channel, "cust_b").await?;
        let dir = tempfile::tempdir()?;
        let settings = spool_config(&vhost, dir.path()).spool_settings();

        let mut written = BTreeSet::new();
        {
            let spool = Spool::open(&settings)?;
            for (key, provider) in [("cust_a", "K1"), ("cust_b", "K2"), ("cust_a", "K3")] {
                let (id, bytes) = envelope(key, provider);
                spool.append(&cref(key), bytes).await?;
                written.insert(id.to_string());
            }
            // Dropped without close, release or drain: all a `kill -9` leaves is what was fsynced.
        }

        // The lock goes with the writer thread, which ends as soon as it sees every handle gone.
        let deadline = tokio::time::Instant::now() + OVERALL;
        let spool = loop {
            match Spool::open(&settings) {
                Ok(spool) => break spool,
                Err(SpoolError::Locked) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(err) => return Err(err.into()),
            }
        };
        assert_eq!(spool.status().records, 3);
        let publisher_stop = CancellationToken::new();
        let (publisher, supervisor) = LapinPublisher::start(&vhost.config(), publisher_stop.clone());
        let drain_stop = CancellationToken::new();
        let drain = spool.start_drain(publisher, Duration::from_secs(2), drain_stop.clone());

        let mut arrived = take_messages(&channel, &queue_a, 2).await?;
        arrived.extend(take_messages(&channel, &queue_b, 1).await?);
        let ids: BTreeSet<String> = arrived.iter().map(|v1| v1.ingest_id.to_string()).collect();
        assert_eq!(ids, written);
        assert!(arrived
            .iter()
            .all(|v1| v1.provider_message_id.as_deref() != Some("K2") || v1.customer_ref == cref("cust_b")));
        wait_until("the recovered segment deleted", || segment_count(dir.path()) == 0).await?;

        drain_stop.cancel();
        drain.await?;
        publisher_stop.cancel();
        supervisor.await?;
        Ok(())
    })
    .await;
}

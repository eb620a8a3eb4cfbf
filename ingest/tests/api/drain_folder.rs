//! `wafleet-ingest drain --spool-dir DIR`, the binary itself: a folder spooled while the broker
//! was unreachable, whose ingest is gone, is published by the drain command (each event exactly
//! once, to its own tenant queue) and left empty; a drain that cannot finish exits non-zero and
//! keeps every record; a folder in use or missing is refused.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use lapin::options::BasicGetOptions;
use secrecy::SecretString;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wafleet_ingest::config::DrainConfig;
use wafleet_ingest::drain_folder::drain_folder;
use wafleet_ingest::{Error, Spool, SpoolError};

use crate::broker::{declare_inbound, declare_tenant_queue, post_webhook, start, stop, with_vhost, TestVhost, OVERALL};
use crate::helpers::{cref, generation};
use crate::spool_broker::{segment_count, spool_config, spooled_ids, take_messages};

/// Runs `wafleet-ingest drain` on `dir` against `amqp_url`, with no signing key in its environment.
async fn run_drain(dir: &Path, amqp_url: &str, timeout_secs: u64) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_wafleet-ingest"));
    command
        .args(["drain", "--spool-dir"])
        .arg(dir)
        .args(["--timeout-secs", &timeout_secs.to_string()])
        .env("AMQP_URL", amqp_url)
        .env("WAFLEET_READY_RECHECK_MS", "100")
        .env("WAFLEET_PUBLISH_TIMEOUT_MS", "500")
        .env("RUST_LOG", "warn")
        .env_remove("WAFLEET_SIGNING_KEY")
        .kill_on_drop(true);
    tokio::time::timeout(OVERALL + Duration::from_secs(timeout_secs), command.output())
        .await
        .expect("the drain command finished")
        .expect("the drain command ran")
}

/// Spools `events` through a real ingest whose broker is a closed port, then stops that ingest.
async fn spool_while_the_broker_is_unreachable(
    vhost: &TestVhost,
    dir: &Path,
    events: &[(&str, &str)],
) -> BTreeSet<String> {
    let mut config = spool_config(vhost, dir);
    config.amqp_url = SecretString::from(format!("amqp://guest:guest@127.0.0.1:1/{}", vhost.name));
    config.shutdown_drain = Duration::ZERO;
    let (base, _ops, shutdown, server) = start(config.clone()).await.unwrap();
    for (customer_ref, provider_id) in events {
        let token = config.keyring.sign(&cref(customer_ref), generation(1));
        let body = json!({"event": "message", "message_id": provider_id});
        let answer = post_webhook(&format!("{base}/webhook/{customer_ref}/{token}"), &body).await.unwrap();
        assert_eq!(answer, (200, json!({"status": "accepted"})));
    }
    stop(shutdown, server).await.unwrap();
    let spooled = spooled_ids(dir);
    assert_eq!(spooled.len(), events.len(), "every accepted event is in the folder");
    spooled
}

#[tokio::test]
async fn a_folder_whose_ingest_is_gone_is_drained_by_the_drain_command_exactly_once_and_left_empty() {
    with_vhost(|vhost| async move {
        let dir = tempfile::tempdir()?;
        let events = [("cust_a", "D1"), ("cust_b", "D2"), ("cust_a", "D3"), ("cust_a", "D4"), ("cust_b", "D5")];
        let spooled = spool_while_the_broker_is_unreachable(&vhost, dir.path(), &events).await;

        let (_connection, channel) = vhost.channel().await?;
        declare_inbound(&channel).await?;
        let queue_a = declare_tenant_queue(&channel, "cust_a").await?;
        let queue_b = declare_tenant_queue(&channel, "cust_b").await?;
        let output = run_drain(dir.path(), &vhost.amqp_url, 60).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{output:?}");
        assert!(stdout.contains("drained 5 records"), "{stdout}");

        let mut delivered = Vec::new();
        for (queue, customer_ref, count) in [(&queue_a, "cust_a", 3), (&queue_b, "cust_b", 2)] {
            let taken = take_messages(&channel, queue, count).await?;
            assert!(taken.iter().all(|v1| v1.customer_ref == cref(customer_ref)), "only its own tenant's events");
            delivered.extend(taken.into_iter().map(|v1| v1.ingest_id.to_string()));
            let extra = channel.basic_get(queue, BasicGetOptions { no_ack: true }).await?;
            assert!(extra.is_none(), "{queue} got an event twice");
        }
        assert_eq!(delivered.len(), 5);
        assert_eq!(delivered.into_iter().collect::<BTreeSet<_>>(), spooled, "the spooled events, each once");
        let left: Vec<_> = std::fs::read_dir(dir.path())?.collect();
        assert!(left.is_empty(), "the folder is empty after the drain: {left:?}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_drain_that_cannot_reach_the_broker_exits_non_zero_and_keeps_every_record() {
    with_vhost(|vhost| async move {
        let dir = tempfile::tempdir()?;
        let spooled =
            spool_while_the_broker_is_unreachable(&vhost, dir.path(), &[("cust_a", "F1"), ("cust_a", "F2")]).await;
        let closed = format!("amqp://guest:guest@127.0.0.1:1/{}", vhost.name);
        let output = run_drain(dir.path(), &closed, 1).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        assert!(stderr.contains("2 records are still in the spool folder"), "{stderr}");
        assert!(stderr.contains("not connected to the broker"), "the cause is named: {stderr}");
        assert_eq!(spooled_ids(dir.path()), spooled, "nothing is lost when the drain gives up");
        assert!(segment_count(dir.path()) > 0);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_folder_in_use_by_an_ingest_or_missing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = |dir: &Path| DrainConfig {
        amqp_url: SecretString::from("amqp://guest:guest@127.0.0.1:1/%2f"),
        publish_timeout: Duration::from_millis(100),
        ready_recheck: Duration::from_millis(100),
        spool_dir: dir.to_path_buf(),
        timeout: Duration::from_secs(1),
    };
    let held = Spool::open(&spool_settings(dir.path())).unwrap();
    let refused = drain_folder(&config(dir.path()), CancellationToken::new()).await;
    assert!(matches!(refused, Err(Error::SpoolOpen { source: SpoolError::Locked, .. })), "{refused:?}");
    held.close().await;
    held.release();

    let missing = dir.path().join("no-such-folder");
    let refused = drain_folder(&config(&missing), CancellationToken::new()).await;
    assert!(matches!(refused, Err(Error::SpoolOpen { source: SpoolError::Open(_), .. })), "{refused:?}");
    assert!(!missing.exists(), "a mistyped folder is not created");
}

fn spool_settings(dir: &Path) -> wafleet_ingest::SpoolSettings {
    wafleet_ingest::SpoolSettings {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 20,
        segment_bytes: 1 << 16,
        tenant_max_bytes: 1 << 20,
    }
}

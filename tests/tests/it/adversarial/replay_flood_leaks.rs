//! Adversarial cases over time and volume: replays, a flood for an unknown ref, a reused
//! offboarded ref, and the log lines written during an attack. The hostile stack and the request
//! helpers are the parent's.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_events_are_sent_once_and_a_replay_on_one_tenant_never_suppresses_another() {
    let stack = Stack::new(EnvOptions::default()).await;
    let env = &stack.env;
    let original = event_a("replayed once", "ADV-REPLAY");
    // The same request replayed concurrently, then again with another text under the same id.
    let replays = (0..4).map(|_| stack.post_json(&stack.url_a, &original));
    for answer in futures::future::join_all(replays).await {
        assert_eq!(answer.status, 200);
    }
    let mut altered = original.clone();
    altered["body"] = "replayed with another text".into();
    assert_eq!(stack.post_json(&stack.url_a, &altered).await.status, 200);
    // B happens to receive a message with the same provider id: it is B's own, and answered.
    let mut for_b = message_event(CHAT_B, "B's own message", "ADV-REPLAY");
    for_b["customer_ref"] = B.into();
    assert_eq!(stack.post_json(&stack.url_b, &for_b).await.status, 200);

    env.sim.wait_for_sends(B, 1, Duration::from_secs(20)).await;
    stack.assert_still_serving().await;
    env.wait_idle(3).await.unwrap();
    wait_until(Duration::from_secs(20), || async { depth(env, "wa.tenant.adv_a").await == 0 }).await.unwrap();
    let a_bodies: Vec<String> = env.sim.sends_for(A).into_iter().map(|s| s.body).collect();
    let replayed = a_bodies.iter().filter(|b| b.starts_with("replayed")).count();
    assert_eq!(replayed, 1, "five deliveries of one message id, one reply: {a_bodies:?}");
    let b_sends = env.sim.sends_for(B);
    assert_eq!(b_sends.len(), 1, "B's message is not taken for A's duplicate");
    assert_eq!(b_sends[0].body, "B's own message");
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_for_an_unknown_ref_is_bounded_by_the_retention_and_does_not_starve_real_tenants() {
    let mut env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    env.worker_config.reconciler.retention = Duration::from_secs(2);
    env.start_worker().await.unwrap();
    let stack = Stack::around(env).await;
    let env = &stack.env;
    let ghost = signed_url(env, &keyring(TEST_SIGNING_KEY), "ghost_flood", 1);
    let expired_before = counter_value("wafleet_worker_dropped_total", &[("reason", "unrouted_expired")]);

    const FLOOD: usize = 500;
    let sent = Arc::new(AtomicUsize::new(0));
    let flood = {
        let (http, ghost, sent) = (stack.http.clone(), ghost.clone(), sent.clone());
        tokio::spawn(async move {
            let statuses: Vec<u16> = futures::stream::iter(0..FLOOD)
                .map(|i| {
                    let (http, ghost, sent) = (http.clone(), ghost.clone(), sent.clone());
                    async move {
                        let event = message_event("15550009999", "flood", &format!("FLOOD-{i}"));
                        let status = http.post(&ghost).json(&event).send().await.map(|r| r.status().as_u16());
                        sent.fetch_add(1, Ordering::Relaxed);
                        status.unwrap_or(0)
                    }
                })
                .buffer_unordered(16)
                .collect()
                .await;
            statuses
        })
    };
    // A real tenant's event in the middle of the flood is answered within a bound.
    wait_until(Duration::from_secs(60), || async { sent.load(Ordering::Relaxed) >= FLOOD / 5 }).await.unwrap();
    let started = Instant::now();
    assert_eq!(env.sim.fire_message(A, CHAT_A, "real tenant during flood", None, true).await.unwrap(), 200);
    let sends = env.sim.wait_for_sends(A, 1, Duration::from_secs(30)).await;
    assert_eq!(sends.first().map(|s| s.body.as_str()), Some("real tenant during flood"));
    let latency = started.elapsed();
    assert!(latency < Duration::from_secs(20), "A's reply took {latency:?} during the flood");

    let statuses = flood.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "a valid token for an unknown ref is accepted and dropped later");
    // Nothing of the flood reached a tenant queue, and wa.unrouted drains after the retention.
    wait_until(Duration::from_secs(90), || async { depth(env, "wa.unrouted").await == 0 })
        .await
        .expect("wa.unrouted does not grow without bound");
    let expired = counter_value("wafleet_worker_dropped_total", &[("reason", "unrouted_expired")]);
    assert!(expired >= expired_before + FLOOD as f64, "every flood event was dropped after the retention");
    assert_eq!(depth(env, "wa.tenant.adv_a").await, 0);
    assert_eq!(depth(env, "wa.tenant.adv_b").await, 0);
    assert!(env.sim.sends_for(B).is_empty());
    assert!(env.sim.all_sends().iter().all(|s| s.body != "flood"), "no flood event was answered");
    stack.assert_still_serving().await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offboarded_ref_or_its_bridge_can_never_be_added_again() {
    let stack = Stack::new(EnvOptions::default()).await;
    let env = &stack.env;
    let gone_url = env.add_tenant("adv_gone", "adv_gone").await.unwrap();
    // Tombstone, as the owner (the effect of the offboard command).
    sqlx::query("update tenants set status = 'offboarded' where customer_ref = 'adv_gone'")
        .execute(&env.owner_pool)
        .await
        .unwrap();
    let readd = |customer_ref: &str, bridge: &str| NewTenant {
        customer_ref: CustomerRef::parse(customer_ref).unwrap(),
        bridge: bridge.into(),
        bot_kind: BotKind::Echo,
        auth_mode: wafleet_shared::AuthMode::Token,
        queue_type: wafleet_shared::topology::QueueType::Quorum,
    };
    for (customer_ref, bridge, why) in [
        ("adv_gone", "adv_gone", "same ref and bridge"),
        ("adv_gone", "adv_gone_2", "same ref, new bridge"),
        ("adv_new", "adv_gone", "new ref on the tombstone's bridge"),
    ] {
        let result =
            wafleet_fleet::service::add_tenant(&env.admin_pool, &env.endpoints, &readd(customer_ref, bridge)).await;
        // A bridge other than the ref is refused as invalid before the tombstone is even read.
        match (result, customer_ref == bridge) {
            (Err(wafleet_fleet::error::Error::Conflict(conflict)), true) => {
                assert!(!conflict.to_string().is_empty(), "{why}");
            }
            (Err(wafleet_fleet::error::Error::Invalid(invalid)), false) => {
                assert!(invalid.to_string().contains("differs from the tenant's ref"), "{why}: {invalid}");
            }
            (other, _) => panic!("{why}: re-adding must be refused, got {other:?}"),
        }
    }
    let err = wafleet_fleet::service::add_tenant(&env.admin_pool, &env.endpoints, &readd("adv_gone", "adv_gone"))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("offboarded"), "the refusal says why: {err}");
    // Re-enabling is refused too: offboarded stays offboarded.
    let gone = CustomerRef::parse("adv_gone").unwrap();
    let enabled =
        wafleet_fleet::service::set_status(&env.admin_pool, &gone, wafleet_fleet::tenant::TenantStatus::Active).await;
    assert!(enabled.is_err(), "an offboarded tenant cannot be enabled again");
    let (status, tenants): (String, i64) = sqlx::query_as(
        "select (select status from tenants where customer_ref = 'adv_gone'), (select count(*) from tenants)",
    )
    .fetch_one(&env.owner_pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), tenants), ("offboarded", 3), "no row was added or revived");
    // Its old URL still reaches the edge (ingest has no database), but nothing is ever sent.
    let mut event = message_event("15550007003", "to a tombstone", "ADV-GONE");
    event["customer_ref"] = "adv_gone".into();
    assert_eq!(stack.post_json(&gone_url, &event).await.status, 200);
    stack.assert_still_serving().await;
    assert!(env.sim.sends_for("adv_gone").is_empty());
    assert!(env.sim.sends_for(B).is_empty());
    stack.cleanup().await;
}

/// Captures every formatted log line of the current thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread: ingest, worker and simulator all run on the test's thread, so the thread-local
// subscriber below sees every line they log.
#[tokio::test(flavor = "current_thread")]
async fn no_log_line_of_ingest_or_worker_carries_a_token_or_a_payload_during_an_attack() {
    let captured = Captured::default();
    let writer = captured.clone();
    let filter = "info,wafleet_ingest=trace,wafleet_worker=trace,wafleet_shared=trace,tower_http=trace,axum=trace,sqlx=debug,lapin=off,amq_protocol=off";
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let stack = Stack::new(EnvOptions::default()).await;
    let env = &stack.env;
    let token_a = stack.token_a().to_owned();
    let token_b = token_of(&stack.url_b).to_owned();
    let ghost = signed_url(env, &keyring(TEST_SIGNING_KEY), "ghost_logs", 1);
    let ghost_token = token_of(&ghost).to_owned();
    let secret = TEST_SIGNING_KEY.split_once(':').map(|(_, s)| s.to_owned()).unwrap_or_default();
    let marked = |id: &str| event_a(&format!("{MARKER} {id}"), id);

    // A legitimate event whose text must not be logged either.
    assert_eq!(stack.post_json(&stack.url_a, &marked("LOG-1")).await.status, 200);
    // Hostile ones.
    let swapped = format!("{}/webhook/{B}/{token_a}", env.ingest_url);
    assert_eq!(stack.post_json(&swapped, &marked("LOG-2")).await.status, 401);
    let mut names_b = marked("LOG-3");
    names_b["customer_ref"] = B.into();
    assert_eq!(stack.post_json(&stack.url_a, &names_b).await.status, 401);
    let duplicate = format!(r#"{{"customer_ref":"{A}","customer_ref":"{B}","body":"{MARKER}"}}"#);
    assert_eq!(stack.post(&stack.url_a, Some("application/json"), duplicate).await.status, 400);
    assert_eq!(stack.post(&stack.url_a, Some("application/json"), format!("{MARKER} not json")).await.status, 400);
    assert_eq!(stack.post(&stack.url_a, Some("text/plain"), MARKER).await.status, 415);
    let tricky = format!("{}/webhook/adv_a%23{MARKER}/{token_a}", env.ingest_url);
    assert_eq!(stack.post_json(&tricky, &marked("LOG-4")).await.status, 401);
    let mut for_ghost = marked("LOG-5");
    for_ghost["customer_ref"] = "ghost_logs".into();
    assert_eq!(stack.post_json(&ghost, &for_ghost).await.status, 200);
    let mut for_b = message_event(CHAT_B, &format!("{MARKER} LOG-6"), "LOG-6");
    for_b["customer_ref"] = B.into();
    assert_eq!(stack.post_json(&stack.url_b, &for_b).await.status, 200);
    env.sim.wait_for_sends(B, 1, Duration::from_secs(30)).await;
    // An old-generation URL, dropped by the worker.
    sqlx::query("update tenants set generation = generation + 1 where customer_ref = $1")
        .bind(B)
        .execute(&env.owner_pool)
        .await
        .unwrap();
    let dropped_before = counter_value("wafleet_worker_dropped_total", &[("reason", "generation_mismatch")]);
    let mut stale = message_event(CHAT_B, &format!("{MARKER} LOG-7"), "LOG-7");
    stale["customer_ref"] = B.into();
    assert_eq!(stack.post_json(&stack.url_b, &stale).await.status, 200);

    env.sim.wait_for_sends(A, 1, Duration::from_secs(30)).await;
    wait_until(Duration::from_secs(30), || async {
        counter_value("wafleet_worker_dropped_total", &[("reason", "generation_mismatch")]) > dropped_before
    })
    .await
    .unwrap();
    wait_until(Duration::from_secs(30), || async {
        counter_value("wafleet_unrouted_total", &[("reason", "unknown_tenant")]) >= 1.0
    })
    .await
    .unwrap();

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(logs.contains("webhook token refused"), "the capture saw ingest's lines:\n{logs}");
    assert!(logs.contains("tenant=\"adv_a\""), "the capture saw the verified tenant:\n{logs}");
    assert!(logs.contains("dropping message: no usable tenant"), "the capture saw the worker's lines:\n{logs}");
    for (what, secret) in [
        ("A's token", token_a.as_str()),
        ("B's token", &token_b),
        ("a ghost token", &ghost_token),
        ("the signing key", &secret),
    ] {
        assert!(!logs.contains(secret), "{what} leaked into the logs");
    }
    let leaked: Vec<&str> = logs.lines().filter(|l| l.contains(MARKER)).collect();
    assert!(leaked.is_empty(), "payload text leaked into the logs:\n{}", leaked.join("\n"));
    stack.assert_no_cross_tenant_reply();
    stack.cleanup().await;
}

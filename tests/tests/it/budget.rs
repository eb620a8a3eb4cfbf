//! Accounts, the fleet-wide send budget, 429 pauses shared by replicas, per-tenant caps,
//! bridge state and the budget metrics, against the simulator and real Postgres. Time-dependent
//! rules run on an injected manual clock; the multi-replica budget test runs the limiter and the
//! simulator on a compressed 6 s "minute".

mod egress;
mod fairness;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use wafleet_fleet::accounts::{KeyRef, NewAccount};
use wafleet_fleet::budget::{self, Bucket, BudgetConfig};
use wafleet_fleet::clock::ManualClock;
use wafleet_fleet::service;
use wafleet_sim::{Fault, SimConfig, WindowKind};
use wafleet_tests::{counter_value, key_file, test_account_policy, wait_until, EnvOptions, TestEnv, TEST_API_KEY};
use wafleet_worker::sender::{Sender, SenderConfig, Step};

/// `n` distinct reply bodies with a prefix.
pub(crate) fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:04}")).collect()
}

/// Production budget (110 + 5 per 60 s), on a manual clock.
pub(crate) fn manual_sender(env: &TestEnv, clock: &Arc<ManualClock>) -> Arc<Sender> {
    env.sender(SenderConfig { budget: BudgetConfig::default(), ..SenderConfig::default() }, Some(clock.clone()))
}

/// Steps `sender` until it is idle, moving the manual clock over every budget wait. Returns the
/// number of sends.
pub(crate) async fn drain(sender: &Sender, clock: &ManualClock, max_steps: usize) -> usize {
    let mut sent = 0;
    for _ in 0..max_steps {
        match sender.step().await.unwrap() {
            Step::Sent => sent += 1,
            Step::Skipped => {}
            Step::Wait(d) => clock.advance(d),
            Step::Idle(_) => return sent,
        }
    }
    panic!("sender still busy after {max_steps} steps");
}

/// Every send attempt so far: its account and when it was attempted (the sender's clock).
pub(crate) async fn attempts(env: &TestEnv) -> Vec<(String, DateTime<Utc>)> {
    sqlx::query_as(
        "select a.name, o.attempted_at from outbox o join tenants t using (tenant_id) join accounts a using (account_id) \
         where o.attempted_at is not null order by o.attempted_at",
    )
    .fetch_all(&env.owner_pool)
    .await
    .unwrap()
}

pub(crate) fn max_in_any_minute(times: &[DateTime<Utc>]) -> usize {
    let minute = chrono::Duration::seconds(60);
    let mut start = 0;
    let mut max = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= minute {
            start += 1;
        }
        max = max.max(end - start + 1);
    }
    max
}

async fn statuses(env: &TestEnv, customer_ref: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select o.status from outbox o join tenants t using (tenant_id) where t.customer_ref = $1 order by o.outbox_id",
    )
    .bind(customer_ref)
    .fetch_all(&env.owner_pool)
    .await
    .unwrap()
}

async fn bucket_row(env: &TestEnv) -> (f64, Option<DateTime<Utc>>) {
    sqlx::query_as(
        "select tokens, paused_until from budget_buckets b join accounts a using (account_id) \
         where a.name = 'default' and b.bucket = 'proxy'",
    )
    .fetch_one(&env.owner_pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_a_reply_goes_out_only_with_account_a_key_and_never_with_account_b_key() {
    let sim = SimConfig {
        api_keys: vec![TEST_API_KEY.into(), "sk_account_b".into()],
        unlimited: true,
        ..SimConfig::default()
    };
    let mut env = TestEnv::with(EnvOptions { sim: Some(sim), no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let key_b = key_file("sk_account_b");
    let account_b = NewAccount {
        name: "acct_b".into(),
        key_ref: KeyRef::File(key_b.clone()),
        base_url: None,
        rate_per_min: None,
        burst: None,
        test_account: false,
    };
    service::add_account(&env.admin_pool, &account_b, &test_account_policy()).await.unwrap();
    env.add_tenant_in("iso_a", "iso_a", "default").await.unwrap();
    env.add_tenant_in("iso_b", "iso_b", "acct_b").await.unwrap();
    let (url_a, url_b) = (env.webhook_url("iso_a").await.unwrap(), env.webhook_url("iso_b").await.unwrap());
    env.sim.add_bridge("iso_a", Some(&url_a), None);
    env.sim.add_bridge("iso_b", Some(&url_b), Some("sk_account_b"));
    env.start_worker().await.unwrap();
    for i in 0..3 {
        assert_eq!(env.sim.fire_message("iso_a", "15550000101", &format!("for a {i}"), None, true).await.unwrap(), 200);
        assert_eq!(env.sim.fire_message("iso_b", "15550000102", &format!("for b {i}"), None, true).await.unwrap(), 200);
    }
    env.sim.wait_for_sends("iso_a", 3, Duration::from_secs(20)).await;
    env.sim.wait_for_sends("iso_b", 3, Duration::from_secs(20)).await;
    env.wait_idle(6).await.unwrap();
    for send in env.sim.all_sends() {
        let expected = if send.bridge == "iso_a" { TEST_API_KEY } else { "sk_account_b" };
        assert_eq!(send.api_key, expected, "reply on {} sent with the wrong account key", send.bridge);
    }
    assert_eq!(env.sim.all_sends().len(), 6);
    assert!(env.sim.rejected_attempts().is_empty(), "no call ever used another account's key");

    // The scheduler of account b never even sees tenant a's replies.
    env.stop_worker().await;
    env.queue_replies("iso_a", "15550000101", &bodies("waiting-a", 2), None, Duration::from_secs(3600)).await;
    let clock = Arc::new(ManualClock::starting_now());
    let sender = manual_sender(&env, &clock);
    let (accounts, _) = sender.accounts().refresh().await.unwrap();
    let b = accounts.iter().find(|a| a.name == "acct_b").unwrap();
    assert!(matches!(sender.send_next(b).await.unwrap(), Step::Idle(_)));
    assert_eq!(statuses(&env, "iso_a").await.iter().filter(|s| *s == "pending").count(), 2);
    let _ = std::fs::remove_file(key_b);
    env.cleanup().await;
}

/// The budget's own bound on its own clock: two simulated minutes of one account's backlog at the
/// production budget send at most 110 + 5 in any 60 s, and use nearly all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_budget_sends_at_most_115_in_any_minute_of_its_clock_and_uses_them() {
    let sim = SimConfig { api_keys: vec![TEST_API_KEY.into()], unlimited: true, ..SimConfig::default() };
    let env = TestEnv::with(EnvOptions { sim: Some(sim), no_worker: true, ..EnvOptions::default() }).await.unwrap();
    env.add_tenant("own_clock", "own_clock").await.unwrap();
    env.queue_replies("own_clock", "15550000130", &bodies("oc", 300), None, Duration::from_secs(7200)).await;
    let clock = Arc::new(ManualClock::starting_now());
    let start = clock.get();
    let sender = manual_sender(&env, &clock);
    while clock.get() - start < chrono::Duration::seconds(120) {
        match sender.step().await.unwrap() {
            Step::Wait(d) => clock.advance(d),
            Step::Sent | Step::Skipped => {}
            Step::Idle(_) => panic!("the backlog ran out before two minutes"),
        }
    }
    let times: Vec<DateTime<Utc>> = attempts(&env).await.into_iter().map(|(_, at)| at).collect();
    let busiest = max_in_any_minute(&times);
    assert!(busiest <= 115, "{busiest} sends in one minute: over the budget's 110 + 5");
    let budget = 110.0 * 2.0 + 5.0;
    assert!(
        times.len() as f64 >= 0.95 * budget,
        "{} sends of a budget of {budget}: the budget was not used",
        times.len()
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_sender_replicas_and_the_cli_together_stay_under_the_api_limit_in_every_window() {
    replicas_and_the_cli_under_the_limit(WindowKind::Fixed).await;
}

/// The reference says "per minute" without saying whether the minute is fixed or sliding; the
/// budget (rate + burst ≤ the limit) must hold under the stricter reading too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_sender_replicas_and_the_cli_stay_under_the_api_limit_in_every_sliding_window() {
    replicas_and_the_cli_under_the_limit(WindowKind::Sliding).await;
}

async fn replicas_and_the_cli_under_the_limit(window_kind: WindowKind) {
    let window = Duration::from_secs(6);
    let sim = SimConfig { api_keys: vec![TEST_API_KEY.into()], window, window_kind, ..SimConfig::default() };
    let env = TestEnv::with(EnvOptions { sim: Some(sim), no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let total = 210;
    for t in 0..3 {
        let r = format!("fleet_{t}");
        env.add_tenant(&r, &r).await.unwrap();
        env.queue_replies(&r, "15550000110", &bodies(&r, total / 3), None, Duration::from_secs(3600)).await;
    }
    let budget = BudgetConfig { rate_per_window: 110, burst: 5, window, ..BudgetConfig::default() };
    let config =
        SenderConfig { budget: budget.clone(), poll_interval: Duration::from_millis(100), ..SenderConfig::default() };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let replicas: Vec<_> =
        (0..3).map(|_| tokio::spawn(env.sender(config.clone(), None).run(shutdown.clone()))).collect();
    // The CLI's status polls take proxy tokens from the same bucket.
    let fleet = env.fleet(budget);
    let polls = async {
        for _ in 0..5 {
            let r = wafleet_shared::CustomerRef::parse("fleet_0").unwrap();
            assert_eq!(service::bridge_status(&fleet, &r).await.unwrap(), "connected");
        }
    };
    let sent = wait_until(Duration::from_secs(90), || async {
        env.count("select count(*) from outbox where status = 'sent'").await == total as i64
    });
    let (_, sent) = tokio::join!(polls, sent);
    sent.unwrap();
    shutdown.cancel();
    for r in replicas {
        r.await.unwrap();
    }
    let stats = env.sim.stats();
    assert_eq!(stats.rejected_429, 0, "the API never had to refuse a call");
    let windows = env.sim.proxy_calls_per_window();
    assert!(windows.iter().all(|&n| n <= 120), "over 120 proxy calls in a window: {windows:?}");
    // The budget hands out at most 110 + 5 tokens in any window of its own (database) clock; the
    // API counts arrivals, which trail the takes by a scheduling delay that grows under load. The
    // 5 calls between the budget and the limit of 120 are there to absorb that delay, so what the
    // API sees is held to its own limit here; the budget's exact bound is proved on its own clock by
    // `the_production_budget_sends_at_most_115_in_any_minute_of_its_clock_and_uses_them`.
    let busiest = env.sim.max_calls_in_any(window);
    assert!(busiest <= 120, "{busiest} calls in one sliding window: over the API's limit of 120 ({windows:?})");
    assert!(windows.iter().any(|&n| n >= 100), "the budget was not used: {windows:?}");
    let mut bodies_sent: Vec<String> = env.sim.all_sends().into_iter().map(|s| s.body).collect();
    bodies_sent.sort();
    bodies_sent.dedup();
    assert_eq!(bodies_sent.len(), total, "every reply exactly once");
    assert_eq!(env.sim.all_sends().len(), total);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_every_replica_of_the_account_until_retry_after_and_loses_or_doubles_nothing() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    env.add_tenant("pause429", "pause429").await.unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let (a, b) = (manual_sender(&env, &clock), manual_sender(&env, &clock));
    env.queue_replies("pause429", "15550000120", &bodies("p", 6), Some(clock.get()), Duration::from_secs(3600)).await;
    env.sim.set_fault(Some(Fault::new(429).with_retry_after(30).with_remaining(1)));

    assert_eq!(a.step().await.unwrap(), Step::Sent, "replica a's send is answered 429");
    let (tokens, paused_until) = bucket_row(&env).await;
    assert_eq!(tokens, 0.0, "the pause empties the bucket");
    assert_eq!((paused_until.unwrap() - clock.get()).num_milliseconds(), 30_000, "Retry-After: 30");
    let attempts = env.sim.attempts_for("pause429");
    assert_eq!(attempts, 1);
    for replica in [&b, &a] {
        match replica.step().await.unwrap() {
            Step::Wait(d) => assert!(d > Duration::from_millis(29_900) && d <= Duration::from_secs(30), "{d:?}"),
            other => panic!("a replica ignored the shared pause: {other:?}"),
        }
    }
    clock.advance(Duration::from_secs(29));
    assert!(matches!(b.step().await.unwrap(), Step::Wait(d) if d <= Duration::from_secs(1)));
    assert_eq!(env.sim.attempts_for("pause429"), attempts, "no call during the pause");
    clock.advance(Duration::from_millis(1001));
    let mut sent = 0;
    for turn in 0..40 {
        let replica = if turn % 2 == 0 { &a } else { &b };
        match replica.step().await.unwrap() {
            Step::Sent => sent += 1,
            Step::Wait(d) => clock.advance(d),
            Step::Skipped => {}
            Step::Idle(_) => break,
        }
    }
    assert_eq!(sent, 6);
    let mut got: Vec<String> = env.sim.sends_for("pause429").into_iter().map(|s| s.body).collect();
    got.sort();
    assert_eq!(got, bodies("p", 6), "each reply once, none lost");
    assert_eq!(env.sim.attempts_for("pause429"), 7, "six sends and the refused one");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_without_retry_after_backs_off_exponentially_with_jitter() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let sender = manual_sender(&env, &clock);
    let (accounts, _) = sender.accounts().refresh().await.unwrap();
    let account = accounts.iter().find(|a| a.name == "default").unwrap();
    let t0 = clock.get();
    let mut previous = t0;
    for (n, (low, high)) in [(500, 1000), (1000, 2000), (2000, 4000)].into_iter().enumerate() {
        let until = budget::pause(&env.admin_pool, account, Bucket::Proxy, None, Some(t0)).await.unwrap();
        let ms = (until - t0).num_milliseconds();
        assert!(until >= previous, "a pause never shortens");
        assert!(ms >= low && ms <= high, "pause {n}: {ms} ms, expected {low}..={high}");
        previous = until;
    }
    let take = budget::take(&env.admin_pool, account, Bucket::Proxy, Some(t0)).await.unwrap();
    assert!(matches!(take, budget::Take::Wait(_)), "no token while paused");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_429s_from_an_overcommitted_budget_lose_and_double_nothing() {
    let window = Duration::from_secs(2);
    let sim = SimConfig { api_keys: vec![TEST_API_KEY.into()], window, proxy_per_window: 10, ..SimConfig::default() };
    let env = TestEnv::with(EnvOptions { sim: Some(sim), no_worker: true, ..EnvOptions::default() }).await.unwrap();
    env.add_tenant("over", "over").await.unwrap();
    env.queue_replies("over", "15550000130", &bodies("o", 30), None, Duration::from_secs(3600)).await;
    // Ten times what the simulated API allows: only the 429 pause keeps this in check.
    let budget = BudgetConfig { rate_per_window: 100, burst: 10, window, ..BudgetConfig::default() };
    let config = SenderConfig { budget, poll_interval: Duration::from_millis(50), ..SenderConfig::default() };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let replicas: Vec<_> =
        (0..2).map(|_| tokio::spawn(env.sender(config.clone(), None).run(shutdown.clone()))).collect();
    wait_until(Duration::from_secs(60), || async {
        env.count("select count(*) from outbox where status = 'sent'").await == 30
    })
    .await
    .unwrap();
    shutdown.cancel();
    for r in replicas {
        r.await.unwrap();
    }
    let mut got: Vec<String> = env.sim.sends_for("over").into_iter().map(|s| s.body).collect();
    got.sort();
    assert_eq!(got, bodies("o", 30), "every reply exactly once");
    let stats = env.sim.stats();
    assert!(stats.rejected_429 >= 1, "the simulated limit was hit");
    let windows = stats.proxy_calls_per_window.len() as u64;
    assert!(stats.rejected_429 <= 3 * windows, "429s kept coming: {} in {windows} windows", stats.rejected_429);
    assert_eq!(env.count("select count(*) from outbox where status <> 'sent'").await, 0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_tenant_caps_hold_replies_back_until_the_cap_frees_or_their_ttl_passes_never_silently() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    env.add_tenant("capped", "capped").await.unwrap();
    env.add_tenant("free", "free").await.unwrap();
    let r = wafleet_shared::CustomerRef::parse("capped").unwrap();
    service::set_tenant_limits(&env.admin_pool, &r, 1, Some(2), Some(3)).await.unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let sender = manual_sender(&env, &clock);
    let ttl = Duration::from_secs(600);
    env.queue_replies("capped", "15550000140", &bodies("c", 5), Some(clock.get()), ttl).await;
    env.queue_replies("free", "15550000141", &bodies("f", 5), Some(clock.get()), ttl).await;

    assert_eq!(drain(&sender, &clock, 100).await, 7, "two of the capped tenant, all five of the other");
    assert_eq!(env.sim.sends_for("capped").len(), 2);
    assert_eq!(env.sim.sends_for("free").len(), 5);
    assert_eq!(statuses(&env, "capped").await.iter().filter(|s| *s == "pending").count(), 3, "held, not dropped");
    let summary = service::outbox_summary(&env.admin_pool, &BudgetConfig::default(), Some(clock.get())).await.unwrap();
    let line = summary.tenants.iter().find(|t| t.customer_ref == "capped").unwrap();
    assert_eq!(line.pending, 3);
    assert!((line.backlog_minutes - 3.0 / 110.0).abs() < 1e-9, "backlog in minutes of budget");

    clock.advance(Duration::from_secs(61));
    assert_eq!(drain(&sender, &clock, 100).await, 1, "the daily cap of 3 allows one more");
    clock.advance(Duration::from_secs(61));
    assert_eq!(drain(&sender, &clock, 100).await, 0);
    let expired_before = counter_value("wafleet_sender_sends_total", &[("outcome", "expired"), ("tenant", "capped")]);
    clock.advance(ttl);
    sender.housekeeping().await.unwrap();
    assert_eq!(statuses(&env, "capped").await, vec!["sent", "sent", "sent", "expired", "expired"]);
    let expired = counter_value("wafleet_sender_sends_total", &[("outcome", "expired"), ("tenant", "capped")]);
    assert_eq!(expired - expired_before, 2.0, "expiry is counted, never silent");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_for_a_disconnected_bridge_wait_without_spending_budget_until_it_reconnects() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    env.add_tenant("offline", "offline").await.unwrap();
    env.add_tenant("late", "late").await.unwrap();
    sqlx::query("update tenants set bridge_state = 'disconnected' where customer_ref in ('offline', 'late')")
        .execute(&env.owner_pool)
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let sender = manual_sender(&env, &clock);
    env.queue_replies("offline", "15550000150", &bodies("off", 3), Some(clock.get()), Duration::from_secs(3600)).await;
    env.queue_replies("late", "15550000151", &bodies("late", 1), Some(clock.get()), Duration::from_secs(60)).await;
    assert!(matches!(sender.step().await.unwrap(), Step::Idle(_)));
    // An idle pick rolls back, so the bucket may not even exist yet; either way it is full.
    let tokens: Option<f64> = sqlx::query_scalar(
        "select tokens from budget_buckets b join accounts a using (account_id) \
         where a.name = 'default' and b.bucket = 'proxy'",
    )
    .fetch_optional(&env.owner_pool)
    .await
    .unwrap();
    assert_eq!(tokens.unwrap_or(5.0), 5.0, "no token spent on a disconnected bridge: {tokens:?}");
    assert_eq!(env.sim.attempts_for("offline") + env.sim.attempts_for("late"), 0);

    clock.advance(Duration::from_secs(61));
    sender.housekeeping().await.unwrap();
    assert_eq!(statuses(&env, "late").await, vec!["expired"], "its TTL passed while disconnected");
    sqlx::query("update tenants set bridge_state = 'connected' where customer_ref = 'offline'")
        .execute(&env.owner_pool)
        .await
        .unwrap();
    assert_eq!(drain(&sender, &clock, 50).await, 3);
    assert_eq!(statuses(&env, "offline").await, vec!["sent", "sent", "sent"]);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_event_holds_replies_and_a_connected_event_releases_them() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant("flaky", "flaky").await.unwrap();
    let state = || async {
        sqlx::query_scalar::<_, String>("select bridge_state from tenants where customer_ref = 'flaky'")
            .fetch_one(&env.owner_pool)
            .await
            .unwrap()
    };
    assert_eq!(env.sim.fire("flaky", serde_json::json!({"event": "disconnected"}), true).await.unwrap(), 200);
    wait_until(Duration::from_secs(20), || async { state().await == "disconnected" }).await.unwrap();
    env.sim.fire_message("flaky", "15550000160", "are you there", None, true).await.unwrap();
    wait_until(Duration::from_secs(20), || async { env.count("select count(*) from outbox").await == 1 })
        .await
        .unwrap();
    assert_eq!(env.count("select count(*) from outbox where status = 'pending'").await, 1);
    assert!(env.sim.sends_for("flaky").is_empty());
    assert_eq!(
        env.sim.fire("flaky", serde_json::json!({"event": "connected", "phone": "15550000042"}), true).await.unwrap(),
        200
    );
    let sends = env.sim.wait_for_sends("flaky", 1, Duration::from_secs(20)).await;
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].body, "are you there");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_backlog_lag_and_bridge_state_are_exported_as_metrics() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let key = key_file(TEST_API_KEY);
    let account = NewAccount {
        name: "metrics_acct".into(),
        key_ref: KeyRef::File(key.clone()),
        base_url: None,
        rate_per_min: Some(60),
        burst: Some(2),
        test_account: false,
    };
    service::add_account(&env.admin_pool, &account, &test_account_policy()).await.unwrap();
    env.add_tenant_in("obs_t", "obs_t", "metrics_acct").await.unwrap();
    env.sim.add_bridge("obs_t", None, None);
    let clock = Arc::new(ManualClock::starting_now());
    let sender = manual_sender(&env, &clock);
    env.queue_replies(
        "obs_t",
        "15550000170",
        &bodies("m", 6),
        Some(clock.get() - chrono::Duration::seconds(30)),
        Duration::from_secs(3600),
    )
    .await;
    env.sim.set_fault(Some(Fault::new(429).with_retry_after(1).with_remaining(1)));
    for _ in 0..4 {
        if let Step::Wait(d) = sender.step().await.unwrap() {
            clock.advance(d);
        }
    }
    wafleet_fleet::outbox::publish_metrics(&env.admin_pool, &BudgetConfig::default()).await.unwrap();
    let tenant = [("tenant", "obs_t")];
    let acct = [("account", "metrics_acct")];
    assert!(counter_value("wafleet_sender_sends_total", &[("tenant", "obs_t"), ("outcome", "sent")]) >= 1.0);
    assert_eq!(counter_value("wafleet_sender_429_total", &acct), 1.0);
    assert!(counter_value("wafleet_budget_wait_seconds_count", &acct) >= 1.0, "limiter wait is recorded");
    assert!(metric_present("wafleet_budget_tokens", &acct));
    assert!(
        counter_value("wafleet_outbox_tenant_backlog_minutes", &tenant) > 0.0,
        "pending replies in minutes of budget"
    );
    assert!(counter_value("wafleet_outbox_backlog_minutes", &acct) > 0.0);
    assert!(counter_value("wafleet_outbox_lag_seconds", &tenant) >= 30.0, "age of the oldest pending reply");
    assert!(metric_present("wafleet_bridge_connected", &tenant));
    let _ = std::fs::remove_file(key);
    env.cleanup().await;
}

fn metric_present(name: &str, labels: &[(&str, &str)]) -> bool {
    wafleet_tests::metrics_handle()
        .render()
        .lines()
        .any(|l| l.starts_with(name) && labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
}

//! The egress budget: WA Bridges allows 300 requests a minute per client IP across all keys, so
//! accounts behind one public IP share one group budget (290 + 5 by default), fairly. Three
//! accounts at the production 110 + 5 each would make ~345 calls a minute without it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use wafleet_fleet::accounts::{KeyRef, NewAccount};
use wafleet_fleet::budget::BudgetConfig;
use wafleet_fleet::clock::ManualClock;
use wafleet_fleet::service;
use wafleet_sim::SimConfig;
use wafleet_tests::{key_file, test_account_policy, EnvOptions, TestEnv, TEST_API_KEY};
use wafleet_worker::sender::{SenderConfig, Step};

use super::{attempts, bodies, max_in_any_minute};

const ACCOUNTS: [(&str, &str); 3] = [("default", TEST_API_KEY), ("acct_b", "sk_egress_b"), ("acct_c", "sk_egress_c")];

/// Adds the two extra accounts (production budget: their own rate is the default 110 + 5) and
/// one tenant with `backlog` queued replies in each account. Returns the key files to remove.
async fn three_accounts_with_backlogs(env: &TestEnv, backlog: usize) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for (name, key) in &ACCOUNTS[1..] {
        let file = key_file(key);
        let account = NewAccount {
            name: (*name).into(),
            key_ref: KeyRef::File(file.clone()),
            base_url: None,
            rate_per_min: None,
            burst: None,
            test_account: false,
        };
        service::add_account(&env.admin_pool, &account, &test_account_policy()).await.unwrap();
        files.push(file);
    }
    for (name, key) in ACCOUNTS {
        let tenant = format!("eg_{}", name.trim_start_matches("acct_"));
        env.add_tenant_in(&tenant, &tenant, name).await.unwrap();
        let url = env.webhook_url(&tenant).await.unwrap();
        env.sim.add_bridge(&tenant, Some(&url), Some(key));
        env.queue_replies(&tenant, "15550000300", &bodies(&tenant, backlog), None, Duration::from_secs(7200)).await;
    }
    files
}

/// Asserts each account's count is within ±10 % of an equal share of `total`.
fn assert_equal_shares(per_account: &HashMap<String, usize>, total: usize) {
    let equal = total as f64 / ACCOUNTS.len() as f64;
    for (name, _) in ACCOUNTS {
        let got = per_account.get(name).copied().unwrap_or(0) as f64;
        assert!(
            (got - equal).abs() <= 0.10 * equal,
            "account {name}: {got} calls, equal share {equal:.1}: {per_account:?}"
        );
    }
}

/// Two simulated minutes on a manual clock: the group's rate holds in every minute, all of it is
/// used, and each account gets a third. Without the group, the three account buckets would let
/// 345 a minute through; without the fairness rule, the account asked first each round would
/// take its whole 115 and the last one what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_accounts_share_the_egress_group_equally_and_never_exceed_it_in_any_minute() {
    const MINUTES: i64 = 2;
    let keys = ACCOUNTS.iter().map(|(_, key)| (*key).to_owned()).collect();
    let sim = SimConfig { api_keys: keys, unlimited: true, ..SimConfig::default() };
    let env = TestEnv::with(EnvOptions { sim: Some(sim), no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let files = three_accounts_with_backlogs(&env, 600).await;
    let clock = Arc::new(ManualClock::starting_now());
    let start = clock.get();
    let sender =
        env.sender(SenderConfig { budget: BudgetConfig::default(), ..SenderConfig::default() }, Some(clock.clone()));
    while clock.get() - start < chrono::Duration::seconds(60 * MINUTES) {
        match sender.step().await.unwrap() {
            Step::Wait(d) => clock.advance(d),
            Step::Sent | Step::Skipped => {}
            Step::Idle(_) => panic!("the backlogs ran out before {MINUTES} minutes"),
        }
    }
    let rows = attempts(&env).await;
    let times: Vec<DateTime<Utc>> = rows.iter().map(|(_, at)| *at).collect();
    let busiest = max_in_any_minute(&times);
    assert!(busiest <= 295, "{busiest} calls in one minute: over the group's 290 + 5");
    let budget = 290.0 * MINUTES as f64 + 5.0;
    assert!(rows.len() as f64 >= 0.95 * budget, "{} calls of a budget of {budget}: the group was not used", rows.len());
    let mut per_account = HashMap::new();
    for (name, _) in &rows {
        *per_account.entry(name.clone()).or_insert(0) += 1;
    }
    assert_equal_shares(&per_account, rows.len());
    let shares = wafleet_fleet::budget::egress::state(&env.admin_pool).await.unwrap();
    let passes: Vec<f64> = shares.iter().filter(|s| s.group == "default").filter_map(|s| s.pass).collect();
    assert_eq!(passes.len(), ACCOUNTS.len(), "one share per account in the default group: {shares:?}");
    assert!(passes.iter().all(|p| (p - passes[0]).abs() <= 2.0), "passes drifted apart: {passes:?}");
    for file in files {
        let _ = std::fs::remove_file(file);
    }
    env.cleanup().await;
}

/// The end-to-end case in real time: three accounts with backlogs, two sender replicas,
/// production budgets, against the simulator with its documented limits (120 per key, 300 per
/// IP, a 60 s window) for 90 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_accounts_behind_one_ip_for_90_seconds_get_no_429_and_share_the_per_ip_limit() {
    let keys = ACCOUNTS.iter().map(|(_, key)| (*key).to_owned()).collect();
    let sim = SimConfig { api_keys: keys, ..SimConfig::default() };
    assert_eq!(sim.per_ip_per_window, 300, "the simulator's documented per-IP floor");
    let env = TestEnv::with(EnvOptions { sim: Some(sim), no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let files = three_accounts_with_backlogs(&env, 300).await;
    let config = SenderConfig { budget: BudgetConfig::default(), ..SenderConfig::default() };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let replicas: Vec<_> =
        (0..2).map(|_| tokio::spawn(env.sender(config.clone(), None).run(shutdown.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(90)).await;
    shutdown.cancel();
    for r in replicas {
        r.await.unwrap();
    }
    let calls = env.sim.api_calls();
    assert_eq!(env.sim.rate_limited_answers(), 0, "the simulator answered 429");
    let busiest = env.sim.max_calls_in_any(Duration::from_secs(60));
    assert!(busiest <= 300, "{busiest} calls in 60 s");
    let first = calls.first().map(|c| c.at).expect("no call reached the simulator");
    let last = calls.last().map(|c| c.at).unwrap_or(first);
    let span = (last - first).to_std().unwrap_or_default().as_secs_f64();
    let budget = 5.0 + 290.0 * span / 60.0;
    assert!(calls.len() as f64 >= 0.95 * budget, "{} calls over {span:.0} s, budget {budget:.0}", calls.len());
    let mut per_account = HashMap::new();
    for call in &calls {
        let name = ACCOUNTS.iter().find(|(_, key)| call.api_key.as_deref() == Some(*key)).map_or("?", |(name, _)| name);
        *per_account.entry(name.to_owned()).or_insert(0) += 1;
    }
    eprintln!(
        "{} calls over {span:.0} s (budget {budget:.0}), busiest 60 s: {busiest}, per account: {per_account:?}",
        calls.len()
    );
    assert_equal_shares(&per_account, calls.len());
    let sent = env.sim.all_sends();
    let mut distinct: Vec<&str> = sent.iter().map(|s| s.body.as_str()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), sent.len(), "a reply was sent twice");
    for file in files {
        let _ = std::fs::remove_file(file);
    }
    env.cleanup().await;
}

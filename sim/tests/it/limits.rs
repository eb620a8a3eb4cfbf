//! Per-key fixed-window rate limits with a compressed window. No fixed sleeps: a burst is sent
//! until the first 429 (so a window boundary inside the burst cannot flake the test), and
//! recovery is polled under an overall timeout.

use std::time::Duration;

use serde_json::json;
use wafleet_sim::SimConfig;

use crate::helpers::{start_sim, status_and_json, Api, KEY_A, KEY_B};

fn compressed(proxy: u32, provision: u32) -> SimConfig {
    SimConfig {
        window: Duration::from_secs(2),
        proxy_per_window: proxy,
        provision_per_window: provision,
        other_per_window: 50,
        ..SimConfig::default()
    }
}

/// Send until the first 429 (at most `max` tries); returns (successes before it, the 429).
async fn send_until_limited(api: &Api, bridge: &str, max: usize) -> (usize, reqwest::Response) {
    for ok in 0..max {
        let response = api.send(bridge, "15559876543", "hi").await;
        if response.status() == 429 {
            return (ok, response);
        }
        assert_eq!(response.status(), 200);
    }
    panic!("no 429 within {max} sends");
}

#[tokio::test]
async fn proxy_calls_over_the_limit_get_429_with_retry_after_until_the_window_resets() {
    let sim = start_sim(compressed(3, 10)).await;
    sim.add_bridge("cust_1", None, None);
    let api = Api::new(&sim, KEY_A);

    // Two windows' worth plus one guarantees a 429 even if the burst straddles a boundary.
    let (successes, limited) = send_until_limited(&api, "cust_1", 7).await;
    assert!(successes >= 3, "the first 3 calls of a window are allowed, got {successes}");
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(status_and_json(limited).await, (429, json!({"error": "rate limit exceeded"})));
    assert_eq!(sim.sends_for("cust_1").len(), successes);

    let recovered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if api.send("cust_1", "15559876543", "again").await.status() == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(recovered.is_ok(), "the next window never accepted a send");
    let stats = sim.stats();
    assert!(stats.rejected_429 >= 1);
    // Arrivals are counted, refused ones included.
    let arrivals: u32 = sim.proxy_calls_per_window().iter().sum();
    assert!(arrivals as usize >= successes + 2, "{arrivals}");
    assert!(sim.proxy_calls_per_window().len() >= 2);
}

#[tokio::test]
async fn each_api_key_has_its_own_proxy_budget() {
    let sim =
        start_sim(SimConfig { window: Duration::from_secs(60), proxy_per_window: 2, ..SimConfig::default() }).await;
    sim.add_bridge("cust_a", None, Some(KEY_A));
    sim.add_bridge("cust_b", None, Some(KEY_B));
    let (api_a, api_b) = (Api::new(&sim, KEY_A), Api::new(&sim, KEY_B));

    // A 60 s window cannot roll over during this test, so the counts are exact.
    let (successes, _) = send_until_limited(&api_a, "cust_a", 3).await;
    assert_eq!(successes, 2);
    assert_eq!(api_b.send("cust_b", "15559876543", "b").await.status(), 200);
    assert_eq!(api_a.send("cust_a", "15559876543", "a").await.status(), 429);
    // Status calls share the proxy bucket.
    assert_eq!(api_a.get("/api/instances/cust_a/proxy/status").await.status(), 429);
    assert_eq!(sim.proxy_calls_per_window(), vec![6]);
    assert_eq!(sim.stats().rejected_429, 3);
}

#[tokio::test]
async fn provisioning_has_its_own_smaller_bucket() {
    let sim = start_sim(SimConfig { provision_per_window: 2, ..SimConfig::default() }).await;
    let api = Api::new(&sim, KEY_A);
    for n in 0..2 {
        let response = api.post("/api/instances", json!({"customer_ref": format!("cust_{n}")})).await;
        assert_eq!(response.status(), 200);
    }
    let limited = api.post("/api/instances", json!({"customer_ref": "cust_9"})).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    // The "other" and proxy buckets are untouched.
    assert_eq!(api.get("/api/instances").await.status(), 200);
    assert_eq!(api.send("cust_0", "15559876543", "hi").await.status(), 200);
    assert_eq!(sim.bridges().len(), 2);
}

#[tokio::test]
async fn unlimited_config_never_answers_429_but_still_counts_calls() {
    let sim = start_sim(SimConfig { unlimited: true, proxy_per_window: 1, ..SimConfig::default() }).await;
    sim.add_bridge("cust_1", None, None);
    let api = Api::new(&sim, KEY_A);
    for _ in 0..20 {
        assert_eq!(api.send("cust_1", "15559876543", "hi").await.status(), 200);
    }
    assert_eq!(sim.proxy_calls_per_window(), vec![20]);
    assert_eq!(sim.stats().rejected_429, 0);
}

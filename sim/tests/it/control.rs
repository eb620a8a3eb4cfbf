//! The `/_sim` control API and the library's inspection helpers (`wait_for_sends`, stats,
//! shutdown).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wafleet_sim::RecordedSend;

use crate::helpers::{default_sim, Api, KEY_A, KEY_B};

#[tokio::test]
async fn control_api_registers_bridges_and_exposes_their_sends() {
    let sim = default_sim().await;
    let http = reqwest::Client::new();
    let base = sim.base_url();

    let created: Value = http
        .post(format!("{base}/_sim/bridges"))
        .json(&json!({"customer_ref": "cust_b", "api_key": KEY_B, "status": "disconnected"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((created["api_key"].as_str(), created["status"].as_str()), (Some(KEY_B), Some("disconnected")));
    let defaulted: Value = http
        .post(format!("{base}/_sim/bridges"))
        .json(&json!({"customer_ref": "cust_a"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(defaulted["api_key"], KEY_A);
    let listed: Vec<Value> = http.get(format!("{base}/_sim/bridges")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.len(), 2);

    Api::new(&sim, KEY_A).send("cust_a", "15559876543", "one").await;
    let per_bridge: Vec<RecordedSend> =
        http.get(format!("{base}/_sim/bridges/cust_a/sends")).send().await.unwrap().json().await.unwrap();
    assert_eq!(per_bridge.len(), 1);
    assert_eq!(per_bridge[0].body, "one");
    let other: Vec<RecordedSend> =
        http.get(format!("{base}/_sim/bridges/cust_b/sends")).send().await.unwrap().json().await.unwrap();
    assert!(other.is_empty());
    let all: Vec<RecordedSend> = http.get(format!("{base}/_sim/sends")).send().await.unwrap().json().await.unwrap();
    assert_eq!(all, per_bridge);

    assert_eq!(http.delete(format!("{base}/_sim/sends")).send().await.unwrap().status(), 204);
    assert!(sim.all_sends().is_empty());
}

#[tokio::test]
async fn stats_endpoint_reports_proxy_calls_per_window() {
    let sim = default_sim().await;
    sim.add_bridge("cust_1", None, None);
    let api = Api::new(&sim, KEY_A);
    for _ in 0..3 {
        api.send("cust_1", "15559876543", "hi").await;
    }
    let stats: Value = reqwest::get(format!("{}/_sim/stats", sim.base_url())).await.unwrap().json().await.unwrap();
    assert_eq!(stats["proxy_calls_per_window"], json!([3]));
    assert_eq!(stats["rejected_429"], 0);
    assert_eq!(stats["sends"], 3);
    assert_eq!(stats["window_secs"], 60.0);
}

#[tokio::test]
async fn wait_for_sends_returns_as_soon_as_enough_sends_arrive() {
    let sim = default_sim().await;
    sim.add_bridge("cust_1", None, None);
    let api = Api::new(&sim, KEY_A);
    tokio::spawn(async move {
        for body in ["a", "b"] {
            api.send("cust_1", "15559876543", body).await;
        }
    });
    let started = Instant::now();
    let sends = sim.wait_for_sends("cust_1", 2, Duration::from_secs(30)).await;
    assert_eq!(sends.len(), 2);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn wait_for_sends_returns_what_it_has_at_the_timeout() {
    let sim = default_sim().await;
    sim.add_bridge("cust_1", None, None);
    Api::new(&sim, KEY_A).send("cust_1", "15559876543", "only one").await;
    let sends = sim.wait_for_sends("cust_1", 2, Duration::from_millis(200)).await;
    assert_eq!(sends.len(), 1);
    assert!(sim.wait_for_sends("cust_other", 1, Duration::from_millis(50)).await.is_empty());
}

#[tokio::test]
async fn shutdown_stops_the_server_task() {
    let (sim, server) =
        wafleet_sim::Simulator::start(Default::default(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    sim.shutdown();
    tokio::time::timeout(Duration::from_secs(5), server).await.expect("server did not stop").unwrap();
}

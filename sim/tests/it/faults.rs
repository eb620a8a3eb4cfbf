//! Injected faults on sends and status calls: count-limited errors, lost responses, delays and
//! per-bridge scoping, through both the library and the `/_sim/fault` control API.

use std::time::{Duration, Instant};

use serde_json::json;
use wafleet_sim::Fault;

use crate::helpers::{default_sim, status_and_json, Api, KEY_A};

#[tokio::test]
async fn count_limited_503_fault_fails_that_many_sends_then_recovers() {
    let sim = default_sim().await;
    sim.add_bridge("cust_1", None, None);
    sim.set_fault(Some(Fault::new(503).with_remaining(2).with_retry_after(1)));
    let api = Api::new(&sim, KEY_A);

    for _ in 0..2 {
        let response = api.send("cust_1", "15559876543", "hi").await;
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
    }
    assert!(sim.sends_for("cust_1").is_empty(), "faulted sends are not recorded");
    assert_eq!(api.send("cust_1", "15559876543", "hi").await.status(), 200);
    assert_eq!(sim.sends_for("cust_1").len(), 1);
    assert_eq!(sim.attempts_for("cust_1"), 3);
    assert_eq!(sim.stats().faulted, 2);
}

#[tokio::test]
async fn record_then_fail_records_the_send_but_answers_502() {
    let sim = default_sim().await;
    sim.add_bridge("cust_1", None, None);
    sim.set_fault(Some(Fault::new(502).with_record_then_fail().with_remaining(1)));
    let api = Api::new(&sim, KEY_A);

    let (status, body) = status_and_json(api.send("cust_1", "15559876543", "lost answer").await).await;
    assert_eq!(status, 502);
    assert!(body["error"].is_string());
    let sends = sim.sends_for("cust_1");
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].body, "lost answer");
    assert_eq!(sim.attempts_for("cust_1"), 1);
}

#[tokio::test]
async fn injected_429_without_retry_after_has_no_header_and_is_not_a_real_limit() {
    let sim = default_sim().await;
    sim.add_bridge("cust_1", None, None);
    sim.set_fault(Some(Fault::new(429).with_remaining(1)));
    let api = Api::new(&sim, KEY_A);

    let response = api.send("cust_1", "15559876543", "hi").await;
    assert!(response.headers().get("retry-after").is_none());
    assert_eq!(status_and_json(response).await, (429, json!({"error": "rate limit exceeded"})));
    assert_eq!(sim.stats().rejected_429, 0);
    assert_eq!(sim.stats().faulted, 1);
}

#[tokio::test]
async fn delay_only_fault_answers_normally_after_the_delay() {
    let sim = default_sim().await;
    sim.add_bridge("cust_1", None, None);
    sim.set_fault(Some(Fault::delay_only(300).with_remaining(1)));
    let api = Api::new(&sim, KEY_A);

    let started = Instant::now();
    assert_eq!(api.send("cust_1", "15559876543", "slow").await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(sim.sends_for("cust_1").len(), 1);
    assert_eq!(sim.stats().faulted, 0);
}

#[tokio::test]
async fn fault_set_via_the_control_api_hits_status_calls_until_cleared() {
    let sim = default_sim().await;
    sim.add_bridge("cust_1", None, None);
    let api = Api::new(&sim, KEY_A);
    let control = reqwest::Client::new();
    let fault_url = format!("{}/_sim/fault", sim.base_url());

    let set = control.post(&fault_url).json(&json!({"status": 500})).send().await.unwrap();
    assert_eq!(set.status(), 200);
    for _ in 0..3 {
        assert_eq!(api.get("/api/instances/cust_1/proxy/status").await.status(), 500);
    }
    assert_eq!(control.delete(&fault_url).send().await.unwrap().status(), 204);
    assert_eq!(api.get("/api/instances/cust_1/proxy/status").await.status(), 200);

    let invalid = control.post(&fault_url).json(&json!({"status": 42})).send().await.unwrap();
    assert_eq!(invalid.status(), 400);
}

#[tokio::test]
async fn bridge_fault_only_affects_that_bridge() {
    let sim = default_sim().await;
    sim.add_bridge("cust_1", None, None);
    sim.add_bridge("cust_2", None, None);
    let control = reqwest::Client::new();
    let url = format!("{}/_sim/bridges/cust_1/fault", sim.base_url());
    assert_eq!(control.post(&url).json(&json!({"status": 503})).send().await.unwrap().status(), 200);
    let api = Api::new(&sim, KEY_A);

    assert_eq!(api.send("cust_1", "15559876543", "x").await.status(), 503);
    assert_eq!(api.send("cust_2", "15559876543", "y").await.status(), 200);
    assert_eq!(control.delete(&url).send().await.unwrap().status(), 204);
    assert_eq!(api.send("cust_1", "15559876543", "z").await.status(), 200);
    assert_eq!(sim.sends_for("cust_1").len(), 1);
    assert_eq!(sim.sends_for("cust_2").len(), 1);
}

//! Points the reference leaves open, each a setting tested in both directions: fixed or sliding
//! rate-limit windows (§3 "per minute") and whether webhook events carry a top-level
//! `customer_ref` (§12.1). The window tests wait for a real window boundary, which the simulator
//! itself reports through `proxy_calls_per_window`, and assert where each burst landed, so a slow
//! machine fails loudly instead of testing something else.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::{sleep, sleep_until, Instant};
use wafleet_sim::{Inbound, SimConfig, Simulator, WebhookRef, WindowKind};

use crate::helpers::{start_sim, Api, Receiver, KEY_A};

/// The tight limit of the window tests.
const N: u32 = 3;
const WINDOW: Duration = Duration::from_secs(2);

/// Which limit a boundary test makes tight; the other stays far above the traffic.
#[derive(Clone, Copy, Debug)]
enum Tight {
    KeyBucket,
    IpFloor,
}

fn window_config(kind: WindowKind, tight: Tight) -> SimConfig {
    let (proxy, ip) = match tight {
        Tight::KeyBucket => (N, 10_000),
        Tight::IpFloor => (10_000, N),
    };
    SimConfig {
        window: WINDOW,
        window_kind: kind,
        proxy_per_window: proxy,
        per_ip_per_window: ip,
        ..SimConfig::default()
    }
}

/// `N` sends in a row: each answer's status and `Retry-After`.
async fn burst(api: &Api) -> Vec<(u16, Option<u64>)> {
    let mut answers = Vec::new();
    for _ in 0..N {
        let response = api.send("cust_1", "15559876543", "hi").await;
        let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().parse().unwrap());
        answers.push((response.status().as_u16(), retry_after));
    }
    answers
}

/// A burst of `N` shortly before the first window boundary and another right after it.
async fn boundary_bursts(kind: WindowKind, tight: Tight) -> (Vec<(u16, Option<u64>)>, Vec<(u16, Option<u64>)>) {
    // The simulator's epoch is taken inside `start`, so this instant plus the window, less a
    // margin, is still inside its first window.
    let before = Instant::now();
    let sim = start_sim(window_config(kind, tight)).await;
    sim.add_bridge("cust_1", None, None);
    let api = Api::new(&sim, KEY_A);
    sleep_until(before + WINDOW - Duration::from_millis(400)).await;
    let first = burst(&api).await;
    // Wait for the boundary as the simulator counts it, without spending a call.
    while sim.proxy_calls_per_window().len() < 2 {
        sleep(Duration::from_millis(2)).await;
    }
    let second = burst(&api).await;
    // Each burst arrived whole on its own side of the boundary (refused calls count as arrived).
    assert_eq!(sim.proxy_calls_per_window()[..2], [N, N], "{kind:?} {tight:?}: a burst straddled the boundary");
    (first, second)
}

async fn assert_fixed_admits_both_bursts(tight: Tight) {
    let (first, second) = boundary_bursts(WindowKind::Fixed, tight).await;
    assert!(first.iter().chain(&second).all(|(status, _)| *status == 200), "{tight:?}: {first:?} {second:?}");
}

async fn assert_sliding_refuses_the_second_burst(tight: Tight) {
    let (first, second) = boundary_bursts(WindowKind::Sliding, tight).await;
    assert!(first.iter().all(|(status, _)| *status == 200), "{tight:?}: {first:?}");
    for (status, retry_after) in second {
        assert_eq!(status, 429, "{tight:?}");
        // The oldest call (≈1.6 s) leaves the 2 s window ≈1.6 s after the second burst.
        let retry_after = retry_after.expect("a 429 names Retry-After");
        assert!((1..=2).contains(&retry_after), "{tight:?}: Retry-After {retry_after}");
    }
}

#[tokio::test]
async fn fixed_windows_admit_a_full_burst_at_the_end_of_one_window_and_another_at_the_start_of_the_next() {
    assert_fixed_admits_both_bursts(Tight::KeyBucket).await;
}

#[tokio::test]
async fn fixed_windows_let_the_ip_floor_admit_a_full_burst_on_each_side_of_a_boundary() {
    assert_fixed_admits_both_bursts(Tight::IpFloor).await;
}

#[tokio::test]
async fn a_sliding_window_refuses_the_second_burst_with_retry_after_until_the_oldest_call_leaves() {
    assert_sliding_refuses_the_second_burst(Tight::KeyBucket).await;
}

#[tokio::test]
async fn a_sliding_window_makes_the_ip_floor_refuse_the_second_burst_too() {
    assert_sliding_refuses_the_second_burst(Tight::IpFloor).await;
}

#[tokio::test]
async fn a_sliding_window_admits_calls_spaced_so_no_window_holds_more_than_the_limit() {
    let window = Duration::from_secs(1);
    let limit = 2;
    let config = SimConfig {
        window,
        window_kind: WindowKind::Sliding,
        proxy_per_window: limit,
        per_ip_per_window: limit,
        ..SimConfig::default()
    };
    let sim = start_sim(config).await;
    sim.add_bridge("cust_1", None, None);
    let api = Api::new(&sim, KEY_A);
    // Each call leaves 700 ms after the previous answer, so calls two apart are over 1.4 s apart
    // and no 1 s span holds more than 2, across several fixed-window boundaries.
    for n in 0..6 {
        if n > 0 {
            sleep(Duration::from_millis(700)).await;
        }
        assert_eq!(api.send("cust_1", "15559876543", "spaced").await.status(), 200, "call {n}");
    }
    assert_eq!(sim.max_calls_in_any(window), 2);
    // The limit was tight all along: a third call within the last window is refused.
    assert_eq!(api.send("cust_1", "15559876543", "one too many").await.status(), 429);
    assert_eq!(sim.sends_for("cust_1").len(), 6);
}

/// Every kind of event the simulator posts, in order, from a simulator with `setting`: fired
/// `connected` (tagged) and `disconnected` (caller-supplied `customer_ref`, untagged), a fired
/// message, an inbound group image, a message fired through the control API and the `from_me`
/// echo of a send. `timestamp` and the random `message_id`s are dropped so runs compare.
async fn posted_events(setting: WebhookRef) -> Vec<Value> {
    let sim = start_sim(SimConfig { echo_from_me: true, webhook_customer_ref: setting, ..SimConfig::default() }).await;
    let mut receiver = Receiver::start().await;
    sim.add_bridge("cust_1", Some(&receiver.url("/wa/cust_1/secret")), None);
    let mut events = Vec::new();

    sim.fire("cust_1", json!({"event": "connected", "phone": "15550000042"}), true).await.unwrap();
    events.push(receiver.next().await.body);
    sim.fire("cust_1", json!({"event": "disconnected", "customer_ref": "cust_1"}), false).await.unwrap();
    events.push(receiver.next().await.body);
    sim.fire_message("cust_1", "447700900123", "Is the shop open?", Some("MID-1"), true).await.unwrap();
    events.push(receiver.next().await.body);
    let image =
        Inbound::media("x", "image", "image/jpeg", "a caption").in_group("120363000000000001@g.us", "15550001111");
    sim.fire_inbound("cust_1", &image, true).await.unwrap();
    events.push(without(receiver.next().await.body, "message_id"));
    fire_message_through_control_api(&sim).await;
    events.push(receiver.next().await.body);
    let api = Api::new(&sim, KEY_A);
    let answer: Value = api.send("cust_1", "15559876543", "echo me").await.json().await.unwrap();
    let echo = receiver.next().await.body;
    assert_eq!(echo["message_id"], answer["message_id"]);
    events.push(without(echo, "message_id"));
    events.into_iter().map(|event| without(event, "timestamp")).collect()
}

async fn fire_message_through_control_api(sim: &Simulator) {
    let url = format!("{}/_sim/bridges/cust_1/fire-message", sim.base_url());
    let body = json!({"chat": "15559876543", "body": "hi", "message_id": "MID-2"});
    let answer = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
    assert_eq!(answer.status(), 200);
}

fn without(mut event: Value, key: &str) -> Value {
    event.as_object_mut().expect("events are objects").remove(key);
    event
}

#[tokio::test]
async fn by_default_every_posted_event_carries_the_bridges_customer_ref_at_the_top_level() {
    let events = posted_events(WebhookRef::Include).await;
    assert_eq!(events.len(), 6);
    for event in &events {
        assert_eq!(event["customer_ref"], "cust_1", "{event}");
    }
    assert_eq!(events[0], json!({"event": "connected", "phone": "15550000042", "customer_ref": "cust_1"}));
}

#[tokio::test]
async fn omit_posts_every_event_without_customer_ref_and_otherwise_unchanged() {
    let included = posted_events(WebhookRef::Include).await;
    let omitted = posted_events(WebhookRef::Omit).await;
    for event in &omitted {
        assert!(event.get("customer_ref").is_none(), "{event}");
    }
    let expected: Vec<Value> = included.into_iter().map(|event| without(event, "customer_ref")).collect();
    assert_eq!(omitted, expected);
    assert_eq!(omitted[1], json!({"event": "disconnected"}), "even a caller-supplied customer_ref is removed");
    assert_eq!((omitted[5]["from_me"].as_bool(), omitted[5]["body"].as_str()), (Some(true), Some("echo me")));
}

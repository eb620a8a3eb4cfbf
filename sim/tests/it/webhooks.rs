//! Firing inbound events at a webhook receiver and the optional `from_me` echo of sends.

use std::sync::atomic::Ordering;

use serde_json::json;
use wafleet_sim::SimConfig;

use crate::helpers::{default_sim, start_sim, Api, Receiver, KEY_A};

#[tokio::test]
async fn fire_posts_the_event_as_json_with_customer_ref_added() {
    let sim = default_sim().await;
    let mut receiver = Receiver::start().await;
    sim.add_bridge("cust_1", Some(&receiver.url("/wa/cust_1/secret")), None);

    let status = sim.fire("cust_1", json!({"event": "connected", "phone": "15550000042"}), true).await.unwrap();
    assert_eq!(status, 200);
    let got = receiver.next().await;
    assert_eq!(got.path, "/wa/cust_1/secret");
    assert_eq!(got.content_type.as_deref(), Some("application/json"));
    assert_eq!(got.body, json!({"event": "connected", "phone": "15550000042", "customer_ref": "cust_1"}));
}

#[tokio::test]
async fn fire_without_customer_ref_sends_the_event_untouched() {
    let sim = default_sim().await;
    let mut receiver = Receiver::start().await;
    sim.add_bridge("cust_1", Some(&receiver.url("/hook")), None);

    sim.fire("cust_1", json!({"event": "disconnected"}), false).await.unwrap();
    assert_eq!(receiver.next().await.body, json!({"event": "disconnected"}));
}

#[tokio::test]
async fn fire_reports_the_status_the_receiver_answered() {
    let sim = default_sim().await;
    let mut receiver = Receiver::start().await;
    receiver.status.store(503, Ordering::SeqCst);
    sim.add_bridge("cust_1", Some(&receiver.url("/hook")), None);

    assert_eq!(sim.fire("cust_1", json!({"event": "disconnected"}), true).await.unwrap(), 503);
    receiver.next().await;
}

#[tokio::test]
async fn fire_message_builds_a_documented_message_event() {
    let sim = default_sim().await;
    let mut receiver = Receiver::start().await;
    sim.add_bridge("cust_1", Some(&receiver.url("/hook")), None);

    let status = sim.fire_message("cust_1", "447700900123", "Is the shop open?", Some("MID-1"), true).await.unwrap();
    assert_eq!(status, 200);
    let event = receiver.next().await.body;
    assert_eq!(event["event"], "message");
    assert_eq!(event["message_id"], "MID-1");
    assert_eq!(event["contact_id"], "447700900123@s.whatsapp.net");
    assert_eq!(event["chat_id"], "447700900123@s.whatsapp.net");
    assert_eq!(event["phone"], "447700900123");
    assert_eq!(event["body"], "Is the shop open?");
    assert_eq!((event["type"].as_str(), event["media_type"].as_str()), (Some("text"), Some("")));
    assert_eq!((event["is_group"].as_bool(), event["from_me"].as_bool()), (Some(false), Some(false)));
    assert!(event["timestamp"].is_i64() && event["name"].is_string());
    assert_eq!(event["customer_ref"], "cust_1");
}

#[tokio::test]
async fn control_api_fires_messages_with_random_ids_and_can_omit_customer_ref() {
    let sim = default_sim().await;
    let mut receiver = Receiver::start().await;
    sim.add_bridge("cust_1", Some(&receiver.url("/hook")), None);
    let http = reqwest::Client::new();
    let url = format!("{}/_sim/bridges/cust_1/fire-message", sim.base_url());

    let answer: serde_json::Value = http
        .post(&url)
        .json(&json!({"chat": "15559876543", "body": "hi", "include_customer_ref": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], 200);
    let first = receiver.next().await.body;
    assert!(first.get("customer_ref").is_none());
    assert_eq!(first["message_id"], answer["message_id"]);

    http.post(&url).json(&json!({"chat": "15559876543", "body": "hi"})).send().await.unwrap();
    let second = receiver.next().await.body;
    assert_eq!(second["customer_ref"], "cust_1");
    assert_ne!(first["message_id"], second["message_id"]);

    let fire_url = format!("{}/_sim/bridges/cust_1/fire", sim.base_url());
    let fired = http.post(&fire_url).json(&json!({"event": {"event": "typing"}})).send().await.unwrap();
    assert_eq!(fired.json::<serde_json::Value>().await.unwrap(), json!({"status": 200}));
    assert_eq!(receiver.next().await.body, json!({"event": "typing", "customer_ref": "cust_1"}));
}

#[tokio::test]
async fn firing_at_a_bridge_without_webhook_or_an_unknown_bridge_fails() {
    let sim = default_sim().await;
    sim.add_bridge("cust_1", None, None);
    assert!(sim.fire("cust_1", json!({"event": "disconnected"}), true).await.is_err());
    assert!(sim.fire("ghost", json!({"event": "disconnected"}), true).await.is_err());

    let http = reqwest::Client::new();
    let url = format!("{}/_sim/bridges/cust_1/fire", sim.base_url());
    let response = http.post(&url).json(&json!({"event": {"event": "x"}})).send().await.unwrap();
    assert_eq!(response.status(), 409);
    let not_object = format!("{}/_sim/bridges/ghost/fire", sim.base_url());
    assert_eq!(http.post(&not_object).json(&json!({"event": {}})).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn echo_from_me_posts_the_sent_message_back_to_the_webhook() {
    let sim = start_sim(SimConfig { echo_from_me: true, ..SimConfig::default() }).await;
    let mut receiver = Receiver::start().await;
    sim.add_bridge("cust_1", Some(&receiver.url("/hook")), None);
    let api = Api::new(&sim, KEY_A);

    let answer: serde_json::Value = api.send("cust_1", "15559876543", "echo me").await.json().await.unwrap();
    let echo = receiver.next().await.body;
    assert_eq!(echo["event"], "message");
    assert_eq!(echo["from_me"], true);
    assert_eq!(echo["chat_id"], "15559876543@s.whatsapp.net");
    assert_eq!(echo["body"], "echo me");
    assert_eq!(echo["message_id"], answer["message_id"]);
    assert_eq!(echo["customer_ref"], "cust_1");
}

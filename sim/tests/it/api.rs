//! The simulated WA Bridges API: auth, sends, bridge isolation, provisioning and instance CRUD.

use serde_json::json;

use crate::helpers::{default_sim, status_and_json, Api, KEY_A, KEY_B};

#[tokio::test]
async fn request_without_a_configured_key_is_unauthorized() {
    let sim = default_sim().await;
    sim.add_bridge("cust_1", None, None);
    let http = reqwest::Client::new();
    let url = format!("{}/api/instances/cust_1/proxy/send/text", sim.base_url());
    let body = json!({"chat": "15559876543", "body": "hi"});

    let missing = http.post(&url).json(&body).send().await.unwrap();
    let wrong = http.post(&url).bearer_auth("sk_not_configured").json(&body).send().await.unwrap();
    let basic = http.post(&url).header("authorization", format!("Basic {KEY_A}")).json(&body).send().await.unwrap();
    for response in [missing, wrong, basic] {
        assert_eq!(status_and_json(response).await, (401, json!({"error": "unauthorized"})));
    }
    let list = reqwest::get(format!("{}/api/instances", sim.base_url())).await.unwrap();
    assert_eq!(list.status(), 401);
    assert!(sim.all_sends().is_empty());
}

#[tokio::test]
async fn send_for_one_bridge_is_never_recorded_on_another() {
    let sim = default_sim().await;
    sim.add_bridge("cust_1", None, None);
    sim.add_bridge("cust_2", None, None);
    let api = Api::new(&sim, KEY_A);

    let (status, body) = status_and_json(api.send("cust_1", "15559876543", "hello one").await).await;
    assert_eq!(status, 200);

    let sends = sim.sends_for("cust_1");
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].chat, "15559876543");
    assert_eq!(sends[0].body, "hello one");
    assert_eq!(sends[0].api_key, KEY_A);
    assert_eq!(sends[0].message_id, body["message_id"]);
    assert!(sim.sends_for("cust_2").is_empty());
    assert_eq!(sim.all_sends(), sends);
}

#[tokio::test]
async fn send_answers_a_unique_sim_message_id_and_unix_timestamp() {
    let sim = default_sim().await;
    sim.add_bridge("cust_1", None, None);
    let api = Api::new(&sim, KEY_A);

    let (_, first) = status_and_json(api.send("cust_1", "15559876543", "a").await).await;
    let (_, second) = status_and_json(api.send("cust_1", "15559876543", "b").await).await;
    let id = first["message_id"].as_str().unwrap();
    assert!(id.starts_with("SIM") && id[3..].chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_ne!(first["message_id"], second["message_id"]);
    let now = chrono::Utc::now().timestamp();
    assert!((now - first["timestamp"].as_i64().unwrap()).abs() <= 5);
}

#[tokio::test]
async fn send_to_an_unknown_bridge_is_not_found() {
    let sim = default_sim().await;
    let api = Api::new(&sim, KEY_A);
    let (status, body) = status_and_json(api.send("nope", "15559876543", "hi").await).await;
    assert_eq!((status, body), (404, json!({"error": "instance not found"})));
    assert!(sim.all_sends().is_empty());
}

#[tokio::test]
async fn send_on_another_accounts_bridge_is_forbidden_and_recorded_as_rejected() {
    let sim = default_sim().await;
    sim.add_bridge("cust_b", None, Some(KEY_B));
    let api = Api::new(&sim, KEY_A);

    let (status, body) = status_and_json(api.send("cust_b", "15559876543", "hi").await).await;
    assert_eq!((status, body), (403, json!({"error": "forbidden"})));
    let status_call = api.get("/api/instances/cust_b/proxy/status").await;
    assert_eq!(status_call.status(), 403);

    assert!(sim.sends_for("cust_b").is_empty());
    let rejected = sim.rejected_attempts();
    assert_eq!(rejected.len(), 2);
    assert!(rejected.iter().all(|r| r.bridge == "cust_b" && r.api_key == KEY_A));
    assert_eq!(rejected[0].endpoint, "send/text");
    assert_eq!(rejected[1].endpoint, "status");
}

#[tokio::test]
async fn percent_encoded_bridge_key_in_the_path_is_decoded() {
    let sim = default_sim().await;
    sim.add_bridge("tenant a/1", None, None);
    let api = Api::new(&sim, KEY_A);
    let response = api.send("tenant%20a%2F1", "15559876543", "hi").await;
    assert_eq!(response.status(), 200);
    assert_eq!(sim.sends_for("tenant a/1").len(), 1);
    let status = api.get("/api/instances/tenant%20a%2F1/proxy/status").await;
    assert_eq!(status.status(), 200);
}

#[tokio::test]
async fn send_with_missing_or_invalid_chat_or_body_is_a_bad_request() {
    let sim = default_sim().await;
    sim.add_bridge("cust_1", None, None);
    let api = Api::new(&sim, KEY_A);
    let path = "/api/instances/cust_1/proxy/send/text";
    for bad in [
        json!({"body": "hi"}),
        json!({"chat": "15559876543"}),
        json!({"chat": "+15559876543", "body": "hi"}),
        json!({"chat": "15559876543", "body": ""}),
        json!({"chat": 15559876543_u64, "body": "hi"}),
    ] {
        let (status, body) = status_and_json(api.post(path, bad.clone()).await).await;
        assert_eq!(status, 400, "{bad}");
        assert!(body["error"].is_string(), "{body}");
    }
    let raw = api.http.post(api.url(path)).bearer_auth(KEY_A).body("not json").send().await.unwrap();
    assert_eq!(raw.status(), 400);
    assert!(sim.all_sends().is_empty());
}

#[tokio::test]
async fn status_reports_phone_and_name_only_while_connected() {
    let sim = default_sim().await;
    sim.add_bridge("cust_1", None, None);
    let api = Api::new(&sim, KEY_A);

    let (status, body) = status_and_json(api.get("/api/instances/cust_1/proxy/status").await).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "connected");
    let phone = body["phone"].as_str().unwrap();
    assert!(phone.starts_with("1555000") && phone.len() == 11);
    assert_eq!(body["jid"], format!("{phone}@s.whatsapp.net"));
    assert!(body["name"].is_string());

    sim.set_bridge_status("cust_1", "disconnected");
    let (_, body) = status_and_json(api.get("/api/instances/cust_1/proxy/status").await).await;
    assert_eq!(body, json!({"status": "disconnected"}));
}

#[tokio::test]
async fn provisioning_is_idempotent_on_customer_ref() {
    let sim = default_sim().await;
    let api = Api::new(&sim, KEY_A);
    let request = json!({"customer_ref": "cust_1", "webhook_url": "http://127.0.0.1:1/hook"});

    let (status, first) = status_and_json(api.post("/api/instances", request.clone()).await).await;
    assert_eq!(status, 200);
    assert_eq!(first["customer_ref"], "cust_1");
    assert_eq!(first["state"], "running");
    assert!(first["id"].is_i64());
    let (status, again) = status_and_json(api.post("/api/instances", request).await).await;
    assert_eq!((status, &again), (200, &first));
    assert_eq!(sim.bridges().len(), 1);
    assert_eq!(sim.bridges()[0].webhook_url.as_deref(), Some("http://127.0.0.1:1/hook"));
}

#[tokio::test]
async fn provisioning_a_ref_taken_by_another_account_conflicts() {
    let sim = default_sim().await;
    sim.add_bridge("cust_1", None, Some(KEY_A));
    let api_b = Api::new(&sim, KEY_B);
    let (status, body) = status_and_json(api_b.post("/api/instances", json!({"customer_ref": "cust_1"})).await).await;
    assert_eq!((status, body), (409, json!({"error": "customer_ref taken"})));
    assert_eq!(sim.bridges()[0].api_key, KEY_A);
}

#[tokio::test]
async fn provisioning_without_customer_ref_is_a_bad_request() {
    let sim = default_sim().await;
    let api = Api::new(&sim, KEY_A);
    assert_eq!(api.post("/api/instances", json!({"webhook_url": "http://h/x"})).await.status(), 400);
    assert_eq!(api.post("/api/instances", json!({"customer_ref": ""})).await.status(), 400);
    assert_eq!(api.post("/api/instances", json!({"customer_ref": "c", "webhook_url": "ftp://x"})).await.status(), 400);
    assert!(sim.bridges().is_empty());
}

#[tokio::test]
async fn listing_and_getting_instances_only_shows_the_callers_bridges() {
    let sim = default_sim().await;
    let a = sim.add_bridge("cust_a", None, Some(KEY_A));
    sim.add_bridge("cust_b", None, Some(KEY_B));
    let api = Api::new(&sim, KEY_A);

    let (status, list) = status_and_json(api.get("/api/instances").await).await;
    assert_eq!(status, 200);
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["customer_ref"], "cust_a");
    assert_eq!(list[0]["state"], "running");
    assert!(list[0]["created_at"].is_string());

    for key in [a.id.to_string(), "cust_a".to_owned()] {
        let (status, one) = status_and_json(api.get(&format!("/api/instances/{key}")).await).await;
        assert_eq!(status, 200);
        assert_eq!(one["id"], a.id);
        assert_eq!(one["manager"]["health"], "ok");
        assert_eq!(one["manager"]["fail_count"], 0);
        assert!(one["manager"]["started_at"].is_string());
    }
    let (status, body) = status_and_json(api.get("/api/instances/cust_b").await).await;
    assert_eq!((status, body), (404, json!({"error": "instance not found"})));
}

#[tokio::test]
async fn deleting_an_instance_removes_it_for_good() {
    let sim = default_sim().await;
    sim.add_bridge("cust_1", None, None);
    sim.add_bridge("cust_b", None, Some(KEY_B));
    let api = Api::new(&sim, KEY_A);

    assert_eq!(api.delete("/api/instances/cust_b").await.status(), 404);
    assert_eq!(api.delete("/api/instances/cust_1").await.status(), 204);
    assert_eq!(api.get("/api/instances/cust_1").await.status(), 404);
    assert_eq!(api.send("cust_1", "15559876543", "hi").await.status(), 404);
    assert_eq!(sim.bridges().len(), 1);
}

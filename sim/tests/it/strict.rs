//! Where the reference is strict, the simulator is too: the per-IP floor over all `/api/*` calls
//! and keys, the API call log tests read, the 10 s webhook timeout and the `error_statuses`
//! setting for the statuses the reference never documents.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use wafleet_sim::{Bucket, ErrorStatuses, Fault, SimConfig, Simulator};

use crate::helpers::{start_sim, status_and_json, Api, KEY_A, KEY_B};

const CLIENT_HEADER: &str = "x-client-ip";

/// Per-key limits far above the floor, so only the floor can refuse; the default floor of 300.
fn floor_only(window: Duration) -> SimConfig {
    SimConfig {
        window,
        proxy_per_window: 10_000,
        other_per_window: 10_000,
        client_ip_header: Some(CLIENT_HEADER.into()),
        ..SimConfig::default()
    }
}

/// `GET /api/instances` with `key`, naming the client `ip` through the header when given.
async fn list(api: &Api, key: &str, ip: Option<&str>) -> reqwest::Response {
    let mut request = api.http.get(api.url("/api/instances")).bearer_auth(key);
    if let Some(ip) = ip {
        request = request.header(CLIENT_HEADER, ip);
    }
    request.send().await.unwrap()
}

/// Alternate keys A and B from `ip` until the first 429 (at most `max` calls); returns the
/// successes before it and the 429.
async fn list_until_limited(api: &Api, ip: Option<&str>, max: usize) -> (usize, reqwest::Response) {
    for ok in 0..max {
        let response = list(api, if ok % 2 == 0 { KEY_A } else { KEY_B }, ip).await;
        if response.status() == 429 {
            return (ok, response);
        }
        assert_eq!(response.status(), 200, "call {ok}");
    }
    panic!("no 429 within {max} calls");
}

async fn assert_documented_429(response: reqwest::Response, window_secs: u64) {
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=window_secs).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(status_and_json(response).await, (429, json!({"error": "rate limit exceeded"})));
}

#[tokio::test]
async fn the_ip_floor_refuses_the_301st_call_of_a_window_across_two_keys_and_admits_again_next_window() {
    let window = Duration::from_secs(3);
    let sim = start_sim(SimConfig { client_ip_header: None, ..floor_only(window) }).await;
    let api = Api::new(&sim, KEY_A);

    // The burst may straddle a window boundary, so at least 300 pass before the first 429.
    let (successes, limited) = list_until_limited(&api, None, 1000).await;
    assert!(successes >= 300, "only {successes} calls before the floor");
    assert_documented_429(limited, 3).await;

    // The first call admitted again opens a new window: from there exactly 300 pass.
    let reopened = tokio::time::timeout(Duration::from_secs(10), async {
        while list(&api, KEY_A, None).await.status() != 200 {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    assert!(reopened.is_ok(), "the next window never admitted a call");
    let opened_at = sim.api_calls().last().unwrap().at;
    let (more, limited) = list_until_limited(&api, None, 400).await;
    assert_eq!(1 + more, 300, "the floor admits 300 calls per window over both keys");
    let refused_at = sim.api_calls().last().unwrap().at;
    assert!((refused_at - opened_at).to_std().unwrap() < window, "the burst outlasted a window; too slow a machine");
    assert_documented_429(limited, 3).await;
    // Both keys took part, each far below its own limit of 10 000, so the floor alone refused.
    let calls = sim.api_calls();
    let per_key = |key: &str| calls.iter().filter(|c| c.api_key.as_deref() == Some(key)).count();
    assert!(per_key(KEY_A) >= 150 && per_key(KEY_B) >= 150, "{} and {}", per_key(KEY_A), per_key(KEY_B));
    assert_eq!(sim.rate_limited_answers(), calls.iter().filter(|c| c.status == 429).count() as u64);
}

#[tokio::test]
async fn two_client_addresses_named_by_the_header_each_get_their_own_300() {
    // A window that cannot roll over during the test keeps the counts exact.
    let sim = start_sim(floor_only(Duration::from_secs(60))).await;
    let api = Api::new(&sim, KEY_A);

    let (first, limited) = list_until_limited(&api, Some("198.51.100.1"), 301).await;
    assert_eq!(first, 300);
    assert_documented_429(limited, 60).await;
    let (second, _) = list_until_limited(&api, Some("198.51.100.2"), 301).await;
    assert_eq!(second, 300);
    // Without the header the peer address (loopback) is a third client.
    assert_eq!(list(&api, KEY_B, None).await.status(), 200);
    let clients: std::collections::BTreeSet<String> = sim.api_calls().into_iter().map(|c| c.client).collect();
    assert_eq!(clients.into_iter().collect::<Vec<_>>(), ["127.0.0.1", "198.51.100.1", "198.51.100.2"]);
}

#[tokio::test]
async fn a_call_refused_by_the_floor_costs_no_per_key_quota() {
    let config = SimConfig {
        window: Duration::from_secs(60),
        per_ip_per_window: 2,
        proxy_per_window: 3,
        client_ip_header: Some(CLIENT_HEADER.into()),
        ..SimConfig::default()
    };
    let sim = start_sim(config).await;
    sim.add_bridge("cust_a", None, Some(KEY_A));
    let api = Api::new(&sim, KEY_A);
    let status = |ip: &'static str| {
        let request = api.http.get(api.url("/api/instances/cust_a/proxy/status")).bearer_auth(KEY_A);
        async move { request.header(CLIENT_HEADER, ip).send().await.unwrap().status().as_u16() }
    };

    assert_eq!([status("10.0.0.1").await, status("10.0.0.1").await, status("10.0.0.1").await], [200, 200, 429]);
    // The floor is checked first: the refused call did not count, so key A has one call left.
    assert_eq!([status("10.0.0.2").await, status("10.0.0.2").await], [200, 429]);
    assert_eq!(sim.rate_limited_answers(), 2);
    // Refused proxy calls still count as arrived, as they do for a per-key refusal.
    assert_eq!(sim.proxy_calls_per_window(), vec![5]);
}

#[tokio::test]
async fn unlimited_lifts_the_ip_floor() {
    let sim = start_sim(SimConfig { unlimited: true, ..SimConfig::default() }).await;
    let api = Api::new(&sim, KEY_A);
    for n in 0..350 {
        assert_eq!(list(&api, if n % 2 == 0 { KEY_A } else { KEY_B }, None).await.status(), 200, "call {n}");
    }
    assert_eq!(sim.rate_limited_answers(), 0);
    assert_eq!(sim.api_calls().len(), 350);
}

#[tokio::test]
async fn control_endpoints_are_neither_counted_against_the_floor_nor_logged() {
    let sim = start_sim(SimConfig { per_ip_per_window: 3, ..SimConfig::default() }).await;
    let api = Api::new(&sim, KEY_A);
    for _ in 0..10 {
        assert_eq!(api.http.get(api.url("/_sim/stats")).send().await.unwrap().status(), 200);
        assert_eq!(api.http.get(api.url("/_sim/bridges")).send().await.unwrap().status(), 200);
    }
    let (successes, limited) = list_until_limited(&api, None, 4).await;
    assert_eq!(successes, 3);
    assert_eq!(limited.status(), 429);
    assert_eq!(sim.api_calls().len(), 4);
    // The control API still answers once the floor is exhausted.
    assert_eq!(api.http.get(api.url("/_sim/api-calls")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn the_api_call_log_records_key_client_bucket_and_status_of_every_call() {
    let config = SimConfig {
        provision_per_window: 1,
        client_ip_header: Some(CLIENT_HEADER.into()),
        window: Duration::from_secs(60),
        ..SimConfig::default()
    };
    let sim = start_sim(config).await;
    let (api_a, api_b) = (Api::new(&sim, KEY_A), Api::new(&sim, KEY_B));
    assert_eq!(api_a.post("/api/instances", json!({"customer_ref": "cust_1"})).await.status(), 200);
    assert_eq!(api_a.post("/api/instances", json!({"customer_ref": "cust_2"})).await.status(), 429);
    assert_eq!(list(&api_b, KEY_B, Some("203.0.113.9")).await.status(), 200);
    assert_eq!(Api::new(&sim, "sk_wrong").send("cust_1", "15559876543", "hi").await.status(), 401);
    assert_eq!(api_a.send("cust_1", "15559876543", "hi").await.status(), 200);

    let calls = sim.api_calls();
    let summary: Vec<(Option<&str>, &str, Bucket, u16)> =
        calls.iter().map(|c| (c.api_key.as_deref(), c.client.as_str(), c.bucket, c.status)).collect();
    assert_eq!(
        summary,
        [
            (Some(KEY_A), "127.0.0.1", Bucket::Provision, 200),
            (Some(KEY_A), "127.0.0.1", Bucket::Provision, 429),
            (Some(KEY_B), "203.0.113.9", Bucket::Other, 200),
            (None, "127.0.0.1", Bucket::Proxy, 401),
            (Some(KEY_A), "127.0.0.1", Bucket::Proxy, 200),
        ]
    );
    assert!(calls.windows(2).all(|pair| pair[0].at <= pair[1].at));
    assert_eq!(sim.max_calls_in_any(Duration::from_secs(60)), 5);
    assert_eq!(sim.max_calls_in_any(Duration::from_nanos(1)), 1);
    assert_eq!(sim.rate_limited_answers(), 1);

    // The same data on the control API.
    let logged: Value = api_a.http.get(api_a.url("/_sim/api-calls")).send().await.unwrap().json().await.unwrap();
    assert_eq!(logged.as_array().map(Vec::len), Some(5));
    assert_eq!(
        logged[3],
        json!({"at": logged[3]["at"], "api_key": null, "client": "127.0.0.1", "bucket": "proxy", "status": 401})
    );
    let max: Value =
        api_a.http.get(api_a.url("/_sim/api-calls/max?span_ms=60000")).send().await.unwrap().json().await.unwrap();
    assert_eq!(max, json!({"span_ms": 60000, "max_calls": 5, "rate_limited_answers": 1}));
    let cleared = api_a.http.delete(api_a.url("/_sim/api-calls")).send().await.unwrap();
    assert_eq!(cleared.status(), 204);
    assert!(sim.api_calls().is_empty());
}

/// A webhook receiver on port 0 that answers 200 after `delay`; counts the POSTs it got.
async fn slow_receiver(delay: Duration) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            axum::http::StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits)
}

async fn sim_with_webhook(timeout: Duration, url: &str) -> Simulator {
    let sim = start_sim(SimConfig { webhook_timeout: timeout, ..SimConfig::default() }).await;
    sim.add_bridge("cust_1", Some(url), None);
    sim
}

#[tokio::test]
async fn a_webhook_slower_than_the_timeout_counts_failed_and_a_longer_timeout_lets_it_succeed() {
    // Scaled down from the reference's 10 s (the default, asserted in the config's unit test):
    // a 2 s handler against 1 s and 3 s timeouts.
    let (url, hits) = slow_receiver(Duration::from_secs(2)).await;
    let strict = sim_with_webhook(Duration::from_secs(1), &url).await;
    let patient = sim_with_webhook(Duration::from_secs(3), &url).await;
    assert_eq!(strict.config().webhook_timeout, Duration::from_secs(1));

    let event = json!({"event": "disconnected"});
    let (dropped, delivered, fired) = tokio::join!(
        strict.fire("cust_1", event.clone(), true),
        patient.fire("cust_1", event.clone(), true),
        reqwest::Client::new()
            .post(format!("{}/_sim/bridges/cust_1/fire", strict.base_url()))
            .json(&json!({ "event": event }))
            .send(),
    );
    let error = format!("{:#}", dropped.unwrap_err());
    assert!(error.contains("webhook delivery failed"), "{error}");
    assert_eq!(delivered.unwrap(), 200);
    // Whoever fires through the control API hears of the failure too.
    assert_eq!(fired.unwrap().status(), 502);
    // One delivery each, no retry of the dropped ones.
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

async fn statuses_under(config: SimConfig) -> (Simulator, Vec<(u16, Value)>) {
    let sim = start_sim(SimConfig { provision_per_window: 1, window: Duration::from_secs(60), ..config }).await;
    sim.add_bridge("cust_b", None, Some(KEY_B));
    let api = Api::new(&sim, KEY_A);
    let mut answers = Vec::new();
    answers.push(status_and_json(api.get("/api/instances/nope/proxy/status").await).await);
    answers.push(status_and_json(Api::new(&sim, "sk_wrong").get("/api/instances").await).await);
    answers.push(status_and_json(api.get("/api/instances/cust_b/proxy/status").await).await);
    answers
        .push(status_and_json(api.http.put(api.url("/api/instances")).bearer_auth(KEY_A).send().await.unwrap()).await);
    (sim, answers)
}

#[tokio::test]
async fn conventional_statuses_stay_the_default_for_an_unknown_bridge_and_a_bad_key() {
    let (sim, answers) = statuses_under(SimConfig::default()).await;
    let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    assert_eq!(statuses, [404, 401, 403, 405]);
    assert_eq!(answers[0].1, json!({"error": "instance not found"}));
    assert_eq!(answers[3].1, json!({"error": "method not allowed"}));
    assert_eq!(sim.config().error_statuses, ErrorStatuses::Conventional);
}

#[tokio::test]
async fn uniform_statuses_answer_one_status_for_every_undocumented_error_but_not_for_429_or_faults() {
    for (uniform_error_status, expected) in [(None, 400), (Some(422), 422)] {
        let config = SimConfig {
            error_statuses: ErrorStatuses::Uniform,
            uniform_error_status: uniform_error_status.unwrap_or(SimConfig::default().uniform_error_status),
            ..SimConfig::default()
        };
        let (sim, answers) = statuses_under(config).await;
        let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
        assert_eq!(statuses, [expected; 4]);
        // Same documented body shape and message as under `conventional`.
        assert_eq!(answers[0].1, json!({"error": "instance not found"}));
        assert_eq!(answers[1].1, json!({"error": "unauthorized"}));
        // The log records the status actually answered.
        assert!(sim.api_calls().iter().all(|c| c.status == expected));

        let api = Api::new(&sim, KEY_A);
        assert_eq!(api.post("/api/instances", json!({"customer_ref": "cust_1"})).await.status(), 200);
        let limited = api.post("/api/instances", json!({"customer_ref": "cust_2"})).await;
        assert_eq!(limited.status(), 429);
        assert!(limited.headers().contains_key("retry-after"));
        sim.set_fault(Some(Fault::new(404).with_remaining(1)));
        assert_eq!(api.send("cust_1", "15559876543", "hi").await.status(), 404, "an injected fault is never rewritten");
    }
}

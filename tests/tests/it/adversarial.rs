//! Adversarial HTTP suite: hostile requests against the running ingest, worker and
//! simulator, with a real broker and database. Every case checks that no reply reaches another
//! tenant, that nothing crashed (ingest `/healthz` answers and the worker still processes a
//! control message), that error bodies and logs carry neither the token nor the payload, and
//! that the status code documented in the table of docs/webhook-api.md comes back.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wafleet_fleet::tenant::{BotKind, NewTenant};
use wafleet_shared::{CustomerRef, Generation, Keyring};
use wafleet_tests::{counter_value, message_event, wait_until, EnvOptions, TestEnv, TEST_SIGNING_KEY};

mod bodies;
mod replay_flood_leaks;

const A: &str = "adv_a";
const B: &str = "adv_b";
const CHAT_A: &str = "15550007001";
const CHAT_B: &str = "15550007002";
/// Put in every hostile body: it must never show up in an error body or a log line.
const MARKER: &str = "ADVERSARIAL_PAYLOAD_MARKER_4417";

/// An environment with tenants A and B, each on its own bridge.
struct Stack {
    env: TestEnv,
    url_a: String,
    url_b: String,
    http: reqwest::Client,
}

impl Stack {
    async fn new(options: EnvOptions) -> Self {
        let env = TestEnv::with(options).await.unwrap();
        Self::around(env).await
    }

    async fn around(env: TestEnv) -> Self {
        let url_a = env.add_tenant(A, A).await.unwrap();
        let url_b = env.add_tenant(B, B).await.unwrap();
        Self { env, url_a, url_b, http: reqwest::Client::new() }
    }

    fn token_a(&self) -> &str {
        token_of(&self.url_a)
    }

    /// POSTs `body` with `content_type` (none when `None`).
    async fn post(&self, url: &str, content_type: Option<&str>, body: impl Into<reqwest::Body>) -> Answer {
        let mut request = self.http.post(url).body(body);
        if let Some(content_type) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        Answer { status, body: response.text().await.unwrap_or_default() }
    }

    async fn post_json(&self, url: &str, body: &serde_json::Value) -> Answer {
        self.post(url, Some("application/json"), serde_json::to_vec(body).unwrap()).await
    }

    /// Ingest is alive, and the worker still turns A's event into a reply on A's bridge only.
    async fn assert_still_serving(&self) {
        let health = self.http.get(format!("{}/healthz", self.env.ingest_ops_url)).send().await.unwrap();
        assert_eq!(health.status().as_u16(), 200, "ingest /healthz after the attack");
        let control = format!("control-{}", uuid::Uuid::now_v7().simple());
        let status = self.env.sim.fire_message(A, CHAT_A, &control, None, true).await.unwrap();
        assert_eq!(status, 200, "a control event is still accepted");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut sends = Vec::new();
        while Instant::now() < deadline {
            sends = self.env.sim.wait_for_sends(A, sends.len() + 1, Duration::from_secs(2)).await;
            if sends.iter().any(|s| s.body == control) {
                break;
            }
        }
        assert!(sends.iter().any(|s| s.body == control && s.chat == CHAT_A), "the worker still processes events");
        self.assert_no_cross_tenant_reply();
    }

    /// Every send went out on the bridge of the tenant whose chat it answers.
    fn assert_no_cross_tenant_reply(&self) {
        for send in self.env.sim.all_sends() {
            match send.bridge.as_str() {
                A => assert_eq!(send.chat, CHAT_A, "A's bridge answered a foreign chat: {send:?}"),
                B => assert_eq!(send.chat, CHAT_B, "B's bridge answered a foreign chat: {send:?}"),
                other => panic!("a reply went out on an unknown bridge {other}"),
            }
        }
    }

    /// Every queue of the vhost (tenant queues, DLQs, retries, quarantine, unrouted) is empty.
    async fn assert_every_queue_empty(&self) {
        let queues = list_queues(&self.env).await;
        assert!(queues.iter().any(|q| q == "wa.unrouted"), "the vhost lists its queues: {queues:?}");
        for (queue, depth) in depths(&self.env, &queues).await {
            assert_eq!(depth, 0, "{queue} holds a message that was refused at the edge");
        }
    }

    async fn cleanup(self) {
        self.env.cleanup().await;
    }
}

/// A decoded answer.
struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    /// The status is `expected`, and the error body is short JSON that echoes neither the payload
    /// nor any of `secrets`.
    fn assert_refused(&self, expected: u16, case: &str, secrets: &[&str]) {
        assert_eq!(self.status, expected, "{case}: body {}", self.body);
        let error: serde_json::Value = serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null);
        assert!(error["error"].is_string(), "{case}: error body is JSON with an `error`: {}", self.body);
        assert!(self.body.len() < 300, "{case}: error body stays short");
        assert!(!self.body.contains(MARKER), "{case}: error body echoes the payload");
        for secret in secrets {
            assert!(!self.body.contains(secret), "{case}: error body echoes the token");
        }
    }
}

fn token_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or_default()
}

fn keyring(spec: &str) -> Keyring {
    Keyring::parse(&SecretString::from(spec.to_owned())).unwrap()
}

fn signed_url(env: &TestEnv, keyring: &Keyring, customer_ref: &str, generation: u64) -> String {
    let generation = Generation::parse_canonical(&generation.to_string()).unwrap();
    let token = keyring.sign(&CustomerRef::parse(customer_ref).unwrap(), generation);
    format!("{}/webhook/{customer_ref}/{token}", env.ingest_url)
}

fn event_a(body: &str, message_id: &str) -> serde_json::Value {
    let mut event = message_event(CHAT_A, body, message_id);
    event["customer_ref"] = A.into();
    event
}

async fn list_queues(env: &TestEnv) -> Vec<String> {
    let listing = env.endpoints.management().unwrap().get_json(&["queues", &env.name]).await.unwrap();
    listing
        .and_then(|l| l.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|q| q["name"].as_str().map(str::to_owned))
        .collect()
}

/// Ready-message counts from the broker itself (the management API's numbers lag by seconds).
async fn depths(env: &TestEnv, queues: &[String]) -> Vec<(String, u32)> {
    let connection = wafleet_shared::amqp::connect(&env.amqp_url, "adversarial-test").await.unwrap();
    let mut out = Vec::new();
    for queue in queues {
        // A passive declare of a missing queue closes the channel, so each gets its own.
        let channel = connection.create_channel().await.unwrap();
        let declared = channel
            .queue_declare(queue, QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
            .await
            .unwrap();
        out.push((queue.clone(), declared.message_count()));
        let _ = channel.close(200, "done").await;
    }
    let _ = connection.close(200, "done").await;
    out
}

async fn depth(env: &TestEnv, queue: &str) -> u32 {
    depths(env, &[queue.to_owned()]).await.first().map(|(_, d)| *d).unwrap_or(u32::MAX)
}

/// Writes `head`, then each of `chunks` after `pace`, on a raw TCP connection (so bytes that an
/// HTTP client would encode or normalise reach the server as they are), and returns the status
/// of the answer, or `None` if none came `within`.
async fn raw_request(
    ingest_url: &str,
    head: String,
    chunks: Vec<Vec<u8>>,
    pace: Duration,
    within: Duration,
) -> Option<u16> {
    let addr = ingest_url.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        if writer.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for chunk in chunks {
            if !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
            // The server may answer and close before the body is complete.
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // Keep the connection open (a slow client never finishes) until the reader is done.
        std::future::pending::<()>().await;
    });
    let read_status = async {
        let mut buffer = Vec::new();
        let mut piece = [0u8; 1024];
        loop {
            let n = reader.read(&mut piece).await.ok()?;
            if n == 0 {
                break;
            }
            buffer.extend_from_slice(&piece[..n]);
            if buffer.windows(2).any(|w| w == b"\r\n") {
                break;
            }
        }
        let line = String::from_utf8_lossy(&buffer).into_owned();
        line.split_whitespace().nth(1)?.parse::<u16>().ok()
    };
    let status = tokio::time::timeout(within, read_status).await.ok().flatten();
    writing.abort();
    status
}

/// Runs `future` and says how long it took.
async fn timed<T>(future: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let value = future.await;
    (value, started.elapsed())
}

fn head(path: &str, extra_headers: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n{extra_headers}\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_for_another_tenant_or_from_a_retired_key_are_refused_before_anything_is_published() {
    let stack = Stack::new(EnvOptions::default()).await;
    let env = &stack.env;
    let (token_a, token_b) = (stack.token_a().to_owned(), token_of(&stack.url_b).to_owned());
    let secrets = [token_a.as_str(), token_b.as_str()];
    let bad_token_before = counter_value("wafleet_ingest_rejected_total", &[("reason", "bad_token")]);
    let mismatch_before = counter_value("wafleet_ingest_rejected_total", &[("reason", "ref_mismatch")]);

    // A's token with a body that names B.
    let mut names_b = event_a(MARKER, "ADV-1");
    names_b["customer_ref"] = B.into();
    stack.post_json(&stack.url_a, &names_b).await.assert_refused(401, "A's URL, B's body ref", &secrets);
    // A body ref that is not a string, or is null, refuses the event too.
    for odd in [serde_json::json!([A]), serde_json::json!({ "customer_ref": A }), serde_json::Value::Null, 7.into()] {
        let mut body = event_a(MARKER, "ADV-2");
        body["customer_ref"] = odd;
        stack.post_json(&stack.url_a, &body).await.assert_refused(401, "non-string body ref", &secrets);
    }
    // A's token in B's URL, and B's token in A's URL.
    let swapped = format!("{}/webhook/{B}/{token_a}", env.ingest_url);
    stack.post_json(&swapped, &event_a(MARKER, "ADV-3")).await.assert_refused(401, "A's token in B's URL", &secrets);
    let swapped = format!("{}/webhook/{A}/{token_b}", env.ingest_url);
    stack.post_json(&swapped, &event_a(MARKER, "ADV-4")).await.assert_refused(401, "B's token in A's URL", &secrets);
    // Signed with a key this ingest no longer has (retired), and with a forged secret under the
    // current key id.
    let retired = keyring("retired:ffffffffffffffffffffffffffffffff-retired");
    let forged_secret = keyring("test:this-is-not-the-secret-of-the-test-key-0000");
    for ring in [&retired, &forged_secret] {
        let url = signed_url(env, ring, A, 1);
        let token = token_of(&url).to_owned();
        stack.post_json(&url, &event_a(MARKER, "ADV-5")).await.assert_refused(401, "foreign key", &[&token]);
    }
    // Structurally broken tokens.
    for token in ["", "x", "test.1", "test.01.AAAA", "test.1.AAAA.x", "test.-1.AAAA", "test.1.!!!!"] {
        let url = format!("{}/webhook/{A}/{token}", env.ingest_url);
        let answer = stack.post_json(&url, &event_a(MARKER, "ADV-6")).await;
        // An empty last segment may match no route at all.
        let expected: &[u16] = if token.is_empty() { &[401, 404] } else { &[401] };
        assert!(expected.contains(&answer.status), "token {token:?} answered {}", answer.status);
    }

    assert!(counter_value("wafleet_ingest_rejected_total", &[("reason", "bad_token")]) >= bad_token_before + 10.0);
    assert!(counter_value("wafleet_ingest_rejected_total", &[("reason", "ref_mismatch")]) >= mismatch_before + 5.0);
    stack.assert_every_queue_empty().await;
    assert_eq!(env.count("select count(*) from processed_events").await, 0, "nothing reached the worker");
    assert!(env.sim.all_sends().is_empty());
    stack.assert_still_serving().await;
    assert!(env.sim.sends_for(B).is_empty(), "nothing was ever sent on B's bridge");
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_of_an_old_generation_is_accepted_at_the_edge_but_dropped_by_the_worker_without_a_reply() {
    let stack = Stack::new(EnvOptions::default()).await;
    let env = &stack.env;
    // Revoke A's URL by bumping its generation, as the owner (the rotate command's effect).
    sqlx::query("update tenants set generation = generation + 1 where customer_ref = $1")
        .bind(A)
        .execute(&env.owner_pool)
        .await
        .unwrap();
    let before = counter_value("wafleet_worker_dropped_total", &[("reason", "generation_mismatch")]);
    // Ingest has no database: it cannot know the generation moved, so it accepts (WA Bridges
    // would never resend a refused event) and the worker drops it.
    let answer = stack.post_json(&stack.url_a, &event_a("stale generation", "ADV-GEN-1")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // A token for a generation that was never issued is dropped the same way.
    let keyring = keyring(TEST_SIGNING_KEY);
    let future = signed_url(env, &keyring, A, 7);
    assert_eq!(stack.post_json(&future, &event_a("future generation", "ADV-GEN-2")).await.status, 200);
    wait_until(Duration::from_secs(20), || async {
        counter_value("wafleet_worker_dropped_total", &[("reason", "generation_mismatch")]) >= before + 2.0
    })
    .await
    .expect("the worker counts both events as generation_mismatch");

    // The tenant's new URL works; the bridge is reconfigured with it.
    let fresh = env.webhook_url(A).await.unwrap();
    assert_ne!(fresh, stack.url_a);
    assert!(fresh.contains("/webhook/adv_a/test.2."), "{fresh}");
    env.sim.add_bridge(A, Some(&fresh), None);
    stack.assert_still_serving().await;
    wait_until(Duration::from_secs(20), || async { depth(env, "wa.tenant.adv_a").await == 0 }).await.unwrap();
    let bodies: Vec<String> = env.sim.sends_for(A).into_iter().map(|s| s.body).collect();
    assert!(bodies.iter().all(|b| !b.contains("generation")), "a revoked URL produced a reply: {bodies:?}");
    assert!(env.sim.sends_for(B).is_empty());
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refs_that_try_routing_key_or_encoding_tricks_are_refused_and_reach_no_queue() {
    let stack = Stack::new(EnvOptions::default()).await;
    let env = &stack.env;
    let token = stack.token_a().to_owned();
    let rejected_before = counter_value("wafleet_ingest_rejected_total", &[("reason", "bad_ref")])
        + counter_value("wafleet_ingest_rejected_total", &[("reason", "bad_token")]);
    let long = "a".repeat(129);
    let tricks: Vec<String> = vec![
        "*".into(),
        "adv_*".into(),
        "adv_a.*".into(),
        "adv_a.".into(),
        ".adv_a".into(),
        "adv_a:".into(),
        "%23".into(),
        "adv_a%23".into(),
        "%2A".into(),
        "adv_a%00".into(),
        "%00adv_a".into(),
        "adv%20a".into(),
        "adv_a%20".into(),
        "adv%5Fa".into(), // decodes to A's own ref: one spelling per ref
        "adv_a%2F..".into(),
        long.clone(),
        format!("{long}%00"),
        "adv_\u{430}".into(),   // Cyrillic a, encoded by the client
        "\u{ff41}dv_a".into(),  // fullwidth a
        "adv_a\u{200b}".into(), // zero-width space
        "ADV_A".into(),
    ];
    for trick in &tricks {
        let url = format!("{}/webhook/{trick}/{token}", env.ingest_url);
        let answer = stack.post_json(&url, &event_a(MARKER, "ADV-REF")).await;
        answer.assert_refused(401, &format!("ref {trick:?}"), &[&token]);
    }
    // The same tricks as raw bytes, which an HTTP client would have encoded or normalised. The
    // HTTP layer may refuse them first (400, or 404 when `#` cuts the path); never 2xx.
    let body = serde_json::to_vec(&event_a(MARKER, "ADV-RAW")).unwrap();
    let length = format!("Content-Length: {}\r\n", body.len());
    for raw in [".", "..", "adv_a#", "#", "adv a", "adv_\u{430}", "adv_a\u{0}", "adv_a\t", "*"] {
        let status = raw_request(
            &env.ingest_url,
            head(&format!("/webhook/{raw}/{token}"), &length),
            vec![body.clone()],
            Duration::ZERO,
            Duration::from_secs(10),
        )
        .await;
        assert!(matches!(status, Some(400 | 401 | 404)), "raw ref {raw:?} answered {status:?}");
    }
    let rejected = counter_value("wafleet_ingest_rejected_total", &[("reason", "bad_ref")])
        + counter_value("wafleet_ingest_rejected_total", &[("reason", "bad_token")]);
    assert!(rejected >= rejected_before + tricks.len() as f64, "each refusal is counted");
    stack.assert_every_queue_empty().await;
    assert_eq!(env.count("select count(*) from processed_events").await, 0);
    assert!(env.sim.all_sends().is_empty());
    stack.assert_still_serving().await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_top_level_ref_keys_are_refused_so_no_two_layers_can_pick_different_tenants() {
    let stack = Stack::new(EnvOptions::default()).await;
    let env = &stack.env;
    let token = stack.token_a().to_owned();
    let event = message_event(CHAT_A, MARKER, "ADV-DUP");
    let fields = serde_json::to_string(&event).unwrap();
    let fields = fields.trim_start_matches('{').trim_end_matches('}');
    let bodies = [
        format!(r#"{{"customer_ref":"{A}","customer_ref":"{B}",{fields}}}"#),
        format!(r#"{{"customer_ref":"{B}","customer_ref":"{A}",{fields}}}"#),
        format!(r#"{{"customer_ref":"{A}",{fields},"customer\u005fref":"{B}"}}"#),
        format!(r#"{{"customer_ref":"{A}","customer_ref":"{A}",{fields}}}"#),
        format!(r#"{{{fields},"event":"message"}}"#),
    ];
    // Why this matters: a plain JSON reader keeps the last value, so without the refusal ingest
    // (URL: A) and any later reader of the payload could disagree about the tenant.
    let last_wins: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(last_wins["customer_ref"], B);
    for (url, name) in [(&stack.url_a, "A's URL"), (&stack.url_b, "B's URL")] {
        for body in &bodies {
            let answer = stack.post(url, Some("application/json"), body.clone()).await;
            answer.assert_refused(400, &format!("duplicate keys on {name}"), &[&token]);
            assert!(answer.body.contains("repeats a top-level key"), "{}", answer.body);
        }
    }
    stack.assert_every_queue_empty().await;
    assert!(env.sim.all_sends().is_empty());
    stack.assert_still_serving().await;
    assert!(env.sim.sends_for(B).is_empty());
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_instance_and_ref_fields_nested_anywhere_in_the_body_never_redirect_the_reply() {
    let stack = Stack::new(EnvOptions::default()).await;
    let env = &stack.env;
    let mut event = message_event(CHAT_A, "nested decoys", "ADV-NEST-1");
    event["bridge_id"] = B.into();
    event["bridge"] = B.into();
    event["instance"] = B.into();
    event["instance_id"] = 2.into();
    event["nested"] = serde_json::json!({
        "customer_ref": B, "bridge_id": B, "instance": {"customer_ref": B, "id": B},
        "list": [{"customer_ref": B}, [{"customer_ref": B, "bridge": B}]],
        "chat_id": format!("{CHAT_B}@s.whatsapp.net")
    });
    event["messages"] = serde_json::json!([{"customer_ref": B, "chat_id": format!("{CHAT_B}@s.whatsapp.net")}]);
    event["data"] = serde_json::json!({"customer_ref": B});
    assert_eq!(env.sim.fire(A, event.clone(), true).await.unwrap(), 200);
    // The same without a top-level ref at all (WA Bridges may leave it out).
    event["message_id"] = "ADV-NEST-2".into();
    event["body"] = "nested decoys, no top-level ref".into();
    assert_eq!(env.sim.fire(A, event, false).await.unwrap(), 200);
    // Nested duplicate keys are not a tenant source, so they are accepted like any other data.
    let nested_duplicates = format!(
        r#"{{"event":"message","message_id":"ADV-NEST-3","chat_id":"{CHAT_A}@s.whatsapp.net","phone":"{CHAT_A}","body":"nested duplicates","from_me":false,"customer_ref":"{A}","nested":{{"customer_ref":"{B}","customer_ref":"{B}"}}}}"#
    );
    let answer = stack.post(&stack.url_a, Some("application/json"), nested_duplicates).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let sends = env.sim.wait_for_sends(A, 3, Duration::from_secs(30)).await;
    assert_eq!(sends.len(), 3, "every event is answered on A's own bridge");
    assert!(sends.iter().all(|s| s.chat == CHAT_A), "the reply goes to the sender's chat, not a decoy: {sends:?}");
    env.wait_idle(3).await.unwrap();
    assert!(env.sim.sends_for(B).is_empty(), "nothing was sent on B's bridge");
    stack.assert_still_serving().await;
    stack.cleanup().await;
}

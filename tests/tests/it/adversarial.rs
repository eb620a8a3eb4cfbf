//! Adversarial HTTP suite (issue #7): hostile requests against the running ingest, worker and
//! simulator, with a real broker and database. Every case checks that no reply reaches another
//! tenant, that nothing crashed (ingest `/healthz` answers and the worker still processes a
//! control message), that error bodies and logs carry neither the token nor the payload, and
//! that the status code documented in the README's "Webhook API" table comes back.

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
        let health = self.http.get(format!("{}/healthz", self.env.ingest_url)).send().await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_deeply_nested_non_utf8_and_mistyped_bodies_get_their_documented_status() {
    let stack = Stack::new(EnvOptions::default()).await;
    let env = &stack.env;
    let token = stack.token_a().to_owned();
    let path = format!("/webhook/{A}/{token}");
    let limit = wafleet_ingest::config::DEFAULT_BODY_LIMIT_BYTES;

    // Over the limit, declared: refused from the header without reading a byte.
    let declared = format!("Content-Length: {}\r\n", limit + 1);
    let status =
        raw_request(&env.ingest_url, head(&path, &declared), vec![], Duration::ZERO, Duration::from_secs(10)).await;
    assert_eq!(status, Some(413), "declared length over the limit");
    // Over the limit, chunked (no length announced): refused once the limit is crossed. Just
    // over it, so the server has read everything sent and closes cleanly.
    let chunk = format!("{{\"pad\":\"{}", "x".repeat(64 * 1024));
    let mut chunks = Vec::new();
    for _ in 0..(limit / (64 * 1024)) {
        chunks.push(format!("{:x}\r\n{chunk}\r\n", chunk.len()).into_bytes());
    }
    let status = raw_request(
        &env.ingest_url,
        head(&path, "Transfer-Encoding: chunked\r\n"),
        chunks,
        Duration::ZERO,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(status, Some(413), "chunked body over the limit");
    let deep_array = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
    // Just under the body limit, so the parser (not the size check) meets it.
    let very_deep = format!("{{\"a\":{}", "{\"a\":".repeat(50_000));
    let cases: Vec<(&str, Option<&str>, Vec<u8>, u16)> = vec![
        ("nesting past the parser's limit", Some("application/json"), deep_array.into_bytes(), 400),
        ("50k levels of nesting", Some("application/json"), very_deep.into_bytes(), 400),
        (
            "invalid UTF-8",
            Some("application/json"),
            [b"{\"body\":\"".as_slice(), MARKER.as_bytes(), &[0xff, 0xfe], b"\"}"].concat(),
            400,
        ),
        (
            "invalid UTF-8 inside a string",
            Some("application/json"),
            [b"{\"body\":\"".as_slice(), MARKER.as_bytes(), &[0xc3, 0x28], b"\"}"].concat(),
            400,
        ),
        ("not JSON", Some("application/json"), format!("{MARKER} not json").into_bytes(), 400),
        ("not an object", Some("application/json"), format!("[\"{MARKER}\"]").into_bytes(), 400),
        ("trailing garbage", Some("application/json"), format!("{{\"body\":\"{MARKER}\"}} {{}}").into_bytes(), 400),
        ("empty body", Some("application/json"), Vec::new(), 400),
        ("text/plain", Some("text/plain"), format!("{{\"body\":\"{MARKER}\"}}").into_bytes(), 415),
        ("form encoded", Some("application/x-www-form-urlencoded"), format!("body={MARKER}").into_bytes(), 415),
        ("json look-alike type", Some("application/jsonx"), b"{}".to_vec(), 415),
        ("no content type", None, format!("{{\"body\":\"{MARKER}\"}}").into_bytes(), 415),
    ];
    for (case, content_type, body, expected) in cases {
        stack.post(&stack.url_a, content_type, body).await.assert_refused(expected, case, &[&token]);
    }
    // Two Content-Type headers are refused as well.
    let answer = stack
        .http
        .post(&stack.url_a)
        .header("content-type", "application/json")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 415);

    stack.assert_every_queue_empty().await;
    assert!(env.sim.all_sends().is_empty());
    stack.assert_still_serving().await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_body_times_out_with_408_while_other_events_are_still_accepted() {
    let body_timeout = Duration::from_millis(400);
    let stack = Stack::new(EnvOptions { ingest_body_timeout: Some(body_timeout), ..EnvOptions::default() }).await;
    let env = &stack.env;
    let path = format!("/webhook/{A}/{}", stack.token_a());
    let before = counter_value("wafleet_ingest_rejected_total", &[("reason", "body_timeout")]);

    // One byte every 100 ms of a declared 100-byte body: it would take 10 s; the deadline covers
    // the whole body, not the gap between bytes.
    let trickle: Vec<Vec<u8>> = (0..100).map(|_| b" ".to_vec()).collect();
    let slow = timed(raw_request(
        &env.ingest_url,
        head(&path, "Content-Length: 100\r\n"),
        trickle,
        Duration::from_millis(100),
        Duration::from_secs(10),
    ));
    // A stalled body: half of it, then nothing.
    let stalled = timed(raw_request(
        &env.ingest_url,
        head(&path, "Content-Length: 100\r\n"),
        vec![b"{\"event\":\"message\",".to_vec()],
        Duration::ZERO,
        Duration::from_secs(10),
    ));
    // Meanwhile a real event is accepted and answered.
    let real = env.sim.fire_message(A, CHAT_A, "during slowloris", None, true);
    let (slow, stalled, real) = tokio::join!(slow, stalled, real);
    assert_eq!(slow.0, Some(408), "a trickled body is cut at the deadline");
    assert_eq!(stalled.0, Some(408), "a stalled body is cut at the deadline");
    // The trickle alone would take 10 s.
    for (what, took) in [("trickled", slow.1), ("stalled", stalled.1)] {
        assert!(
            took < Duration::from_secs(5),
            "the {what} body was answered after {took:?}, not near {body_timeout:?}"
        );
    }
    assert_eq!(real.unwrap(), 200);
    assert!(counter_value("wafleet_ingest_rejected_total", &[("reason", "body_timeout")]) >= before + 2.0);
    let sends = env.sim.wait_for_sends(A, 1, Duration::from_secs(20)).await;
    assert_eq!(sends.first().map(|s| s.body.as_str()), Some("during slowloris"));
    stack.assert_still_serving().await;
    assert!(env.sim.sends_for(B).is_empty());
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_events_are_sent_once_and_a_replay_on_one_tenant_never_suppresses_another() {
    let stack = Stack::new(EnvOptions::default()).await;
    let env = &stack.env;
    let original = event_a("replayed once", "ADV-REPLAY");
    // The same request replayed concurrently, then again with another text under the same id.
    let replays = (0..4).map(|_| stack.post_json(&stack.url_a, &original));
    for answer in futures::future::join_all(replays).await {
        assert_eq!(answer.status, 200);
    }
    let mut altered = original.clone();
    altered["body"] = "replayed with another text".into();
    assert_eq!(stack.post_json(&stack.url_a, &altered).await.status, 200);
    // B happens to receive a message with the same provider id: it is B's own, and answered.
    let mut for_b = message_event(CHAT_B, "B's own message", "ADV-REPLAY");
    for_b["customer_ref"] = B.into();
    assert_eq!(stack.post_json(&stack.url_b, &for_b).await.status, 200);

    env.sim.wait_for_sends(B, 1, Duration::from_secs(20)).await;
    stack.assert_still_serving().await;
    env.wait_idle(3).await.unwrap();
    wait_until(Duration::from_secs(20), || async { depth(env, "wa.tenant.adv_a").await == 0 }).await.unwrap();
    let a_bodies: Vec<String> = env.sim.sends_for(A).into_iter().map(|s| s.body).collect();
    let replayed = a_bodies.iter().filter(|b| b.starts_with("replayed")).count();
    assert_eq!(replayed, 1, "five deliveries of one message id, one reply: {a_bodies:?}");
    let b_sends = env.sim.sends_for(B);
    assert_eq!(b_sends.len(), 1, "B's message is not taken for A's duplicate");
    assert_eq!(b_sends[0].body, "B's own message");
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_for_an_unknown_ref_is_bounded_by_the_retention_and_does_not_starve_real_tenants() {
    let mut env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    env.worker_config.reconciler.retention = Duration::from_secs(2);
    env.start_worker().await.unwrap();
    let stack = Stack::around(env).await;
    let env = &stack.env;
    let ghost = signed_url(env, &keyring(TEST_SIGNING_KEY), "ghost_flood", 1);
    let expired_before = counter_value("wafleet_worker_dropped_total", &[("reason", "unrouted_expired")]);

    const FLOOD: usize = 500;
    let sent = Arc::new(AtomicUsize::new(0));
    let flood = {
        let (http, ghost, sent) = (stack.http.clone(), ghost.clone(), sent.clone());
        tokio::spawn(async move {
            let statuses: Vec<u16> = futures::stream::iter(0..FLOOD)
                .map(|i| {
                    let (http, ghost, sent) = (http.clone(), ghost.clone(), sent.clone());
                    async move {
                        let event = message_event("15550009999", "flood", &format!("FLOOD-{i}"));
                        let status = http.post(&ghost).json(&event).send().await.map(|r| r.status().as_u16());
                        sent.fetch_add(1, Ordering::Relaxed);
                        status.unwrap_or(0)
                    }
                })
                .buffer_unordered(16)
                .collect()
                .await;
            statuses
        })
    };
    // A real tenant's event in the middle of the flood is answered within a bound.
    wait_until(Duration::from_secs(60), || async { sent.load(Ordering::Relaxed) >= FLOOD / 5 }).await.unwrap();
    let started = Instant::now();
    assert_eq!(env.sim.fire_message(A, CHAT_A, "real tenant during flood", None, true).await.unwrap(), 200);
    let sends = env.sim.wait_for_sends(A, 1, Duration::from_secs(30)).await;
    assert_eq!(sends.first().map(|s| s.body.as_str()), Some("real tenant during flood"));
    let latency = started.elapsed();
    assert!(latency < Duration::from_secs(20), "A's reply took {latency:?} during the flood");

    let statuses = flood.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "a valid token for an unknown ref is accepted and dropped later");
    // Nothing of the flood reached a tenant queue, and wa.unrouted drains after the retention.
    wait_until(Duration::from_secs(90), || async { depth(env, "wa.unrouted").await == 0 })
        .await
        .expect("wa.unrouted does not grow without bound");
    let expired = counter_value("wafleet_worker_dropped_total", &[("reason", "unrouted_expired")]);
    assert!(expired >= expired_before + FLOOD as f64, "every flood event was dropped after the retention");
    assert_eq!(depth(env, "wa.tenant.adv_a").await, 0);
    assert_eq!(depth(env, "wa.tenant.adv_b").await, 0);
    assert!(env.sim.sends_for(B).is_empty());
    assert!(env.sim.all_sends().iter().all(|s| s.body != "flood"), "no flood event was answered");
    stack.assert_still_serving().await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offboarded_ref_or_its_bridge_can_never_be_added_again() {
    let stack = Stack::new(EnvOptions::default()).await;
    let env = &stack.env;
    let gone_url = env.add_tenant("adv_gone", "adv_gone").await.unwrap();
    // Tombstone, as the owner (the effect of the offboard command).
    sqlx::query("update tenants set status = 'offboarded' where customer_ref = 'adv_gone'")
        .execute(&env.owner_pool)
        .await
        .unwrap();
    let readd = |customer_ref: &str, bridge: &str| NewTenant {
        customer_ref: CustomerRef::parse(customer_ref).unwrap(),
        bridge: bridge.into(),
        bot_kind: BotKind::Echo,
        auth_mode: wafleet_shared::AuthMode::Token,
        queue_type: wafleet_shared::topology::QueueType::Quorum,
    };
    for (customer_ref, bridge, why) in [
        ("adv_gone", "adv_gone", "same ref and bridge"),
        ("adv_gone", "adv_gone_2", "same ref, new bridge"),
        ("adv_new", "adv_gone", "new ref on the tombstone's bridge"),
    ] {
        let result = wafleet_fleet::ops::add_tenant(&env.app_pool, &env.endpoints, &readd(customer_ref, bridge)).await;
        match result {
            Err(wafleet_fleet::error::Error::Conflict(conflict)) => {
                assert!(!conflict.to_string().is_empty(), "{why}");
            }
            other => panic!("{why}: re-adding must be a conflict, got {other:?}"),
        }
    }
    let err = wafleet_fleet::ops::add_tenant(&env.app_pool, &env.endpoints, &readd("adv_gone", "adv_gone"))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("offboarded"), "the refusal says why: {err}");
    // Re-enabling is refused too: offboarded stays offboarded.
    let gone = CustomerRef::parse("adv_gone").unwrap();
    let enabled =
        wafleet_fleet::ops::set_status(&env.app_pool, &gone, wafleet_fleet::tenant::TenantStatus::Active).await;
    assert!(enabled.is_err(), "an offboarded tenant cannot be enabled again");
    let (status, tenants): (String, i64) = sqlx::query_as(
        "select (select status from tenants where customer_ref = 'adv_gone'), (select count(*) from tenants)",
    )
    .fetch_one(&env.owner_pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), tenants), ("offboarded", 3), "no row was added or revived");
    // Its old URL still reaches the edge (ingest has no database), but nothing is ever sent.
    let mut event = message_event("15550007003", "to a tombstone", "ADV-GONE");
    event["customer_ref"] = "adv_gone".into();
    assert_eq!(stack.post_json(&gone_url, &event).await.status, 200);
    stack.assert_still_serving().await;
    assert!(env.sim.sends_for("adv_gone").is_empty());
    assert!(env.sim.sends_for(B).is_empty());
    stack.cleanup().await;
}

/// Captures every formatted log line of the current thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread: ingest, worker and simulator all run on the test's thread, so the thread-local
// subscriber below sees every line they log.
#[tokio::test(flavor = "current_thread")]
async fn no_log_line_of_ingest_or_worker_carries_a_token_or_a_payload_during_an_attack() {
    let captured = Captured::default();
    let writer = captured.clone();
    let filter = "info,wafleet_ingest=trace,wafleet_worker=trace,wafleet_shared=trace,tower_http=trace,axum=trace,sqlx=debug,lapin=off,amq_protocol=off";
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let stack = Stack::new(EnvOptions::default()).await;
    let env = &stack.env;
    let token_a = stack.token_a().to_owned();
    let token_b = token_of(&stack.url_b).to_owned();
    let ghost = signed_url(env, &keyring(TEST_SIGNING_KEY), "ghost_logs", 1);
    let ghost_token = token_of(&ghost).to_owned();
    let secret = TEST_SIGNING_KEY.split_once(':').map(|(_, s)| s.to_owned()).unwrap_or_default();
    let marked = |id: &str| event_a(&format!("{MARKER} {id}"), id);

    // A legitimate event whose text must not be logged either.
    assert_eq!(stack.post_json(&stack.url_a, &marked("LOG-1")).await.status, 200);
    // Hostile ones.
    let swapped = format!("{}/webhook/{B}/{token_a}", env.ingest_url);
    assert_eq!(stack.post_json(&swapped, &marked("LOG-2")).await.status, 401);
    let mut names_b = marked("LOG-3");
    names_b["customer_ref"] = B.into();
    assert_eq!(stack.post_json(&stack.url_a, &names_b).await.status, 401);
    let duplicate = format!(r#"{{"customer_ref":"{A}","customer_ref":"{B}","body":"{MARKER}"}}"#);
    assert_eq!(stack.post(&stack.url_a, Some("application/json"), duplicate).await.status, 400);
    assert_eq!(stack.post(&stack.url_a, Some("application/json"), format!("{MARKER} not json")).await.status, 400);
    assert_eq!(stack.post(&stack.url_a, Some("text/plain"), MARKER).await.status, 415);
    let tricky = format!("{}/webhook/adv_a%23{MARKER}/{token_a}", env.ingest_url);
    assert_eq!(stack.post_json(&tricky, &marked("LOG-4")).await.status, 401);
    let mut for_ghost = marked("LOG-5");
    for_ghost["customer_ref"] = "ghost_logs".into();
    assert_eq!(stack.post_json(&ghost, &for_ghost).await.status, 200);
    let mut for_b = message_event(CHAT_B, &format!("{MARKER} LOG-6"), "LOG-6");
    for_b["customer_ref"] = B.into();
    assert_eq!(stack.post_json(&stack.url_b, &for_b).await.status, 200);
    env.sim.wait_for_sends(B, 1, Duration::from_secs(30)).await;
    // An old-generation URL, dropped by the worker.
    sqlx::query("update tenants set generation = generation + 1 where customer_ref = $1")
        .bind(B)
        .execute(&env.owner_pool)
        .await
        .unwrap();
    let dropped_before = counter_value("wafleet_worker_dropped_total", &[("reason", "generation_mismatch")]);
    let mut stale = message_event(CHAT_B, &format!("{MARKER} LOG-7"), "LOG-7");
    stale["customer_ref"] = B.into();
    assert_eq!(stack.post_json(&stack.url_b, &stale).await.status, 200);

    env.sim.wait_for_sends(A, 1, Duration::from_secs(30)).await;
    wait_until(Duration::from_secs(30), || async {
        counter_value("wafleet_worker_dropped_total", &[("reason", "generation_mismatch")]) > dropped_before
    })
    .await
    .unwrap();
    wait_until(Duration::from_secs(30), || async {
        counter_value("wafleet_unrouted_total", &[("reason", "unknown_tenant")]) >= 1.0
    })
    .await
    .unwrap();

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(logs.contains("webhook token refused"), "the capture saw ingest's lines:\n{logs}");
    assert!(logs.contains("tenant=\"adv_a\""), "the capture saw the verified tenant:\n{logs}");
    assert!(logs.contains("dropping message: no usable tenant"), "the capture saw the worker's lines:\n{logs}");
    for (what, secret) in [
        ("A's token", token_a.as_str()),
        ("B's token", &token_b),
        ("a ghost token", &ghost_token),
        ("the signing key", &secret),
    ] {
        assert!(!logs.contains(secret), "{what} leaked into the logs");
    }
    let leaked: Vec<&str> = logs.lines().filter(|l| l.contains(MARKER)).collect();
    assert!(leaked.is_empty(), "payload text leaked into the logs:\n{}", leaked.join("\n"));
    stack.assert_no_cross_tenant_reply();
    stack.cleanup().await;
}

//! Adversarial bodies: oversized, deeply nested, non-UTF-8 and mistyped bodies get their
//! documented status, and a slowloris body times out while other events are still accepted. The
//! hostile stack and the request helpers are the parent's.

use super::*;

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

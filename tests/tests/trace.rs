//! One trace spans HTTP request → publish → consume → bot: the worker's consume span has the
//! ingest request's span as its ancestor, across the broker. A separate test binary, because it
//! installs its own global tracing subscriber with an in-memory OpenTelemetry exporter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use wafleet_tests::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_span_continues_the_ingest_request_trace_and_carries_no_message_body() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info,lapin=off,sqlx=off"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .init();

    let env = TestEnv::new().await.unwrap();
    env.add_tenant("traced", "traced").await.unwrap();
    assert_eq!(env.sim.fire_message("traced", "15550000151", "secret body text", None, true).await.unwrap(), 200);
    assert_eq!(env.sim.wait_for_sends("traced", 1, Duration::from_secs(20)).await.len(), 1);
    // The send span closes right after the simulator recorded the send.
    env.wait_idle(1).await.unwrap();
    let _ = provider.force_flush();
    let spans: Vec<SpanData> = exporter.get_finished_spans().unwrap();

    let consume = spans.iter().find(|s| s.name == "consume").expect("a consume span");
    let trace_id = consume.span_context.trace_id();
    let in_trace: Vec<&SpanData> = spans.iter().filter(|s| s.span_context.trace_id() == trace_id).collect();
    let parent = in_trace
        .iter()
        .find(|s| s.span_context.span_id() == consume.parent_span_id)
        .expect("the consume span's parent is in the same trace");
    // Walk up from the parent: the root of the trace is the ingest HTTP request.
    let mut root = *parent;
    while let Some(up) = in_trace.iter().find(|s| s.span_context.span_id() == root.parent_span_id) {
        root = up;
    }
    let root_route = root.attributes.iter().find(|kv| kv.key.as_str() == "route").map(|kv| kv.value.to_string());
    assert_eq!(
        root_route.as_deref(),
        Some("/webhook/{customer_ref}/{token}"),
        "root span: {} {:?}",
        root.name,
        root.attributes
    );
    assert!(
        in_trace.iter().any(|s| s.name == "process" && s.parent_span_id == consume.span_context.span_id()),
        "processing (and the bot run) happens inside the consume span"
    );
    assert!(
        in_trace.iter().any(|s| s.name == "send"),
        "the reply's send joins the same trace, from HTTP request through the broker to WA Bridges"
    );
    let logged_trace_id =
        consume.attributes.iter().find(|kv| kv.key.as_str() == "trace_id").map(|kv| kv.value.to_string());
    assert_eq!(logged_trace_id, Some(trace_id.to_string()), "log lines of message work carry the trace id");
    let tenant = consume.attributes.iter().find(|kv| kv.key.as_str() == "tenant").map(|kv| kv.value.to_string());
    assert_eq!(tenant.as_deref(), Some("traced"));
    for span in &spans {
        for kv in &span.attributes {
            assert!(!kv.value.to_string().contains("secret body text"), "span {} leaks the body", span.name);
        }
    }
    env.cleanup().await;
}

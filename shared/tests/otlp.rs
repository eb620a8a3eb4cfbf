//! The standard OpenTelemetry variables, end to end: spans reach a stand-in collector over both
//! protocols (gRPC: tonic's server; http/protobuf: a bare HTTP/1.1 socket) with the service name,
//! resource attributes and headers the variables set; the sampler follows its variables; and a
//! bad value stops the parse naming its variable (never echoing a header's value).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wafleet_shared::settings::{args_from_lookup, try_parse_from, TelemetrySettings};
use wafleet_shared::telemetry::tracer_provider;

#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    telemetry: TelemetrySettings,
}

fn parse(vars: &[(&str, &str)]) -> Result<TelemetrySettings, String> {
    let map: HashMap<&str, &str> = vars.iter().copied().collect();
    let args = args_from_lookup::<Args>(|var| map.get(var).map(|v| (*v).to_owned()));
    try_parse_from::<Args, _, _>(args).map(|a| a.telemetry).map_err(|e| e.to_string())
}

/// One export as a collector saw it: its headers (lower-case names) and request.
type Export = (HashMap<String, String>, ExportTraceServiceRequest);

/// What a stand-in collector received.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Export>>>);

impl Received {
    fn push(&self, headers: HashMap<String, String>, request: ExportTraceServiceRequest) {
        self.0.lock().unwrap().push((headers, request));
    }

    async fn first(&self) -> Export {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(first) = self.0.lock().unwrap().first().cloned() {
                return first;
            }
            assert!(tokio::time::Instant::now() < deadline, "no export reached the collector");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        self.push(headers, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

async fn grpc_collector() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    let service = TraceServiceServer::new(received.clone());
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let _ = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await;
    });
    (url, received)
}

/// Reads into `buffer` until it holds `len` bytes; false when the peer closed first.
async fn fill(stream: &mut tokio::net::TcpStream, buffer: &mut Vec<u8>, len: usize) -> bool {
    while buffer.len() < len {
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// HTTP/1.1 on a bare socket: records each request, answers `200` with an empty protobuf body.
async fn http_collector() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                loop {
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let want = buffer.len() + 1;
                        if !fill(&mut stream, &mut buffer, want).await {
                            return;
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
                    let mut lines = head.split("\r\n");
                    let path = lines.next().unwrap_or_default().split(' ').nth(1).unwrap_or_default().to_owned();
                    let mut headers: HashMap<String, String> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        .collect();
                    headers.insert(":path".into(), path);
                    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                    if !fill(&mut stream, &mut buffer, end + 4 + length).await {
                        return;
                    }
                    let body: Vec<u8> = buffer.drain(..end + 4 + length).skip(end + 4).collect();
                    sink.push(headers, ExportTraceServiceRequest::decode(body.as_slice()).unwrap());
                    let answer =
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, received)
}

fn attribute(request: &ExportTraceServiceRequest, key: &str) -> Option<String> {
    let resource = request.resource_spans.first()?.resource.as_ref()?;
    resource.attributes.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    })
}

async fn export_one_span(protocol: &str, endpoint: &str) {
    let settings = parse(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-key=s3cr%3Dt"),
        ("OTEL_SERVICE_NAME", "wafleet-otlp-test"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,team=ops%20one"),
    ])
    .unwrap();
    let provider = tracer_provider("wafleet-ingest", &settings).expect("an endpoint turns export on");
    provider.tracer("otlp-test").in_span("span-under-test", |_| {});
    // Shutdown flushes the batch; it blocks, so not on a runtime thread the exporter may need.
    tokio::task::spawn_blocking(move || provider.shutdown()).await.unwrap().unwrap();
}

fn assert_received(headers: &HashMap<String, String>, request: &ExportTraceServiceRequest) {
    assert_eq!(attribute(request, "service.name").as_deref(), Some("wafleet-otlp-test"), "OTEL_SERVICE_NAME");
    assert_eq!(attribute(request, "deployment.environment").as_deref(), Some("test"), "OTEL_RESOURCE_ATTRIBUTES");
    assert_eq!(attribute(request, "team").as_deref(), Some("ops one"), "values are percent-decoded");
    let spans: Vec<&str> = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(spans, ["span-under-test"]);
    assert_eq!(headers.get("x-collector-key").map(String::as_str), Some("s3cr=t"), "OTEL_EXPORTER_OTLP_HEADERS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_grpc_collector_with_the_service_name_resource_attributes_and_headers() {
    let (url, received) = grpc_collector().await;
    export_one_span("grpc", &url).await;
    let (headers, request) = received.first().await;
    assert_received(&headers, &request);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_http_collector_at_v1_traces_with_the_service_name_resource_attributes_and_headers() {
    let (url, received) = http_collector().await;
    export_one_span("http/protobuf", &url).await;
    let (headers, request) = received.first().await;
    assert_eq!(headers.get(":path").map(String::as_str), Some("/v1/traces"));
    assert_eq!(headers.get("content-type").map(String::as_str), Some("application/x-protobuf"));
    assert_received(&headers, &request);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_traces_endpoint_and_protocol_override_the_general_ones() {
    let (grpc_url, grpc) = grpc_collector().await;
    let settings = parse(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &grpc_url),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
    ])
    .unwrap();
    let provider = tracer_provider("wafleet-worker", &settings).unwrap();
    provider.tracer("otlp-test").in_span("override", |_| {});
    tokio::task::spawn_blocking(move || provider.shutdown()).await.unwrap().unwrap();
    let (_, request) = grpc.first().await;
    assert_eq!(attribute(&request, "service.name").as_deref(), Some("wafleet-worker"), "the binary's name by default");
}

#[test]
fn the_sampler_follows_otel_traces_sampler_and_its_arg() {
    let sampled = |vars: &[(&str, &str)]| {
        let mut all = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")];
        all.extend_from_slice(vars);
        let provider = tracer_provider("wafleet-ingest", &parse(&all).unwrap()).unwrap();
        let mut span = provider.tracer("t").start("s");
        let sampled = span.span_context().is_sampled();
        span.end();
        let _ = provider.shutdown_with_timeout(Duration::from_millis(100));
        sampled
    };
    assert!(sampled(&[]), "parentbased_always_on by default");
    assert!(!sampled(&[("OTEL_TRACES_SAMPLER", "always_off")]));
    assert!(!sampled(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0")]));
    assert!(sampled(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "1")]));
}

#[test]
fn no_endpoint_means_no_export() {
    assert!(tracer_provider("wafleet-ingest", &parse(&[("OTEL_SERVICE_NAME", "x")]).unwrap()).is_none());
}

#[test]
fn a_bad_value_names_its_variable_and_a_header_value_is_never_echoed() {
    for (var, value) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://collector"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ("OTEL_RESOURCE_ATTRIBUTES", "team"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "authorization-hunter2"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=%zzhunter2"),
    ] {
        let error = parse(&[(var, value)]).expect_err(value);
        assert!(error.contains(var), "{var}={value}: {error}");
        if var == "OTEL_EXPORTER_OTLP_HEADERS" {
            assert!(!error.contains("hunter2"), "{error}");
        }
    }
}

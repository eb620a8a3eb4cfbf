//! Logging, tracing and metrics setup, from the binary's [`TelemetrySettings`]. Logs are JSON in
//! the cluster (`WAFLEET_LOG_FORMAT=json`) and human-readable locally; filtering follows
//! `RUST_LOG` (default `info`). OpenTelemetry export is off unless `OTEL_EXPORTER_OTLP_ENDPOINT`
//! or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; spans then go to that collector over OTLP,
//! `http/protobuf` (the blocking client, on the SDK's own export thread) or `grpc` (tonic, on the
//! binary's Tokio runtime), with the standard variables' headers, resource and sampler. Nothing
//! here reads the environment: the binaries parse it (and the resource is built without the
//! SDK's environment detectors), so a bad value stops the start naming its variable.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use crate::settings::TelemetrySettings;

/// Keeps the tracer provider alive; dropping it (at the end of `main`) flushes pending spans.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

fn filter(settings: &TelemetrySettings) -> EnvFilter {
    let filter = EnvFilter::try_new(&settings.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // lapin logs the bytes of returned messages (message bodies) at WARN; never let them out.
    match "lapin::returned_messages=off".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// Installs the global subscriber for `service` (logs, and OTLP traces when configured).
/// Safe to call more than once (later calls are no-ops).
pub fn init_tracing_for(service: &'static str, settings: &TelemetrySettings) -> TelemetryGuard {
    let json = settings.log_format == "json";
    let fmt_layer = if json {
        tracing_subscriber::fmt::layer().json().flatten_event(true).with_writer(std::io::stderr).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed()
    };
    let provider = tracer_provider(service, settings);
    let otel_layer = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let _ = tracing_subscriber::registry().with(filter(settings)).with(fmt_layer).with(otel_layer).try_init();
    TelemetryGuard { provider }
}

/// Installs the global subscriber of the operator CLI: no service name, no OTLP export.
///
/// lapin reports every channel the broker closes at ERROR, including the throwaway channel of a
/// passive declare that finds no queue, which is how the CLI asks whether a queue exists. A
/// short-lived command returns every real failure as its own error, so those lines would only
/// make a successful run look failed; they are off here (the services keep them).
pub fn init_tracing(settings: &TelemetrySettings) {
    let filter = filter(settings);
    let filter = match "lapin::channel=off".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// The tracer provider that exports to the collector of `settings`, or `None` when no endpoint
/// is set (or the exporter cannot be built, which is reported and leaves traces off). With
/// `grpc`, call it inside the Tokio runtime: the exporter's channel runs on it.
pub fn tracer_provider(service: &'static str, settings: &TelemetrySettings) -> Option<SdkTracerProvider> {
    use opentelemetry_otlp::{WithHttpConfig as _, WithTonicConfig as _};
    let set = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    let grpc = set(&settings.otlp_traces_protocol).or(set(&settings.otlp_protocol)).as_deref() == Some("grpc");
    // The signal's own endpoint is used as is; the base one gets the signal's path over HTTP only.
    let endpoint = match (set(&settings.otlp_traces_endpoint), set(&settings.otlp_endpoint)) {
        (Some(traces), _) => traces,
        (None, Some(base)) if grpc => base,
        (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
        (None, None) => return None,
    };
    let headers = settings.otlp_headers.clone().unwrap_or_default().0;
    let exporter = if grpc {
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (key, value) in &headers {
            match (key.to_ascii_lowercase().parse::<tonic::metadata::MetadataKey<_>>(), value.parse()) {
                (Ok(key), Ok(value)) => {
                    metadata.insert(key, value);
                }
                // Never the value: it is usually a credential.
                _ => eprintln!("OTEL_EXPORTER_OTLP_HEADERS: header {key} is not valid gRPC metadata; not sent"),
            }
        }
        opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).with_metadata(metadata).build()
    } else {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .with_headers(headers.into_iter().collect())
            .build()
    };
    match exporter {
        Ok(exporter) => Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_sampler(sampler(settings))
                .with_resource(resource(service, settings))
                .build(),
        ),
        Err(e) => {
            eprintln!("OTLP exporter not started ({e}); continuing without traces");
            None
        }
    }
}

/// `service.name` from `OTEL_SERVICE_NAME`, else from `OTEL_RESOURCE_ATTRIBUTES`, else the
/// binary's name; the other attributes as given; the SDK's own `telemetry.sdk.*`.
fn resource(service: &'static str, settings: &TelemetrySettings) -> opentelemetry_sdk::Resource {
    let attributes = settings.otel_resource_attributes.clone().unwrap_or_default().0;
    let from_attributes = attributes.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone());
    let name = settings.otel_service_name.clone().filter(|n| !n.trim().is_empty()).or(from_attributes);
    opentelemetry_sdk::Resource::builder_empty()
        .with_detector(Box::new(opentelemetry_sdk::resource::TelemetryResourceDetector))
        .with_attributes(
            attributes
                .into_iter()
                .filter(|(k, _)| k != "service.name")
                .map(|(k, v)| opentelemetry::KeyValue::new(k, v)),
        )
        .with_service_name(name.unwrap_or_else(|| service.to_owned()))
        .build()
}

fn sampler(settings: &TelemetrySettings) -> opentelemetry_sdk::trace::Sampler {
    use opentelemetry_sdk::trace::Sampler;
    let ratio = settings.otel_traces_sampler_arg.unwrap_or(1.0);
    match settings.otel_traces_sampler.as_deref().unwrap_or("parentbased_always_on") {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))),
        // parentbased_always_on, the specification's default; the parser allows nothing else.
        _ => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
    }
}

/// Latency buckets (seconds) for every `*_seconds` histogram: real Prometheus histograms, not
/// summaries, so quantiles can be aggregated across replicas.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Installs the Prometheus recorder and returns the handle that renders `/metrics`.
/// The caller must run [`PrometheusHandle::run_upkeep`] periodically (see [`spawn_upkeep`]).
pub fn install_metrics() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        // A per-tenant gauge that is no longer set (the tenant left the top N) disappears after
        // 15 minutes instead of reporting a stale value forever.
        .idle_timeout(MetricKindMask::GAUGE, Some(std::time::Duration::from_secs(15 * 60)))
        .install_recorder()
}

/// Runs histogram upkeep every 5 s on a background thread for the life of the process, so
/// summaries do not grow unbounded.
pub fn spawn_upkeep(handle: PrometheusHandle) {
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_secs(5));
        handle.run_upkeep();
    });
}

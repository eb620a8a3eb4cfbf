//! W3C trace context across the broker: injected into AMQP headers on publish and extracted on
//! consume, so one trace spans HTTP request → publish → consume → bot → send.

use lapin::types::{AMQPValue, FieldTable, ShortString};
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

struct HeaderInjector<'a>(&'a mut FieldTable);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(ShortString::from(key.to_owned()), AMQPValue::LongString(value.into()));
    }
}

struct HeaderExtractor<'a>(&'a FieldTable);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|k| k.as_str()).collect()
    }
}

/// Writes the current span's context (`traceparent`, `tracestate`) into `headers`.
pub fn inject_current(headers: &mut FieldTable) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut HeaderInjector(headers)));
}

/// The `traceparent` of the current span, for storing beside work done later (the outbox).
pub fn current_traceparent() -> Option<String> {
    let mut headers = FieldTable::default();
    inject_current(&mut headers);
    HeaderExtractor(&headers).get("traceparent").map(str::to_owned)
}

/// Makes `span` a child of the context carried in `headers`, if any.
pub fn set_parent_from_headers(span: &tracing::Span, headers: Option<&FieldTable>) {
    let Some(headers) = headers else { return };
    let context = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let _ = span.set_parent(context);
}

/// Makes `span` a child of a stored `traceparent`.
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else { return };
    let mut headers = FieldTable::default();
    headers.insert("traceparent".into(), AMQPValue::LongString(traceparent.into()));
    set_parent_from_headers(span, Some(&headers));
}

/// Records the span's OpenTelemetry trace id in its `trace_id` field (declared as
/// `tracing::field::Empty`), so JSON log lines inside it carry the id to search traces by.
pub fn record_trace_id(span: &tracing::Span) {
    use opentelemetry::trace::TraceContextExt as _;
    let context = span.context();
    let trace_id = context.span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}

//! Metric names and their descriptions, in one place so dashboards and alerts have one source.
//!
//! This module must not hold a recorder or any state: `main` installs the Prometheus recorder, and
//! without one (router tests) every macro call is a no-op. Labels never carry a ref, a token or a
//! payload, which keeps cardinality bounded and secrets out of Prometheus.

/// Counter, label `status`: every HTTP response.
pub const REQUESTS_TOTAL: &str = "wafleet_ingest_requests_total";
/// Counter, label `reason`: every 4xx answer.
pub const REJECTED_TOTAL: &str = "wafleet_ingest_rejected_total";
/// Counter, label `reason`: well-formed events answered 200 but not published (open route only).
pub const DROPPED_TOTAL: &str = "wafleet_ingest_dropped_total";
/// Counter, label `reason`: publishes that failed (answered 503 until the spool exists).
pub const PUBLISH_FAILED_TOTAL: &str = "wafleet_ingest_publish_failed_total";
/// Counter: body bytes read from accepted-size requests.
pub const BYTES_TOTAL: &str = "wafleet_ingest_bytes_total";
/// Histogram (seconds): from request start to the 200 of an accepted event.
pub const ACCEPT_SECONDS: &str = "wafleet_ingest_accept_seconds";
/// Histogram (seconds), label `outcome`: publish plus broker confirm.
pub const PUBLISH_CONFIRM_SECONDS: &str = "wafleet_ingest_publish_confirm_seconds";

/// Registers help texts with the installed recorder (a no-op without one).
pub fn describe() {
    metrics::describe_counter!(REQUESTS_TOTAL, "HTTP responses by status code");
    metrics::describe_counter!(REJECTED_TOTAL, "Requests answered 4xx, by reason");
    metrics::describe_counter!(DROPPED_TOTAL, "Events answered 200 but dropped, by reason");
    metrics::describe_counter!(PUBLISH_FAILED_TOTAL, "Publishes that failed, by reason");
    metrics::describe_counter!(BYTES_TOTAL, metrics::Unit::Bytes, "Webhook body bytes read");
    metrics::describe_histogram!(ACCEPT_SECONDS, metrics::Unit::Seconds, "Time to accept a webhook event");
    metrics::describe_histogram!(
        PUBLISH_CONFIRM_SECONDS,
        metrics::Unit::Seconds,
        "Time from basic_publish to the broker confirm"
    );
}

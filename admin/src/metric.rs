//! Metric names of the admin API and their descriptions, in one place so dashboards and alerts
//! have one source.
//!
//! This module must not hold a recorder or any state: `main` installs the Prometheus recorder,
//! and without one (router tests) every macro call is a no-op. The `route` label is the matched
//! path template (`/v1/tenants/{customer_ref}`), never the raw path, so a tenant ref never
//! becomes a label value and cardinality stays bounded by the routes.

/// Counter, labels `route` and `status`: every answer of the API port.
pub const REQUESTS_TOTAL: &str = "wafleet_admin_requests_total";
/// Histogram (seconds), label `route`: from request start to the answer's headers.
pub const REQUEST_DURATION_SECONDS: &str = "wafleet_admin_request_duration_seconds";

/// The `route` of a request that matched no route (an unknown path, or a refusal before
/// routing): one value for all of them, whatever the path.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Registers help texts with the installed recorder (a no-op without one).
pub fn describe() {
    metrics::describe_counter!(REQUESTS_TOTAL, "Admin API answers by route template and status code");
    metrics::describe_histogram!(
        REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Admin API request latency by route template"
    );
}

/// Records one answer.
pub fn record(route: &str, status: u16, elapsed: std::time::Duration) {
    metrics::counter!(REQUESTS_TOTAL, "route" => route.to_owned(), "status" => status.to_string()).increment(1);
    metrics::histogram!(REQUEST_DURATION_SECONDS, "route" => route.to_owned()).record(elapsed.as_secs_f64());
}

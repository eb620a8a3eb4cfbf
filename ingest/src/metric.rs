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
/// Counter, label `reason`: publishes that failed (the event was then spooled, or answered 503).
pub const PUBLISH_FAILED_TOTAL: &str = "wafleet_ingest_publish_failed_total";
/// Counter: body bytes read from accepted-size requests.
pub const BYTES_TOTAL: &str = "wafleet_ingest_bytes_total";
/// Histogram (seconds): from request start to the 200 of an accepted event.
pub const ACCEPT_SECONDS: &str = "wafleet_ingest_accept_seconds";
/// Histogram (seconds), label `outcome`: publish plus broker confirm.
pub const PUBLISH_CONFIRM_SECONDS: &str = "wafleet_ingest_publish_confirm_seconds";
/// Gauge: spooled records not yet confirmed by the broker.
pub const SPOOL_RECORDS: &str = "wafleet_ingest_spool_records";
/// Gauge (bytes): size of the spool's segment files.
pub const SPOOL_BYTES: &str = "wafleet_ingest_spool_bytes";
/// Gauge (bytes): the spool's maximum (`WAFLEET_SPOOL_MAX_BYTES`), so its fill can be alerted on.
pub const SPOOL_MAX_BYTES: &str = "wafleet_ingest_spool_max_bytes";
/// Gauge (seconds): age of the oldest spooled record not yet confirmed; 0 when empty.
pub const SPOOL_OLDEST_AGE_SECONDS: &str = "wafleet_ingest_spool_oldest_age_seconds";
/// Counter: events answered 200 from the spool (the broker did not confirm them in time).
pub const SPOOLED_TOTAL: &str = "wafleet_ingest_spooled_total";
/// Counter, label `reason` (`full`, `failed`): events neither the broker nor the spool took (503).
pub const SPOOL_REFUSED_TOTAL: &str = "wafleet_ingest_spool_refused_total";
/// Counter: spooled records confirmed by the broker.
pub const SPOOL_DRAINED_TOTAL: &str = "wafleet_ingest_spool_drained_total";
/// Counter, label `reason`: drain publishes that failed (retried later).
pub const SPOOL_DRAIN_FAILED_TOTAL: &str = "wafleet_ingest_spool_drain_failed_total";
/// Counter: damaged records skipped at recovery or when read back.
pub const SPOOL_CORRUPT_RECORDS_TOTAL: &str = "wafleet_ingest_spool_corrupt_records_total";
/// Counter: spool segments or records the drain could not open or read (retried, not dropped).
pub const SPOOL_READ_ERRORS_TOTAL: &str = "wafleet_ingest_spool_read_errors_total";
/// Counter: fsyncs the spool writer issued (data and directory).
pub const SPOOL_FSYNCS_TOTAL: &str = "wafleet_ingest_spool_fsyncs_total";
/// Counter: batches whose write or fsync failed (their requests got 503).
pub const SPOOL_WRITE_ERRORS_TOTAL: &str = "wafleet_ingest_spool_write_errors_total";
/// Histogram: records committed per fsync (group commit).
pub const SPOOL_BATCH_RECORDS: &str = "wafleet_ingest_spool_batch_records";

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
    metrics::describe_gauge!(SPOOL_RECORDS, "Spooled records not yet confirmed by the broker");
    metrics::describe_gauge!(SPOOL_BYTES, metrics::Unit::Bytes, "Size of the spool's segment files");
    metrics::describe_gauge!(
        SPOOL_OLDEST_AGE_SECONDS,
        metrics::Unit::Seconds,
        "Age of the oldest spooled record not yet confirmed"
    );
    metrics::describe_counter!(SPOOLED_TOTAL, "Events accepted into the disk spool");
    metrics::describe_counter!(SPOOL_REFUSED_TOTAL, "Events neither the broker nor the spool took, by reason");
    metrics::describe_counter!(SPOOL_DRAINED_TOTAL, "Spooled records confirmed by the broker");
    metrics::describe_counter!(SPOOL_DRAIN_FAILED_TOTAL, "Drain publishes that failed, by reason");
    metrics::describe_counter!(SPOOL_CORRUPT_RECORDS_TOTAL, "Damaged spool records skipped");
    metrics::describe_counter!(SPOOL_READ_ERRORS_TOTAL, "Spool reads that failed and will be retried");
    metrics::describe_counter!(SPOOL_FSYNCS_TOTAL, "fsync calls issued by the spool writer");
    metrics::describe_counter!(SPOOL_WRITE_ERRORS_TOTAL, "Spool batches whose write or fsync failed");
    metrics::describe_histogram!(SPOOL_BATCH_RECORDS, "Records committed per spool fsync");
    prime();
}

/// Every `reason` of [`REJECTED_TOTAL`] (the 4xx answers of [`crate::error::Error::reason`]).
pub const REJECTED_REASONS: [&str; 14] = [
    "bad_ref",
    "bad_token",
    "ref_mismatch",
    "open_disabled",
    "unsupported_media_type",
    "payload_too_large",
    "body_timeout",
    "body_read",
    "invalid_utf8",
    "invalid_json",
    "not_object",
    "duplicate_key",
    "not_found",
    "method_not_allowed",
];

/// Creates the bounded counters at 0, so the first event after a start shows in `rate()` and
/// `increase()` (a series that appears at 1 has no earlier sample to differ from).
fn prime() {
    for reason in REJECTED_REASONS {
        metrics::counter!(REJECTED_TOTAL, "reason" => reason).increment(0);
    }
    for reason in ["not_ready", "deadline", "nack", "returned", "unconfirmed", "amqp"] {
        metrics::counter!(PUBLISH_FAILED_TOTAL, "reason" => reason).increment(0);
    }
    // `tenant_share`: one tenant's queue is full and its share of the spool is used up.
    for reason in ["full", "tenant_share", "failed"] {
        metrics::counter!(SPOOL_REFUSED_TOTAL, "reason" => reason).increment(0);
    }
    for name in [
        SPOOLED_TOTAL,
        SPOOL_DRAINED_TOTAL,
        SPOOL_CORRUPT_RECORDS_TOTAL,
        SPOOL_READ_ERRORS_TOTAL,
        SPOOL_WRITE_ERRORS_TOTAL,
    ] {
        metrics::counter!(name).increment(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bounded_counter_is_exported_at_zero_before_its_first_event() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, describe);
        let text = handle.render();
        for reason in REJECTED_REASONS {
            let line = format!("{REJECTED_TOTAL}{{reason=\"{reason}\"}} 0");
            assert!(text.lines().any(|l| l == line), "missing `{line}`");
        }
        for line in [
            format!("{PUBLISH_FAILED_TOTAL}{{reason=\"deadline\"}} 0"),
            format!("{SPOOL_REFUSED_TOTAL}{{reason=\"full\"}} 0"),
            format!("{SPOOL_REFUSED_TOTAL}{{reason=\"tenant_share\"}} 0"),
            format!("{SPOOLED_TOTAL} 0"),
            format!("{SPOOL_DRAINED_TOTAL} 0"),
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}`");
        }
    }
}

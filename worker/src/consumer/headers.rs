//! The AMQP headers a delivery carries through retries, the DLQ and quarantine: the attempt
//! count, the last failure and its history, and the queue's tenant.

use lapin::types::{AMQPValue, FieldTable};
use wafleet_shared::topology::{ATTEMPT_HEADER, HISTORY_HEADER, LAST_ERROR_HEADER, REASON_HEADER};
use wafleet_shared::CustomerRef;

use crate::process::Failure;

pub(super) fn header_u32(delivery: &lapin::message::Delivery, name: &str) -> u32 {
    let value = delivery.properties.headers().as_ref().and_then(|h| h.inner().get(name).cloned());
    match value {
        Some(AMQPValue::LongUInt(n)) => n,
        Some(AMQPValue::LongInt(n)) => u32::try_from(n).unwrap_or(0),
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(n).unwrap_or(0),
        Some(AMQPValue::ShortUInt(n)) => u32::from(n),
        _ => 0,
    }
}

/// The delivery's headers plus the attempt count, the failure, and an appended history line.
pub(super) fn failure_headers(delivery: &lapin::message::Delivery, failure: &Failure, attempt: u32) -> FieldTable {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    let history = match headers.inner().get(HISTORY_HEADER) {
        Some(AMQPValue::LongString(h)) => h.to_string(),
        _ => String::new(),
    };
    let error = failure.to_string();
    let line = format!("{} {} {error}", chrono::Utc::now().to_rfc3339(), failure.reason());
    let history = if history.is_empty() { line } else { format!("{history}\n{line}") };
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(attempt));
    headers.insert(REASON_HEADER.into(), AMQPValue::LongString(failure.reason().into()));
    headers.insert(LAST_ERROR_HEADER.into(), AMQPValue::LongString(error.into()));
    headers.insert(HISTORY_HEADER.into(), AMQPValue::LongString(history.into()));
    headers
}

pub(super) fn quarantine_headers(queue_tenant: &CustomerRef) -> FieldTable {
    let mut headers = FieldTable::default();
    headers.insert("x-wafleet-queue-tenant".into(), lapin::types::AMQPValue::LongString(queue_tenant.as_str().into()));
    headers
}

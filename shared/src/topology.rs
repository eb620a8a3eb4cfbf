//! Broker names. Every binary builds queue names through these functions so that a tenant's
//! ref maps to exactly one queue and no string concatenation elsewhere can drift.

use crate::ids::CustomerRef;

/// The direct exchange ingest publishes to, routing key = `customer_ref`.
pub const INBOUND_EXCHANGE: &str = "wa.inbound";
/// Alternate exchange of `wa.inbound` (fanout): catches publishes with no tenant queue.
pub const UNROUTED_EXCHANGE: &str = "wa.unrouted";
/// The queue behind [`UNROUTED_EXCHANGE`].
pub const UNROUTED_QUEUE: &str = "wa.unrouted";
/// Dead-letter exchange of tenant queues (direct, routing key = `customer_ref`).
pub const DLX_EXCHANGE: &str = "wa.dlx";
/// Queue for envelopes whose ref differs from their queue's tenant. Never replayed.
pub const QUARANTINE_QUEUE: &str = "wa.quarantine";
/// Fanout exchange bound only to [`QUARANTINE_QUEUE`]. The worker quarantines through it, not
/// the default exchange, so its rights stay `^wa\.` (the manifests grant no `amq.default`).
pub const QUARANTINE_EXCHANGE: &str = "wa.quarantine";
/// Prefix of every tenant queue.
pub const TENANT_QUEUE_PREFIX: &str = "wa.tenant.";
/// Prefix of every per-tenant dead-letter queue.
pub const DLQ_PREFIX: &str = "wa.dlq.";
/// Exchange the worker republishes to for delayed retries (direct, routing key = tier name).
pub const RETRY_EXCHANGE: &str = "wa.retry";
/// AMQP header carrying the worker's own attempt count.
pub const ATTEMPT_HEADER: &str = "x-wafleet-attempt";
/// AMQP header with the reason of the last failure (`bot_timeout`, `undecodable`, ...).
pub const REASON_HEADER: &str = "x-wafleet-reason";
/// AMQP header with the last error text (never the message body).
pub const LAST_ERROR_HEADER: &str = "x-wafleet-last-error";
/// AMQP header with one line per failed attempt: `<time> <reason> <error>`.
pub const HISTORY_HEADER: &str = "x-wafleet-history";

/// `wa.tenant.<ref>`. ISOLATION: the only way to name a tenant's queue.
pub fn tenant_queue(customer_ref: &CustomerRef) -> String {
    format!("{TENANT_QUEUE_PREFIX}{customer_ref}")
}

/// `wa.dlq.<ref>`.
pub fn dlq_queue(customer_ref: &CustomerRef) -> String {
    format!("{DLQ_PREFIX}{customer_ref}")
}

/// The tenant a queue belongs to, if `queue` is a tenant queue.
pub fn tenant_of_queue(queue: &str) -> Option<CustomerRef> {
    queue.strip_prefix(TENANT_QUEUE_PREFIX).and_then(|r| CustomerRef::parse(r).ok())
}

/// An anchored policy pattern matching exactly `name`. `.` is legal in refs and is a regex
/// metacharacter, so every non-alphanumeric byte is escaped.
pub fn exact_queue_pattern(name: &str) -> String {
    let mut pattern = String::with_capacity(name.len() * 2 + 2);
    pattern.push('^');
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() && c != '_' {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('$');
    pattern
}

/// The policy pattern covering every tenant queue.
pub const TENANT_QUEUES_PATTERN: &str = r"^wa\.tenant\.";
/// The policy pattern covering every per-tenant dead-letter queue.
pub const DLQ_PATTERN: &str = r"^wa\.dlq\.";

/// The queue type of a tenant's queue, stored on the tenant row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueType {
    /// Replicated Raft queue; the default.
    Quorum,
    /// Classic v2 queue, for fleets far past ~5k tenants.
    Classic,
}

impl QueueType {
    /// The `x-queue-type` value and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }

    /// Parses the database spelling.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "quorum" => Some(QueueType::Quorum),
            "classic" => Some(QueueType::Classic),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_pattern_escapes_dots_so_it_matches_one_queue() {
        assert_eq!(exact_queue_pattern("wa.tenant.a.b"), r"^wa\.tenant\.a\.b$");
        assert_eq!(exact_queue_pattern("wa.tenant.x:y-z"), r"^wa\.tenant\.x\:y\-z$");
    }

    #[test]
    fn queue_names_round_trip_to_their_tenant() {
        let r = CustomerRef::parse("cust.1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tenant_of_queue(&tenant_queue(&r)), Some(r));
        assert_eq!(tenant_of_queue("wa.dlq.x"), None);
    }
}

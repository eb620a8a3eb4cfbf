//! Why a message failed: the typed cause the consumer carries into the retry tiers and the
//! dead-letter headers. The reason labels and texts are read by dashboards, alerts and
//! operators (`wafleet dlq list`), so they must not change with the types.

use std::sync::Arc;
use std::time::Duration;

use wafleet_fleet::error::Error;

use crate::bots::BotError;

/// Why a message failed, kept with it in the retry and dead-letter headers: [`Failure::reason`]
/// is the stable label (headers, metrics, dashboards), the `Display` text the last error. Causes
/// are shared (`Arc`) because a failure is cloned into retries and history.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    /// The body is not a wafleet envelope.
    #[error("not a wafleet envelope")]
    Undecodable,
    /// Postgres refused the transaction as a serialization failure or deadlock.
    #[error("database serialization failure")]
    Serialization,
    /// Processing failed in a way retrying cannot fix.
    #[error(transparent)]
    Processing(Arc<Error>),
    /// A classic queue redelivered the message past the crash-loop limit.
    #[error("redelivered {0} times without completing")]
    DeliveryLimit(i64),
    /// The bot says a dependency was briefly unavailable.
    #[error("{}", bot_detail(.0))]
    BotTransient(Arc<BotError>),
    /// The bot's task panicked.
    #[error("the bot panicked")]
    BotPanic,
    /// The bot did not answer in time.
    #[error("no answer within {} ms", .0.as_millis())]
    BotTimeout(Duration),
    /// The last retry tier failed too; the failure of the last attempt is kept.
    #[error("{reason}: {0}", reason = .0.reason())]
    RetriesExhausted(Box<Failure>),
}

impl Failure {
    /// The stable reason label (`bot_timeout`, `bot_panic`, `undecodable`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Undecodable => "undecodable",
            Self::Serialization => "serialization",
            Self::Processing(_) => "processing_error",
            Self::DeliveryLimit(_) => "delivery_limit",
            Self::BotTransient(_) => "bot_transient",
            Self::BotPanic => "bot_panic",
            Self::BotTimeout(_) => "bot_timeout",
            Self::RetriesExhausted(_) => "retries_exhausted",
        }
    }
}

/// The bot's own text, without the variant's prefix (the reason label already says it).
fn bot_detail(e: &BotError) -> &str {
    match e {
        BotError::Transient(m) | BotError::Permanent(m) => m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_labels_and_texts_are_the_ones_dashboards_and_dead_letters_know() {
        let transient = Failure::BotTransient(Arc::new(BotError::Transient("bot at h answered 503".into())));
        let cases = [
            (Failure::Undecodable, "undecodable", "not a wafleet envelope"),
            (Failure::Serialization, "serialization", "database serialization failure"),
            (Failure::DeliveryLimit(21), "delivery_limit", "redelivered 21 times without completing"),
            (transient.clone(), "bot_transient", "bot at h answered 503"),
            (Failure::BotPanic, "bot_panic", "the bot panicked"),
            (Failure::BotTimeout(Duration::from_secs(10)), "bot_timeout", "no answer within 10000 ms"),
            (
                Failure::RetriesExhausted(Box::new(transient)),
                "retries_exhausted",
                "bot_transient: bot at h answered 503",
            ),
        ];
        for (failure, reason, text) in cases {
            assert_eq!((failure.reason(), failure.to_string().as_str()), (reason, text));
        }
    }

    #[test]
    fn a_processing_failure_keeps_the_error_it_came_from() {
        let failure = Failure::Processing(Arc::new(Error::UnknownTenant("cust_1".into())));
        assert_eq!(failure.reason(), "processing_error");
        assert_eq!(failure.to_string(), "no tenant with customer_ref cust_1");
        assert!(matches!(&failure, Failure::Processing(e) if matches!(**e, Error::UnknownTenant(_))));
    }
}

//! Why a WA Bridges management or status call failed. Kept apart from the client so the crate's
//! error type can wrap it without depending on the tenant types the client takes.

/// Why a management or status call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 429: the account's limit for this bucket is used up.
    #[error("WA Bridges rate limit (429, retry after {retry_after:?} s)")]
    RateLimited {
        /// `Retry-After` in seconds, when sent.
        retry_after: Option<u64>,
    },
    /// Another non-2xx answer.
    #[error("WA Bridges answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The `error` field of the answer (never a key).
        message: String,
    },
    /// No answer.
    #[error("WA Bridges request failed")]
    Transport(#[source] reqwest::Error),
}

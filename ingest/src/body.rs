//! Reading a webhook body: content type first, then the bytes under a size limit and a deadline.
//!
//! This module owns the 415, 413 and 408 answers. It must only be called after authentication,
//! so an unauthenticated caller never makes ingest read (or wait for) a body, and it must not
//! parse or log what it reads.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::error::Error;

/// Limits applied to every webhook body.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// Largest accepted body, in bytes.
    pub max_bytes: usize,
    /// Time allowed to receive the whole body.
    pub timeout: Duration,
}

/// Accepts exactly one `Content-Type` whose media type is `application/json` (any case,
/// parameters such as `charset` allowed).
pub fn require_json(headers: &HeaderMap) -> Result<(), Error> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Error::UnsupportedMediaType);
    };
    let value = value.to_str().map_err(|_| Error::UnsupportedMediaType)?;
    let media_type = value.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType)
    }
}

/// Reads the whole body, refusing more than `limits.max_bytes` and anything slower than
/// `limits.timeout`.
pub async fn read(headers: &HeaderMap, body: Body, limits: BodyLimits) -> Result<Bytes, Error> {
    // A declared length over the limit is refused without reading a byte.
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_bytes as u64) {
        return Err(Error::PayloadTooLarge);
    }
    // Limited also covers chunked bodies and lying Content-Length headers.
    let limited = Limited::new(body, limits.max_bytes);
    let collected = tokio::time::timeout(limits.timeout, limited.collect()).await.map_err(|_| Error::BodyTimeout)?;
    match collected {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            metrics::counter!(crate::metric::BYTES_TOTAL).increment(bytes.len() as u64);
            Ok(bytes)
        }
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(Error::PayloadTooLarge),
        Err(err) => Err(Error::BodyRead(err)),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with_type(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::CONTENT_TYPE, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn json_media_types_pass_in_any_case_and_with_parameters() {
        for ok in ["application/json", "Application/JSON", "application/json; charset=utf-8", " application/json ;x=y"]
        {
            assert!(require_json(&with_type(&[ok])).is_ok(), "{ok}");
        }
    }

    #[test]
    fn other_missing_or_repeated_content_types_are_refused() {
        for bad in [
            &["text/plain"][..],
            &["application/jsonx"],
            &["application/x-www-form-urlencoded"],
            &["application/json-patch+json"],
            &[],
            &["application/json", "application/json"],
        ] {
            assert!(matches!(require_json(&with_type(bad)), Err(Error::UnsupportedMediaType)), "{bad:?}");
        }
    }
}

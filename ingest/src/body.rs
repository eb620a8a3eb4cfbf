//! Reading a webhook body: content type first, then room among the bodies in flight, then the
//! bytes under a size limit and a deadline.
//!
//! This module owns the 415, 413, 408 and "busy" 503 answers. It must only be called after authentication,
//! so an unauthenticated caller never makes ingest read (or wait for) a body, and it must not
//! parse or log what it reads.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;

/// Limits applied to every webhook body.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// Largest accepted body, in bytes.
    pub max_bytes: usize,
    /// Time allowed to receive the whole body.
    pub timeout: Duration,
}

/// Room for the webhook bodies handled at once (`WAFLEET_BODY_BYTES_IN_FLIGHT`), counted in KiB.
#[derive(Clone, Debug)]
pub struct InFlight {
    kib: Arc<Semaphore>,
    total_kib: u32,
}

impl InFlight {
    /// Room for `bytes` of bodies at once.
    pub fn new(bytes: usize) -> Self {
        let total_kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX).clamp(1, Semaphore::MAX_PERMITS as u32);
        Self { kib: Arc::new(Semaphore::new(total_kib as usize)), total_kib }
    }

    /// KiB free now (for tests and metrics).
    pub fn free_kib(&self) -> usize {
        self.kib.available_permits()
    }

    async fn reserve(&self, bytes: usize, wait: Duration) -> Result<Room, Error> {
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX).clamp(1, self.total_kib);
        match tokio::time::timeout(wait, Arc::clone(&self.kib).acquire_many_owned(kib)).await {
            Ok(Ok(permit)) => Ok(Room(permit)),
            // The semaphore is never closed; treat it like waiting too long.
            Ok(Err(_)) | Err(_) => Err(Error::Busy),
        }
    }
}

/// A body's share of [`InFlight`], given back when the request's answer is ready.
#[derive(Debug)]
pub struct Room(#[allow(dead_code)] OwnedSemaphorePermit);

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
/// `limits.timeout`, with room for it in `in_flight`: a declared length is reserved before the
/// first byte is read; a body without one (chunked) is read first and then reserved by its size,
/// so a slow chunked sender holds no room while it trickles. Waiting for room longer than
/// `limits.timeout` is refused as busy. The returned [`Room`] is held until the request is
/// answered.
pub async fn read(
    headers: &HeaderMap,
    body: Body,
    limits: BodyLimits,
    in_flight: &InFlight,
) -> Result<(Bytes, Room), Error> {
    // A declared length over the limit is refused without reading a byte.
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_bytes as u64) {
        return Err(Error::PayloadTooLarge);
    }
    let busy = |e: Error| {
        tracing::warn!("webhook bodies in flight fill WAFLEET_BODY_BYTES_IN_FLIGHT; answering 503");
        e
    };
    let room = match declared {
        Some(len) => Some(in_flight.reserve(len as usize, limits.timeout).await.map_err(busy)?),
        None => None,
    };
    // Limited also covers chunked bodies and lying Content-Length headers.
    let limited = Limited::new(body, limits.max_bytes);
    let collected = tokio::time::timeout(limits.timeout, limited.collect()).await.map_err(|_| Error::BodyTimeout)?;
    match collected {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            metrics::counter!(crate::metric::BYTES_TOTAL).increment(bytes.len() as u64);
            let room = match room {
                Some(room) => room,
                None => in_flight.reserve(bytes.len(), limits.timeout).await.map_err(busy)?,
            };
            Ok((bytes, room))
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

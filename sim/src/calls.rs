//! The log of `/api/*` calls the simulator answered: when each arrived, with which key, from which
//! client address, against which bucket and with what status. Tests read it to prove a client
//! stayed inside the documented limits. Pure data with a bounded buffer; the `/api` gate fills it.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::limiter::Bucket;

/// The log keeps the most recent calls only, so a long benchmark run cannot grow the simulator
/// without bound (about 15 MB at this size); older entries are dropped first.
pub const API_CALL_LOG_CAPACITY: usize = 100_000;

/// One `/api/*` request as the simulator answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiCall {
    /// When the request arrived (before any limit was checked).
    pub at: DateTime<Utc>,
    /// The configured key it authenticated with; `None` when the `Authorization` header was
    /// missing or named no configured key (an unknown key is not stored).
    pub api_key: Option<String>,
    /// The client address the per-IP floor counted it under: the `client_ip_header` value when
    /// that setting is on and the header is present, else the peer's IP address.
    pub client: String,
    /// The per-key bucket the route belongs to (charged or not).
    pub bucket: Bucket,
    /// The HTTP status answered.
    pub status: u16,
}

/// The bounded call log; arrival instants are kept beside the calls for sliding-window counts,
/// which must not depend on the wall clock.
#[derive(Debug, Default)]
pub(crate) struct CallLog {
    calls: VecDeque<(Instant, ApiCall)>,
}

impl CallLog {
    /// Append `call`, which arrived at `arrived`, dropping the oldest entry when full.
    pub(crate) fn push(&mut self, arrived: Instant, call: ApiCall) {
        if self.calls.len() >= API_CALL_LOG_CAPACITY {
            self.calls.pop_front();
        }
        self.calls.push_back((arrived, call));
    }

    /// The logged calls in the order they were answered.
    pub(crate) fn calls(&self) -> Vec<ApiCall> {
        self.calls.iter().map(|(_, call)| call.clone()).collect()
    }

    pub(crate) fn clear(&mut self) {
        self.calls.clear();
    }

    /// The most calls (all keys and addresses, refused ones included) that arrived within any
    /// `span`: a window `[t, t + span)` slid over every arrival.
    pub(crate) fn max_in_any(&self, span: Duration) -> usize {
        // Calls are appended when answered, so a slow one can follow a later arrival: sort.
        let mut arrivals: Vec<Instant> = self.calls.iter().map(|(at, _)| *at).collect();
        arrivals.sort_unstable();
        let mut best = 0;
        let mut start = 0;
        for (end, at) in arrivals.iter().enumerate() {
            while arrivals.get(start).is_some_and(|first| at.duration_since(*first) >= span) {
                start += 1;
            }
            best = best.max(end + 1 - start);
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> ApiCall {
        ApiCall { at: Utc::now(), api_key: None, client: "127.0.0.1".into(), bucket: Bucket::Other, status: 200 }
    }

    #[test]
    fn max_in_any_counts_the_busiest_span_of_out_of_order_arrivals() {
        let t0 = Instant::now();
        let mut log = CallLog::default();
        for ms in [0, 3_000, 100, 1_900, 2_000, 2_100, 2_950] {
            log.push(t0 + Duration::from_millis(ms), call());
        }
        // [1900, 2900), [2000, 3000) and [2100, 3100) hold three each; 3000 is outside the second.
        assert_eq!(log.max_in_any(Duration::from_secs(1)), 3);
        assert_eq!(log.max_in_any(Duration::from_millis(1_001)), 4);
        assert_eq!(log.max_in_any(Duration::from_secs(10)), 7);
        assert_eq!(log.max_in_any(Duration::from_millis(1)), 1);
        assert_eq!(CallLog::default().max_in_any(Duration::from_secs(1)), 0);
    }

    #[test]
    fn the_log_keeps_only_the_most_recent_calls() {
        let t0 = Instant::now();
        let mut log = CallLog::default();
        for n in 0..API_CALL_LOG_CAPACITY + 5 {
            let status = if n < 5 { 500 } else { 200 };
            log.push(t0, ApiCall { status, ..call() });
        }
        let calls = log.calls();
        assert_eq!(calls.len(), API_CALL_LOG_CAPACITY);
        assert!(calls.iter().all(|c| c.status == 200));
    }
}

//! Per-key fixed-window rate limiting for the three documented buckets, the per-IP floor over all
//! of them, plus the per-window history of proxy calls that benchmarks read. Windows are aligned to
//! the simulator's start so every key and address shares the same boundaries. Pure logic: callers
//! pass the current instant, which keeps it testable without sleeping.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::SimConfig;

/// Which documented per-key limit an `/api/*` request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    /// `POST /api/instances`.
    Provision,
    /// `/api/instances/{key}/proxy/*`.
    Proxy,
    /// Every other `/api/*` call.
    Other,
}

/// Fixed-window counters per (API key, bucket).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    epoch: Instant,
    window: Duration,
    unlimited: bool,
    proxy_limit: u32,
    other_limit: u32,
    provision_limit: u32,
    /// (key, bucket) -> (window index, requests admitted in that window).
    counts: HashMap<(String, Bucket), (u64, u32)>,
    /// Proxy calls that arrived per window index, across all keys.
    proxy_history: Vec<u32>,
    ip_limit: u32,
    /// client address -> (window index, requests admitted in that window).
    ip_counts: HashMap<String, (u64, u32)>,
}

/// Past this many client addresses, entries of finished windows are dropped: the client header
/// lets a caller invent addresses, and a test double should not grow without bound.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

impl RateLimiter {
    pub(crate) fn new(config: &SimConfig, epoch: Instant) -> Self {
        Self {
            epoch,
            window: config.window,
            unlimited: config.unlimited,
            proxy_limit: config.proxy_per_window,
            other_limit: config.other_per_window,
            provision_limit: config.provision_per_window,
            counts: HashMap::new(),
            proxy_history: Vec::new(),
            ip_limit: config.per_ip_per_window,
            ip_counts: HashMap::new(),
        }
    }

    fn window_index(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.epoch).as_nanos();
        // `validate` guarantees a non-zero window; max(1) keeps this total anyway.
        let index = elapsed / self.window.as_nanos().max(1);
        u64::try_from(index).unwrap_or(u64::MAX)
    }

    fn limit(&self, bucket: Bucket) -> u32 {
        match bucket {
            Bucket::Provision => self.provision_limit,
            Bucket::Proxy => self.proxy_limit,
            Bucket::Other => self.other_limit,
        }
    }

    /// Whole seconds from `now` until the current window ends, rounded up, at least 1.
    fn retry_after_secs(&self, now: Instant, index: u64) -> u64 {
        let window_nanos = self.window.as_nanos();
        let end = window_nanos.saturating_mul(u128::from(index) + 1);
        let elapsed = now.saturating_duration_since(self.epoch).as_nanos();
        let remaining_ms = end.saturating_sub(elapsed).div_ceil(1_000_000);
        u64::try_from(remaining_ms.div_ceil(1000)).unwrap_or(u64::MAX).max(1)
    }

    /// Count one request for `key` in `bucket`. `Err(secs)` means "over the limit, retry after".
    pub(crate) fn admit(&mut self, key: &str, bucket: Bucket, now: Instant) -> Result<(), u64> {
        let index = self.window_index(now);
        if bucket == Bucket::Proxy {
            self.record_proxy_call(index);
        }
        if self.unlimited {
            return Ok(());
        }
        let limit = self.limit(bucket);
        let entry = self.counts.entry((key.to_owned(), bucket)).or_insert((index, 0));
        if entry.0 != index {
            *entry = (index, 0);
        }
        if entry.1 >= limit {
            return Err(self.retry_after_secs(now, index));
        }
        entry.1 += 1;
        Ok(())
    }

    /// Count one `/api/*` request from `client` against the per-IP floor, before any per-key
    /// bucket. `Err(secs)` means "over the floor, retry after"; such a proxy call still counts
    /// as arrived, like one refused by its key's bucket.
    pub(crate) fn admit_ip(&mut self, client: &str, bucket: Bucket, now: Instant) -> Result<(), u64> {
        if self.unlimited {
            return Ok(());
        }
        let index = self.window_index(now);
        if self.ip_counts.len() >= MAX_TRACKED_ADDRESSES && !self.ip_counts.contains_key(client) {
            self.ip_counts.retain(|_, (window, _)| *window == index);
        }
        let entry = self.ip_counts.entry(client.to_owned()).or_insert((index, 0));
        if entry.0 != index {
            *entry = (index, 0);
        }
        if entry.1 >= self.ip_limit {
            if bucket == Bucket::Proxy {
                self.record_proxy_call(index);
            }
            return Err(self.retry_after_secs(now, index));
        }
        entry.1 += 1;
        Ok(())
    }

    fn record_proxy_call(&mut self, index: u64) {
        let slot = usize::try_from(index).unwrap_or(usize::MAX);
        if self.proxy_history.len() <= slot {
            self.proxy_history.resize(slot.saturating_add(1), 0);
        }
        if let Some(count) = self.proxy_history.get_mut(slot) {
            *count = count.saturating_add(1);
        }
    }

    /// Proxy calls per window from the first window up to and including the current one.
    pub(crate) fn proxy_calls_per_window(&self, now: Instant) -> Vec<u32> {
        let current = usize::try_from(self.window_index(now)).unwrap_or(usize::MAX);
        let mut history = self.proxy_history.clone();
        if history.len() <= current {
            history.resize(current.saturating_add(1), 0);
        }
        history
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(unlimited: bool) -> (RateLimiter, Instant) {
        let config = SimConfig {
            unlimited,
            per_ip_per_window: 4,
            window: Duration::from_secs(10),
            proxy_per_window: 3,
            other_per_window: 2,
            provision_per_window: 1,
            ..SimConfig::default()
        };
        let epoch = Instant::now();
        (RateLimiter::new(&config, epoch), epoch)
    }

    #[test]
    fn requests_over_the_limit_are_refused_until_the_next_window() {
        let (mut rl, t0) = limiter(false);
        for _ in 0..3 {
            assert_eq!(rl.admit("k", Bucket::Proxy, t0), Ok(()));
        }
        assert_eq!(rl.admit("k", Bucket::Proxy, t0 + Duration::from_millis(2500)), Err(8));
        assert_eq!(rl.admit("k", Bucket::Proxy, t0 + Duration::from_secs(10)), Ok(()));
    }

    #[test]
    fn retry_after_is_at_least_one_second_at_the_end_of_a_window() {
        let (mut rl, t0) = limiter(false);
        assert_eq!(rl.admit("k", Bucket::Provision, t0), Ok(()));
        assert_eq!(rl.admit("k", Bucket::Provision, t0 + Duration::from_millis(9_999)), Err(1));
    }

    #[test]
    fn buckets_and_keys_are_counted_separately() {
        let (mut rl, t0) = limiter(false);
        assert_eq!(rl.admit("a", Bucket::Provision, t0), Ok(()));
        assert!(rl.admit("a", Bucket::Provision, t0).is_err());
        assert_eq!(rl.admit("b", Bucket::Provision, t0), Ok(()));
        assert_eq!(rl.admit("a", Bucket::Other, t0), Ok(()));
        assert_eq!(rl.admit("a", Bucket::Proxy, t0), Ok(()));
    }

    #[test]
    fn unlimited_admits_everything_but_still_counts_proxy_calls() {
        let (mut rl, t0) = limiter(true);
        for _ in 0..50 {
            assert_eq!(rl.admit("k", Bucket::Proxy, t0), Ok(()));
        }
        assert_eq!(rl.proxy_calls_per_window(t0), vec![50]);
    }

    #[test]
    fn proxy_history_has_one_entry_per_window_including_refused_and_empty_ones() {
        let (mut rl, t0) = limiter(false);
        for _ in 0..5 {
            let _ = rl.admit("k", Bucket::Proxy, t0);
        }
        let _ = rl.admit("k", Bucket::Proxy, t0 + Duration::from_secs(25));
        let _ = rl.admit("k", Bucket::Other, t0 + Duration::from_secs(25));
        assert_eq!(rl.proxy_calls_per_window(t0 + Duration::from_secs(31)), vec![5, 0, 1, 0]);
    }

    #[test]
    fn the_ip_floor_spans_buckets_and_keys_and_resets_with_the_window() {
        let (mut rl, t0) = limiter(false);
        for bucket in [Bucket::Proxy, Bucket::Other, Bucket::Provision, Bucket::Proxy] {
            assert_eq!(rl.admit_ip("10.0.0.1", bucket, t0), Ok(()));
        }
        assert_eq!(rl.admit_ip("10.0.0.1", Bucket::Other, t0 + Duration::from_millis(2500)), Err(8));
        // Another address has its own floor; the next window starts afresh.
        assert_eq!(rl.admit_ip("10.0.0.2", Bucket::Other, t0), Ok(()));
        assert_eq!(rl.admit_ip("10.0.0.1", Bucket::Other, t0 + Duration::from_secs(10)), Ok(()));
    }

    #[test]
    fn a_proxy_call_refused_by_the_floor_still_counts_as_arrived() {
        let (mut rl, t0) = limiter(false);
        for _ in 0..4 {
            assert_eq!(rl.admit_ip("ip", Bucket::Other, t0), Ok(()));
        }
        assert!(rl.admit_ip("ip", Bucket::Proxy, t0).is_err());
        assert_eq!(rl.proxy_calls_per_window(t0), vec![1]);
    }

    #[test]
    fn unlimited_lifts_the_ip_floor() {
        let (mut rl, t0) = limiter(true);
        for _ in 0..50 {
            assert_eq!(rl.admit_ip("ip", Bucket::Other, t0), Ok(()));
        }
    }
}

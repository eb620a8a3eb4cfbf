//! Per-key rate limiting for the three documented buckets, the per-IP floor over all of them, plus
//! the per-window history of proxy calls that benchmarks read. Every counter is fixed or sliding as
//! `window_kind` says (`window` owns the two); fixed windows are aligned to the simulator's start so
//! every key and address shares the same boundaries. Pure logic: callers pass the current instant,
//! which keeps it testable without sleeping.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::window::{Admitted, Windows};
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

/// Rate-limit counters per (API key, bucket) and per client address, fixed or sliding as
/// configured (see `window`).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    windows: Windows,
    unlimited: bool,
    proxy_limit: u32,
    other_limit: u32,
    provision_limit: u32,
    counts: HashMap<(String, Bucket), Admitted>,
    /// Proxy calls that arrived per fixed window index, across all keys, whatever the kind.
    proxy_history: Vec<u32>,
    ip_limit: u32,
    ip_counts: HashMap<String, Admitted>,
}

/// Past this many client addresses, idle entries are dropped: the client header lets a caller
/// invent addresses, and a test double should not grow without bound.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

impl RateLimiter {
    pub(crate) fn new(config: &SimConfig, epoch: Instant) -> Self {
        Self {
            windows: Windows::new(config.window_kind, epoch, config.window),
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

    fn limit(&self, bucket: Bucket) -> u32 {
        match bucket {
            Bucket::Provision => self.provision_limit,
            Bucket::Proxy => self.proxy_limit,
            Bucket::Other => self.other_limit,
        }
    }

    /// Count one request for `key` in `bucket`. `Err(secs)` means "over the limit, retry after".
    pub(crate) fn admit(&mut self, key: &str, bucket: Bucket, now: Instant) -> Result<(), u64> {
        if bucket == Bucket::Proxy {
            self.record_proxy_call(now);
        }
        if self.unlimited {
            return Ok(());
        }
        let limit = self.limit(bucket);
        let windows = self.windows;
        let counter = self.counts.entry((key.to_owned(), bucket)).or_insert_with(|| windows.fresh(now));
        windows.admit(counter, limit, now)
    }

    /// Count one `/api/*` request from `client` against the per-IP floor, before any per-key
    /// bucket. `Err(secs)` means "over the floor, retry after"; such a proxy call still counts
    /// as arrived, like one refused by its key's bucket.
    pub(crate) fn admit_ip(&mut self, client: &str, bucket: Bucket, now: Instant) -> Result<(), u64> {
        if self.unlimited {
            return Ok(());
        }
        let windows = self.windows;
        if self.ip_counts.len() >= MAX_TRACKED_ADDRESSES && !self.ip_counts.contains_key(client) {
            self.ip_counts.retain(|_, counter| !windows.is_idle(counter, now));
        }
        let counter = self.ip_counts.entry(client.to_owned()).or_insert_with(|| windows.fresh(now));
        let answer = windows.admit(counter, self.ip_limit, now);
        if answer.is_err() && bucket == Bucket::Proxy {
            self.record_proxy_call(now);
        }
        answer
    }

    fn record_proxy_call(&mut self, now: Instant) {
        let slot = usize::try_from(self.windows.index(now)).unwrap_or(usize::MAX);
        if self.proxy_history.len() <= slot {
            self.proxy_history.resize(slot.saturating_add(1), 0);
        }
        if let Some(count) = self.proxy_history.get_mut(slot) {
            *count = count.saturating_add(1);
        }
    }

    /// Proxy calls per window from the first window up to and including the current one.
    pub(crate) fn proxy_calls_per_window(&self, now: Instant) -> Vec<u32> {
        let current = usize::try_from(self.windows.index(now)).unwrap_or(usize::MAX);
        let mut history = self.proxy_history.clone();
        if history.len() <= current {
            history.resize(current.saturating_add(1), 0);
        }
        history
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::WindowKind;

    fn limiter(unlimited: bool) -> (RateLimiter, Instant) {
        limiter_of(unlimited, WindowKind::Fixed)
    }

    fn limiter_of(unlimited: bool, window_kind: WindowKind) -> (RateLimiter, Instant) {
        let config = SimConfig {
            unlimited,
            window_kind,
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

    type Answers = Vec<Result<(), u64>>;

    /// Bursts of 3 proxy calls from one key and 4 calls from one address, each just before and
    /// just after the 10 s boundary: (per-key answers, per-IP answers).
    fn boundary_bursts(kind: WindowKind) -> (Answers, Answers) {
        let (mut rl, t0) = limiter_of(false, kind);
        let (mut keyed, mut floor) = (Vec::new(), Vec::new());
        for start in [9_500, 10_500] {
            let at = t0 + Duration::from_millis(start);
            keyed.extend((0..3).map(|_| rl.admit("k", Bucket::Proxy, at)));
            floor.extend((0..4).map(|_| rl.admit_ip("ip", Bucket::Other, at)));
        }
        (keyed, floor)
    }

    #[test]
    fn fixed_windows_admit_a_full_burst_on_each_side_of_a_boundary_for_keys_and_addresses() {
        let (keyed, floor) = boundary_bursts(WindowKind::Fixed);
        assert!(keyed.iter().chain(&floor).all(Result::is_ok), "{keyed:?} {floor:?}");
    }

    #[test]
    fn a_sliding_window_refuses_the_second_burst_for_keys_and_addresses() {
        let (keyed, floor) = boundary_bursts(WindowKind::Sliding);
        // The first burst (9.5 s) leaves the window at 19.5 s: 9 s after the second.
        assert_eq!(keyed, [Ok(()), Ok(()), Ok(()), Err(9), Err(9), Err(9)]);
        assert_eq!(floor, [Ok(()), Ok(()), Ok(()), Ok(()), Err(9), Err(9), Err(9), Err(9)]);
    }

    #[test]
    fn sliding_buckets_and_keys_are_counted_separately_and_proxy_history_stays_per_fixed_window() {
        let (mut rl, t0) = limiter_of(false, WindowKind::Sliding);
        assert_eq!(rl.admit("a", Bucket::Provision, t0), Ok(()));
        assert!(rl.admit("a", Bucket::Provision, t0).is_err());
        assert_eq!(rl.admit("b", Bucket::Provision, t0), Ok(()));
        assert_eq!(rl.admit("a", Bucket::Other, t0), Ok(()));
        for _ in 0..4 {
            let _ = rl.admit("a", Bucket::Proxy, t0 + Duration::from_secs(9));
        }
        let _ = rl.admit("a", Bucket::Proxy, t0 + Duration::from_secs(11));
        assert_eq!(rl.proxy_calls_per_window(t0 + Duration::from_secs(11)), vec![4, 1]);
    }

    #[test]
    fn only_idle_addresses_are_dropped_when_too_many_are_tracked() {
        let (mut rl, t0) = limiter_of(false, WindowKind::Sliding);
        for _ in 0..4 {
            assert_eq!(rl.admit_ip("busy", Bucket::Other, t0 + Duration::from_secs(5)), Ok(()));
        }
        for n in 0..MAX_TRACKED_ADDRESSES {
            let _ = rl.admit_ip(&format!("10.0.{n}"), Bucket::Other, t0);
        }
        // At 12 s the 10 000 addresses of 0 s are idle, "busy" (5 s) is not: it keeps its count.
        assert!(rl.admit_ip("newcomer", Bucket::Other, t0 + Duration::from_secs(12)).is_ok());
        assert_eq!(rl.ip_counts.len(), 2);
        assert_eq!(rl.admit_ip("busy", Bucket::Other, t0 + Duration::from_secs(12)), Err(3));
    }
}

//! The two readings of the reference's "per minute" (§3 never says which): fixed windows aligned
//! to the simulator's start, or a sliding window over the last `window`. [`Admitted`] holds one
//! counter's admissions (one key's bucket, or one client's floor) in the shape its kind needs;
//! [`Windows`] decides admission and `Retry-After`. Pure logic: callers pass the current instant.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::WindowKind;

/// The window geometry shared by every counter of one simulator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Windows {
    kind: WindowKind,
    epoch: Instant,
    window: Duration,
}

/// One counter's admissions.
#[derive(Debug)]
pub(crate) enum Admitted {
    /// The fixed window index and the requests admitted in it.
    Fixed { index: u64, count: u32 },
    /// The instants admitted within the last window, oldest first. Only admitted requests are
    /// kept and only while fewer than the limit, so it never holds more than the limit.
    Sliding(VecDeque<Instant>),
}

impl Windows {
    pub(crate) fn new(kind: WindowKind, epoch: Instant, window: Duration) -> Self {
        Self { kind, epoch, window }
    }

    /// The index of the fixed window `now` falls in, counted from the simulator's start. The
    /// benchmark history uses it whatever the kind, so its buckets stay comparable.
    pub(crate) fn index(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.epoch).as_nanos();
        // `validate` guarantees a non-zero window; max(1) keeps this total anyway.
        let index = elapsed / self.window.as_nanos().max(1);
        u64::try_from(index).unwrap_or(u64::MAX)
    }

    /// A counter with nothing admitted yet.
    pub(crate) fn fresh(&self, now: Instant) -> Admitted {
        match self.kind {
            WindowKind::Fixed => Admitted::Fixed { index: self.index(now), count: 0 },
            WindowKind::Sliding => Admitted::Sliding(VecDeque::new()),
        }
    }

    /// Admit one request at `now` if `counter` is under `limit`; `Err(secs)` means "retry after".
    pub(crate) fn admit(&self, counter: &mut Admitted, limit: u32, now: Instant) -> Result<(), u64> {
        match counter {
            Admitted::Fixed { index, count } => {
                let current = self.index(now);
                if *index != current {
                    (*index, *count) = (current, 0);
                }
                if *count >= limit {
                    let end = self.window.as_nanos().saturating_mul(u128::from(current) + 1);
                    let elapsed = now.saturating_duration_since(self.epoch).as_nanos();
                    return Err(whole_secs_up(end.saturating_sub(elapsed)));
                }
                *count += 1;
                Ok(())
            }
            Admitted::Sliding(admitted) => {
                self.trim(admitted, now);
                if admitted.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
                    // Room opens when the oldest admission leaves; with a zero limit, never
                    // sooner than a whole window.
                    let wait = admitted.front().map_or(self.window, |oldest| self.leaves_in(*oldest, now));
                    return Err(whole_secs_up(wait.as_nanos()));
                }
                // The gate takes its instant before the lock, so two requests can arrive here
                // out of order by microseconds; inserting in place keeps the front the oldest.
                let at = admitted.partition_point(|t| *t <= now);
                admitted.insert(at, now);
                Ok(())
            }
        }
    }

    /// Whether `counter` has nothing left that could refuse a request at `now`, so dropping it
    /// changes no answer.
    pub(crate) fn is_idle(&self, counter: &Admitted, now: Instant) -> bool {
        match counter {
            Admitted::Fixed { index, .. } => *index != self.index(now),
            Admitted::Sliding(admitted) => admitted.back().is_none_or(|last| self.leaves_in(*last, now).is_zero()),
        }
    }

    /// How long until an admission made at `at` is outside the window ending at `now`.
    fn leaves_in(&self, at: Instant, now: Instant) -> Duration {
        self.window.saturating_sub(now.saturating_duration_since(at))
    }

    fn trim(&self, admitted: &mut VecDeque<Instant>, now: Instant) {
        while admitted.front().is_some_and(|oldest| self.leaves_in(*oldest, now).is_zero()) {
            admitted.pop_front();
        }
    }
}

/// Whole seconds, rounded up, at least 1: the documented `Retry-After` is an integer, and 0
/// would invite a retry that is refused again.
fn whole_secs_up(wait_nanos: u128) -> u64 {
    u64::try_from(wait_nanos.div_ceil(1_000_000_000)).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u32 = 3;

    fn windows(kind: WindowKind) -> (Windows, Instant) {
        let epoch = Instant::now();
        (Windows::new(kind, epoch, Duration::from_secs(10)), epoch)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A full burst just before the 10 s boundary and another just after it.
    fn boundary_bursts(kind: WindowKind) -> Vec<Result<(), u64>> {
        let (w, t0) = windows(kind);
        let mut counter = w.fresh(t0);
        let mut answers = Vec::new();
        for at in [9_500, 9_600, 9_700, 10_500, 10_600, 10_700] {
            answers.push(w.admit(&mut counter, LIMIT, t0 + ms(at)));
        }
        answers
    }

    #[test]
    fn fixed_windows_admit_a_full_burst_on_each_side_of_a_boundary() {
        assert!(boundary_bursts(WindowKind::Fixed).iter().all(Result::is_ok));
    }

    #[test]
    fn a_sliding_window_refuses_the_second_burst_until_the_oldest_call_leaves_it() {
        let answers = boundary_bursts(WindowKind::Sliding);
        assert!(answers[..3].iter().all(Result::is_ok));
        // The oldest admission (9.5 s) leaves at 19.5 s: 9 s after 10.5 s, 8.9 s after 10.6 s.
        assert_eq!(answers[3..], [Err(9), Err(9), Err(9)]);
    }

    #[test]
    fn a_sliding_window_admits_calls_spaced_so_no_window_holds_more_than_the_limit() {
        let (w, t0) = windows(WindowKind::Sliding);
        let mut counter = w.fresh(t0);
        // Bursts of 3 a second apart, each call exactly when the one 3 before it leaves: no
        // 10 s span holds more than 3, and the window is half-open, so every call is admitted.
        for n in 0..12 {
            let at = (n / 3) * 10_000 + (n % 3) * 1_000;
            assert_eq!(w.admit(&mut counter, LIMIT, t0 + ms(at)), Ok(()), "call {n}");
        }
        // One more inside the last burst's window waits for its oldest call (30 s) to leave.
        assert_eq!(w.admit(&mut counter, LIMIT, t0 + ms(32_001)), Err(8));
        assert_eq!(w.admit(&mut counter, LIMIT, t0 + ms(40_000)), Ok(()));
    }

    #[test]
    fn a_sliding_window_holds_at_most_the_limit_and_goes_idle_after_a_window() {
        let (w, t0) = windows(WindowKind::Sliding);
        let mut counter = w.fresh(t0);
        for n in 0..100 {
            let _ = w.admit(&mut counter, LIMIT, t0 + ms(n));
        }
        assert!(matches!(&counter, Admitted::Sliding(q) if q.len() == 3));
        assert!(!w.is_idle(&counter, t0 + ms(10_001)));
        assert!(w.is_idle(&counter, t0 + ms(10_002)));
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        let (w, t0) = windows(WindowKind::Sliding);
        let mut counter = w.fresh(t0);
        assert_eq!(w.admit(&mut counter, 1, t0), Ok(()));
        assert_eq!(w.admit(&mut counter, 1, t0 + ms(9_999)), Err(1));
        assert_eq!(w.admit(&mut counter, 1, t0 + ms(1)), Err(10));
        assert_eq!(w.admit(&mut w.fresh(t0), 0, t0), Err(10));
        let (fixed, t0) = windows(WindowKind::Fixed);
        let mut counter = fixed.fresh(t0);
        assert_eq!(fixed.admit(&mut counter, 0, t0 + ms(2_500)), Err(8));
    }

    #[test]
    fn out_of_order_instants_keep_the_oldest_in_front() {
        let (w, t0) = windows(WindowKind::Sliding);
        let mut counter = w.fresh(t0);
        assert_eq!(w.admit(&mut counter, LIMIT, t0 + ms(5)), Ok(()));
        assert_eq!(w.admit(&mut counter, LIMIT, t0 + ms(3)), Ok(()));
        assert!(matches!(&counter, Admitted::Sliding(q) if q.front() == Some(&(t0 + ms(3)))));
    }
}

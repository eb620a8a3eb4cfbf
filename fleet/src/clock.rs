//! The clock the send budget and the outbox rules are evaluated on. In production it is the
//! database's own clock, which every replica shares, so no host's clock skew can refill a bucket
//! early. Tests inject a [`ManualClock`] and move time forward instead of sleeping.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};

/// A source of "now" for budget and outbox decisions.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The instant to evaluate at; `None` means the database's clock (`now()` in SQL).
    fn now(&self) -> Option<DateTime<Utc>>;
}

/// The database's clock: every statement uses Postgres' `now()` / `clock_timestamp()`.
#[derive(Clone, Copy, Debug, Default)]
pub struct DatabaseClock;

impl Clock for DatabaseClock {
    fn now(&self) -> Option<DateTime<Utc>> {
        None
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock stopped at `at`.
    pub fn at(at: DateTime<Utc>) -> Self {
        Self { now: Mutex::new(at) }
    }

    /// A clock stopped at the current wall-clock time, in whole microseconds (Postgres'
    /// precision, so instants round-trip through the database unchanged).
    pub fn starting_now() -> Self {
        Self::at(Utc::now().trunc_subsecs(6))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let step = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::zero());
        if let Ok(mut now) = self.now.lock() {
            *now += step;
        }
    }

    /// The clock's current instant.
    pub fn get(&self) -> DateTime<Utc> {
        self.now.lock().map(|n| *n).unwrap_or_else(|p| *p.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Option<DateTime<Utc>> {
        Some(self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::starting_now();
        let start = clock.get();
        assert_eq!(clock.now(), Some(start));
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.get() - start, chrono::Duration::milliseconds(1500));
        assert_eq!(DatabaseClock.now(), None);
    }
}

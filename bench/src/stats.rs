//! Small statistics: medians with spread over repeats, and latency percentiles.

use std::fmt;

/// Median and spread of a figure measured several times.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    /// Median of the repeats.
    pub median: f64,
    /// Smallest repeat.
    pub min: f64,
    /// Largest repeat.
    pub max: f64,
    /// Number of repeats.
    pub n: usize,
}

impl Summary {
    /// The summary of `values`, or `None` when there are none (or only non-finite ones).
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Self { median, min: v[0], max: v[n - 1], n })
    }

    /// "median (min–max, n=3)" with `decimals` decimals and a unit.
    pub fn show(&self, decimals: usize, unit: &str) -> String {
        if self.n <= 1 {
            format!("{:.*}{unit} (n=1)", decimals, self.median)
        } else {
            format!(
                "{:.*}{unit} ({:.*}–{:.*}, n={})",
                decimals, self.median, decimals, self.min, decimals, self.max, self.n
            )
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.show(0, ""))
    }
}

/// Latency samples in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    samples: Vec<u64>,
    sorted: bool,
}

impl Latencies {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one sample.
    pub fn push_us(&mut self, us: u64) {
        self.samples.push(us);
        self.sorted = false;
    }

    /// Adds every sample of `other`.
    pub fn extend(&mut self, other: &Latencies) {
        self.samples.extend_from_slice(&other.samples);
        self.sorted = false;
    }

    /// The samples, µs, in no particular order.
    pub fn samples_us(&self) -> &[u64] {
        &self.samples
    }

    /// The `p`-th percentile (nearest rank, 0 < p ≤ 100) in milliseconds.
    pub fn percentile_ms(&mut self, p: f64) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        if !self.sorted {
            self.samples.sort_unstable();
            self.sorted = true;
        }
        let n = self.samples.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let index = rank.clamp(1, n) - 1;
        Some(self.samples[index] as f64 / 1000.0)
    }
}

/// Rate over the middle of a set of completion times (seconds from any origin): the count
/// between the 10th and 90th percentile of completions divided by the time between them.
/// Leaves out start-up and the tail, where fewer workers are busy.
pub fn middle_rate(times: &mut [f64]) -> Option<f64> {
    if times.len() < 20 {
        return None;
    }
    times.sort_by(f64::total_cmp);
    let n = times.len();
    let lo = n / 10;
    let hi = n - 1 - n / 10;
    let span = times[hi] - times[lo];
    if span <= 0.0 {
        return None;
    }
    Some((hi - lo) as f64 / span)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn median_and_spread() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(Summary::of(&[1.0, 2.0]).unwrap().median, 1.5);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut l = Latencies::new();
        for us in 1..=100 {
            l.push_us(us * 1000);
        }
        assert_eq!(l.percentile_ms(50.0), Some(50.0));
        assert_eq!(l.percentile_ms(99.0), Some(99.0));
        assert_eq!(l.percentile_ms(100.0), Some(100.0));
    }

    #[test]
    fn middle_rate_ignores_the_edges() {
        let mut times: Vec<f64> = (0..100).map(|i| f64::from(i) / 10.0).collect();
        let rate = middle_rate(&mut times).unwrap();
        assert!((rate - 10.0).abs() < 0.01, "{rate}");
    }
}

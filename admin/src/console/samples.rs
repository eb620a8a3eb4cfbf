//! The samples of the console's live charts, kept in memory by the admin process: at most one
//! per [`SAMPLE_EVERY`] per chart, the last [`KEEP`] of each, and a chart nobody asked for within
//! [`KEEP`] is dropped. No history store: each replica has its own.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Shortest time between two samples of one chart.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// How much of a chart is kept.
pub const KEEP: Duration = Duration::from_secs(10 * 60);

/// The samples of every open chart, by chart key (`fleet`, `tenant:<ref>`).
#[derive(Default)]
pub struct Samples {
    charts: Mutex<HashMap<String, Chart>>,
}

#[derive(Default)]
struct Chart {
    points: VecDeque<(Instant, i64, f64)>,
    asked: Option<Instant>,
}

/// A chart as its script draws it: Unix seconds and values, oldest first.
#[derive(Serialize)]
pub struct Series {
    /// Sample times (Unix seconds).
    pub t: Vec<i64>,
    /// Ready messages.
    pub ready: Vec<f64>,
}

impl Samples {
    /// Whether `key` is due a new sample (always, for a chart not kept yet); marks a kept chart
    /// asked for. A new chart is kept only by [`Self::add`], after its first sample was read, so
    /// a poll for a tenant that does not exist leaves nothing behind.
    pub fn due(&self, key: &str, now: Instant) -> bool {
        let mut charts = self.charts.lock().unwrap_or_else(|p| p.into_inner());
        charts.retain(|_, c| c.asked.is_some_and(|a| now.duration_since(a) < KEEP));
        let Some(chart) = charts.get_mut(key) else { return true };
        chart.asked = Some(now);
        chart.points.back().is_none_or(|(at, _, _)| now.duration_since(*at) >= SAMPLE_EVERY)
    }

    /// Adds a sample to `key` (keeping the chart, asked for now) and returns the chart.
    pub fn add(&self, key: &str, value: Option<f64>, now: Instant) -> Series {
        let mut charts = self.charts.lock().unwrap_or_else(|p| p.into_inner());
        let chart = charts.entry(key.to_owned()).or_default();
        chart.asked = Some(now);
        if let Some(value) = value {
            chart.points.push_back((now, chrono::Utc::now().timestamp(), value));
        }
        while chart.points.front().is_some_and(|(at, _, _)| now.duration_since(*at) > KEEP) {
            chart.points.pop_front();
        }
        Series {
            t: chart.points.iter().map(|(_, t, _)| *t).collect(),
            ready: chart.points.iter().map(|(_, _, v)| *v).collect(),
        }
    }

    /// How many charts are kept (for tests).
    pub fn charts(&self) -> usize {
        self.charts.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_sampled_at_most_every_two_seconds_and_dropped_when_nobody_asks() {
        let samples = Samples::default();
        let start = Instant::now();
        assert!(samples.due("fleet", start));
        samples.add("fleet", Some(3.0), start);
        assert!(!samples.due("fleet", start + Duration::from_secs(1)));
        let series = samples.add("fleet", None, start + Duration::from_secs(1));
        assert_eq!(series.ready, [3.0]);
        assert!(samples.due("fleet", start + SAMPLE_EVERY));
        assert!(samples.due("tenant:a", start + KEEP + Duration::from_secs(5)));
        assert_eq!(samples.charts(), 0, "asking keeps no chart; only a read sample does");
        samples.add("tenant:a", Some(1.0), start + KEEP + Duration::from_secs(5));
        assert_eq!(samples.charts(), 1, "the fleet chart, not asked for longer than KEEP, is dropped");
    }
}

//! The scenarios. Each one recreates the bench database and vhost, starts the real
//! binaries it needs, measures the product beside its ceiling or baseline, and tears down.

pub mod accounts;
mod accounts_tally;
pub mod budget;
pub mod console;
pub mod e2e;
pub mod fleet;
pub mod ingest;
mod ingest_sweep;
pub mod memory;
pub mod noisy;
mod noisy_load;
pub mod slowbridge;
pub mod spool;

use std::path::PathBuf;
use std::time::Duration;

use crate::env::{BenchEnv, BenchTenant, Services};
use crate::procs::Mem;
use crate::stack::Bins;
use crate::stats::Summary;

/// Everything a scenario needs, plus figures shared between scenarios of one run.
pub struct Ctx {
    /// `--quick`: smoke-test sizes, one repeat.
    pub quick: bool,
    /// The binaries.
    pub bins: Bins,
    /// Service locations.
    pub services: Services,
    /// Workspace root (to look for features that may not have landed).
    pub repo: PathBuf,
    /// Figures measured by one scenario and reused by another.
    pub shared: Shared,
    /// Where charts and their CSV samples go ([`crate::charts::dir_for`]).
    pub charts_dir: PathBuf,
}

/// Figures reused across scenarios.
#[derive(Default, Debug)]
pub struct Shared {
    /// End-to-end saturation (events/s), from the e2e scenario.
    pub e2e_saturation: Option<f64>,
    /// Largest ingest RSS sampled under load in the ingest scenario, KiB.
    pub ingest_rss_max_kib: Option<u64>,
    /// Worker memory at the fleet size used for the memory target.
    pub worker_mem: Option<(usize, wafleet_shared::topology::QueueType, Mem, Mem)>,
}

impl Ctx {
    /// Repeats per measurement.
    pub fn reps(&self) -> usize {
        if self.quick {
            1
        } else {
            3
        }
    }

    /// `full` normally, `quick` in quick mode (seconds).
    pub fn secs(&self, full: f64, quick: f64) -> Duration {
        Duration::from_secs_f64(if self.quick { quick } else { full })
    }

    /// Environment for the worker lifting the send budget, when that feature exists.
    pub fn budget_lifted(&self) -> Vec<(String, String)> {
        if budget::present(&self.repo) {
            budget::lifted_env()
        } else {
            Vec::new()
        }
    }
}

/// `0.85×`.
pub fn ratio(value: f64, ceiling: f64) -> String {
    if ceiling > 0.0 {
        format!("{:.2}×", value / ceiling)
    } else {
        "n/a".into()
    }
}

/// Median of a summary or NaN.
pub fn med(s: &Option<Summary>) -> f64 {
    s.map_or(f64::NAN, |s| s.median)
}

/// Shows an optional summary.
pub fn show(s: &Option<Summary>, decimals: usize, unit: &str) -> String {
    s.map_or_else(|| "n/a".into(), |s| s.show(decimals, unit))
}

/// MiB from KiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Loads `count` message envelopes (about 600 B bodies, marker `<tag>-<i>`) spread over
/// `tenants` straight into `wa.inbound`.
pub async fn load_backlog(env: &BenchEnv, tenants: &[BenchTenant], count: usize, tag: &str) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let messages: Vec<(String, Vec<u8>)> = (0..count)
        .filter_map(|i| {
            let t = tenants.get(i % tenants.len().max(1))?;
            let body = crate::payload::webhook_body(tag, i as u64, 600);
            Some((
                t.customer_ref.as_str().to_owned(),
                crate::payload::envelope(&t.customer_ref, t.generation, &body, now),
            ))
        })
        .collect();
    crate::raw::publish_all(&env.amqp_url, messages, Duration::from_secs(300)).await
}

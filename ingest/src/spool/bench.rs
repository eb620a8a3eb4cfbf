//! A yardstick for the spool's disk: how many append-plus-`fdatasync` rounds per second it does.
//!
//! This module only measures. It must not touch a live spool's segments: it writes one scratch
//! file in the given directory and deletes it. Compare its rate with the accept rate while the
//! broker is cut: group commit should let the accept rate exceed the fsync rate by roughly the
//! mean batch size (`wafleet_ingest_spool_batch_records` on `/metrics`).

use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

/// The result of [`fsync_rate`].
#[derive(Debug, Clone, Copy)]
pub struct FsyncRate {
    /// Rounds completed.
    pub rounds: u32,
    /// Wall time they took.
    pub elapsed: Duration,
}

impl FsyncRate {
    /// Rounds per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.rounds) / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// Appends `record_bytes` and calls `fdatasync`, `rounds` times, in a scratch file under `dir`
/// (the spool directory, so the same disk is measured). Blocking.
pub fn fsync_rate(dir: &Path, rounds: u32, record_bytes: usize) -> io::Result<FsyncRate> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("fsync-bench-{}.tmp", std::process::id()));
    let mut file = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let record = vec![b'x'; record_bytes];
    let started = Instant::now();
    let mut outcome = Ok(());
    for _ in 0..rounds {
        outcome = file.write_all(&record).and_then(|()| file.sync_data());
        if outcome.is_err() {
            break;
        }
    }
    let elapsed = started.elapsed();
    drop(file);
    let _ = std::fs::remove_file(&path);
    outcome.map(|()| FsyncRate { rounds, elapsed })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_fsync_rate_is_measured_and_the_scratch_file_removed() {
        let dir = tempfile::tempdir().unwrap();
        let rate = fsync_rate(dir.path(), 20, 512).unwrap();
        assert_eq!(rate.rounds, 20);
        assert!(rate.per_second() > 0.0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

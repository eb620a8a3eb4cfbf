//! `wafleet-ingest drain --spool-dir DIR`: empties a spool folder into the broker without serving
//! HTTP, for the PVC of a StatefulSet replica that is gone (its ordinal will not come back to
//! drain it).
//!
//! It runs the spool's own drain over the same publisher as a serving ingest (persistent,
//! `mandatory`, confirms; a record leaves the folder only on a broker ack, under the routing key
//! stored with it), so nothing here decides where an event goes. It holds the folder's lock for
//! the whole run, so it cannot share a folder with a running ingest. It must not append.

use std::path::Path;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::config::{DrainConfig, DEFAULT_SPOOL_SEGMENT_BYTES};
use crate::error::{Error, Result};
use crate::publisher::{LapinPublisher, Publisher as _};
use crate::spool::{Spool, SpoolError, SpoolSettings, LOCK_FILE};

/// What a successful drain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Records the broker confirmed (the folder held this many).
    pub drained: u64,
}

/// Publishes every record of `config.spool_dir` and returns once the folder holds no segment;
/// gives up after `config.timeout` (or on `shutdown`) with [`Error::DrainIncomplete`], leaving
/// what is left on disk for a later run.
pub async fn drain_folder(config: &DrainConfig, shutdown: CancellationToken) -> Result<DrainReport> {
    let dir = config.spool_dir.display().to_string();
    let spool = open(&config.spool_dir).await.map_err(|source| Error::SpoolOpen { dir: dir.clone(), source })?;
    let records = spool.status().records;
    tracing::info!(dir, records, "draining the spool folder");
    let started = Instant::now();
    let mut reason = None;
    if records > 0 {
        let stop = CancellationToken::new();
        let (publisher, supervisor) = LapinPublisher::start_for_drain(config, stop.clone());
        let drain_stop = CancellationToken::new();
        let drain = spool.start_drain(publisher.clone(), config.publish_timeout, drain_stop.clone());
        tokio::select! {
            _ = spool.wait_until_empty(config.timeout) => {}
            () = shutdown.cancelled() => {}
        }
        reason = publisher.not_ready_reason();
        drain_stop.cancel();
        let _ = drain.await;
        stop.cancel();
        let _ = supervisor.await;
    }
    // Seals the active segment; a drained folder keeps no segment file.
    spool.close().await;
    let left = spool.status().records;
    spool.release();
    if left > 0 {
        return Err(Error::DrainIncomplete {
            records: left,
            dir,
            waited_secs: started.elapsed().as_secs(),
            reason: reason.unwrap_or("the broker refused some records (a tenant queue full or missing?)"),
        });
    }
    // Nothing is left to lock: an empty folder is what tells the operator the PVC may go.
    let _ = std::fs::remove_file(config.spool_dir.join(LOCK_FILE));
    Ok(DrainReport { drained: records })
}

async fn open(dir: &Path) -> Result<Spool, SpoolError> {
    // Opening creates a missing folder; a typo in the path must not read as "drained".
    if !dir.is_dir() {
        return Err(SpoolError::Open(std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder")));
    }
    let settings = SpoolSettings {
        dir: dir.to_path_buf(),
        // Nothing is appended: the bounds only matter to the status.
        max_bytes: u64::MAX / 2,
        segment_bytes: DEFAULT_SPOOL_SEGMENT_BYTES,
        tenant_max_bytes: u64::MAX / 2,
    };
    // Recovery reads every segment: off the runtime.
    tokio::task::spawn_blocking(move || Spool::open(&settings))
        .await
        .map_err(|join| SpoolError::Open(std::io::Error::other(join)))?
}

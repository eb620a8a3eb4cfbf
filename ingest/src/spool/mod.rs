//! The disk spool: where an event goes when the broker cannot confirm it in time, so that a 200
//! still means "durable".
//!
//! This module owns the spool's public handle and its shared state. A [`Spool`] appends through
//! one writer thread with group commit (see `writer`), remembers what is owed to the broker in an
//! in-memory index rebuilt from disk at start (see `recovery`, `index`), and re-publishes it with
//! a tenant-partitioned drain (see `drain`). Files live in one directory, locked by one process:
//!
//! ```text
//! <dir>/LOCK                          flock(2), held while the spool is open
//! <dir>/spool-<seq:020>.seg           append-only segments of records (see `record`)
//! ```
//!
//! It must not decide *whether* to spool (that is `accept`), and must not read the environment.
//!
//! Measuring the disk: [`bench::fsync_rate`] reports how many small appends plus `fdatasync` the
//! spool directory's disk does per second. With the broker cut, the accept rate should approach
//! that rate times the mean batch size (`wafleet_ingest_spool_batch_records`), and
//! `wafleet_ingest_spool_fsyncs_total` shows the fsyncs actually spent.

pub mod bench;
mod drain;
mod index;
mod record;
mod recovery;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wafleet_shared::CustomerRef;

pub(crate) use recovery::LOCK_FILE;
pub use writer::{OsIo, SegmentIo};

use crate::metric;
use crate::publisher::Publisher;
use index::Index;
use writer::{Command, Writer};

/// Appends waiting for the writer. Past this, callers wait for room in the queue (backpressure)
/// rather than growing memory without bound.
const QUEUE_DEPTH: usize = 4096;

/// Where and how big the spool may be.
#[derive(Clone, Debug)]
pub struct SpoolSettings {
    /// The spool directory (created if missing).
    pub dir: PathBuf,
    /// Bound on the segment files' total size; appends beyond it are refused.
    pub max_bytes: u64,
    /// A segment is closed and a new one started once it would grow past this size.
    pub segment_bytes: u64,
    /// Bound on one tenant's pending bytes when its own queue refuses its events (see
    /// [`Spool::append_within_share`]).
    pub tenant_max_bytes: u64,
}

/// Why the spool could not take or open something.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool holds `max_bytes` already.
    #[error("spool full")]
    Full,
    /// The tenant's queue refused the event and the tenant holds its whole share already.
    #[error("tenant's share of the spool is full")]
    TenantShareFull,
    /// One record larger than the format allows.
    #[error("record too large for the spool")]
    TooLarge,
    /// Writing or syncing the batch failed: the record is not durable.
    #[error("spool write failed")]
    Write(#[source] Arc<std::io::Error>),
    /// The writer has stopped (shutdown).
    #[error("spool closed")]
    Closed,
    /// Another process holds the spool directory.
    #[error("spool directory is locked by another process")]
    Locked,
    /// The directory or a segment could not be opened or read.
    #[error("cannot open the spool directory")]
    Open(#[source] std::io::Error),
}

/// What `/spoolz` shows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SpoolStatus {
    /// Records not yet confirmed by the broker.
    pub records: u64,
    /// Bytes of segment files on disk.
    pub bytes: u64,
    /// Segment files on disk.
    pub segments: u64,
    /// Age of the oldest record not yet confirmed (0 when empty).
    pub oldest_age_seconds: f64,
    /// Appends are being refused for lack of room.
    pub full: bool,
}

/// A cheap, cloneable handle on an open spool.
#[derive(Clone)]
pub struct Spool {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    tenant_max_bytes: u64,
    index: Mutex<Index>,
    /// Wakes the drain when records arrive.
    wake: Notify,
    /// Pending record count, for waiters (shutdown, `/spoolz?wait_secs`).
    pending: watch::Sender<u64>,
    /// The broker has been ready at least once since start (see `accept::readiness`).
    broker_seen: AtomicBool,
    /// The last batch failed to write or sync.
    failing: AtomicBool,
    lock: Mutex<Option<File>>,
    /// The file operations, shared by the writer and the drain.
    io: Arc<dyn SegmentIo>,
}

impl Shared {
    fn index(&self) -> MutexGuard<'_, Index> {
        // The index stays consistent even if a holder panicked: every update completes under
        // the lock without panicking paths, so a poisoned lock is still safe to use.
        self.index.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn status(&self) -> SpoolStatus {
        let totals = self.index().totals();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let oldest_age_seconds = totals.oldest_ms.map_or(0.0, |at| now_ms.saturating_sub(at) as f64 / 1000.0);
        SpoolStatus {
            records: totals.records,
            bytes: totals.bytes,
            segments: totals.segments,
            oldest_age_seconds,
            full: totals.full,
        }
    }

    /// Publishes the gauges and wakes waiters on the pending count.
    fn refresh(&self) -> SpoolStatus {
        let status = self.status();
        metrics::gauge!(metric::SPOOL_RECORDS).set(status.records as f64);
        metrics::gauge!(metric::SPOOL_BYTES).set(status.bytes as f64);
        metrics::gauge!(metric::SPOOL_MAX_BYTES).set(self.max_bytes as f64);
        metrics::gauge!(metric::SPOOL_OLDEST_AGE_SECONDS).set(status.oldest_age_seconds);
        self.pending.send_if_modified(|pending| std::mem::replace(pending, status.records) != status.records);
        status
    }

    fn note_broker_ready(&self) {
        self.broker_seen.store(true, Ordering::SeqCst);
    }
}

impl Spool {
    /// Opens (creating if needed) the spool directory, recovers its segments and starts the
    /// writer thread. Blocking: it reads every segment.
    pub fn open(settings: &SpoolSettings) -> Result<Self, SpoolError> {
        Self::open_with_io(settings, Arc::new(OsIo))
    }

    /// Like [`Spool::open`], with the writer's file operations replaced (tests inject faults).
    pub fn open_with_io(settings: &SpoolSettings, io: Arc<dyn SegmentIo>) -> Result<Self, SpoolError> {
        let lock = recovery::lock(&settings.dir)?;
        let recovered = recovery::recover(&settings.dir)?;
        if recovered.records > 0 || recovered.corrupt > 0 {
            tracing::info!(records = recovered.records, corrupt = recovered.corrupt, "spool recovered");
        }
        let shared = Arc::new(Shared {
            dir: settings.dir.clone(),
            max_bytes: settings.max_bytes,
            tenant_max_bytes: settings.tenant_max_bytes,
            index: Mutex::new(recovered.index),
            wake: Notify::new(),
            pending: watch::Sender::new(recovered.records),
            broker_seen: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            lock: Mutex::new(Some(lock)),
            io: Arc::clone(&io),
        });
        shared.refresh();
        let (commands, receiver) = mpsc::channel(QUEUE_DEPTH);
        Writer::new(Arc::clone(&shared), io, settings.segment_bytes, recovered.next_seq)
            .spawn(receiver)
            .map_err(SpoolError::Open)?;
        Ok(Self { commands, shared })
    }

    /// Appends `envelope` for `customer_ref` and returns once it is on disk and fsynced, together
    /// with the other appends of its batch. An error means the record is not durable.
    pub async fn append(&self, customer_ref: &CustomerRef, envelope: Vec<u8>) -> Result<(), SpoolError> {
        self.send_append(customer_ref, envelope, None).await
    }

    /// Like [`Spool::append`], for an event the tenant's own queue refused (it is full): the
    /// tenant's pending records may not pass `tenant_max_bytes`, so one flooding tenant cannot
    /// take the spool from the others. Past it, [`SpoolError::TenantShareFull`].
    pub async fn append_within_share(&self, customer_ref: &CustomerRef, envelope: Vec<u8>) -> Result<(), SpoolError> {
        self.send_append(customer_ref, envelope, Some(self.shared.tenant_max_bytes)).await
    }

    async fn send_append(
        &self,
        customer_ref: &CustomerRef,
        envelope: Vec<u8>,
        share: Option<u64>,
    ) -> Result<(), SpoolError> {
        let (reply, answer) = oneshot::channel();
        let append = writer::Append { customer_ref: customer_ref.clone(), envelope, share, reply };
        self.commands.send(Command::Append(append)).await.map_err(|_| SpoolError::Closed)?;
        answer.await.map_err(|_| SpoolError::Closed)?
    }

    /// Bytes of `customer_ref`'s records not yet confirmed (its use of its share).
    pub fn tenant_bytes(&self, customer_ref: &CustomerRef) -> u64 {
        self.shared.index().tenant_bytes(customer_ref)
    }

    /// Starts the drain: it publishes spooled records through `publisher` while the broker is
    /// ready, until `stop` fires.
    pub fn start_drain(
        &self,
        publisher: Arc<dyn Publisher>,
        publish_timeout: Duration,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let writer = self.commands.downgrade();
        tokio::spawn(drain::run(Arc::clone(&self.shared), publisher, publish_timeout, writer, stop))
    }

    /// Counts and age, refreshing the gauges on the way.
    pub fn status(&self) -> SpoolStatus {
        self.shared.refresh()
    }

    /// True while appends are refused for lack of room.
    pub fn is_full(&self) -> bool {
        self.shared.index().is_full()
    }

    /// True when the last batch could not be written or synced.
    pub fn is_failing(&self) -> bool {
        self.shared.failing.load(Ordering::SeqCst)
    }

    /// Remembers that the broker has been ready since start.
    pub fn note_broker_ready(&self) {
        self.shared.note_broker_ready();
    }

    /// Whether the broker has been ready at least once since start.
    pub fn broker_seen(&self) -> bool {
        self.shared.broker_seen.load(Ordering::SeqCst)
    }

    /// Records of `customer_ref` not yet confirmed.
    pub fn pending_of(&self, customer_ref: &CustomerRef) -> usize {
        self.shared.index().pending_of(customer_ref)
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Waits until no record is pending, for at most `within`. Returns whether it got there.
    pub async fn wait_until_empty(&self, within: Duration) -> bool {
        let mut pending = self.shared.pending.subscribe();
        let waited = tokio::time::timeout(within, pending.wait_for(|n| *n == 0)).await;
        matches!(waited, Ok(Ok(_)))
    }

    /// Stops the writer after the appends already queued, sealing the active segment (deleted at
    /// once if drained). Everything acknowledged was fsynced already; later appends get
    /// [`SpoolError::Closed`].
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.commands.send(Command::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }

    /// Releases the directory lock, so another spool (a restarted ingest in the same process)
    /// may open the directory. Call after [`Spool::close`] and after the drain has stopped.
    pub fn release(&self) {
        self.shared.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
    }
}

#[cfg(test)]
mod tests;

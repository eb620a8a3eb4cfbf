//! The single writer: appends records to the active segment with group commit, rotates
//! segments, and retires a segment once everything in it has been drained.
//!
//! This module owns the durability rule of the spool: a waiter hears `Ok` only after the batch
//! holding its record was written and `fdatasync`ed, and the directory was `fsync`ed when the
//! segment file was created. A failed write or sync fails every waiter of that batch and retires
//! the segment. It runs on its own OS thread because fsync blocks; it must not publish.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use wafleet_shared::CustomerRef;

use super::index::Entry;
use super::{record, Shared, SpoolError};
use crate::metric;

/// Most records committed by one fsync. Bounds the latency of the first waiter of a batch.
const MAX_BATCH_RECORDS: usize = 1024;
/// Most envelope bytes committed by one fsync, for the same reason.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Permissions of a segment file: owner read and write only.
pub(crate) const SEGMENT_MODE: u32 = 0o600;

/// The file operations of the writer and the drain, so tests can count syncs and inject failures. Every
/// method defaults to the operating system's behaviour.
pub trait SegmentIo: Send + Sync + 'static {
    /// Creates a new, empty segment file for appending; fails if it exists. Owner-only (0600):
    /// a segment holds message bodies.
    fn create(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().create_new(true).append(true).mode(SEGMENT_MODE).open(path)
    }

    /// Opens a segment to read records back for the drain.
    fn open_read(&self, path: &Path) -> io::Result<File> {
        File::open(path)
    }

    /// Appends `bytes` to `file`.
    fn write(&self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        file.write_all(bytes)
    }

    /// Makes the appended bytes durable. `fdatasync` also persists the new file length.
    fn sync(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }

    /// Makes a new directory entry durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsIo;

impl SegmentIo for OsIo {}

/// One envelope to append, and where to answer once it is durable (or refused).
pub(crate) struct Append {
    pub customer_ref: CustomerRef,
    pub envelope: Vec<u8>,
    /// Bound on this tenant's pending bytes in the spool, when the append is for a queue that
    /// refused it (see `Spool::append_within_share`); `None`: only the whole spool's bound.
    pub share: Option<u64>,
    pub reply: oneshot::Sender<Result<(), SpoolError>>,
}

/// What the writer thread is asked to do.
pub(crate) enum Command {
    /// Append one envelope and answer once it is durable.
    Append(Append),
    /// The drain emptied the spool: delete the active segment if nothing in it is pending, so a
    /// restart does not re-send it and its bytes are freed.
    RetireIfDrained,
    /// Seal the active segment and stop; answered when done.
    Close(oneshot::Sender<()>),
}

/// The file name of segment `seq`; zero-padded so names sort in append order.
pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("spool-{seq:020}.seg"))
}

struct Active {
    seq: u64,
    file: File,
    size: u64,
}

struct Waiter {
    customer_ref: CustomerRef,
    offset: u64,
    len: u32,
    reply: oneshot::Sender<Result<(), SpoolError>>,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    io: Arc<dyn SegmentIo>,
    segment_bytes: u64,
    next_seq: u64,
    active: Option<Active>,
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>, io: Arc<dyn SegmentIo>, segment_bytes: u64, next_seq: u64) -> Self {
        Self { shared, io, segment_bytes, next_seq, active: None }
    }

    /// Runs on a dedicated thread until a `Close` arrives or every sender is gone. The latter is
    /// what a crash looks like: nothing is sealed, and recovery re-reads the segments.
    pub(crate) fn spawn(self, commands: mpsc::Receiver<Command>) -> io::Result<()> {
        std::thread::Builder::new().name("wafleet-spool-writer".into()).spawn(move || self.run(commands))?;
        Ok(())
    }

    fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        while let Some(first) = commands.blocking_recv() {
            let mut appends = Vec::new();
            let mut bytes = 0;
            let mut retire = false;
            let mut close = None;
            let mut next = Some(first);
            // Group commit: everything queued while the previous fsync ran shares the next one.
            while let Some(command) = next.take() {
                match command {
                    Command::Append(append) => {
                        bytes += append.envelope.len();
                        appends.push(append);
                    }
                    Command::RetireIfDrained => retire = true,
                    Command::Close(done) => {
                        close = Some(done);
                        break;
                    }
                }
                if appends.len() >= MAX_BATCH_RECORDS || bytes >= MAX_BATCH_BYTES {
                    break;
                }
                next = commands.try_recv().ok();
            }
            if retire || !appends.is_empty() {
                self.retire_if_drained();
            }
            if !appends.is_empty() {
                self.commit(appends);
            }
            if let Some(done) = close {
                self.seal_active();
                self.shared.refresh();
                let _ = done.send(());
                return;
            }
        }
    }

    fn commit(&mut self, appends: Vec<Append>) {
        let spooled_at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut buffer = Vec::new();
        let mut waiters = Vec::with_capacity(appends.len());
        // Bytes each tenant adds in this batch, so its share holds within one group commit too.
        let mut batch_share: HashMap<CustomerRef, u64> = HashMap::new();
        for Append { customer_ref, envelope, share, reply } in appends {
            let Some(len) = record::encoded_len(&customer_ref, &envelope) else {
                let _ = reply.send(Err(SpoolError::TooLarge));
                continue;
            };
            // The bound is on disk usage: what is on disk plus this batch so far.
            let fits = self.shared.index().reserve((buffer.len() + len) as u64, self.shared.max_bytes);
            if !fits {
                let _ = reply.send(Err(SpoolError::Full));
                continue;
            }
            if let Some(share) = share {
                // ISOLATION: a tenant whose own queue is full may fill only its own share, so the
                // rest of the spool stays free for the other tenants (and /readyz stays ready).
                let in_batch = batch_share.get(&customer_ref).copied().unwrap_or(0);
                let used = self.shared.index().tenant_bytes(&customer_ref) + in_batch;
                if used.saturating_add(len as u64) > share {
                    let _ = reply.send(Err(SpoolError::TenantShareFull));
                    continue;
                }
            }
            if share.is_some() {
                *batch_share.entry(customer_ref.clone()).or_default() += len as u64;
            }
            let offset = buffer.len() as u64;
            record::encode(&customer_ref, spooled_at_ms, &envelope, &mut buffer);
            waiters.push(Waiter { customer_ref, offset, len: u32::try_from(len).unwrap_or(u32::MAX), reply });
        }
        if waiters.is_empty() {
            self.shared.refresh();
            return;
        }
        metrics::histogram!(metric::SPOOL_BATCH_RECORDS).record(waiters.len() as f64);
        match self.write_durably(&buffer) {
            Ok((seq, base)) => {
                self.shared.failing.store(false, Ordering::SeqCst);
                {
                    let mut index = self.shared.index();
                    index.grow_segment(seq, buffer.len() as u64);
                    for waiter in &waiters {
                        let entry =
                            Entry { segment: seq, offset: base + waiter.offset, len: waiter.len, spooled_at_ms };
                        index.push(waiter.customer_ref.clone(), entry);
                    }
                }
                self.shared.refresh();
                self.shared.wake.notify_one();
                for waiter in waiters {
                    let _ = waiter.reply.send(Ok(()));
                }
            }
            Err(err) => {
                self.shared.failing.store(true, Ordering::SeqCst);
                metrics::counter!(metric::SPOOL_WRITE_ERRORS_TOTAL).increment(1);
                tracing::error!(error = %err, records = waiters.len(), "spool write failed; the batch is refused");
                self.shared.refresh();
                let err = Arc::new(err);
                for waiter in waiters {
                    let _ = waiter.reply.send(Err(SpoolError::Write(Arc::clone(&err))));
                }
            }
        }
    }

    /// Appends `buffer` to the active segment (rotating or creating one first) and syncs it.
    /// Returns the segment and the offset the buffer starts at.
    fn write_durably(&mut self, buffer: &[u8]) -> io::Result<(u64, u64)> {
        if self.active.as_ref().is_some_and(|a| a.size > 0 && a.size + buffer.len() as u64 > self.segment_bytes) {
            self.seal_active();
        }
        if self.active.is_none() {
            self.open_segment()?;
        }
        let Some(active) = self.active.as_mut() else { return Err(io::Error::other("no active segment")) };
        let base = active.size;
        let written = self.io.write(&mut active.file, buffer).and_then(|()| {
            metrics::counter!(metric::SPOOL_FSYNCS_TOTAL).increment(1);
            self.io.sync(&active.file)
        });
        match written {
            Ok(()) => {
                active.size += buffer.len() as u64;
                Ok((active.seq, base))
            }
            Err(err) => {
                // Never append after a failed write or fsync: the kernel may have dropped the
                // dirty pages, and a later fsync could succeed for data that is gone. The bytes
                // that did land are counted, and recovery will skip a torn record among them.
                let on_disk = active.file.metadata().map_or(base + buffer.len() as u64, |m| m.len());
                let seq = active.seq;
                self.shared.index().grow_segment(seq, on_disk.saturating_sub(base));
                self.seal_active();
                Err(err)
            }
        }
    }

    fn open_segment(&mut self) -> io::Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = segment_path(&self.shared.dir, seq);
        let file = self.io.create(&path)?;
        metrics::counter!(metric::SPOOL_FSYNCS_TOTAL).increment(1);
        // Without this, a crash could lose the directory entry and with it every fsynced record.
        if let Err(err) = self.io.sync_dir(&self.shared.dir) {
            let _ = std::fs::remove_file(&path);
            return Err(err);
        }
        self.shared.index().add_segment(seq, path, 0, false);
        self.active = Some(Active { seq, file, size: 0 });
        Ok(())
    }

    fn retire_if_drained(&mut self) {
        let drained = self.active.as_ref().is_some_and(|active| self.shared.index().is_drained(active.seq));
        if drained {
            self.seal_active();
        }
    }

    /// Stops appending to the active segment; deletes it when nothing in it is pending (the
    /// drain deletes it later otherwise).
    fn seal_active(&mut self) {
        let Some(active) = self.active.take() else { return };
        let deletable = self.shared.index().seal(active.seq);
        drop(active.file);
        if let Some(path) = deletable {
            if let Err(err) = std::fs::remove_file(&path) {
                tracing::warn!(error = %err, path = %path.display(), "cannot delete a drained spool segment");
            }
        }
    }
}

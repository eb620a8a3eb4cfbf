//! Opening a spool directory: take its lock, then rebuild the index from the segment files.
//!
//! This module owns what survives a crash: every intact record of every segment is pending again
//! (records drained before the crash are re-sent; the worker dedupes by ingest id), damaged
//! stretches are skipped and counted, and segments without one intact record are deleted. It
//! must not append: recovered segments are sealed, and the writer starts a fresh one.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use super::index::{Entry, Index};
use super::record;
use super::SpoolError;
use crate::metric;

/// The lock file's name inside the spool directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// Permissions of the spool folder: owner only.
const DIR_MODE: u32 = 0o700;

/// What recovery found.
pub(crate) struct Recovered {
    pub index: Index,
    /// The sequence number for the next new segment.
    pub next_seq: u64,
    pub records: u64,
    pub corrupt: u64,
}

/// Creates `dir` if needed and takes an exclusive `flock` on its lock file. The lock lives as
/// long as the returned file, and the kernel drops it when the process dies, even on `kill -9`.
pub(crate) fn lock(dir: &Path) -> Result<File, SpoolError> {
    // Owner-only (0700): the folder holds message bodies. A folder made by someone else (a
    // volume mount) is tightened too; if that is not allowed, the spool still opens and says so.
    fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(SpoolError::Open)?;
    if let Err(err) = fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)) {
        tracing::warn!(error = %err, dir = %dir.display(), "cannot make the spool folder owner-only (0700)");
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(super::writer::SEGMENT_MODE)
        .open(dir.join(LOCK_FILE))
        .map_err(SpoolError::Open)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(SpoolError::Locked),
        Err(errno) => Err(SpoolError::Open(io::Error::from(errno))),
    }
}

/// Scans every `spool-<seq>.seg` in `dir`, oldest first.
pub(crate) fn recover(dir: &Path) -> Result<Recovered, SpoolError> {
    let mut segments = Vec::new();
    for item in fs::read_dir(dir).map_err(SpoolError::Open)? {
        let item = item.map_err(SpoolError::Open)?;
        let name = item.file_name();
        let Some(seq) = name.to_str().and_then(parse_segment_name) else { continue };
        segments.push((seq, item.path()));
    }
    segments.sort_unstable();
    let mut recovered = Recovered {
        index: Index::default(),
        next_seq: segments.last().map_or(1, |(seq, _)| seq + 1),
        records: 0,
        corrupt: 0,
    };
    for (seq, path) in segments {
        let bytes = fs::read(&path).map_err(SpoolError::Open)?;
        let (found, corrupt) = record::scan(&bytes);
        if corrupt > 0 {
            // Names the file and counts only: a damaged record may hold a payload.
            tracing::error!(path = %path.display(), corrupt, intact = found.len(), "spool segment has damaged records; skipped");
            metrics::counter!(metric::SPOOL_CORRUPT_RECORDS_TOTAL).increment(corrupt);
            recovered.corrupt += corrupt;
        }
        if found.is_empty() {
            if let Err(err) = fs::remove_file(&path) {
                tracing::warn!(error = %err, path = %path.display(), "cannot delete an empty spool segment");
            }
            continue;
        }
        recovered.index.add_segment(seq, path, bytes.len() as u64, true);
        recovered.records += found.len() as u64;
        for record in found {
            let entry =
                Entry { segment: seq, offset: record.offset, len: record.len, spooled_at_ms: record.spooled_at_ms };
            recovered.index.push(record.customer_ref, entry);
        }
    }
    Ok(recovered)
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("spool-")?.strip_suffix(".seg")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn only_well_formed_segment_names_are_read() {
        assert_eq!(parse_segment_name("spool-00000000000000000042.seg"), Some(42));
        for other in ["LOCK", "spool-.seg", "spool-12.seg.tmp", "spool-1a.seg", "x-1.seg", "spool--1.seg"] {
            assert_eq!(parse_segment_name(other), None, "{other}");
        }
    }
}

//! The in-memory index of the spool: which segments exist, which records in them are still
//! owed to the broker, per tenant, in append order.
//!
//! This module owns the bookkeeping rules: a record is counted once, acked once; a segment is
//! deletable only when it is sealed (the writer has moved on) and none of its records is pending;
//! a tenant that failed waits for its own backoff without holding back the others. It must not do
//! I/O: callers get the paths to delete and do it outside the lock.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;
use wafleet_shared::CustomerRef;

/// First wait after a tenant's publish failed.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait: a tenant queue that rejects for hours is retried twice a minute.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where one pending record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Segment sequence number.
    pub segment: u64,
    /// Byte offset in the segment.
    pub offset: u64,
    /// Encoded length.
    pub len: u32,
    /// Wall-clock append time.
    pub spooled_at_ms: u64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    size: u64,
    pending: u64,
    sealed: bool,
}

#[derive(Debug, Default)]
struct TenantQueue {
    entries: VecDeque<Entry>,
    /// Encoded bytes of `entries`: what this tenant holds of the spool (its share is bounded).
    bytes: u64,
    /// The first `in_flight` entries are being published; nothing else of this tenant is.
    in_flight: usize,
    retry_at: Option<Instant>,
    backoff: Duration,
}

/// How one record of a drained batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The broker confirmed it: done.
    Acked,
    /// Unreadable or not what was written: counted as corrupt, done (it can never be published).
    Lost,
    /// Not confirmed and the tenant's queue is the likely cause (nack, return, deadline): retry later.
    TenantFailed,
    /// Not confirmed because the broker as a whole is unavailable: retry once it is ready.
    BrokerFailed,
}

/// Counts for `/spoolz` and the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Records not yet confirmed by the broker.
    pub records: u64,
    /// Bytes of segment files on disk (drained records count until their segment is deleted).
    pub bytes: u64,
    /// Segment files on disk.
    pub segments: u64,
    /// Append time of the oldest pending record.
    pub oldest_ms: Option<u64>,
    /// The last append was refused for lack of room, and nothing has been freed since.
    pub full: bool,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Index {
    segments: BTreeMap<u64, Segment>,
    tenants: BTreeMap<CustomerRef, TenantQueue>,
    pending: u64,
    bytes: u64,
    full: bool,
    /// Round-robin position: the tenant scheduled last.
    cursor: Option<CustomerRef>,
}

impl Index {
    /// Registers a segment file of `size` bytes.
    pub fn add_segment(&mut self, seq: u64, path: PathBuf, size: u64, sealed: bool) {
        self.bytes += size;
        self.segments.insert(seq, Segment { path, size, pending: 0, sealed });
    }

    /// Records that `by` bytes were appended to segment `seq`.
    pub fn grow_segment(&mut self, seq: u64, by: u64) {
        if let Some(segment) = self.segments.get_mut(&seq) {
            segment.size += by;
            self.bytes += by;
        }
    }

    /// Queues a durable record for its tenant.
    pub fn push(&mut self, customer_ref: CustomerRef, entry: Entry) {
        if let Some(segment) = self.segments.get_mut(&entry.segment) {
            segment.pending += 1;
            self.pending += 1;
            // ISOLATION: a record only ever joins the queue of the ref it was written with.
            let queue = self.tenants.entry(customer_ref).or_default();
            queue.bytes += u64::from(entry.len);
            queue.entries.push_back(entry);
        }
    }

    /// True when `extra` more bytes fit under `max_bytes`; otherwise marks the spool full.
    pub fn reserve(&mut self, extra: u64, max_bytes: u64) -> bool {
        let fits = self.bytes.saturating_add(extra) <= max_bytes;
        if !fits {
            self.full = true;
        }
        fits
    }

    /// Marks `seq` sealed. Returns its path when nothing in it is pending any more: the caller
    /// deletes the file, and the segment is already gone from the index.
    pub fn seal(&mut self, seq: u64) -> Option<PathBuf> {
        let segment = self.segments.get_mut(&seq)?;
        segment.sealed = true;
        (segment.pending == 0).then(|| self.remove_segment(seq)).flatten()
    }

    /// True when segment `seq` exists, holds bytes and has nothing pending.
    pub fn is_drained(&self, seq: u64) -> bool {
        self.segments.get(&seq).is_some_and(|s| s.pending == 0 && s.size > 0)
    }

    fn remove_segment(&mut self, seq: u64) -> Option<PathBuf> {
        let segment = self.segments.remove(&seq)?;
        self.bytes -= segment.size;
        // Space was freed: the next append may fit again.
        self.full = false;
        Some(segment.path)
    }

    /// Up to `max_tenants` tenants that may publish now, each with up to `window` of its oldest
    /// records, in round-robin order so every tenant gets its turn.
    pub fn take_batches(&mut self, now: Instant, max_tenants: usize, window: usize) -> Vec<(CustomerRef, Vec<Entry>)> {
        let mut batches = Vec::new();
        if max_tenants == 0 {
            return batches;
        }
        // Tenants after the cursor first, then from the start up to and including it.
        let (wrapped, fresh): (Vec<&CustomerRef>, Vec<&CustomerRef>) = self
            .tenants
            .iter()
            .filter(|(_, queue)| queue.is_eligible(now))
            .map(|(key, _)| key)
            .partition(|key| self.cursor.as_ref().is_some_and(|cursor| *key <= cursor));
        let order: Vec<CustomerRef> = fresh.into_iter().chain(wrapped).take(max_tenants).cloned().collect();
        for key in order {
            if let Some(queue) = self.tenants.get_mut(&key) {
                let batch: Vec<Entry> = queue.entries.iter().take(window).copied().collect();
                queue.in_flight = batch.len();
                self.cursor = Some(key.clone());
                batches.push((key, batch));
            }
        }
        batches
    }

    /// Applies the outcomes of a batch from [`Index::take_batches`] (in the same order) and
    /// returns the segment files that may now be deleted.
    pub fn finish_batch(&mut self, customer_ref: &CustomerRef, outcomes: &[Outcome], now: Instant) -> Vec<PathBuf> {
        let Some(queue) = self.tenants.get_mut(customer_ref) else { return Vec::new() };
        let taken = queue.in_flight.min(outcomes.len());
        queue.in_flight = 0;
        // Only the batch is touched, so a tenant with a long backlog costs O(batch), not O(backlog).
        let mut done = Vec::new();
        let mut retry = Vec::new();
        for outcome in &outcomes[..taken] {
            let Some(entry) = queue.entries.pop_front() else { break };
            match outcome {
                Outcome::Acked | Outcome::Lost => {
                    queue.bytes = queue.bytes.saturating_sub(u64::from(entry.len));
                    done.push(entry);
                }
                Outcome::TenantFailed | Outcome::BrokerFailed => retry.push(entry),
            }
        }
        for entry in retry.into_iter().rev() {
            queue.entries.push_front(entry);
        }
        if outcomes.contains(&Outcome::TenantFailed) {
            queue.backoff = (queue.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
            queue.retry_at = Some(now + queue.backoff);
        } else if outcomes.contains(&Outcome::BrokerFailed) {
            // Not this tenant's fault, so its backoff does not grow; the short pause keeps a
            // broker that flaps between ready and failing from turning the drain into a busy loop.
            queue.retry_at = Some(now + MIN_BACKOFF);
        } else {
            queue.backoff = Duration::ZERO;
            queue.retry_at = None;
        }
        if queue.entries.is_empty() {
            self.tenants.remove(customer_ref);
        }
        let mut deletable = Vec::new();
        for entry in done {
            self.pending -= 1;
            let Some(segment) = self.segments.get_mut(&entry.segment) else { continue };
            segment.pending -= 1;
            if segment.pending == 0 && segment.sealed {
                deletable.extend(self.remove_segment(entry.segment));
            }
        }
        deletable
    }

    /// The earliest moment a tenant that is waiting out a backoff may publish again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.tenants.values().filter(|q| q.in_flight == 0 && !q.entries.is_empty()).filter_map(|q| q.retry_at).min()
    }

    /// Pending records per tenant (for tests and logs; refs only, never content).
    pub fn pending_of(&self, customer_ref: &CustomerRef) -> usize {
        self.tenants.get(customer_ref).map_or(0, |q| q.entries.len())
    }

    /// Encoded bytes of the records of `customer_ref` not yet confirmed: its use of its share.
    pub fn tenant_bytes(&self, customer_ref: &CustomerRef) -> u64 {
        self.tenants.get(customer_ref).map_or(0, |q| q.bytes)
    }

    /// True while appends are refused for lack of room.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// Current counts.
    pub fn totals(&self) -> Totals {
        Totals {
            records: self.pending,
            bytes: self.bytes,
            segments: self.segments.len() as u64,
            oldest_ms: self.tenants.values().filter_map(|q| q.entries.front()).map(|e| e.spooled_at_ms).min(),
            full: self.full,
        }
    }
}

impl TenantQueue {
    fn is_eligible(&self, now: Instant) -> bool {
        self.in_flight == 0 && !self.entries.is_empty() && !matches!(self.retry_at, Some(at) if at > now)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn cref(raw: &str) -> CustomerRef {
        CustomerRef::parse(raw).unwrap()
    }

    fn entry(segment: u64, offset: u64) -> Entry {
        Entry { segment, offset, len: 10, spooled_at_ms: offset }
    }

    #[test]
    fn a_failing_tenant_backs_off_while_the_others_keep_their_turn() {
        let mut index = Index::default();
        index.add_segment(1, "s1".into(), 100, true);
        for (i, key) in ["a", "b", "c", "a", "b"].into_iter().enumerate() {
            index.push(cref(key), entry(1, i as u64 * 10));
        }
        let now = Instant::now();
        let batches = index.take_batches(now, 8, 1);
        let keys: Vec<&str> = batches.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert!(index.take_batches(now, 8, 1).is_empty(), "one batch per tenant at a time");

        assert!(index.finish_batch(&cref("a"), &[Outcome::TenantFailed], now).is_empty());
        assert!(index.finish_batch(&cref("b"), &[Outcome::Acked], now).is_empty());
        let deleted = index.finish_batch(&cref("c"), &[Outcome::Acked], now);
        assert!(deleted.is_empty(), "segment 1 still holds pending records");
        let again: Vec<String> = index.take_batches(now, 8, 4).into_iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(again, ["b"], "a waits out its backoff; b goes on");
        assert_eq!(index.pending_of(&cref("a")), 2);
        assert_eq!(index.next_retry(), Some(now + MIN_BACKOFF));
    }

    #[test]
    fn a_segment_is_deleted_only_when_sealed_and_every_record_is_acked() {
        let mut index = Index::default();
        index.add_segment(1, "s1".into(), 40, false);
        index.push(cref("a"), entry(1, 0));
        index.push(cref("a"), entry(1, 20));
        let now = Instant::now();
        let batch = index.take_batches(now, 8, 8);
        assert_eq!(batch[0].1.len(), 2);
        // The second record failed: it stays, and the segment with it.
        assert!(index.finish_batch(&cref("a"), &[Outcome::Acked, Outcome::BrokerFailed], now).is_empty());
        assert_eq!(index.totals().records, 1);
        assert!(index.take_batches(now, 8, 8).is_empty(), "a broker failure pauses briefly");
        assert_eq!(index.take_batches(now + MIN_BACKOFF, 8, 8)[0].1, [entry(1, 20)]);
        // Acked, but the writer still appends to the segment: it is kept.
        assert!(index.finish_batch(&cref("a"), &[Outcome::Acked], now).is_empty());
        assert!(index.is_drained(1));
        assert_eq!(index.seal(1), Some(PathBuf::from("s1")));
        assert_eq!(index.totals(), Totals::default());
    }

    #[test]
    fn a_tenants_bytes_grow_with_its_records_and_shrink_as_they_are_confirmed() {
        let mut index = Index::default();
        index.add_segment(1, "s1".into(), 100, true);
        index.push(cref("a"), entry(1, 0));
        index.push(cref("a"), entry(1, 10));
        index.push(cref("b"), entry(1, 20));
        assert_eq!(index.tenant_bytes(&cref("a")), 20);
        assert_eq!(index.tenant_bytes(&cref("b")), 10);
        let now = Instant::now();
        let batches = index.take_batches(now, 8, 8);
        assert_eq!(batches[0].0, cref("a"));
        index.finish_batch(&cref("a"), &[Outcome::Acked, Outcome::TenantFailed], now);
        assert_eq!(index.tenant_bytes(&cref("a")), 10, "only the confirmed record leaves the share");
        assert_eq!(index.tenant_bytes(&cref("b")), 10, "another tenant's use is its own");
    }

    #[test]
    fn reserve_refuses_past_the_bound_and_a_deletion_clears_full() {
        let mut index = Index::default();
        index.add_segment(1, "s1".into(), 90, true);
        assert!(index.reserve(10, 100));
        assert!(!index.reserve(11, 100));
        assert!(index.totals().full);
        assert!(index.seal(1).is_some());
        assert!(!index.totals().full);
    }
}

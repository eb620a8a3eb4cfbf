//! Unit tests of the spool through its handle: group commit, fault injection, bounds, recovery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use wafleet_shared::{AuthMode, CustomerRef, Envelope, EnvelopeV1, Generation, IngestId};

use super::*;
use crate::publisher::FakePublisher;

const OVERALL: Duration = Duration::from_secs(10);

fn cref(raw: &str) -> CustomerRef {
    CustomerRef::parse(raw).unwrap()
}

fn envelope(customer_ref: &str, n: u64) -> Vec<u8> {
    Envelope::V1(EnvelopeV1 {
        ingest_id: IngestId::new(),
        customer_ref: cref(customer_ref),
        generation: Generation::parse_canonical("1").unwrap(),
        auth: AuthMode::Token,
        received_at: chrono::Utc::now(),
        event_type: "message".into(),
        provider_message_id: None,
        payload: serde_json::json!({ "n": n }).into(),
    })
    .to_bytes()
}

fn settings(dir: &Path) -> SpoolSettings {
    SpoolSettings { dir: dir.to_path_buf(), max_bytes: 1 << 20, segment_bytes: 64 * 1024, tenant_max_bytes: 1 << 18 }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    found.sort();
    found
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + OVERALL;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Counts data syncs, can hold the first one until released, and can fail on demand.
#[derive(Default)]
struct TestIo {
    entered: AtomicUsize,
    syncs: AtomicUsize,
    fail: AtomicBool,
    held: Mutex<bool>,
    released: Condvar,
}

impl TestIo {
    fn holding() -> Self {
        Self { held: Mutex::new(true), ..Self::default() }
    }

    fn release(&self) {
        *self.held.lock().unwrap() = false;
        self.released.notify_all();
    }
}

impl SegmentIo for TestIo {
    fn sync(&self, file: &File) -> io::Result<()> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let mut held = self.held.lock().unwrap();
        while *held {
            held = self.released.wait(held).unwrap();
        }
        drop(held);
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        self.syncs.fetch_add(1, Ordering::SeqCst);
        file.sync_data()
    }
}

impl Spool {
    fn queued(&self) -> usize {
        self.commands.max_capacity() - self.commands.capacity()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_one_fsync_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(TestIo::holding());
    let spool = Spool::open_with_io(&settings(dir.path()), io.clone()).unwrap();
    const N: usize = 40;

    // The first append's fsync is held, so the next N-1 queue up behind it, as concurrent
    // requests do behind a slow disk.
    let first = tokio::spawn({
        let spool = spool.clone();
        async move { spool.append(&cref("cust_a"), envelope("cust_a", 0)).await }
    });
    eventually("the first fsync", || io.entered.load(Ordering::SeqCst) == 1).await;
    let rest: Vec<_> = (1..N as u64)
        .map(|n| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.append(&cref("cust_a"), envelope("cust_a", n)).await })
        })
        .collect();
    eventually("every append queued", || spool.queued() == N - 1).await;
    io.release();

    first.await.unwrap().unwrap();
    for append in rest {
        append.await.unwrap().unwrap();
    }
    assert_eq!(io.syncs.load(Ordering::SeqCst), 2, "one fsync for the first batch, one for the other {}", N - 1);
    assert_eq!(spool.status().records, N as u64);
}

#[tokio::test]
async fn a_failed_fsync_fails_its_waiters_and_the_next_batch_uses_a_fresh_segment() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(TestIo::default());
    let spool = Spool::open_with_io(&settings(dir.path()), io.clone()).unwrap();
    spool.append(&cref("cust_a"), envelope("cust_a", 1)).await.unwrap();
    let before = segments(dir.path());

    io.fail.store(true, Ordering::SeqCst);
    let failed = spool.append(&cref("cust_a"), envelope("cust_a", 2)).await;
    assert!(matches!(failed, Err(SpoolError::Write(_))), "{failed:?}");
    assert!(spool.is_failing());
    assert_eq!(spool.status().records, 1, "the failed record is not owed to anyone");

    io.fail.store(false, Ordering::SeqCst);
    spool.append(&cref("cust_a"), envelope("cust_a", 3)).await.unwrap();
    assert!(!spool.is_failing());
    assert_eq!(spool.status().records, 2);
    let after = segments(dir.path());
    assert_eq!(after.len(), 2, "the segment that failed is never appended to again");
    assert_eq!(after[0], before[0]);
}

#[tokio::test]
async fn a_full_spool_refuses_until_the_drain_frees_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let record = record::encoded_len(&cref("cust_a"), &envelope("cust_a", 0)).unwrap() as u64;
    // One record per segment, room for three.
    let bounds = SpoolSettings {
        dir: dir.path().to_path_buf(),
        max_bytes: 3 * record + 10,
        segment_bytes: record,
        tenant_max_bytes: record,
    };
    let spool = Spool::open(&bounds).unwrap();
    for n in 0..3 {
        spool.append(&cref("cust_a"), envelope("cust_a", n)).await.unwrap();
    }
    assert!(!spool.is_full());
    let refused = spool.append(&cref("cust_a"), envelope("cust_a", 3)).await;
    assert!(matches!(refused, Err(SpoolError::Full)), "{refused:?}");
    assert!(spool.is_full() && spool.status().full);

    let publisher = Arc::new(FakePublisher::new());
    let stop = CancellationToken::new();
    let drain = spool.start_drain(publisher.clone(), Duration::from_secs(1), stop.clone());
    assert!(spool.wait_until_empty(OVERALL).await);
    eventually("every drained segment deleted", || segments(dir.path()).is_empty()).await;
    assert!(!spool.is_full());
    assert_eq!(spool.status().bytes, 0);
    assert_eq!(publisher.published().len(), 3);
    spool.append(&cref("cust_a"), envelope("cust_a", 4)).await.unwrap();
    stop.cancel();
    drain.await.unwrap();
}

#[tokio::test]
async fn a_tenant_past_its_share_is_refused_while_others_and_the_spool_keep_room() {
    let dir = tempfile::tempdir().unwrap();
    let record = record::encoded_len(&cref("cust_a"), &envelope("cust_a", 0)).unwrap() as u64;
    // Room for many records in all, two of them for one tenant whose queue refuses it.
    let bounds = SpoolSettings {
        dir: dir.path().to_path_buf(),
        max_bytes: 64 * record,
        segment_bytes: 8 * record,
        tenant_max_bytes: 2 * record,
    };
    let spool = Spool::open(&bounds).unwrap();
    // Concurrently, so the share also holds within one group commit.
    let a = cref("cust_a");
    let tries: Vec<_> = (0..4).map(|n| spool.append_within_share(&a, envelope("cust_a", n))).collect();
    let results = futures::future::join_all(tries).await;
    let refused = results.iter().filter(|r| matches!(r, Err(SpoolError::TenantShareFull))).count();
    assert_eq!((results.len() - refused, refused), (2, 2), "{results:?}");
    assert_eq!(spool.tenant_bytes(&cref("cust_a")), 2 * record);

    spool.append_within_share(&cref("cust_b"), envelope("cust_b", 0)).await.unwrap();
    // An outage spool (not a refusing queue) is bounded by the whole spool only.
    spool.append(&cref("cust_a"), envelope("cust_a", 9)).await.unwrap();
    assert!(!spool.is_full(), "a tenant's full share is not a full spool");

    let publisher = Arc::new(FakePublisher::new());
    let stop = CancellationToken::new();
    let drain = spool.start_drain(publisher.clone(), Duration::from_secs(1), stop.clone());
    assert!(spool.wait_until_empty(OVERALL).await);
    assert_eq!(spool.tenant_bytes(&cref("cust_a")), 0);
    spool.append_within_share(&cref("cust_a"), envelope("cust_a", 10)).await.unwrap();
    stop.cancel();
    drain.await.unwrap();
}

/// Appends `envelopes`, closes the spool, and returns the one segment and each record's offset.
async fn write_and_close(dir: &Path, envelopes: &[(&str, Vec<u8>)]) -> (PathBuf, Vec<u64>) {
    let spool = Spool::open(&settings(dir)).unwrap();
    for (key, body) in envelopes {
        spool.append(&cref(key), body.clone()).await.unwrap();
    }
    spool.close().await;
    spool.release();
    let files = segments(dir);
    assert_eq!(files.len(), 1);
    let (found, corrupt) = record::scan(&fs::read(&files[0]).unwrap());
    assert_eq!((found.len(), corrupt), (envelopes.len(), 0));
    (files[0].clone(), found.iter().map(|f| f.offset).collect())
}

/// Reopens `dir` with a local metrics recorder; returns the spool and the corrupt-record count.
fn reopen_counting(dir: &Path) -> (Spool, String) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let spool = metrics::with_local_recorder(&recorder, || Spool::open(&settings(dir))).unwrap();
    let rendered = recorder.handle().render();
    let corrupt = rendered
        .lines()
        .find(|line| line.starts_with(metric::SPOOL_CORRUPT_RECORDS_TOTAL))
        .and_then(|line| line.split_whitespace().last())
        .unwrap_or("0")
        .to_owned();
    (spool, corrupt)
}

async fn drained_bodies(spool: &Spool) -> Vec<Vec<u8>> {
    let publisher = Arc::new(FakePublisher::new());
    let stop = CancellationToken::new();
    let drain = spool.start_drain(publisher.clone(), Duration::from_secs(1), stop.clone());
    assert!(spool.wait_until_empty(OVERALL).await);
    stop.cancel();
    drain.await.unwrap();
    publisher.published().into_iter().map(|(_, body)| body).collect()
}

#[tokio::test]
async fn a_torn_last_record_is_counted_and_every_record_before_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let written =
        [("cust_a", envelope("cust_a", 1)), ("cust_b", envelope("cust_b", 2)), ("cust_a", envelope("cust_a", 3))];
    let (file, offsets) = write_and_close(dir.path(), &written).await;
    // A crash in the middle of the last append: its bytes stop part-way.
    let torn = File::options().write(true).open(&file).unwrap();
    torn.set_len(offsets[2] + 20).unwrap();

    let (spool, corrupt) = reopen_counting(dir.path());
    assert_eq!(corrupt, "1");
    assert_eq!(spool.status().records, 2);
    let mut bodies = drained_bodies(&spool).await;
    bodies.sort();
    let mut expected = vec![written[0].1.clone(), written[1].1.clone()];
    expected.sort();
    assert_eq!(bodies, expected);
}

#[tokio::test]
async fn a_damaged_middle_record_is_counted_and_the_records_around_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let written =
        [("cust_a", envelope("cust_a", 1)), ("cust_b", envelope("cust_b", 2)), ("cust_c", envelope("cust_c", 3))];
    let (file, offsets) = write_and_close(dir.path(), &written).await;
    let mut bytes = fs::read(&file).unwrap();
    bytes[usize::try_from(offsets[1]).unwrap() + 30] ^= 0x20;
    fs::write(&file, bytes).unwrap();

    let (spool, corrupt) = reopen_counting(dir.path());
    assert_eq!(corrupt, "1");
    assert_eq!((spool.pending_of(&cref("cust_a")), spool.pending_of(&cref("cust_b"))), (1, 0));
    assert_eq!(spool.pending_of(&cref("cust_c")), 1, "the record after the damage is resynced");
    let mut bodies = drained_bodies(&spool).await;
    bodies.sort();
    let mut expected = vec![written[0].1.clone(), written[2].1.clone()];
    expected.sort();
    assert_eq!(bodies, expected);
    eventually("the recovered segment deleted once drained", || segments(dir.path()).is_empty()).await;
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&settings(dir.path())).unwrap();
    assert!(matches!(Spool::open(&settings(dir.path())), Err(SpoolError::Locked)));
    spool.close().await;
    spool.release();
    assert!(Spool::open(&settings(dir.path())).is_ok());
}

#[tokio::test]
async fn closing_a_drained_spool_leaves_no_segment_behind() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&settings(dir.path())).unwrap();
    spool.append(&cref("cust_a"), envelope("cust_a", 1)).await.unwrap();
    assert_eq!(drained_bodies(&spool).await.len(), 1);
    spool.close().await;
    assert!(segments(dir.path()).is_empty(), "a drained segment would be re-sent after a restart");
    assert!(matches!(spool.append(&cref("cust_a"), envelope("cust_a", 2)).await, Err(SpoolError::Closed)));
}

/// Fails the first `remaining` segment opens of the drain with EMFILE, as a process at its
/// open-files limit would.
#[derive(Default)]
struct FailingOpens {
    remaining: AtomicUsize,
    attempts: AtomicUsize,
}

impl SegmentIo for FailingOpens {
    fn open_read(&self, path: &Path) -> io::Result<File> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.remaining.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(io::Error::from_raw_os_error(24));
        }
        File::open(path)
    }
}

#[tokio::test]
async fn a_segment_that_cannot_be_opened_is_retried_and_its_records_are_published_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FailingOpens { remaining: AtomicUsize::new(2), ..FailingOpens::default() });
    let spool = Spool::open_with_io(&settings(dir.path()), io.clone()).unwrap();
    spool.append(&cref("cust_a"), envelope("cust_a", 1)).await.unwrap();
    spool.append(&cref("cust_a"), envelope("cust_a", 2)).await.unwrap();

    let publisher = Arc::new(FakePublisher::new());
    let stop = CancellationToken::new();
    let drain = spool.start_drain(publisher.clone(), Duration::from_secs(1), stop.clone());
    eventually("both records published", || publisher.published().len() == 2).await;
    stop.cancel();
    drain.await.unwrap();

    assert!(io.attempts.load(Ordering::SeqCst) >= 3, "two failed opens, then one that worked");
    assert_eq!(spool.status().records, 0);
    let bodies: Vec<Vec<u8>> = publisher.published().into_iter().map(|(_, body)| body).collect();
    assert!(bodies.iter().all(|b| Envelope::decode(b).is_ok()), "published whole envelopes");
}

#[tokio::test]
async fn spool_folder_and_segments_are_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("spool");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let spool = Spool::open(&settings(&dir)).unwrap();
    spool.append(&cref("cust_a"), envelope("cust_a", 1)).await.unwrap();

    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "an existing folder is tightened");
    let found = segments(&dir);
    assert!(!found.is_empty());
    for segment in found {
        assert_eq!(mode(&segment), 0o600, "{}", segment.display());
    }
}

//! The drain: publishes spooled records to the broker with confirms, partitioned by tenant.
//!
//! This module owns the order and pace of re-publishing. Each tenant has its own queue in the
//! index, at most one batch in flight and its own backoff, so a tenant whose queue rejects
//! (length limit with `reject-publish`, a missing queue) waits alone while the others drain.
//! A record leaves the spool only on a broker ack. It must not write segments, and it must never
//! publish a record under any routing key but the one stored with it.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc::WeakSender;
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wafleet_shared::CustomerRef;

use super::index::{Entry, Outcome};
use super::writer::{segment_path, Command};
use super::{record, Shared};
use crate::metric;
use crate::publisher::{PublishError, Publisher};

/// Tenants publishing at once. Bounds the drain's share of the broker channel and of memory
/// (each batch holds its envelopes).
const MAX_TENANTS_IN_FLIGHT: usize = 64;
/// Records of one tenant published together, pipelined on the shared confirm channel.
const WINDOW: usize = 32;
/// The publisher has no readiness notification, so readiness is polled this often.
const READY_POLL: Duration = Duration::from_millis(200);
/// Longest sleep: the oldest-age gauge grows with time, so it is refreshed at least this often.
const TICK: Duration = Duration::from_secs(1);

/// Runs until `stop` fires. In-flight batches are then abandoned: their records were not acked,
/// so they stay pending and on disk.
pub(crate) async fn run(
    shared: Arc<Shared>,
    publisher: Arc<dyn Publisher>,
    publish_timeout: Duration,
    writer: WeakSender<Command>,
    stop: CancellationToken,
) {
    let mut in_flight: JoinSet<Vec<Outcome>> = JoinSet::new();
    let mut tenants: HashMap<Id, CustomerRef> = HashMap::new();
    loop {
        let now = Instant::now();
        let ready = publisher.is_ready();
        if ready {
            shared.note_broker_ready();
            let free = MAX_TENANTS_IN_FLIGHT.saturating_sub(in_flight.len());
            let batches = shared.index().take_batches(now, free, WINDOW);
            for (customer_ref, entries) in batches {
                let task = publish_batch(
                    Arc::clone(&shared),
                    Arc::clone(&publisher),
                    publish_timeout,
                    customer_ref.clone(),
                    entries,
                );
                tenants.insert(in_flight.spawn(task).id(), customer_ref);
            }
        }
        shared.refresh();
        let wake_at = if !ready {
            now + READY_POLL
        } else if in_flight.len() >= MAX_TENANTS_IN_FLIGHT {
            // Every slot is taken: only a finished batch can let another tenant in.
            now + TICK
        } else {
            shared.index().next_retry().map_or(now + TICK, |at| at.min(now + TICK))
        };
        tokio::select! {
            () = stop.cancelled() => break,
            Some(joined) = in_flight.join_next_with_id() => {
                let (id, outcomes) = match joined {
                    Ok((id, outcomes)) => (id, outcomes),
                    // A batch that panicked acked nothing: its records are retried.
                    Err(err) => (err.id(), Vec::new()),
                };
                if let Some(customer_ref) = tenants.remove(&id) {
                    finish(&shared, &writer, &customer_ref, &outcomes).await;
                }
            }
            () = shared.wake.notified() => {}
            () = tokio::time::sleep_until(wake_at) => {}
        }
    }
    in_flight.shutdown().await;
    shared.refresh();
}

async fn finish(shared: &Shared, writer: &WeakSender<Command>, customer_ref: &CustomerRef, outcomes: &[Outcome]) {
    let acked = outcomes.iter().filter(|o| **o == Outcome::Acked).count();
    let (deletable, empty) = {
        let mut index = shared.index();
        let deletable = index.finish_batch(customer_ref, outcomes, Instant::now());
        (deletable, index.totals().records == 0)
    };
    metrics::counter!(metric::SPOOL_DRAINED_TOTAL).increment(acked as u64);
    if outcomes.contains(&Outcome::TenantFailed) {
        tracing::warn!(tenant = %customer_ref, acked, "spooled events for this tenant were refused; backing off");
    }
    for path in deletable {
        if let Err(err) = tokio::fs::remove_file(&path).await {
            tracing::warn!(error = %err, path = %path.display(), "cannot delete a drained spool segment");
        }
    }
    if empty && acked > 0 {
        // The active segment may now hold only drained records: let the writer delete it.
        if let Some(writer) = writer.upgrade() {
            let _ = writer.try_send(Command::RetireIfDrained);
        }
    }
    shared.refresh();
}

async fn publish_batch(
    shared: Arc<Shared>,
    publisher: Arc<dyn Publisher>,
    publish_timeout: Duration,
    customer_ref: CustomerRef,
    entries: Vec<Entry>,
) -> Vec<Outcome> {
    let count = entries.len();
    let key = customer_ref.clone();
    let read = tokio::task::spawn_blocking(move || read_envelopes(&shared, &key, &entries)).await;
    let Ok(bodies) = read else { return vec![Outcome::BrokerFailed; count] };
    let publishes = bodies.into_iter().map(|body| {
        let publisher = Arc::clone(&publisher);
        let customer_ref = &customer_ref;
        async move {
            let body = match body {
                ReadBack::Record(body) => body,
                ReadBack::Corrupt => return Outcome::Lost,
                // The record is still on disk and still owed: this tenant backs off and tries again.
                ReadBack::Unavailable => return Outcome::TenantFailed,
            };
            // ISOLATION: the routing key is the ref stored with the record, which
            // `read_envelopes` checked against the envelope's own ref.
            match tokio::time::timeout(publish_timeout, publisher.publish(customer_ref, None, &body)).await {
                Ok(Ok(())) => Outcome::Acked,
                Ok(Err(err)) => classify(&err),
                Err(_) => classify(&PublishError::Deadline),
            }
        }
    });
    futures::future::join_all(publishes).await
}

fn classify(err: &PublishError) -> Outcome {
    metrics::counter!(metric::SPOOL_DRAIN_FAILED_TOTAL, "reason" => err.reason()).increment(1);
    match err {
        PublishError::NotReady(_) | PublishError::Amqp(_) => Outcome::BrokerFailed,
        PublishError::Deadline | PublishError::Nack | PublishError::Returned | PublishError::Unconfirmed => {
            Outcome::TenantFailed
        }
    }
}

/// One record as the drain read it back.
#[derive(Debug)]
enum ReadBack {
    /// The envelope, checked.
    Record(Vec<u8>),
    /// Provably damaged: its checksum fails, its bytes are gone (the segment ends before it), or
    /// its refs disagree. It can never be published and is dropped.
    Corrupt,
    /// The segment could not be opened or read right now (EMFILE, EIO, ...): the record stays
    /// pending and is tried again, because it was answered 200 and is still on disk.
    Unavailable,
}

/// Reads each record back from its segment.
fn read_envelopes(shared: &Shared, customer_ref: &CustomerRef, entries: &[Entry]) -> Vec<ReadBack> {
    let mut open: Option<(u64, File)> = None;
    let mut bodies = Vec::with_capacity(entries.len());
    for entry in entries {
        if !matches!(&open, Some((seq, _)) if *seq == entry.segment) {
            open = None;
            match shared.io.open_read(&segment_path(&shared.dir, entry.segment)) {
                Ok(file) => open = Some((entry.segment, file)),
                Err(err) => {
                    metrics::counter!(metric::SPOOL_READ_ERRORS_TOTAL).increment(1);
                    tracing::warn!(tenant = %customer_ref, segment = entry.segment, error = %err, "cannot open a spool segment; will retry");
                }
            }
        }
        let body = match &open {
            Some((_, file)) => read_one(file, customer_ref, entry),
            None => ReadBack::Unavailable,
        };
        match &body {
            ReadBack::Corrupt => {
                metrics::counter!(metric::SPOOL_CORRUPT_RECORDS_TOTAL).increment(1);
                tracing::error!(tenant = %customer_ref, segment = entry.segment, offset = entry.offset, "spooled record is corrupt; dropped");
            }
            ReadBack::Unavailable if open.is_some() => {
                metrics::counter!(metric::SPOOL_READ_ERRORS_TOTAL).increment(1);
                tracing::warn!(tenant = %customer_ref, segment = entry.segment, offset = entry.offset, "cannot read a spooled record; will retry");
            }
            _ => {}
        }
        bodies.push(body);
    }
    bodies
}

fn read_one(file: &File, customer_ref: &CustomerRef, entry: &Entry) -> ReadBack {
    let Ok(len) = usize::try_from(entry.len) else { return ReadBack::Corrupt };
    let mut bytes = vec![0; len];
    match file.read_exact_at(&mut bytes, entry.offset) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return ReadBack::Corrupt,
        Err(_) => return ReadBack::Unavailable,
    }
    let Some((decoded, _)) = record::decode(&bytes) else { return ReadBack::Corrupt };
    // ISOLATION: the stored routing key, the queue it was indexed under and the envelope's own
    // ref must agree, or the record goes nowhere (the worker would quarantine it anyway).
    #[derive(Deserialize)]
    struct RefOnly {
        customer_ref: String,
    }
    let Ok(envelope) = serde_json::from_slice::<RefOnly>(decoded.envelope) else { return ReadBack::Corrupt };
    if decoded.customer_ref == *customer_ref && envelope.customer_ref == customer_ref.as_str() {
        ReadBack::Record(decoded.envelope.to_vec())
    } else {
        ReadBack::Corrupt
    }
}

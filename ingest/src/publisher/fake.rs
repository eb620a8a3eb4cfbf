//! An in-memory [`Publisher`] for router tests here and in other crates.
//!
//! It records every accepted `(routing_key, body)` pair and can be switched to fail or to hang.
//! It must stay free of any broker logic, so a test that passes with it proves the HTTP layer
//! and nothing more.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use wafleet_shared::{CustomerRef, Envelope, IngestId};

use super::{PublishError, Publisher};

/// What the fake does with the next publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FakeMode {
    /// Record the message and succeed.
    Accept,
    /// Fail at once, as a nack would.
    Fail,
    /// Never answer, as a blocked broker would; the caller's deadline must fire.
    Hang,
}

/// Records published messages instead of sending them.
#[derive(Debug)]
pub struct FakePublisher {
    published: Mutex<Vec<(CustomerRef, Vec<u8>)>>,
    mode: Mutex<FakeMode>,
    ready: AtomicBool,
}

impl Default for FakePublisher {
    fn default() -> Self {
        Self::new()
    }
}

impl FakePublisher {
    /// A ready fake that accepts everything.
    pub fn new() -> Self {
        Self { published: Mutex::new(Vec::new()), mode: Mutex::new(FakeMode::Accept), ready: AtomicBool::new(true) }
    }

    /// Changes what later publishes do.
    pub fn set_mode(&self, mode: FakeMode) {
        *self.mode.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = mode;
    }

    /// Changes what `is_ready` reports.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Every `(routing_key, body)` accepted so far, in order.
    pub fn published(&self) -> Vec<(CustomerRef, Vec<u8>)> {
        self.published.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Every accepted body decoded as an envelope, with its routing key. Bodies that do not
    /// decode are skipped (ingest never publishes one).
    pub fn envelopes(&self) -> Vec<(CustomerRef, Envelope)> {
        self.published()
            .into_iter()
            .filter_map(|(key, body)| Envelope::decode(&body).ok().map(|envelope| (key, envelope)))
            .collect()
    }

    fn mode(&self) -> FakeMode {
        *self.mode.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Publisher for FakePublisher {
    async fn publish(&self, routing_key: &CustomerRef, _: Option<IngestId>, body: &[u8]) -> Result<(), PublishError> {
        match self.mode() {
            FakeMode::Accept => {
                self.published
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push((routing_key.clone(), body.to_vec()));
                Ok(())
            }
            FakeMode::Fail => Err(PublishError::Nack),
            FakeMode::Hang => std::future::pending().await,
        }
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

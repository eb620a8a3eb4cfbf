//! An in-process simulator of the WA Bridges HTTP API for wafleet's integration tests, demo and
//! benchmarks. It owns a fake fleet of bridges, records every send per bridge and every `/api/*`
//! call, enforces the documented per-key rate limits and per-IP floor (with a compressible
//! "minute"), injects faults and fires inbound webhook events at the system under test. It must
//! not depend on other wafleet crates: it stands in for an external service and only speaks its
//! HTTP contract.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use wafleet_sim::{SimConfig, Simulator};
//! let (sim, _server) = Simulator::start(SimConfig::default(), "127.0.0.1:0".parse()?).await?;
//! sim.add_bridge("cust_1", Some("http://127.0.0.1:8080/wa/cust_1/secret"), None);
//! let sends = sim.wait_for_sends("cust_1", 1, std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

mod api;
mod calls;
pub mod cli;
mod config;
mod control;
mod error;
mod gate;
mod inbound;
mod limiter;
mod model;
mod proxy;
mod state;
mod webhook;
mod window;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use calls::{ApiCall, API_CALL_LOG_CAPACITY};
pub use config::{ErrorStatuses, InstanceIdKind, NotConnectedSend, SimConfig, WebhookRef, WindowKind};
pub use error::{Error, Result};
pub use inbound::Inbound;
pub use limiter::Bucket;
pub use model::{Bridge, Fault, RecordedSend, RejectedAttempt, SimStats};

use state::SimState;

/// A cheap, cloneable handle to a running simulator's shared state.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<SimState>,
    /// Woken on every recorded send so `wait_for_sends` never polls in a sleep loop.
    sends_changed: Notify,
    http: reqwest::Client,
    addr: SocketAddr,
    shutdown: CancellationToken,
    /// Random per simulator, so message ids from two simulators in one test never collide.
    id_seed: u32,
    id_counter: AtomicU64,
}

impl Simulator {
    /// Bind `addr` (port 0 picks a free port), start serving on a spawned task and return the
    /// handle plus the server task, which ends after [`Simulator::shutdown`].
    pub async fn start(config: SimConfig, addr: SocketAddr) -> anyhow::Result<(Simulator, JoinHandle<()>)> {
        config.validate().map_err(anyhow::Error::msg).context("invalid simulator config")?;
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding simulator to {addr}"))?;
        let addr = listener.local_addr().context("reading the simulator's bound address")?;
        // The whole delivery (connect, send, answer) must fit the reference's webhook timeout.
        let http =
            reqwest::Client::builder().timeout(config.webhook_timeout).build().context("building the HTTP client")?;
        let sim = Simulator {
            shared: Arc::new(Shared {
                state: Mutex::new(SimState::new(config, tokio::time::Instant::now())),
                sends_changed: Notify::new(),
                http,
                addr,
                shutdown: CancellationToken::new(),
                id_seed: random_u32(),
                id_counter: AtomicU64::new(1),
            }),
        };
        // Only `/api` is behind the gate: the control API is the simulator's own, not the
        // reference's, so it is neither limited nor logged.
        let gate = axum::middleware::from_fn_with_state(sim.clone(), gate::api_gate);
        let app = api::router().layer(gate).merge(control::router()).with_state(sim.clone());
        // The peer address names the client for the per-IP floor.
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let stop = sim.shared.shutdown.clone().cancelled_owned();
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
                tracing::error!(%error, "simulator server stopped with an error");
            }
        });
        Ok((sim, server))
    }

    /// Base URL of the simulated API, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The address the simulator is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Ask the server to stop accepting connections; the task from `start` then ends.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// A copy of the configuration the simulator runs with.
    pub fn config(&self) -> SimConfig {
        self.lock().config.clone()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock cannot leave the plain-data state half-valid in a way
        // that matters to a test double, so recover instead of cascading panics.
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.shared.http
    }

    /// A unique `message_id` for an accepted send: `SIM` + 16 uppercase hex digits.
    pub(crate) fn next_message_id(&self) -> String {
        let n = self.shared.id_counter.fetch_add(1, Ordering::Relaxed);
        format!("SIM{:08X}{:08X}", self.shared.id_seed, n & 0xFFFF_FFFF)
    }

    pub(crate) fn notify_sends_changed(&self) {
        self.shared.sends_changed.notify_waiters();
    }

    /// Register a bridge, or update an existing one, without rate limits. `webhook_url` is
    /// replaced; `api_key` defaults to the first configured key for a new bridge and is kept
    /// for an existing one.
    pub fn add_bridge(&self, customer_ref: &str, webhook_url: Option<&str>, api_key: Option<&str>) -> Bridge {
        self.lock().upsert_bridge(customer_ref, webhook_url.map(str::to_owned), api_key.map(str::to_owned), None)
    }

    /// Change a bridge's session status (`"connected"`, `"disconnected"`, …); unknown refs are
    /// ignored.
    pub fn set_bridge_status(&self, customer_ref: &str, status: &str) {
        self.lock().set_status(customer_ref, status);
    }

    /// All bridges, ordered by id.
    pub fn bridges(&self) -> Vec<Bridge> {
        self.lock().list_all()
    }

    /// Sends recorded on `bridge` (a `customer_ref`), oldest first.
    pub fn sends_for(&self, bridge: &str) -> Vec<RecordedSend> {
        self.lock().sends_for(bridge)
    }

    /// Every recorded send, oldest first.
    pub fn all_sends(&self) -> Vec<RecordedSend> {
        self.lock().sends.clone()
    }

    /// Forget every recorded send.
    pub fn clear_sends(&self) {
        self.lock().sends.clear();
    }

    /// Proxy calls made with a valid key on a bridge owned by another key (answered 403).
    pub fn rejected_attempts(&self) -> Vec<RejectedAttempt> {
        self.lock().rejected.clone()
    }

    /// Set (or with `None` clear) the fault applied to every bridge's sends and status calls.
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.lock().fault = fault.filter(|f| f.remaining != Some(0));
    }

    /// Set (or clear) a fault for one bridge only; it takes precedence over the global fault.
    pub fn set_bridge_fault(&self, bridge: &str, fault: Option<Fault>) {
        let mut state = self.lock();
        match fault.filter(|f| f.remaining != Some(0)) {
            Some(fault) => state.bridge_faults.insert(bridge.to_owned(), fault),
            None => state.bridge_faults.remove(bridge),
        };
    }

    /// Proxy calls that arrived per window since start (rate-limited ones included), the last
    /// entry being the current window.
    pub fn proxy_calls_per_window(&self) -> Vec<u32> {
        self.lock().limiter.proxy_calls_per_window(tokio::time::Instant::now())
    }

    /// Authenticated `send/text` calls naming `bridge`, whatever their outcome (faulted,
    /// rate-limited and successful alike).
    pub fn attempts_for(&self, bridge: &str) -> u64 {
        self.lock().attempts.get(bridge).copied().unwrap_or(0)
    }

    /// Counters for benchmarks and assertions.
    pub fn stats(&self) -> SimStats {
        let state = self.lock();
        SimStats {
            proxy_calls_per_window: state.limiter.proxy_calls_per_window(tokio::time::Instant::now()),
            rejected_429: state.rejected_429,
            faulted: state.faulted,
            sends: state.sends.len(),
            rejected_attempts: state.rejected.len(),
            window_secs: state.config.window.as_secs_f64(),
            max_sends_in_flight: state.max_sends_in_flight,
        }
    }

    /// The `/api/*` calls answered so far (at most the last [`API_CALL_LOG_CAPACITY`]), in the
    /// order they were answered; refused and failed ones included.
    pub fn api_calls(&self) -> Vec<ApiCall> {
        self.lock().calls.calls()
    }

    /// Forget the logged `/api/*` calls (rate-limit windows and counters are unaffected).
    pub fn clear_api_calls(&self) {
        self.lock().calls.clear();
    }

    /// The most `/api/*` calls, over all keys and addresses, that arrived within any `span` of
    /// the logged history (a sliding window, like the limiter's under [`WindowKind::Sliding`]): a
    /// client that keeps to 120 per minute per key in fixed windows can still show 240 here.
    pub fn max_calls_in_any(&self, span: Duration) -> usize {
        self.lock().calls.max_in_any(span)
    }

    /// Requests the rate limiter answered 429 (per-key buckets and the per-IP floor); injected
    /// 429 faults are not counted. Not bounded by the call log.
    pub fn rate_limited_answers(&self) -> u64 {
        self.lock().rejected_429
    }

    /// Most send requests on `bridge` in flight at once.
    pub fn max_sends_in_flight_for(&self, bridge: &str) -> usize {
        self.lock().max_bridge_sends_in_flight.get(bridge).copied().unwrap_or(0)
    }

    /// Wait until `bridge` has at least `n` recorded sends or `timeout` passes; returns the
    /// bridge's sends either way.
    pub async fn wait_for_sends(&self, bridge: &str, n: usize, timeout: Duration) -> Vec<RecordedSend> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before checking, so a send recorded in between still wakes us.
            let notified = self.shared.sends_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let sends = self.sends_for(bridge);
            if sends.len() >= n {
                return sends;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.sends_for(bridge);
            }
        }
    }
}

/// A random 32-bit value from std's per-process hash keys; enough to tell simulators apart.
pub(crate) fn random_u32() -> u32 {
    (random_u64() >> 16) as u32
}

/// A random 64-bit value without pulling in a RNG crate.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.finish()
}

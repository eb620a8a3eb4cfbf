//! The HTTP load generator: a fixed number of HTTP/1.1 keep-alive connections (hyper, no pool,
//! no retries), driven either closed-loop (each connection sends its next request as soon as the
//! previous one is answered: saturation) or open-loop (requests are due at fixed times whatever
//! the answers do; latency is measured from the due time, so queueing in front of a busy
//! connection counts and coordinated omission does not hide it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::Mutex;

use crate::stats::Latencies;

/// Builds the body of request `seq` for tenant index `tenant`.
pub type BodyFn = Arc<dyn Fn(u64, usize) -> Bytes + Send + Sync>;

/// Bound of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Where requests go: one path per tenant on one server.
#[derive(Clone)]
pub struct Target {
    /// Server address.
    pub addr: SocketAddr,
    /// Request path per tenant index.
    pub paths: Arc<Vec<String>>,
    /// Request bodies.
    pub body: BodyFn,
}

struct Conn {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Self {
        Self { addr, sender: None }
    }

    /// POSTs and returns the status, or 0 for a transport error (the connection is then
    /// re-established by the next request).
    async fn post(&mut self, path: &str, body: Bytes) -> u16 {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.try_post(path, body)).await {
            Ok(Ok(status)) => status,
            _ => {
                self.sender = None;
                0
            }
        }
    }

    async fn try_post(&mut self, path: &str, body: Bytes) -> anyhow::Result<u16> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.try_connect().await?;
        }
        let sender = self.sender.as_mut().context("no connection")?;
        sender.ready().await?;
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, "127.0.0.1")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok(status)
    }
}

/// What a closed-loop run measured.
#[derive(Debug, Default)]
pub struct ClosedResult {
    /// 200 answers completed inside the measured window.
    pub ok: u64,
    /// 200 answers over the whole run, warm-up included (for CPU per request).
    pub all_ok: u64,
    /// Other answers (status → count; 0 = transport error) inside the window.
    pub errors: BTreeMap<u16, u64>,
    /// Length of the measured window, seconds.
    pub seconds: f64,
    /// Latency of the requests completed inside the window.
    pub latency: Latencies,
}

impl ClosedResult {
    /// 200s per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }

    /// Non-200 answers.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Every connection sends back to back for `warmup + duration`; completions inside the last
/// `duration` are counted.
pub async fn closed_loop(
    target: &Target,
    conns: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<ClosedResult> {
    let seq = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let measure_from = started + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let target = target.clone();
        let seq = seq.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(target.addr);
            let mut result = ClosedResult::default();
            let tenants = target.paths.len().max(1);
            while Instant::now() < end {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let tenant = (n % tenants as u64) as usize;
                let body = (target.body)(n, tenant);
                let path = target.paths.get(tenant).map(String::as_str).unwrap_or("/");
                let t0 = Instant::now();
                let status = conn.post(path, body).await;
                let t1 = Instant::now();
                if status == 200 {
                    result.all_ok += 1;
                }
                if t1 < measure_from || t1 > end {
                    continue;
                }
                if status == 200 {
                    result.ok += 1;
                    result.latency.push_us(t1.duration_since(t0).as_micros() as u64);
                } else {
                    *result.errors.entry(status).or_default() += 1;
                    if status == 0 {
                        // A refused connection must not spin.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            result
        }));
    }
    let mut total = ClosedResult { seconds: duration.as_secs_f64(), ..ClosedResult::default() };
    let deadline = end + REQUEST_TIMEOUT + Duration::from_secs(5);
    for task in tasks {
        let Ok(joined) = tokio::time::timeout_at(deadline.into(), task).await else { continue };
        let part = joined?;
        total.ok += part.ok;
        total.all_ok += part.all_ok;
        for (k, v) in part.errors {
            *total.errors.entry(k).or_default() += v;
        }
        total.latency.extend(&part.latency);
    }
    Ok(total)
}

/// One request of an open-loop schedule.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    /// When it is due, from the start of the run.
    pub at: Duration,
    /// Tenant index.
    pub tenant: usize,
}

/// `rate` requests per second for `duration`, tenants in turn.
pub fn uniform(rate: f64, duration: Duration, tenants: usize) -> Vec<Arrival> {
    let count = (rate * duration.as_secs_f64()).floor() as u64;
    (0..count)
        .map(|i| Arrival { at: Duration::from_secs_f64(i as f64 / rate), tenant: (i % tenants.max(1) as u64) as usize })
        .collect()
}

/// Each tenant `k` at `rates[k]` per second for `duration`, phases spread so tenants do not
/// arrive in lockstep; sorted by due time.
pub fn per_tenant(rates: &[f64], duration: Duration) -> Vec<Arrival> {
    let mut all = Vec::new();
    let k = rates.len().max(1) as f64;
    for (tenant, &rate) in rates.iter().enumerate() {
        if rate <= 0.0 {
            continue;
        }
        let phase = (tenant as f64 / k) / rate;
        let mut i = 0u64;
        loop {
            let at = phase + i as f64 / rate;
            if at >= duration.as_secs_f64() {
                break;
            }
            all.push(Arrival { at: Duration::from_secs_f64(at), tenant });
            i += 1;
        }
    }
    all.sort_by_key(|a| a.at);
    all
}

/// One answered (or failed) open-loop request.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// Index in the schedule (also the `seq` given to the body builder).
    pub seq: u64,
    /// Tenant index.
    pub tenant: usize,
    /// HTTP status, 0 for a transport error, u16::MAX when never sent (drain deadline).
    pub status: u16,
    /// From the due time to the answer.
    pub latency_us: u64,
}

/// What an open-loop run measured.
#[derive(Debug)]
pub struct OpenResult {
    /// Wall-clock time of the schedule's origin (due wall time = origin + `at`).
    pub origin: SystemTime,
    /// Schedule of the run.
    pub arrivals: Vec<Arrival>,
    /// One outcome per request that was sent.
    pub outcomes: Vec<Outcome>,
    /// How late the dispatcher was at worst, ms (the load generator's own lag).
    pub max_dispatch_lag_ms: f64,
}

impl OpenResult {
    /// Latency of 200 answers (optionally of some tenants only).
    pub fn latency(&self, keep: impl Fn(usize) -> bool) -> Latencies {
        let mut l = Latencies::new();
        for o in self.outcomes.iter().filter(|o| o.status == 200 && keep(o.tenant)) {
            l.push_us(o.latency_us);
        }
        l
    }

    /// Answers other than 200 (including requests never sent).
    pub fn errors(&self) -> usize {
        self.outcomes.iter().filter(|o| o.status != 200).count()
            + self.arrivals.len().saturating_sub(self.outcomes.len())
    }

    /// Due wall time of request `seq`.
    pub fn due(&self, seq: u64) -> Option<SystemTime> {
        self.arrivals.get(seq as usize).map(|a| self.origin + a.at)
    }
}

struct Job {
    seq: u64,
    tenant: usize,
    due: Instant,
}

/// Sends `arrivals` at their due times over `conns` connections; waits at most `drain` after
/// the last one is due.
pub async fn open_loop(
    target: &Target,
    conns: usize,
    arrivals: Vec<Arrival>,
    drain: Duration,
) -> anyhow::Result<OpenResult> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::with_capacity(conns);
    for _ in 0..conns {
        let rx = rx.clone();
        let target = target.clone();
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::new(target.addr);
            // Opened before the clock starts, so the first requests do not pay the handshake.
            let _ = conn.try_connect().await;
            let mut out = Vec::new();
            loop {
                let job = { rx.lock().await.recv().await };
                let Some(job) = job else { break };
                let body = (target.body)(job.seq, job.tenant);
                let path = target.paths.get(job.tenant).map(String::as_str).unwrap_or("/");
                let status = conn.post(path, body).await;
                let latency_us = Instant::now().saturating_duration_since(job.due).as_micros() as u64;
                out.push(Outcome { seq: job.seq, tenant: job.tenant, status, latency_us });
            }
            out
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let origin_instant = Instant::now();
    let origin = SystemTime::now();
    let mut max_lag = Duration::ZERO;
    for (i, a) in arrivals.iter().enumerate() {
        let due = origin_instant + a.at;
        tokio::time::sleep_until(due.into()).await;
        max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
        if tx.send(Job { seq: i as u64, tenant: a.tenant, due }).is_err() {
            break;
        }
    }
    drop(tx);
    let deadline = Instant::now() + drain;
    let mut outcomes = Vec::with_capacity(arrivals.len());
    for w in workers {
        match tokio::time::timeout_at(deadline.into(), w).await {
            Ok(joined) => outcomes.extend(joined?),
            Err(_) => continue,
        }
    }
    outcomes.sort_by_key(|o| o.seq);
    Ok(OpenResult { origin, arrivals, outcomes, max_dispatch_lag_ms: max_lag.as_secs_f64() * 1000.0 })
}

impl Conn {
    async fn try_connect(&mut self) -> anyhow::Result<()> {
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        self.sender = Some(sender);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_have_the_asked_rate() {
        let u = uniform(100.0, Duration::from_secs(2), 3);
        assert_eq!(u.len(), 200);
        assert_eq!(u[4].tenant, 1);
        let p = per_tenant(&[10.0, 1.0], Duration::from_secs(10));
        assert_eq!(p.len(), 110);
        assert!(p.windows(2).all(|w| w[0].at <= w[1].at));
    }
}

//! Starting the real binaries against the bench environment, and the simulator's control API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};

use crate::env::{BenchEnv, API_KEY, SIGNING_KEY};
use crate::procs::{free_port, wait_http_ok, Proc};

/// Paths of the binaries and of the bench's scratch directory.
#[derive(Clone, Debug)]
pub struct Bins {
    /// `wafleet-ingest`.
    pub ingest: PathBuf,
    /// `wafleet-worker`.
    pub worker: PathBuf,
    /// `wafleet-sim`.
    pub sim: PathBuf,
    /// `wafleet-admin` (the admin API and the console).
    pub admin: PathBuf,
    /// Logs and spool directories.
    pub work_dir: PathBuf,
}

impl Bins {
    /// The binaries in `dir`; fails if one is missing.
    pub fn in_dir(dir: &Path, work_dir: PathBuf) -> anyhow::Result<Self> {
        let bins = Self {
            ingest: dir.join("wafleet-ingest"),
            worker: dir.join("wafleet-worker"),
            sim: dir.join("wafleet-sim"),
            admin: dir.join("wafleet-admin"),
            work_dir,
        };
        for b in [&bins.ingest, &bins.worker, &bins.sim, &bins.admin] {
            if !b.is_file() {
                bail!("{} is missing: build the binaries with the bench's profile (or drop --no-build)", b.display());
            }
        }
        Ok(bins)
    }

    fn logs(&self) -> PathBuf {
        self.work_dir.join("logs")
    }
}

fn kv(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

/// A running simulator.
pub struct Sim {
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    http: reqwest::Client,
}

/// One recorded send, as the simulator lists it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Send {
    /// Bridge key.
    pub bridge: String,
    /// The API key that made the call (the account it was sent for).
    pub api_key: String,
    /// Text.
    pub body: String,
    /// When it was recorded.
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Printed under every section whose simulator runs with `--unlimited`: its figures come from
/// traffic the real API would refuse, and a reader comparing them with production must know.
pub const UNLIMITED_NOTE: &str = "simulator limits lifted (--unlimited): this scenario sends more than the documented \
     120/key and 300/IP per minute";

impl Sim {
    /// Starts `wafleet-sim` with `args` (e.g. `--unlimited`).
    pub async fn start(bins: &Bins, args: &[&str], env: &[(String, String)]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut all_args = vec!["--addr".to_owned(), format!("127.0.0.1:{port}")];
        all_args.extend(args.iter().map(|s| (*s).to_owned()));
        let mut all_env = vec![kv("WA_API_KEY", API_KEY), kv("RUST_LOG", "warn")];
        all_env.extend_from_slice(env);
        let mut proc = Proc::spawn(&bins.sim, "sim", &all_args, &all_env, &bins.logs())?;
        let base = format!("http://127.0.0.1:{port}");
        wait_http_ok(&mut proc, &format!("{base}/_sim/stats"), Duration::from_secs(20)).await?;
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build()?;
        Ok(Self { proc, base, http })
    }

    /// Sends recorded so far.
    pub async fn send_count(&self) -> anyhow::Result<u64> {
        let stats: serde_json::Value = self.http.get(format!("{}/_sim/stats", self.base)).send().await?.json().await?;
        stats["sends"].as_u64().context("sim stats without sends")
    }

    /// The `_sim/stats` document.
    pub async fn stats(&self) -> anyhow::Result<serde_json::Value> {
        Ok(self.http.get(format!("{}/_sim/stats", self.base)).send().await?.json().await?)
    }

    /// Most proxy calls that arrived in one of the simulator's own windows (refused ones
    /// included), and the requests its limiter answered 429.
    pub async fn limit_counts(&self) -> anyhow::Result<(u64, u64)> {
        let stats = self.stats().await?;
        let busiest = stats["proxy_calls_per_window"]
            .as_array()
            .and_then(|windows| windows.iter().filter_map(serde_json::Value::as_u64).max())
            .unwrap_or(0);
        Ok((busiest, stats["rejected_429"].as_u64().unwrap_or(0)))
    }

    /// Every recorded send.
    pub async fn sends(&self) -> anyhow::Result<Vec<Send>> {
        Ok(self.http.get(format!("{}/_sim/sends", self.base)).send().await?.json().await?)
    }

    /// Sends recorded in `[from, to)` (epoch seconds).
    pub async fn sends_between(&self, from: f64, to: f64) -> anyhow::Result<usize> {
        Ok(self.sends().await?.iter().map(epoch_secs_of).filter(|t| *t >= from && *t < to).count())
    }

    /// Forgets the recorded sends.
    pub async fn clear(&self) -> anyhow::Result<()> {
        let r = self.http.delete(format!("{}/_sim/sends", self.base)).send().await?;
        if !r.status().is_success() {
            bail!("clearing sim sends -> {}", r.status());
        }
        Ok(())
    }

    /// Answers every proxy call (sends and status) `delay_ms` late, until changed; `None` clears
    /// it. A delay-only fault of the simulator: the send is recorded after the delay.
    pub async fn set_delay(&self, delay_ms: Option<u64>) -> anyhow::Result<()> {
        let url = format!("{}/_sim/fault", self.base);
        let r = match delay_ms {
            Some(ms) => self.http.post(url).json(&serde_json::json!({"status": 0, "delay_ms": ms})).send().await?,
            None => self.http.delete(url).send().await?,
        };
        if !r.status().is_success() {
            bail!("setting the simulator's delay -> {}", r.status());
        }
        Ok(())
    }

    /// Waits until at least `n` sends are recorded; returns the count reached (maybe short
    /// after `timeout`, or when no progress was seen for `stall`).
    pub async fn wait_sends(&self, n: u64, timeout: Duration, stall: Duration) -> anyhow::Result<u64> {
        let started = Instant::now();
        let mut last = (0u64, Instant::now());
        loop {
            let c = self.send_count().await?;
            if c >= n || started.elapsed() > timeout {
                return Ok(c);
            }
            if c != last.0 {
                last = (c, Instant::now());
            } else if last.1.elapsed() > stall {
                return Ok(c);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Reply times at the simulator (seconds since the epoch) keyed by `(tag, seq)` of the marker.
pub fn replies_by_marker(sends: &[Send]) -> HashMap<(String, u64), f64> {
    sends
        .iter()
        .filter_map(|s| {
            let (tag, seq) = crate::payload::parse_marker(&s.body)?;
            Some(((tag.to_owned(), seq), epoch_secs_of(s)))
        })
        .collect()
}

/// Seconds since the epoch.
pub fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Options of an ingest process.
#[derive(Clone, Debug, Default)]
pub struct IngestOptions {
    /// Replaces `AMQP_URL` (the spool scenario points it at a closed port).
    pub amqp_url: Option<String>,
    /// Spool directory (the spool stays on, as in production, unless `no_spool`).
    pub spool_dir: Option<PathBuf>,
    /// `WAFLEET_SPOOL_ENABLED=false`.
    pub no_spool: bool,
    /// Wait for `/healthz` instead of `/readyz` (broker unreachable on purpose).
    pub health_only: bool,
    /// Keep what the spool directory holds (a restart that replays it) instead of emptying it.
    pub keep_spool: bool,
}

/// Starts `wafleet-ingest`; returns the process and its webhook address.
pub async fn start_ingest(bins: &Bins, env: &BenchEnv, options: &IngestOptions) -> anyhow::Result<(Proc, SocketAddr)> {
    let (proc, addr, _, _) = start_ingest_with_ops(bins, env, options).await?;
    Ok((proc, addr))
}

/// Starts `wafleet-ingest`; returns the process, its webhook and ops addresses, and the time
/// from spawn until its probe answered (with a kept spool: the replay of that spool).
pub async fn start_ingest_with_ops(
    bins: &Bins,
    env: &BenchEnv,
    options: &IngestOptions,
) -> anyhow::Result<(Proc, SocketAddr, SocketAddr, Duration)> {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let ops: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let spool_dir = options.spool_dir.clone().unwrap_or_else(|| bins.work_dir.join("spool-ingest"));
    if !options.keep_spool {
        let _ = std::fs::remove_dir_all(&spool_dir);
    }
    let vars = vec![
        kv("AMQP_URL", options.amqp_url.clone().unwrap_or_else(|| env.amqp_url.clone())),
        kv("WAFLEET_SIGNING_KEY", SIGNING_KEY),
        kv("WAFLEET_INGEST_ADDR", addr.to_string()),
        kv("WAFLEET_INGEST_OPS_ADDR", ops.to_string()),
        kv("WAFLEET_READY_RECHECK_MS", "1000"),
        kv("WAFLEET_SPOOL_ENABLED", if options.no_spool { "false" } else { "true" }),
        kv("WAFLEET_SPOOL_DIR", spool_dir.to_string_lossy().into_owned()),
        kv("RUST_LOG", "warn"),
    ];
    let mut proc = Proc::spawn(&bins.ingest, "ingest", &[], &vars, &bins.logs())?;
    let probe = if options.health_only { "healthz" } else { "readyz" };
    // Generous: a kept spool is read back in full before the ops port answers.
    let up = wait_http_ok(&mut proc, &format!("http://{ops}/{probe}"), Duration::from_secs(300)).await?;
    Ok((proc, addr, ops, up))
}

/// The worker's budget settings and their documented defaults (docs/configuration.md).
const BUDGET_SETTINGS: [(&str, &str); 5] = [
    ("WAFLEET_SEND_RATE_PER_MIN", "110"),
    ("WAFLEET_SEND_BURST", "5"),
    ("WAFLEET_EGRESS_RATE_PER_MIN", "290"),
    ("WAFLEET_EGRESS_BURST", "5"),
    ("WAFLEET_BUDGET_WINDOW_SECS", "60"),
];

/// The distinct send and egress budgets of the workers started since the last
/// [`take_worker_budgets`], so every section can say what its workers ran with.
static WORKER_BUDGETS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Records the budget a worker started with `vars` runs with: each setting as the child gets it
/// (`--child-env` after the worker's own, the last one winning), else its default.
fn note_worker_budget(vars: &[(String, String)]) {
    let given = vars.iter().chain(crate::procs::extra_child_env());
    let budget: Vec<String> = BUDGET_SETTINGS
        .iter()
        .map(|(name, default)| match given.clone().rfind(|(k, _)| k == name) {
            Some((_, value)) => format!("{name}={value}"),
            None => format!("{name}={default} (default)"),
        })
        .collect();
    let budget = budget.join(", ");
    let mut seen = WORKER_BUDGETS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !seen.contains(&budget) {
        seen.push(budget);
    }
}

/// The budgets recorded since the last call (see [`note_worker_budget`]), forgetting them.
pub fn take_worker_budgets() -> Vec<String> {
    std::mem::take(&mut *WORKER_BUDGETS.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// Starts `wafleet-worker` with its production defaults (only the endpoints set, plus `extra`);
/// returns the process, its health base URL and the time until `/readyz` answered 200 (which
/// happens once the first consumer refresh has started a consumer for every tenant).
pub async fn start_worker(
    bins: &Bins,
    env: &BenchEnv,
    sim_base: &str,
    extra: &[(String, String)],
    ready_timeout: Duration,
) -> anyhow::Result<(Proc, String, Duration)> {
    let port = free_port()?;
    let mut vars = vec![
        kv("DATABASE_URL", env.worker_url.clone()),
        kv("AMQP_URL", env.amqp_url.clone()),
        kv("RABBITMQ_API_URL", env.services.rabbit_api.clone()),
        kv("WA_API_KEY", API_KEY),
        kv("WA_API_BASE_URL", sim_base),
        kv("WAFLEET_WORKER_ADDR", format!("127.0.0.1:{port}")),
        kv("RUST_LOG", "warn"),
    ];
    vars.extend_from_slice(extra);
    note_worker_budget(&vars);
    let started = Instant::now();
    let mut proc = Proc::spawn(&bins.worker, "worker", &[], &vars, &bins.logs())?;
    let base = format!("http://127.0.0.1:{port}");
    wait_http_ok(&mut proc, &format!("{base}/readyz"), ready_timeout).await?;
    Ok((proc, base, started.elapsed()))
}

/// Starts `wafleet-admin` with its production defaults (the endpoints, the signing key and rate
/// limits high enough that the bench measures the pages, not the limiter); returns the process and
/// its API base URL once its ops port answers.
pub async fn start_admin(bins: &Bins, env: &BenchEnv) -> anyhow::Result<(Proc, String)> {
    let (port, ops) = (free_port()?, free_port()?);
    let vars = vec![
        kv("ADMIN_DATABASE_URL", env.admin_url.clone()),
        kv("AMQP_URL", env.amqp_url.clone()),
        kv("RABBITMQ_API_URL", env.services.rabbit_api.clone()),
        kv("WAFLEET_SIGNING_KEY", SIGNING_KEY),
        kv("WAFLEET_ADMIN_ADDR", format!("127.0.0.1:{port}")),
        kv("WAFLEET_ADMIN_OPS_ADDR", format!("127.0.0.1:{ops}")),
        kv("WAFLEET_ADMIN_RATE_PER_SEC", "100000"),
        kv("WAFLEET_ADMIN_RATE_BURST", "100000"),
        kv("WAFLEET_ADMIN_ADDR_RATE_PER_SEC", "100000"),
        kv("WAFLEET_ADMIN_ADDR_RATE_BURST", "100000"),
        kv("RUST_LOG", "warn"),
    ];
    let mut proc = Proc::spawn(&bins.admin, "admin", &[], &vars, &bins.logs())?;
    wait_http_ok(&mut proc, &format!("http://127.0.0.1:{ops}/healthz"), Duration::from_secs(60)).await?;
    Ok((proc, format!("http://127.0.0.1:{port}")))
}

/// When the simulator recorded `send`, in epoch seconds.
pub fn epoch_secs_of(send: &Send) -> f64 {
    send.at.timestamp_micros() as f64 / 1e6
}

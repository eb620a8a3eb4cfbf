//! The real binaries (`target/release/wafleet-{ingest,worker,sim}`) as child processes:
//! started with a clean environment, stopped with SIGTERM (SIGKILL on drop), and measured
//! through `/proc/<pid>` (VmRSS, VmHWM, CPU ticks).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// A running child process.
pub struct Proc {
    name: String,
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
}

/// Memory of a process, KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mem {
    /// Resident set size now.
    pub rss_kib: u64,
    /// Peak resident set size since start.
    pub hwm_kib: u64,
}

impl Proc {
    /// Starts `bin` with exactly `env` (plus PATH and HOME), logging to `log_dir/<name>.log`.
    pub fn spawn(
        bin: &Path,
        name: &str,
        args: &[String],
        env: &[(String, String)],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(args).env_clear().stdin(Stdio::null()).stdout(Stdio::from(out)).stderr(Stdio::from(err));
        for key in ["PATH", "HOME"] {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        for (k, v) in extra_child_env() {
            cmd.env(k, v);
        }
        cmd.kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("child has no pid")?;
        Ok(Self { name: name.to_owned(), child, pid, log })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// VmRSS and VmHWM.
    pub fn mem(&self) -> anyhow::Result<Mem> {
        mem_of(self.pid)
    }

    /// User plus system CPU time so far, seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds_of(self.pid)
    }

    /// Fails with the tail of the log if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}); log tail:\n{}", self.name, self.log_tail());
        }
        Ok(())
    }

    /// The last lines of the process log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(result) => {
                result?;
            }
            Err(_) => {
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

static EXTRA_CHILD_ENV: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

/// Adds `KEY=VALUE` settings to every child process (experiments: `MALLOC_ARENA_MAX=2`,
/// `RUST_LOG=debug`); set once at start.
pub fn set_extra_child_env(vars: Vec<(String, String)>) {
    let _ = EXTRA_CHILD_ENV.set(vars);
}

/// The `--child-env` settings every child gets (after its own, so they win).
pub fn extra_child_env() -> &'static [(String, String)] {
    EXTRA_CHILD_ENV.get().map(Vec::as_slice).unwrap_or(&[])
}

/// Reads VmRSS and VmHWM of `pid`.
pub fn mem_of(pid: u32) -> anyhow::Result<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Mem { rss_kib: field("VmRSS:"), hwm_kib: field("VmHWM:") })
}

/// utime + stime of `pid` in seconds (assuming the usual 100 ticks per second).
pub fn cpu_seconds_of(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).context("utime")?;
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).context("stime")?;
    Ok((utime + stime) as f64 / 100.0)
}

/// Samples the RSS of a process every 100 ms and keeps the maximum.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    max_kib: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling `pid`. Bounded: sampling ends on [`RssSampler::finish`] or after an hour.
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let max_kib = Arc::new(AtomicU64::new(0));
        let (s, m) = (stop.clone(), max_kib.clone());
        let task = tokio::spawn(async move {
            let started = Instant::now();
            while !s.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(3600) {
                if let Ok(mem) = mem_of(pid) {
                    m.fetch_max(mem.rss_kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { stop, max_kib, task }
    }

    /// Stops sampling and returns the largest RSS seen, KiB.
    pub async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.max_kib.load(Ordering::Relaxed)
    }
}

/// A free loopback port (bound, read, released; a small race is accepted).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Polls `url` until it answers 200, the process dies, or `timeout` passes.
pub async fn wait_http_ok(proc: &mut Proc, url: &str, timeout: Duration) -> anyhow::Result<Duration> {
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build()?;
    let started = Instant::now();
    loop {
        proc.check_alive()?;
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return Ok(started.elapsed());
            }
        }
        if started.elapsed() > timeout {
            bail!("{url} not ready within {timeout:?}; log tail:\n{}", proc.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CPU seconds used so far by the broker, Postgres, the bench itself and some child
/// processes, plus the whole machine's busy and total time (from /proc/stat).
#[derive(Clone, Debug, Default)]
pub struct CpuSnapshot {
    /// `beam.smp` (RabbitMQ).
    pub broker: f64,
    /// Every `postgres` process alive at the snapshot (connections come and go: approximate).
    pub postgres: f64,
    /// This process (load generator, ceilings).
    pub bench: f64,
    /// The given children, in order.
    pub children: Vec<f64>,
    /// Busy jiffies of the machine, seconds.
    pub busy: f64,
    /// All jiffies of the machine, seconds.
    pub total: f64,
    /// Database transactions in the interval (filled in by callers that count them).
    pub transactions: f64,
}

fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name))
        .collect()
}

impl CpuSnapshot {
    /// Takes a snapshot including `children`.
    pub fn take(children: &[u32]) -> Self {
        let sum = |name: &str| pids_named(name).into_iter().filter_map(|p| cpu_seconds_of(p).ok()).sum::<f64>();
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<f64> = stat
            .lines()
            .next()
            .map(|l| l.split_whitespace().skip(1).filter_map(|v| v.parse::<f64>().ok()).collect())
            .unwrap_or_default();
        // user nice system idle iowait irq softirq steal ...
        let total: f64 = cpu.iter().take(8).sum::<f64>() / 100.0;
        let idle = (cpu.get(3).copied().unwrap_or(0.0) + cpu.get(4).copied().unwrap_or(0.0)) / 100.0;
        Self {
            broker: sum("beam.smp"),
            postgres: sum("postgres"),
            bench: cpu_seconds_of(std::process::id()).unwrap_or(0.0),
            children: children.iter().map(|p| cpu_seconds_of(*p).unwrap_or(0.0)).collect(),
            busy: total - idle,
            total,
            transactions: 0.0,
        }
    }

    /// What was used between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuSnapshot) -> CpuSnapshot {
        CpuSnapshot {
            broker: self.broker - earlier.broker,
            postgres: self.postgres - earlier.postgres,
            bench: self.bench - earlier.bench,
            children: self.children.iter().zip(earlier.children.iter()).map(|(a, b)| a - b).collect(),
            busy: self.busy - earlier.busy,
            total: self.total - earlier.total,
            transactions: self.transactions - earlier.transactions,
        }
    }

    /// Machine utilisation over a delta, 0..=1 (of all CPUs).
    pub fn utilisation(&self) -> f64 {
        if self.total > 0.0 {
            self.busy / self.total
        } else {
            0.0
        }
    }
}

/// Waits (at most `max_wait`) until the machine is mostly idle over a 1 s sample — other
/// builds or test suites on a shared box distort every figure — and returns the last
/// utilisation seen (0..=1).
pub async fn wait_quiet(max_wait: Duration) -> f64 {
    let started = Instant::now();
    loop {
        let before = CpuSnapshot::take(&[]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let busy = CpuSnapshot::take(&[]).since(&before).utilisation();
        if busy < 0.25 || started.elapsed() >= max_wait {
            return busy;
        }
    }
}

//! Scenario 6: Spool: the accept rate with the broker cut (ingest's `AMQP_URL` points at a closed port,
//! so every publish fails at once and the event goes to the disk spool with group commit),
//! beside the disk's own append+fdatasync rate in the same directory; then the drain rate once
//! the broker "returns" (a forwarder starts listening on that port).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wafleet_shared::topology::QueueType;

use super::{med, ratio, show, Ctx};
use crate::env::BenchEnv;
use crate::load::{closed_loop, BodyFn, Target};
use crate::payload::{envelope, webhook_body};
use crate::procs::free_port;
use crate::proxy::Forwarder;
use crate::raw::raw_publish;
use crate::report::{Row, Section, Verdict};
use crate::stack::{start_ingest_with_ops, IngestOptions};
use crate::stats::Summary;

const TITLE: &str = "6. Spool: accepts with the broker cut, and drain";

/// Whether the spool has landed (the module and its directory setting).
pub fn present(repo: &Path) -> bool {
    let config = std::fs::read_to_string(repo.join("ingest/src/config.rs")).unwrap_or_default();
    repo.join("ingest/src/spool").is_dir() && config.contains("WAFLEET_SPOOL_DIR")
}

/// Appends `record_bytes` and fdatasyncs in a scratch file of `dir` for `duration`; rounds/s.
fn fsync_rate(dir: &Path, record_bytes: usize, duration: Duration) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("bench-fsync-{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let record = vec![b'x'; record_bytes];
    let started = Instant::now();
    let mut rounds = 0u64;
    while started.elapsed() < duration && rounds < 10_000_000 {
        file.write_all(&record)?;
        file.sync_data()?;
        rounds += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(rounds as f64 / elapsed)
}

async fn spoolz(http: &reqwest::Client, ops: std::net::SocketAddr) -> anyhow::Result<u64> {
    Ok(spool_status(http, ops).await?.0)
}

/// Records and bytes the spool holds, from `/spoolz` on the ops port.
async fn spool_status(http: &reqwest::Client, ops: std::net::SocketAddr) -> anyhow::Result<(u64, u64)> {
    let v: serde_json::Value = http.get(format!("http://{ops}/spoolz")).send().await?.json().await?;
    Ok((v["records"].as_u64().context("spoolz without records")?, v["bytes"].as_u64().context("spoolz without bytes")?))
}

/// Sum of the samples of a Prometheus counter (0 when absent).
async fn counter(http: &reqwest::Client, addr: std::net::SocketAddr, name: &str) -> f64 {
    let text = match http.get(format!("http://{addr}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Mean of a Prometheus histogram (`_sum / _count`) in a metrics text.
fn histogram_mean(text: &str, name: &str) -> Option<f64> {
    let value = |suffix: &str| -> Option<f64> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{suffix}")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .reduce(|a, b| a + b)
    };
    let (sum, count) = (value("_sum")?, value("_count")?);
    (count > 0.0).then(|| sum / count)
}

/// Runs the scenario.
// layout: a benchmark scenario reads as one script (set up, drive, measure, report) whose steps
// share the measured locals and timings; splitting it would pass them all around.
pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Section> {
    if !present(&ctx.repo) {
        return Ok(Section::not_run("spool", TITLE, "not run: spool not present"));
    }
    let started = Instant::now();
    let mut section = Section::new("spool", TITLE);
    let env = BenchEnv::recreate(&ctx.services).await?;
    let tenants = env.add_tenants(16, QueueType::Quorum).await?;
    let spool_dir: PathBuf = ctx.bins.work_dir.join("spool");
    let _ = std::fs::remove_dir_all(&spool_dir);
    std::fs::create_dir_all(&spool_dir)?;
    let port = free_port()?;
    let cut_url = format!("amqp://guest:guest@127.0.0.1:{port}/{}", crate::env::BENCH_NAME);
    let options = IngestOptions {
        amqp_url: Some(cut_url),
        spool_dir: Some(spool_dir.clone()),
        health_only: true,
        ..Default::default()
    };
    let (ingest, addr, ops, fresh_start) = start_ingest_with_ops(&ctx.bins, &env, &options).await?;
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build()?;
    let body: BodyFn = Arc::new(|seq, _| webhook_body("s", seq, 600));
    let record_bytes =
        envelope(&tenants[0].customer_ref, tenants[0].generation, &webhook_body("s", 0, 600), chrono::Utc::now()).len();
    let target = Target { addr, paths: Arc::new(tenants.iter().map(|t| t.path.clone()).collect()), body };
    let (warmup, dur) = (ctx.secs(1.0, 0.3), ctx.secs(10.0, 1.5));
    closed_loop(&target, 64, Duration::ZERO, ctx.secs(1.0, 0.3)).await?;

    let fsyncs_before = counter(&http, ops, "wafleet_ingest_spool_fsyncs_total").await;
    let mut accepts = Vec::new();
    let mut disk = Vec::new();
    let mut accept_secs = 0.0;
    let mut errors = 0u64;
    let mut accepted = 0u64;
    for _ in 0..ctx.reps() {
        let dir = spool_dir.clone();
        let d = dur;
        disk.push(tokio::task::spawn_blocking(move || fsync_rate(&dir, record_bytes, d)).await??);
        let t = Instant::now();
        let r = closed_loop(&target, 64, warmup, dur).await?;
        accept_secs += t.elapsed().as_secs_f64();
        accepts.push(r.rate());
        errors += r.error_count();
        accepted += r.ok;
    }
    let metrics = http.get(format!("http://{ops}/metrics")).send().await?.text().await?;
    let batch = histogram_mean(&metrics, "wafleet_ingest_spool_batch_records");
    let (a, f) = (Summary::of(&accepts), Summary::of(&disk));
    section.rows.push(Row {
        metric: "accepts/s with the broker cut (64 conns, 600 B → spool)".into(),
        value: show(&a, 0, "/s"),
        ceiling: format!("disk append+fdatasync of {record_bytes} B, same dir: {}", show(&f, 0, "/s")),
        ratio: ratio(med(&a), med(&f)),
        target: "≥ 1.0×".into(),
        verdict: Verdict::from_bool(med(&a) >= med(&f) && errors == 0),
    });
    let fsyncs = counter(&http, ops, "wafleet_ingest_spool_fsyncs_total").await - fsyncs_before;
    section.rows.push(Row::info(
        "mean records per fsync (group commit) / spool fsyncs per second while accepting",
        format!("{} / {:.0}/s", batch.map_or("n/a".into(), |b| format!("{b:.1}")), fsyncs / accept_secs.max(1e-9)),
    ));

    // A restart reads the whole spool back before its ports answer: time that replay, which is
    // what an ingest startupProbe must allow for (docs/deployment.md sizes it in s/GiB).
    let (_, spooled_bytes) = spool_status(&http, ops).await?;
    ingest.stop(Duration::from_secs(30)).await?;
    let kept = IngestOptions { keep_spool: true, ..options };
    let (ingest, _, ops, replay_start) = start_ingest_with_ops(&ctx.bins, &env, &kept).await?;
    let replay = replay_start.saturating_sub(fresh_start).as_secs_f64();
    let gib = spooled_bytes as f64 / (1u64 << 30) as f64;
    section.rows.push(Row::info(
        format!("spool replay at start ({:.0} MiB spooled; start with it − start with an empty spool)", gib * 1024.0),
        format!("{replay:.2} s = {:.0} s per GiB", replay / gib.max(1e-9)),
    ));

    // The broker returns: forward the cut port to RabbitMQ and time the drain.
    let records = spoolz(&http, ops).await?;
    let raw_ceiling = {
        let messages = Arc::new(
            tenants
                .iter()
                .map(|t| {
                    let e = envelope(&t.customer_ref, t.generation, &webhook_body("s", 0, 600), chrono::Utc::now());
                    (t.customer_ref.as_str().to_owned(), e)
                })
                .collect::<Vec<_>>(),
        );
        let (r, _) = raw_publish(&env.amqp_url, 64, Duration::from_millis(500), ctx.secs(3.0, 1.0), messages).await?;
        env.purge(&tenants).await?;
        r
    };
    let forwarder = Forwarder::start(port, "127.0.0.1:5672".parse()?).await?;
    let returned = Instant::now();
    let mut first_drained: Option<Instant> = None;
    let mut left = records;
    let limit = Duration::from_secs(300);
    while left > 0 && returned.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = spoolz(&http, ops).await.unwrap_or(left);
        if left < records && first_drained.is_none() {
            first_drained = Some(Instant::now());
        }
    }
    let emptied = Instant::now();
    let queued = env.ready_messages(&tenants).await?;
    drop(forwarder);
    match first_drained {
        Some(first) if left == 0 => {
            let secs = emptied.duration_since(first).as_secs_f64().max(0.05);
            let rate = records as f64 / secs;
            section.rows.push(Row {
                metric: format!("drain rate after the broker returns ({records} records)"),
                value: format!("{rate:.0}/s (n=1)"),
                ceiling: format!("raw lapin, 64 in flight: {raw_ceiling:.0}/s"),
                ratio: ratio(rate, raw_ceiling),
                target: "report".into(),
                verdict: Verdict::Info,
            });
            section.rows.push(Row::info(
                "broker back → first record drained (reconnect backoff)",
                format!("{:.1} s", first.duration_since(returned).as_secs_f64()),
            ));
        }
        _ => section.rows.push(Row {
            metric: format!("drain after the broker returns ({records} records)"),
            value: format!("{left} records still spooled after {limit:?}"),
            ceiling: String::new(),
            ratio: String::new(),
            target: "drains".into(),
            verdict: Verdict::Fail,
        }),
    }
    section.rows.push(Row {
        metric: "messages in the tenant queues after the drain / accepted".into(),
        value: format!("{queued} / {accepted} (+ warm-up accepts)"),
        ceiling: String::new(),
        ratio: String::new(),
        target: "none lost".into(),
        verdict: Verdict::from_bool(queued >= accepted),
    });
    section.notes.push(format!(
        "Ingest with `AMQP_URL` at a closed loopback port: every publish fails fast (not connected) and the event is \
         appended to the spool in {}, answered once fsynced. Disk rate: one writer appending {record_bytes} B \
         records with fdatasync, same directory, interleaved with the accept runs. {errors} non-200 answers. The \
         drain is timed from the first record leaving the spool to an empty spool (/spoolz polled every 50 ms).",
        spool_dir.display()
    ));
    ingest.stop(Duration::from_secs(20)).await?;
    env.teardown().await?;
    let _ = std::fs::remove_dir_all(&spool_dir);
    section.seconds = started.elapsed().as_secs_f64();
    Ok(section)
}

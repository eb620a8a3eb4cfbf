//! Scenario 2: End to end: webhook → ingest → queue → worker → outbox → sender → reply recorded at the
//! simulator (unlimited, budget lifted). Saturation is the reply rate while the worker drains a
//! preloaded backlog; the ceiling is a raw loop draining the same backlog. Latency is measured
//! open-loop through ingest at 50% and 80% of saturation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wafleet_shared::topology::QueueType;

use super::{load_backlog, med, ratio, show, Ctx};
use crate::charts::{self, LoadPoint};
use crate::env::{register_bridges, BenchEnv, BenchTenant, API_KEY};
use crate::load::{open_loop, uniform, Arrival, BodyFn, Target};
use crate::payload::webhook_body;
use crate::procs::CpuSnapshot;
use crate::raw::{prepare_raw_tables, raw_e2e, RawLoop};
use crate::report::{Row, Section, Verdict};
use crate::stack::{epoch_secs, replies_by_marker, start_ingest, start_worker, IngestOptions, Sim, UNLIMITED_NOTE};
use crate::stats::{middle_rate, Latencies, Summary};

/// Tenants the load is spread over: 16 × 4 in flight = the worker's 64.
pub const TENANTS: usize = 16;

/// Starts a worker, lets it drain a preloaded backlog of `count`, stops it; replies per second
/// at the simulator over the middle 80% of replies, the CPU used meanwhile (children: worker,
/// simulator), and the processing rate (events recorded per second, before the sender).
pub async fn worker_drain(
    ctx: &Ctx,
    env: &BenchEnv,
    sim: &Sim,
    tenants: &[BenchTenant],
    count: usize,
    tag: &str,
) -> anyhow::Result<(f64, CpuSnapshot, Option<f64>)> {
    load_backlog(env, tenants, count, tag).await?;
    sim.clear().await?;
    let tally = !ctx.quick && tag.ends_with('0');
    let xacts_before = transactions(env, tally).await?;
    let (worker, _, _) =
        start_worker(&ctx.bins, env, &sim.base, &ctx.budget_lifted(), Duration::from_secs(120)).await?;
    let pids = [worker.pid(), sim.proc.pid()];
    let before = CpuSnapshot::take(&pids);
    let since = chrono::Utc::now();
    let timeout = Duration::from_secs_f64((count as f64 / 20.0).max(60.0));
    let got = sim.wait_sends(count as u64, timeout, Duration::from_secs(20)).await?;
    let mut cpu = CpuSnapshot::take(&pids).since(&before);
    worker.stop(Duration::from_secs(15)).await?;
    cpu.transactions = transactions(env, tally).await? - xacts_before;
    if got < count as u64 {
        anyhow::bail!("the worker sent {got} of {count} replies within {timeout:?}");
    }
    let mut times: Vec<f64> = sim.sends().await?.iter().map(crate::stack::epoch_secs_of).collect();
    Ok((middle_rate(&mut times).context("too few replies to measure a rate")?, cpu, processing_rate(env, since).await?))
}

/// The transactions-per-event row: the change of `xact_commit + xact_rollback` of the bench
/// database over the worker's first drain (its start and stop included), per event.
fn xacts_row(worker: Option<f64>, raw: Option<f64>) -> Row {
    let show = |x: Option<f64>| x.map_or_else(|| "not counted (quick mode)".to_owned(), |x| format!("{x:.2}"));
    Row {
        metric: "Postgres transactions per event, worker drain (commits + rollbacks, autocommit statements, the \
                 worker's start and stop included)"
            .into(),
        value: show(worker),
        ceiling: format!("raw loop: {}", show(raw)),
        ratio: String::new(),
        target: "≤ 2.0".into(),
        verdict: worker.map_or(Verdict::Info, |x| Verdict::from_bool(x <= 2.0)),
    }
}

/// Committed plus rolled-back transactions of the bench database so far. Backends flush their
/// statistics at most once a second while busy and within 10 s once idle, so this waits 11 s
/// first; only the first repeat counts (`count` false skips both wait and query).
pub async fn transactions(env: &BenchEnv, count: bool) -> anyhow::Result<f64> {
    if !count {
        return Ok(0.0);
    }
    tokio::time::sleep(Duration::from_secs(11)).await;
    let pool = env.owner_pool(1).await?;
    let n: i64 = sqlx::query_scalar(
        "select (xact_commit + xact_rollback)::int8 from pg_stat_database where datname = current_database()",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    Ok(n as f64)
}

/// Events recorded per second (`processed_events.processed_at`, the recording transaction's
/// start) since `since`: the consume + process rate, before the sender.
async fn processing_rate(env: &BenchEnv, since: chrono::DateTime<chrono::Utc>) -> anyhow::Result<Option<f64>> {
    let pool = env.owner_pool(1).await?;
    let mut times: Vec<f64> = sqlx::query_scalar(
        "select extract(epoch from processed_at)::float8 from processed_events where processed_at >= $1",
    )
    .bind(since)
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    Ok(middle_rate(&mut times))
}

/// "worker 120 + broker 80 + ..." CPU µs per event.
fn cpu_line(cpu: &CpuSnapshot, events: usize, names: &[&str]) -> String {
    let per = |s: f64| s / events.max(1) as f64 * 1e6;
    let mut parts: Vec<String> =
        names.iter().zip(cpu.children.iter()).map(|(n, s)| format!("{n} {:.0}", per(*s))).collect();
    parts.push(format!("broker {:.0}", per(cpu.broker)));
    parts.push(format!("postgres {:.0}", per(cpu.postgres)));
    parts.push(format!("bench {:.0}", per(cpu.bench)));
    let xacts = if cpu.transactions > 0.0 {
        format!(", {:.1} Postgres transactions per event", cpu.transactions / events.max(1) as f64)
    } else {
        String::new()
    };
    format!("{} µs CPU per event{xacts}, machine {:.0}% busy", parts.join(" + "), cpu.utilisation() * 100.0)
}

/// One open-loop run through ingest, matched with the replies recorded at the simulator.
pub struct E2eRun {
    /// (tenant index, e2e latency µs) per reply found.
    pub latencies: Vec<(usize, u64)>,
    /// Accepted events without a reply by the end of the wait.
    pub missing: usize,
    /// Non-200 answers of ingest.
    pub errors: usize,
    /// Worst lag of the load generator's dispatcher, ms.
    pub lag_ms: f64,
}

impl E2eRun {
    /// Latencies of the tenants `keep` selects.
    pub fn latency(&self, keep: impl Fn(usize) -> bool) -> Latencies {
        let mut l = Latencies::new();
        for (t, us) in &self.latencies {
            if keep(*t) {
                l.push_us(*us);
            }
        }
        l
    }
}

/// Sends `arrivals` through ingest open-loop and measures due time → reply recorded.
pub async fn open_e2e(
    sim: &Sim,
    addr: SocketAddr,
    tenants: &[BenchTenant],
    arrivals: Vec<Arrival>,
    tag: &str,
) -> anyhow::Result<E2eRun> {
    sim.clear().await?;
    let owned_tag = tag.to_owned();
    let body: BodyFn = Arc::new(move |seq, _| webhook_body(&owned_tag, seq, 600));
    let target = Target { addr, paths: Arc::new(tenants.iter().map(|t| t.path.clone()).collect()), body };
    let r = open_loop(&target, 64, arrivals, Duration::from_secs(30)).await?;
    let accepted: Vec<_> = r.outcomes.iter().filter(|o| o.status == 200).collect();
    sim.wait_sends(accepted.len() as u64, Duration::from_secs(120), Duration::from_secs(20)).await?;
    let replies = replies_by_marker(&sim.sends().await?);
    let mut latencies = Vec::with_capacity(accepted.len());
    let mut missing = 0;
    for o in accepted {
        let due = r.due(o.seq).map(epoch_secs);
        match (due, replies.get(&(tag.to_owned(), o.seq))) {
            (Some(due), Some(at)) => latencies.push((o.tenant, ((at - due).max(0.0) * 1e6) as u64)),
            _ => missing += 1,
        }
    }
    Ok(E2eRun { latencies, missing, errors: r.errors(), lag_ms: r.max_dispatch_lag_ms })
}

/// Offers `rate` through ingest for `dur` and returns the reply rate at the simulator over the
/// last 70% of the offered period (steady state with ingest, processing and sending all busy),
/// then waits (bounded) for the backlog to drain.
async fn sustained_rate(
    sim: &Sim,
    addr: SocketAddr,
    tenants: &[BenchTenant],
    rate: f64,
    dur: Duration,
    tag: &str,
) -> anyhow::Result<Option<f64>> {
    sim.clear().await?;
    let owned_tag = tag.to_owned();
    let body: BodyFn = Arc::new(move |seq, _| webhook_body(&owned_tag, seq, 600));
    let target = Target { addr, paths: Arc::new(tenants.iter().map(|t| t.path.clone()).collect()), body };
    let r = open_loop(&target, 64, uniform(rate, dur, tenants.len()), Duration::from_secs(30)).await?;
    let accepted = r.outcomes.iter().filter(|o| o.status == 200).count() as u64;
    let from = epoch_secs(r.origin) + 0.3 * dur.as_secs_f64();
    let to = epoch_secs(r.origin) + dur.as_secs_f64();
    let in_window = sim.sends_between(from, to).await?;
    let timeout = Duration::from_secs_f64((accepted as f64 / 20.0).max(60.0));
    sim.wait_sends(accepted, timeout, Duration::from_secs(20)).await?;
    Ok((in_window > 0).then(|| in_window as f64 / (to - from)))
}

/// Runs the scenario.
// layout: a benchmark scenario reads as one script (set up, drive, measure, report) whose steps
// share the measured locals and timings; splitting it would pass them all around.
pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Section> {
    let started = Instant::now();
    let mut section = Section::new("e2e", "2. End to end: webhook → reply recorded at the simulator (unlimited)");
    let env = BenchEnv::recreate(&ctx.services).await?;
    let tenants = env.add_tenants(TENANTS, QueueType::Quorum).await?;
    let sim = Sim::start(&ctx.bins, &["--unlimited"], &[]).await?;
    section.notes.push(UNLIMITED_NOTE.to_owned());
    register_bridges(&sim.base, &tenants).await?;
    let owner = env.owner_pool(10).await?;
    prepare_raw_tables(&owner).await?;
    let backlog = if ctx.quick { 400 } else { 4000 };
    let queues: Vec<(String, Option<String>)> = tenants
        .iter()
        .map(|t| (wafleet_shared::topology::tenant_queue(&t.customer_ref), Some(t.customer_ref.as_str().to_owned())))
        .collect();
    let limits =
        RawLoop { sim_base: sim.base.clone(), api_key: API_KEY.into(), queues, prefetch: 8, per_queue: 4, total: 64 };

    let mut product = Vec::new();
    let mut processing = Vec::new();
    let mut ceiling = Vec::new();
    let mut cpu_notes = Vec::new();
    // Postgres transactions per event (first repeat of a full run): the worker's, the raw loop's.
    let (mut worker_xacts, mut raw_xacts) = (None, None);
    for rep in 0..ctx.reps() {
        let (rate, cpu, processed) = worker_drain(ctx, &env, &sim, &tenants, backlog, &format!("w{rep}")).await?;
        if cpu.transactions > 0.0 {
            worker_xacts = Some(cpu.transactions / backlog as f64);
        }
        product.push(rate);
        processing.extend(processed);
        cpu_notes.push(format!("worker drain {rep}: {}", cpu_line(&cpu, backlog, &["worker", "sim"])));
        load_backlog(&env, &tenants, backlog, &format!("r{rep}")).await?;
        sim.clear().await?;
        let timeout = Duration::from_secs_f64((backlog as f64 / 20.0).max(60.0));
        let xacts_before = transactions(&env, !ctx.quick && rep == 0).await?;
        let before = CpuSnapshot::take(&[sim.proc.pid()]);
        let mut times = raw_e2e(&env.amqp_url, &owner, &limits, backlog, timeout).await?;
        let mut cpu = CpuSnapshot::take(&[sim.proc.pid()]).since(&before);
        cpu.transactions = transactions(&env, !ctx.quick && rep == 0).await? - xacts_before;
        if cpu.transactions > 0.0 {
            raw_xacts = Some(cpu.transactions / backlog as f64);
        }
        cpu_notes.push(format!("raw loop {rep} (runs in the bench process): {}", cpu_line(&cpu, backlog, &["sim"])));
        ceiling.extend(middle_rate(&mut times));
    }
    let (p, c) = (Summary::of(&product), Summary::of(&ceiling));
    section.rows.push(Row {
        metric: format!("events/s end to end, draining a backlog of {backlog} over {TENANTS} tenants"),
        value: show(&p, 0, "/s"),
        ceiling: format!("raw loop (consume → 1 tx → HTTP send → ack): {}", show(&c, 0, "/s")),
        ratio: ratio(med(&p), med(&c)),
        target: "≥ 0.60×".into(),
        verdict: Verdict::from_bool(med(&p) >= 0.6 * med(&c)),
    });
    let processing = Summary::of(&processing);
    section.rows.push(Row {
        metric: "of which: worker consume + process rate (events recorded/s, before the sender)".into(),
        value: show(&processing, 0, "/s"),
        ceiling: format!("raw loop: {}", show(&c, 0, "/s")),
        ratio: ratio(med(&processing), med(&c)),
        target: "—".into(),
        verdict: Verdict::Info,
    });
    section.rows.push(xacts_row(worker_xacts, raw_xacts));
    section.notes.extend(cpu_notes);
    let drain_rate = med(&p);

    // Sustained saturation through the whole path: ingest, processing and sending at once (a
    // drain lets the sender run alone once processing is done, which flatters it).
    let (ingest, addr) = start_ingest(&ctx.bins, &env, &IngestOptions::default()).await?;
    let (worker, _, _) =
        start_worker(&ctx.bins, &env, &sim.base, &ctx.budget_lifted(), Duration::from_secs(120)).await?;
    let dur = ctx.secs(15.0, 4.0);
    let mut sustained = Vec::new();
    if drain_rate.is_finite() {
        for rep in 0..ctx.reps() {
            sustained.extend(sustained_rate(&sim, addr, &tenants, 1.2 * drain_rate, dur, &format!("s{rep}")).await?);
        }
    }
    let sustained = Summary::of(&sustained);
    section.rows.push(Row {
        metric: format!(
            "sustained e2e saturation through ingest (offered {:.0}/s for {:.0} s)",
            1.2 * drain_rate,
            dur.as_secs_f64()
        ),
        value: show(&sustained, 0, "/s"),
        ceiling: format!("raw loop: {}", show(&c, 0, "/s")),
        ratio: ratio(med(&sustained), med(&c)),
        target: "—".into(),
        verdict: Verdict::Info,
    });
    let saturation = if med(&sustained).is_finite() { med(&sustained) } else { drain_rate };
    if saturation.is_finite() {
        ctx.shared.e2e_saturation = Some(saturation);
    }
    let mut load_points = Vec::new();
    for fraction in [0.5, 0.8] {
        let rate = fraction * saturation;
        if !rate.is_finite() || rate <= 0.0 {
            continue;
        }
        let (mut p50, mut p95, mut p99, mut p999) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut missing, mut errors, mut lag) = (0, 0, 0.0f64);
        let mut all = Latencies::new();
        for rep in 0..ctx.reps() {
            let tag = format!("l{}r{rep}", (fraction * 100.0) as u32);
            let run = open_e2e(&sim, addr, &tenants, uniform(rate, dur, TENANTS), &tag).await?;
            let mut l = run.latency(|_| true);
            p50.extend(l.percentile_ms(50.0));
            p95.extend(l.percentile_ms(95.0));
            p99.extend(l.percentile_ms(99.0));
            p999.extend(l.percentile_ms(99.9));
            all.extend(&l);
            missing += run.missing;
            errors += run.errors;
            lag = lag.max(run.lag_ms);
        }
        let (p50, p95, p99, p999) = (Summary::of(&p50), Summary::of(&p95), Summary::of(&p99), Summary::of(&p999));
        section.rows.push(Row {
            metric: format!(
                "e2e latency p50 / p95 / p99 / p99.9 at {:.0}% of the sustained saturation ({rate:.0}/s)",
                fraction * 100.0
            ),
            value: format!("{:.1} / {:.1} / {:.1} / {:.1} ms", med(&p50), med(&p95), med(&p99), med(&p999)),
            ceiling: format!("p99 spread {}", show(&p99, 1, " ms")),
            ratio: String::new(),
            target: "report".into(),
            verdict: Verdict::Info,
        });
        section.notes.push(format!(
            "{:.0}% load: {errors} ingest errors, {missing} accepted events without a reply after the wait, \
             worst dispatcher lag {lag:.1} ms",
            fraction * 100.0
        ));
        load_points.push(LoadPoint { offered: rate, latencies: all });
    }
    let title = "End-to-end latency against offered load (webhook → reply at the simulator)";
    match charts::latency_vs_load(&ctx.charts_dir, "e2e-latency", title, &mut load_points) {
        Ok(files) => section.notes.push(format!("Chart and samples of the load points: {files}")),
        Err(e) => section.notes.push(format!("e2e latency chart not written: {e:#}")),
    }
    worker.stop(Duration::from_secs(15)).await?;
    ingest.stop(Duration::from_secs(15)).await?;
    sim.proc.stop(Duration::from_secs(5)).await?;
    owner.close().await;
    section.notes.push(format!(
        "Saturation: the backlog is loaded straight into the tenant queues (same envelopes ingest writes), then the \
         worker (production defaults: prefetch 8, 4 in flight per tenant, 64 per worker, pool 10) or the raw loop \
         (same limits, same pool size, same simulator) drains it; the rate counts replies between the 10th and 90th \
         percentile of reply times (the target's ratio). A drain lets the sender run alone once processing is done, \
         so the load points for latency use the sustained saturation instead: 1.2× the drain rate offered through \
         ingest, replies counted over the last 70% of the offered period. Latency: {:.0} s open-loop through ingest \
         per run, due time → send recorded at the simulator, {} repeats.",
        dur.as_secs_f64(),
        ctx.reps()
    ));
    env.teardown().await?;
    section.seconds = started.elapsed().as_secs_f64();
    Ok(section)
}

//! Scenario 4: Fleet size: 10 and 1,000 tenants on quorum queues and 10,000 on classic queues, 10% of
//! them active. Start time (worker spawn → consumers for every tenant), worker RSS, end-to-end
//! drain throughput, and broker memory per queue.

use std::time::{Duration, Instant};

use wafleet_shared::topology::QueueType;

use super::{load_backlog, med, mib, show, Ctx};
use crate::env::{register_bridges, BenchEnv, BENCH_NAME};
use crate::procs::Mem;
use crate::report::{Row, Section, Verdict};
use crate::stack::{start_worker, Sim, UNLIMITED_NOTE};
use crate::stats::{middle_rate, Summary};

/// What one fleet size measured.
#[derive(Debug)]
pub struct FleetPoint {
    /// Tenants.
    pub tenants: usize,
    /// Queue type.
    pub queue_type: QueueType,
    /// Tenants that received messages.
    pub active: usize,
    /// Declaring 2 queues per tenant plus the rows, seconds.
    pub setup_secs: f64,
    /// Broker `mem_used` growth per queue, bytes.
    pub mem_per_queue: Option<f64>,
    /// Worker spawn → `/readyz` 200 (every tenant consumed).
    pub start: Option<Duration>,
    /// Consumers the broker reports in the vhost once ready.
    pub consumers: usize,
    /// Replies per second while draining (active tenants only).
    pub rate: Option<Summary>,
    /// Worker memory when idle after start.
    pub idle: Mem,
    /// Worker memory after the drains (VmHWM = peak).
    pub after: Mem,
    /// What went wrong, if something did.
    pub problem: Option<String>,
}

/// Measures one fleet size with 10% of its tenants active; `start_timeout` bounds the worker start.
pub async fn measure(
    ctx: &Ctx,
    tenants: usize,
    queue_type: QueueType,
    backlog: usize,
    reps: usize,
    start_timeout: Duration,
) -> anyhow::Result<FleetPoint> {
    let active = (tenants / 10).max(1);
    measure_active(ctx, (tenants, active), queue_type, backlog, reps, start_timeout).await
}

/// Measures `(tenants, active)`: a fleet of `tenants` of which `active` get the backlog.
pub async fn measure_active(
    ctx: &Ctx,
    (tenants, active): (usize, usize),
    queue_type: QueueType,
    backlog: usize,
    reps: usize,
    start_timeout: Duration,
) -> anyhow::Result<FleetPoint> {
    let env = BenchEnv::recreate(&ctx.services).await?;
    let result = measure_in(ctx, &env, (tenants, active), queue_type, backlog, reps, start_timeout).await;
    let cleanup = env.teardown().await;
    let mut point = result?;
    if let Err(e) = cleanup {
        point.problem = Some(format!(
            "{}removing the vhost failed: {e:#}",
            point.problem.clone().map(|p| p + "; ").unwrap_or_default()
        ));
    }
    Ok(point)
}

/// File-handle reservations one quorum queue takes in RabbitMQ 3.10's file-handle cache
/// (measured here: ~3 each; 2,000 quorum queues held 5,800 against a limit of 927, and
/// classic-queue file operations in every vhost blocked until they were deleted).
const HANDLES_PER_QUORUM_QUEUE: f64 = 3.0;

/// The largest number of tenants whose quorum queues (tenant + dead-letter, plus the 4 retry
/// tiers) keep every quorum queue on the broker — other vhosts' included — within 45% of its
/// file-descriptor limit; and that limit.
pub async fn quorum_capacity(ctx: &Ctx) -> anyhow::Result<(usize, u64)> {
    let mgmt = crate::env::Mgmt::new(&ctx.services.rabbit_api)?;
    let (fd_total, _) = mgmt.file_descriptors().await?;
    let queues = mgmt.get("queues?columns=type").await?;
    let quorum_now = queues.as_array().map_or(0, |a| a.iter().filter(|q| q["type"] == "quorum").count());
    let allowed = (fd_total as f64 * 0.45 / HANDLES_PER_QUORUM_QUEUE) as i64 - quorum_now as i64 - 4;
    Ok(((allowed.max(0) / 2) as usize, fd_total))
}

// layout: a benchmark scenario reads as one script (set up, drive, measure, report) whose steps
// share the measured locals and timings; splitting it would pass them all around.
async fn measure_in(
    ctx: &Ctx,
    env: &BenchEnv,
    (n, active): (usize, usize),
    queue_type: QueueType,
    backlog: usize,
    reps: usize,
    start_timeout: Duration,
) -> anyhow::Result<FleetPoint> {
    // mem_used is refreshed by the broker every few seconds (skipped in quick mode).
    let settle = Duration::from_secs(if ctx.quick { 0 } else { 6 });
    tokio::time::sleep(settle).await;
    let mem_before = env.mgmt.mem_used().await?;
    let t = Instant::now();
    let all = env.add_tenants(n, queue_type).await?;
    let setup_secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    let mem_after = env.mgmt.mem_used().await?;
    let queues = env.mgmt.queue_count(BENCH_NAME).await.unwrap_or(0);
    let tenant_queues = 2 * n;
    let mem_per_queue = (!ctx.quick).then(|| (mem_after as f64 - mem_before as f64) / tenant_queues as f64);
    let sim = Sim::start(&ctx.bins, &["--unlimited"], &[]).await?;
    register_bridges(&sim.base, &all[..active]).await?;
    let mut point = FleetPoint {
        tenants: n,
        queue_type,
        active,
        setup_secs,
        mem_per_queue,
        start: None,
        consumers: 0,
        rate: None,
        idle: Mem::default(),
        after: Mem::default(),
        problem: None,
    };
    let started = start_worker(&ctx.bins, env, &sim.base, &ctx.budget_lifted(), start_timeout).await;
    let (worker, _, start) = match started {
        Ok(w) => w,
        Err(e) => {
            point.problem = Some(format!("worker not ready within {start_timeout:?}: {}", first_line(&e)));
            sim.proc.stop(Duration::from_secs(5)).await?;
            return Ok(point);
        }
    };
    point.start = Some(start);
    point.consumers = env.mgmt.wait_consumers(BENCH_NAME, n, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    point.idle = worker.mem()?;
    let mut rates = Vec::new();
    for rep in 0..reps {
        sim.clear().await?;
        load_backlog(env, &all[..active], backlog, &format!("f{n}r{rep}")).await?;
        let timeout = Duration::from_secs_f64((backlog as f64 / 10.0).max(90.0));
        let got = sim.wait_sends(backlog as u64, timeout, Duration::from_secs(30)).await?;
        if got < backlog as u64 {
            point.problem = Some(format!("only {got} of {backlog} replies within {timeout:?}"));
            break;
        }
        let mut times: Vec<f64> = sim.sends().await?.iter().map(crate::stack::epoch_secs_of).collect();
        rates.extend(middle_rate(&mut times));
    }
    point.rate = Summary::of(&rates);
    point.after = worker.mem()?;
    if queues < tenant_queues {
        point.problem = Some(format!("the broker lists {queues} queues, expected at least {tenant_queues}"));
    }
    worker.stop(Duration::from_secs(30)).await?;
    sim.proc.stop(Duration::from_secs(5)).await?;
    Ok(point)
}

fn first_line(e: &anyhow::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

/// Tenants of the baseline fleet, all of them active.
const BASELINE: usize = 10;

/// The sizes to measure, each with the queue type its target names and, when the broker's
/// open-files limit does not fit that many quorum queues, the classic substitute and the largest
/// quorum fleet that fits (with the reason).
async fn plan(ctx: &Ctx, section: &mut Section) -> anyhow::Result<Vec<(usize, QueueType, Option<String>)>> {
    let sizes: Vec<(usize, QueueType)> = if ctx.quick {
        vec![(50, QueueType::Quorum)]
    } else {
        vec![(1000, QueueType::Quorum), (10_000, QueueType::Classic)]
    };
    let mut plan = Vec::new();
    for (n, qt) in sizes {
        let (cap, fd_total) = quorum_capacity(ctx).await?;
        if qt != QueueType::Quorum || n <= cap {
            plan.push((n, qt, None));
            continue;
        }
        let why = format!(
            "{} quorum queues need ≈{:.0} file-handle reservations; the broker's limit is {fd_total} (ulimit -n), \
             shared with every other vhost",
            2 * n,
            2.0 * n as f64 * HANDLES_PER_QUORUM_QUEUE
        );
        section.notes.push(format!(
            "{n} quorum tenants not run: {why}. Past the limit RabbitMQ 3.10 blocks classic-queue file operations in \
             every vhost. Measured instead: the largest quorum fleet that fits ({} tenants) and {n} tenants on classic \
             queues. `scripts/ensure-services.sh` starts the broker with 65536 open files, or its shell's hard limit \
             where lower.",
            (cap / 10) * 10
        ));
        if cap >= 20 {
            let fits = "largest quorum fleet within the broker's file-handle limit".to_owned();
            plan.push(((cap / 10) * 10, QueueType::Quorum, Some(fits)));
        }
        plan.push((n, QueueType::Classic, Some(format!("classic instead of quorum: {why}"))));
    }
    Ok(plan)
}

/// One size over the repeats, each beside the baseline run just before it.
struct Paired {
    points: Vec<FleetPoint>,
    baselines: Vec<f64>,
    ratios: Vec<f64>,
}

/// Runs the scenario.
// layout: a benchmark scenario reads as one script (set up, drive, measure, report) whose steps
// share the measured locals and timings; splitting it would pass them all around.
pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Section> {
    let started = Instant::now();
    let mut section = Section::new("fleet", "4. Fleet size (10% of tenants active)");
    // Every fleet size's simulator (in `measure_in`) runs with `--unlimited`.
    section.notes.push(UNLIMITED_NOTE.to_owned());
    let backlog = if ctx.quick { 300 } else { 3000 };
    for (n, qt, why) in plan(ctx, &mut section).await? {
        let timeout = Duration::from_secs(if n >= 10_000 { 240 } else { 120 });
        let mut pair = Paired { points: Vec::new(), baselines: Vec::new(), ratios: Vec::new() };
        for _ in 0..ctx.reps() {
            // The baseline of this repeat: the same queue type and worker, 10 tenants all active.
            let base = match measure_active(ctx, (BASELINE, BASELINE), qt, backlog, 1, Duration::from_secs(120)).await {
                Ok(b) => {
                    section.notes.extend(b.problem.map(|p| format!("baseline before {n} tenants: {p}")));
                    b.rate.map(|r| r.median)
                }
                Err(e) => {
                    section.notes.push(format!("baseline before {n} tenants failed: {e:#}"));
                    None
                }
            };
            match measure(ctx, n, qt, backlog, 1, timeout).await {
                Ok(p) => {
                    if let (Some(b), Some(r)) = (base, p.rate) {
                        pair.ratios.push(r.median / b);
                    }
                    pair.baselines.extend(base);
                    pair.points.push(p);
                }
                Err(e) => {
                    section.rows.push(Row::info(format!("{n} {} tenants", qt.as_str()), format!("failed: {e:#}")));
                    break;
                }
            }
        }
        report(ctx, &mut section, &pair, backlog, why);
    }
    section.notes.push(format!(
        "Each measurement gets a fresh vhost `{BENCH_NAME}` and database with tenants bench_t00001…; every tenant has \
         a tenant queue and a dead-letter queue of the given type. The worker runs with production defaults; \
         throughput is the reply rate at the simulator (middle 80%) while the worker drains {backlog} events spread \
         over the active tenants. Each repeat ({} per size) first drains the same backlog through a baseline fleet of \
         {BASELINE} tenants of the same queue type, all active, then through the size; each ratio divides by its own \
         repeat's baseline and the row shows the median and spread of those ratios. Broker memory is `mem_used` of \
         /api/nodes before and after declaring (other vhosts on the broker add noise). The vhost is deleted \
         afterwards; names are fixed so quorum-queue atoms are reused across runs.",
        ctx.reps()
    ));
    section.seconds = started.elapsed().as_secs_f64();
    Ok(section)
}

/// The rows of one size.
fn report(ctx: &mut Ctx, section: &mut Section, pair: &Paired, backlog: usize, why: Option<String>) {
    let Some(last) = pair.points.last() else { return };
    let label = format!("{} {} tenants ({} active)", last.tenants, last.queue_type.as_str(), last.active);
    let starts: Vec<f64> = pair.points.iter().filter_map(|p| p.start.map(|d| d.as_secs_f64())).collect();
    let start = Summary::of(&starts);
    let start_target = last.tenants >= 10_000;
    let all_ready = starts.len() == pair.points.len();
    section.rows.push(Row {
        metric: format!("{label}: worker start until every tenant is consumed"),
        value: if all_ready {
            show(&start, 1, " s")
        } else {
            format!("not ready in some repeats ({})", show(&start, 1, " s"))
        },
        ceiling: format!("{} consumers in the vhost", last.consumers),
        ratio: String::new(),
        target: if start_target { "≤ 90 s".into() } else { "—".into() },
        verdict: if start_target { Verdict::from_bool(all_ready && med(&start) <= 90.0) } else { Verdict::Info },
    });
    let rates: Vec<f64> = pair.points.iter().filter_map(|p| p.rate.map(|r| r.median)).collect();
    let (rate, base, r) = (Summary::of(&rates), Summary::of(&pair.baselines), Summary::of(&pair.ratios));
    let (target, bound) = match last.tenants {
        1000 => ("≥ 0.70×", Some(0.7)),
        10_000 => ("≥ 0.50×", Some(0.5)),
        _ => ("—", None),
    };
    section.rows.push(Row {
        metric: format!("{label}: e2e throughput draining {backlog} events"),
        value: show(&rate, 0, "/s"),
        ceiling: format!(
            "{BASELINE} {} tenants, all active, same repeats: {}",
            last.queue_type.as_str(),
            show(&base, 0, "/s")
        ),
        ratio: r.map_or_else(|| "n/a".into(), |r| r.show(2, "×")),
        target: target.into(),
        verdict: bound.map_or(Verdict::Info, |b| Verdict::from_bool(med(&r) >= b)),
    });
    let hwm = pair.points.iter().map(|p| p.after.hwm_kib).max().unwrap_or(0);
    section.rows.push(Row::info(
        format!("{label}: worker RSS idle / after load / VmHWM (last repeat; VmHWM the largest)"),
        format!("{:.1} / {:.1} / {:.1} MiB", mib(last.idle.rss_kib), mib(last.after.rss_kib), mib(hwm)),
    ));
    let per_queue: Vec<f64> = pair.points.iter().filter_map(|p| p.mem_per_queue).collect();
    section.rows.push(Row::info(
        format!("{label}: broker memory per queue (mem_used delta / {} queues)", 2 * last.tenants),
        match Summary::of(&per_queue) {
            Some(b) if b.median > 0.0 => format!("{:.1} KiB", b.median / 1024.0),
            Some(b) => format!("below noise ({:.1} KiB)", b.median / 1024.0),
            None => "n/a".into(),
        },
    ));
    let setup: Vec<f64> = pair.points.iter().map(|p| p.setup_secs).collect();
    section.rows.push(Row::info(
        format!("{label}: setup (declare {} queues + bindings, insert rows)", 2 * last.tenants),
        show(&Summary::of(&setup), 1, " s"),
    ));
    if let Some(why) = why {
        section.notes.push(format!("{label}: {why}"));
    }
    for p in &pair.points {
        if let Some(problem) = &p.problem {
            section.notes.push(format!("{label}: {problem}"));
        }
    }
    if last.tenants == 1000 || (ctx.quick && last.tenants == 50) {
        // The memory target names 1,000 tenants; a classic substitute is reported as such.
        ctx.shared.worker_mem = Some((last.tenants, last.queue_type, last.idle, last.after));
    }
}

//! Scenario 1: Ingest durable accept: closed-loop saturation at 16/64/256 connections with ~600 B and
//! 8 KiB bodies beside a raw lapin publisher holding as many confirms in flight, then an
//! open-loop run at 50% of saturation for the latency target.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wafleet_shared::topology::QueueType;

use super::{med, ratio, show, Ctx};
use crate::env::BenchEnv;
use crate::load::{closed_loop, open_loop, uniform, BodyFn, Target};
use crate::payload::{envelope, webhook_body};
use crate::procs::{CpuSnapshot, RssSampler};
use crate::raw::raw_publish;
use crate::report::{Row, Section, Verdict};
use crate::stack::{start_ingest, IngestOptions};
use crate::stats::Summary;

/// Tenant queues the load is spread over.
const TENANTS: usize = 16;

/// Runs the scenario.
// layout: a benchmark scenario reads as one script (set up, drive, measure, report) whose steps
// share the measured locals and timings; splitting it would pass them all around.
pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Section> {
    let started = Instant::now();
    let mut section = Section::new("ingest", "1. Ingest durable accept (200 after publisher confirm, quorum queues)");
    let env = BenchEnv::recreate(&ctx.services).await?;
    let tenants = env.add_tenants(TENANTS, QueueType::Quorum).await?;
    let (ingest, addr) = start_ingest(&ctx.bins, &env, &IngestOptions::default()).await?;
    let sampler = RssSampler::start(ingest.pid());
    let paths = Arc::new(tenants.iter().map(|t| t.path.clone()).collect::<Vec<_>>());
    let conns_list: &[usize] = if ctx.quick { &[16, 64] } else { &[16, 64, 256] };
    let warmup = ctx.secs(1.0, 0.3);
    // Measured windows of at least 10 s in a full run: shorter ones made single stalls decide a
    // figure.
    let dur = ctx.secs(10.0, 1.5);
    let open_dur = ctx.secs(10.0, 3.0);
    let cpu_before = ingest.cpu_seconds().unwrap_or(0.0);
    let mut accepted_total = 0u64;

    for size in [600usize, 8192] {
        let body: BodyFn = Arc::new(move |seq, _| webhook_body("i", seq, size));
        let target = Target { addr, paths: paths.clone(), body };
        let sample = webhook_body("i", 0, size);
        let messages = Arc::new(
            tenants
                .iter()
                .map(|t| {
                    let e = envelope(&t.customer_ref, t.generation, &sample, chrono::Utc::now());
                    (t.customer_ref.as_str().to_owned(), e)
                })
                .collect::<Vec<_>>(),
        );
        let envelope_bytes = messages.first().map_or(0, |m| m.1.len());
        // Warm-up of both paths (connections, JIT of the broker, page cache), not measured.
        closed_loop(&target, 64, Duration::ZERO, ctx.secs(2.0, 0.5)).await?;
        raw_publish(&env.amqp_url, 64, Duration::ZERO, ctx.secs(2.0, 0.5), messages.clone()).await?;
        env.purge(&tenants).await?;

        let mut saturation_64 = None;
        for &conns in conns_list {
            let mut product = Vec::new();
            let mut ceiling = Vec::new();
            let mut errors: BTreeMap<u16, u64> = BTreeMap::new();
            let (mut cpu_ceiling, mut n_ceiling) = (CpuSnapshot::default(), 0u64);
            let (mut cpu_product, mut n_product) = (CpuSnapshot::default(), 0u64);
            for _ in 0..ctx.reps() {
                let before = CpuSnapshot::take(&[ingest.pid()]);
                let (rate, all) = raw_publish(&env.amqp_url, conns, warmup, dur, messages.clone()).await?;
                cpu_ceiling = add(&cpu_ceiling, &CpuSnapshot::take(&[ingest.pid()]).since(&before));
                n_ceiling += all;
                ceiling.push(rate);
                env.purge(&tenants).await?;
                let before = CpuSnapshot::take(&[ingest.pid()]);
                let r = closed_loop(&target, conns, warmup, dur).await?;
                cpu_product = add(&cpu_product, &CpuSnapshot::take(&[ingest.pid()]).since(&before));
                n_product += r.all_ok;
                accepted_total += r.ok;
                product.push(r.rate());
                for (k, v) in r.errors {
                    *errors.entry(k).or_default() += v;
                }
                env.purge(&tenants).await?;
            }
            let (p, c) = (Summary::of(&product), Summary::of(&ceiling));
            let targeted = conns >= 64;
            let ok = med(&p) >= 0.8 * med(&c);
            section.rows.push(Row {
                metric: format!("accepts/s, {size} B body ({envelope_bytes} B envelope), {conns} connections"),
                value: show(&p, 0, "/s"),
                ceiling: format!("raw lapin, {conns} confirms in flight: {}", show(&c, 0, "/s")),
                ratio: ratio(med(&p), med(&c)),
                target: if targeted { "≥ 0.80×".into() } else { "—".into() },
                verdict: if targeted { Verdict::from_bool(ok) } else { Verdict::Info },
            });
            if !errors.is_empty() {
                section
                    .notes
                    .push(format!("{size} B, {conns} connections: non-200 answers {errors:?} (0 = transport error)"));
            }
            section.notes.push(format!(
                "{size} B, {conns} connections, CPU µs per message: ingest path = broker {} + ingest {} + load \
                 generator {} (machine {:.0}% busy); ceiling = broker {} + raw publisher {} (machine {:.0}% busy)",
                per(cpu_product.broker, n_product),
                per(cpu_product.children.first().copied().unwrap_or(0.0), n_product),
                per(cpu_product.bench, n_product),
                cpu_product.utilisation() * 100.0,
                per(cpu_ceiling.broker, n_ceiling),
                per(cpu_ceiling.bench, n_ceiling),
                cpu_ceiling.utilisation() * 100.0,
            ));
            if conns == 64 {
                saturation_64 = p.map(|s| s.median);
            }
        }

        let Some(saturation) = saturation_64 else { continue };
        let rate = 0.5 * saturation;
        let (mut p50, mut p99, mut p999) = (Vec::new(), Vec::new(), Vec::new());
        let mut errors = 0usize;
        let mut lag: f64 = 0.0;
        for _ in 0..ctx.reps() {
            let r = open_loop(&target, 64, uniform(rate, open_dur, TENANTS), Duration::from_secs(20)).await?;
            accepted_total += r.outcomes.iter().filter(|o| o.status == 200).count() as u64;
            let mut l = r.latency(|_| true);
            p50.extend(l.percentile_ms(50.0));
            p99.extend(l.percentile_ms(99.0));
            p999.extend(l.percentile_ms(99.9));
            errors += r.errors();
            lag = lag.max(r.max_dispatch_lag_ms);
            env.purge(&tenants).await?;
        }
        let (p50, p99, p999) = (Summary::of(&p50), Summary::of(&p99), Summary::of(&p999));
        section.rows.push(Row {
            metric: format!("open loop at 50% of saturation ({rate:.0}/s, 64 conns, {size} B): p99 accept latency"),
            value: show(&p99, 2, " ms"),
            ceiling: format!("p50 {}; p99.9 {}", show(&p50, 2, " ms"), show(&p999, 2, " ms")),
            ratio: String::new(),
            target: "≤ 10 ms, no errors".into(),
            verdict: Verdict::from_bool(med(&p99) <= 10.0 && errors == 0),
        });
        section.notes.push(format!(
            "{size} B open loop: {errors} non-200 answers; worst dispatcher lag {lag:.1} ms (latency counts from the due time)"
        ));
        if size == 600 {
            super::ingest_sweep::sweep(ctx, &env, &tenants, &target, saturation, size, &mut section).await?;
        }
    }

    let cpu = ingest.cpu_seconds().unwrap_or(0.0) - cpu_before;
    let max_rss = sampler.finish().await;
    let mem = ingest.mem()?;
    ctx.shared.ingest_rss_max_kib = Some(max_rss);
    section.rows.push(Row::info(
        "ingest RSS under this load (max sampled every 100 ms / VmHWM)",
        format!("{:.1} / {:.1} MiB", super::mib(max_rss), super::mib(mem.hwm_kib)),
    ));
    if accepted_total > 0 {
        section.rows.push(Row::info(
            "ingest CPU per accepted event (all runs)",
            format!("{:.0} µs ({cpu:.1} CPU-s for {accepted_total} accepts)", cpu / accepted_total as f64 * 1e6),
        ));
    }
    section.notes.push(format!(
        "Closed loop: each connection sends its next request when the previous is answered; {} s warm-up then {} s \
         measured, {} repeats interleaved with the ceiling (queues purged between runs). {TENANTS} tenant queues, \
         ingest with production defaults (spool on, on local disk). The load generator, ceiling, ingest and RabbitMQ \
         share the same 2 cores.",
        warmup.as_secs_f64(),
        dur.as_secs_f64(),
        ctx.reps()
    ));
    ingest.stop(Duration::from_secs(15)).await?;
    env.teardown().await?;
    section.seconds = started.elapsed().as_secs_f64();
    Ok(section)
}

/// Sums two CPU deltas.
fn add(a: &CpuSnapshot, b: &CpuSnapshot) -> CpuSnapshot {
    let children = if a.children.is_empty() {
        b.children.clone()
    } else {
        a.children.iter().zip(b.children.iter()).map(|(x, y)| x + y).collect()
    };
    CpuSnapshot {
        broker: a.broker + b.broker,
        postgres: a.postgres + b.postgres,
        bench: a.bench + b.bench,
        children,
        busy: a.busy + b.busy,
        total: a.total + b.total,
        transactions: a.transactions + b.transactions,
    }
}

/// CPU microseconds per message.
fn per(seconds: f64, messages: u64) -> String {
    if messages == 0 {
        "n/a".into()
    } else {
        format!("{:.0}", seconds / messages as f64 * 1e6)
    }
}

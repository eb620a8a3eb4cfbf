//! Scenario 1: Ingest durable accept: closed-loop saturation at 16/64/256 connections with ~600 B and
//! 8 KiB bodies beside three ceilings measured in the same repeats: a naive durable ingest (parse,
//! publish on one confirmed channel, 200 after the confirm: the target's ratio), a raw lapin
//! publisher holding as many confirms in flight, and an HTTP server that only parses the body.
//! Then an open-loop run at 50% of the 256-connection saturation for the latency target.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wafleet_shared::topology::QueueType;

use super::{med, ratio, show, Ctx};
use crate::env::{BenchEnv, BenchTenant};
use crate::load::{closed_loop, open_loop, uniform, BodyFn, Target};
use crate::payload::{envelope, webhook_body_of};
use crate::procs::{CpuSnapshot, RssSampler};
use crate::raw::raw_publish;
use crate::report::{Row, Section, Verdict};
use crate::serve::{http_only, naive_durable};
use crate::stack::{start_ingest, IngestOptions};
use crate::stats::Summary;

/// Tenant queues the load is spread over.
const TENANTS: usize = 16;
/// wafleet-ingest against the naive durable ingest, at 64 and 256 connections.
const TARGET: f64 = 0.90;

/// The servers measured at each load point: the product and its three ceilings.
struct Contenders {
    ingest_pid: u32,
    ingest_target: Target,
    naive: SocketAddr,
    http: SocketAddr,
    messages: Arc<Vec<(String, Vec<u8>)>>,
}

/// One load point's repeats: accepts/s of each contender, and CPU of the product and of the raw
/// publisher for the note.
#[derive(Default)]
struct Point {
    product: Vec<f64>,
    naive: Vec<f64>,
    raw: Vec<f64>,
    http: Vec<f64>,
    errors: BTreeMap<u16, u64>,
    cpu_product: CpuSnapshot,
    n_product: u64,
    cpu_raw: CpuSnapshot,
    n_raw: u64,
    cpu_naive: CpuSnapshot,
    n_naive: u64,
}

/// Repeats of one load point, the four contenders interleaved in each repeat (queues purged
/// after every run that published).
async fn measure(
    ctx: &Ctx,
    env: &BenchEnv,
    tenants: &[BenchTenant],
    c: &Contenders,
    conns: usize,
) -> anyhow::Result<(Point, u64)> {
    let (warmup, dur) = (ctx.secs(1.0, 0.3), ctx.secs(10.0, 1.0));
    let pid = [c.ingest_pid];
    let mut p = Point::default();
    let mut accepted = 0;
    for _ in 0..ctx.reps() {
        let before = CpuSnapshot::take(&pid);
        let (rate, all) = raw_publish(&env.amqp_url, conns, warmup, dur, c.messages.clone()).await?;
        p.cpu_raw = add(&p.cpu_raw, &CpuSnapshot::take(&pid).since(&before));
        p.n_raw += all;
        p.raw.push(rate);
        env.purge(tenants).await?;
        let naive = Target { addr: c.naive, ..c.ingest_target.clone() };
        let before = CpuSnapshot::take(&pid);
        let r = closed_loop(&naive, conns, warmup, dur).await?;
        p.cpu_naive = add(&p.cpu_naive, &CpuSnapshot::take(&pid).since(&before));
        p.n_naive += r.all_ok;
        p.naive.push(r.rate());
        env.purge(tenants).await?;
        let http = Target { addr: c.http, ..c.ingest_target.clone() };
        p.http.push(closed_loop(&http, conns, warmup, dur).await?.rate());
        let before = CpuSnapshot::take(&pid);
        let r = closed_loop(&c.ingest_target, conns, warmup, dur).await?;
        p.cpu_product = add(&p.cpu_product, &CpuSnapshot::take(&pid).since(&before));
        p.n_product += r.all_ok;
        accepted += r.ok;
        p.product.push(r.rate());
        for (k, v) in r.errors {
            *p.errors.entry(k).or_default() += v;
        }
        env.purge(tenants).await?;
    }
    Ok((p, accepted))
}

/// The rows and notes of one load point.
fn report(section: &mut Section, p: &Point, size: usize, envelope_bytes: usize, conns: usize) {
    let (prod, naive, raw, http) =
        (Summary::of(&p.product), Summary::of(&p.naive), Summary::of(&p.raw), Summary::of(&p.http));
    let targeted = conns >= 64;
    section.rows.push(Row {
        metric: format!("accepts/s, {size} B body ({envelope_bytes} B envelope), {conns} connections"),
        value: show(&prod, 0, "/s"),
        ceiling: format!("naive durable ingest (1 channel, 200 after confirm): {}", show(&naive, 0, "/s")),
        ratio: ratio(med(&prod), med(&naive)),
        target: if targeted { format!("≥ {TARGET:.2}×") } else { "—".into() },
        verdict: if targeted { Verdict::from_bool(med(&prod) >= TARGET * med(&naive)) } else { Verdict::Info },
    });
    section.rows.push(Row {
        metric: format!("  same, against raw lapin ({conns} confirms in flight) / HTTP only (parse, 200)"),
        value: show(&prod, 0, "/s"),
        ceiling: format!("{} / {}", show(&raw, 0, "/s"), show(&http, 0, "/s")),
        ratio: format!("{} / {}", ratio(med(&prod), med(&raw)), ratio(med(&prod), med(&http))),
        target: "report".into(),
        verdict: Verdict::Info,
    });
    if !p.errors.is_empty() {
        section
            .notes
            .push(format!("{size} B, {conns} connections: non-200 answers {:?} (0 = transport error)", p.errors));
    }
    section.notes.push(format!(
        "{size} B, {conns} connections, CPU µs per message: ingest path = broker {} + ingest {} + load generator {} \
         (machine {:.0}% busy); naive ingest = broker {} + bench (server and load generator) {}; raw publisher = \
         broker {} + publisher {} (machine {:.0}% busy)",
        per(p.cpu_product.broker, p.n_product),
        per(p.cpu_product.children.first().copied().unwrap_or(0.0), p.n_product),
        per(p.cpu_product.bench, p.n_product),
        p.cpu_product.utilisation() * 100.0,
        per(p.cpu_naive.broker, p.n_naive),
        per(p.cpu_naive.bench, p.n_naive),
        per(p.cpu_raw.broker, p.n_raw),
        per(p.cpu_raw.bench, p.n_raw),
        p.cpu_raw.utilisation() * 100.0,
    ));
}

/// Open loop at `rate` through ingest: the p99 row (target ≤ 10 ms, no errors) and a note;
/// returns the 200 answers.
async fn open_latency(
    ctx: &Ctx,
    env: &BenchEnv,
    tenants: &[BenchTenant],
    section: &mut Section,
    target: &Target,
    rate: f64,
    size: usize,
) -> anyhow::Result<u64> {
    let conns = 256;
    let (mut p50, mut p99, mut p999) = (Vec::new(), Vec::new(), Vec::new());
    let (mut errors, mut lag, mut accepted) = (0usize, 0.0f64, 0u64);
    for _ in 0..ctx.reps() {
        let arrivals = uniform(rate, ctx.secs(10.0, 2.0), TENANTS);
        let r = open_loop(target, conns, arrivals, Duration::from_secs(20)).await?;
        accepted += r.outcomes.iter().filter(|o| o.status == 200).count() as u64;
        let mut l = r.latency(|_| true);
        p50.extend(l.percentile_ms(50.0));
        p99.extend(l.percentile_ms(99.0));
        p999.extend(l.percentile_ms(99.9));
        errors += r.errors();
        lag = lag.max(r.max_dispatch_lag_ms);
        env.purge(tenants).await?;
    }
    let (p50, p99, p999) = (Summary::of(&p50), Summary::of(&p99), Summary::of(&p999));
    section.rows.push(Row {
        metric: format!(
            "open loop at 50% of the 256-connection saturation ({rate:.0}/s, {conns} conns, {size} B): p99 accept latency"
        ),
        value: show(&p99, 2, " ms"),
        ceiling: format!("p50 {}; p99.9 {}", show(&p50, 2, " ms"), show(&p999, 2, " ms")),
        ratio: String::new(),
        target: "≤ 10 ms, no errors".into(),
        verdict: Verdict::from_bool(med(&p99) <= 10.0 && errors == 0),
    });
    section.notes.push(format!(
        "{size} B open loop: {errors} non-200 answers; worst dispatcher lag {lag:.1} ms (latency counts from the due time)"
    ));
    Ok(accepted)
}

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
    let refs: Arc<Vec<String>> = Arc::new(tenants.iter().map(|t| t.customer_ref.as_str().to_owned()).collect());
    // 256 in quick mode too: the open loop's rate is half the 256-connection saturation.
    let conns_list: &[usize] = if ctx.quick { &[64, 256] } else { &[16, 64, 256] };
    let cpu_before = ingest.cpu_seconds().unwrap_or(0.0);
    let mut accepted_total = 0u64;
    let (naive, http) = (naive_durable(&env.amqp_url).await?, http_only().await?);

    for size in [600usize, 8192] {
        let body_refs = refs.clone();
        let body: BodyFn = Arc::new(move |seq, t| webhook_body_of(&body_refs[t % body_refs.len()], "i", seq, size));
        let ingest_target = Target { addr, paths: paths.clone(), body };
        let messages = Arc::new(
            tenants
                .iter()
                .map(|t| {
                    let sample = webhook_body_of(t.customer_ref.as_str(), "i", 0, size);
                    let e = envelope(&t.customer_ref, t.generation, &sample, chrono::Utc::now());
                    (t.customer_ref.as_str().to_owned(), e)
                })
                .collect::<Vec<_>>(),
        );
        let envelope_bytes = messages.first().map_or(0, |m| m.1.len());
        let c = Contenders { ingest_pid: ingest.pid(), ingest_target, naive: naive.addr, http: http.addr, messages };
        // Warm-up of every path (connections, JIT of the broker, page cache), not measured.
        let warm = ctx.secs(2.0, 0.5);
        closed_loop(&c.ingest_target, 64, Duration::ZERO, warm).await?;
        closed_loop(&Target { addr: c.naive, ..c.ingest_target.clone() }, 64, Duration::ZERO, warm).await?;
        raw_publish(&env.amqp_url, 64, Duration::ZERO, warm, c.messages.clone()).await?;
        env.purge(&tenants).await?;

        let mut saturation_256 = None;
        for &conns in conns_list {
            let (point, accepted) = measure(ctx, &env, &tenants, &c, conns).await?;
            accepted_total += accepted;
            report(&mut section, &point, size, envelope_bytes, conns);
            if conns == 256 {
                saturation_256 = Summary::of(&point.product).map(|s| s.median);
            }
        }
        if let Some(saturation) = saturation_256 {
            let target = c.ingest_target.clone();
            accepted_total += open_latency(ctx, &env, &tenants, &mut section, &target, 0.5 * saturation, size).await?;
            if size == 600 {
                super::ingest_sweep::sweep(ctx, &env, &tenants, &target, (saturation, 256), size, &mut section).await?;
            }
        }
    }
    drop((naive, http));
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
         measured, {} repeats, each running the raw publisher, the naive durable ingest, the HTTP-only server and \
         ingest in turn (queues purged between runs). The naive ingest and the HTTP-only server run inside the bench \
         process (hyper, HTTP/1.1, on the load generator's runtime); the naive ingest publishes the body as it came, \
         persistent and mandatory, on one confirmed channel to `wa.inbound` with the body's `customer_ref` as routing \
         key, and answers 200 after the confirm. Bodies carry the top-level `customer_ref` WA Bridges sends. \
         {TENANTS} tenant queues, ingest with production defaults (spool on, on local disk). The load generator, \
         ceilings, ingest and RabbitMQ share the same 2 cores.",
        ctx.secs(1.0, 0.3).as_secs_f64(),
        ctx.secs(10.0, 1.0).as_secs_f64(),
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

//! Scenario 5: Memory: ingest RSS under load (256 connections, 8 KiB bodies) and worker RSS at 1,000
//! tenants, read from /proc/<pid>/status of the real release binaries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wafleet_shared::topology::QueueType;

use super::{mib, Ctx};
use crate::env::BenchEnv;
use crate::load::{closed_loop, BodyFn, Target};
use crate::payload::webhook_body;
use crate::procs::RssSampler;
use crate::report::{Row, Section, Verdict};
use crate::stack::{start_ingest, IngestOptions, UNLIMITED_NOTE};

/// Runs the scenario.
// layout: a benchmark scenario reads as one script (set up, drive, measure, report) whose steps
// share the measured locals and timings; splitting it would pass them all around.
pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Section> {
    let started = Instant::now();
    let mut section = Section::new("memory", "5. Memory (VmRSS / VmHWM of the release binaries)");

    let env = BenchEnv::recreate(&ctx.services).await?;
    let tenants = env.add_tenants(16, QueueType::Quorum).await?;
    let (ingest, addr) = start_ingest(&ctx.bins, &env, &IngestOptions::default()).await?;
    let idle = ingest.mem()?;
    let paths = Arc::new(tenants.iter().map(|t| t.path.clone()).collect::<Vec<_>>());
    let mut loads = Vec::new();
    for (conns, size) in [(64usize, 600usize), (256, 8192)] {
        let body: BodyFn = Arc::new(move |seq, _| webhook_body("m", seq, size));
        let target = Target { addr, paths: paths.clone(), body };
        let sampler = RssSampler::start(ingest.pid());
        let load = closed_loop(&target, conns, Duration::ZERO, ctx.secs(10.0, 3.0)).await?;
        let max_rss = sampler.finish().await;
        env.purge(&tenants).await?;
        loads.push((conns, size, load.rate(), max_rss, ingest.mem()?.hwm_kib));
    }
    ingest.stop(Duration::from_secs(15)).await?;
    env.teardown().await?;
    for (conns, size, rate, max_rss, hwm) in loads {
        let worst = max_rss.max(hwm);
        section.rows.push(Row {
            metric: format!("ingest max RSS under saturation, {conns} conns × {size} B ({rate:.0} accepts/s)"),
            value: format!(
                "{:.1} MiB (VmHWM so far {:.1} MiB; idle {:.1} MiB)",
                mib(max_rss),
                mib(hwm),
                mib(idle.rss_kib)
            ),
            ceiling: String::new(),
            ratio: String::new(),
            target: "≤ 30 MiB".into(),
            verdict: Verdict::from_bool(mib(worst) <= 30.0),
        });
    }
    if let Some(kib) = ctx.shared.ingest_rss_max_kib {
        section.rows.push(Row::info(
            "ingest max RSS over scenario 1 (every size and connection count)",
            format!("{:.1} MiB", mib(kib)),
        ));
    }

    let fleet = match ctx.shared.worker_mem {
        Some(m) => Some(m),
        None => {
            let n = if ctx.quick { 50 } else { 1000 };
            let (cap, _) = super::fleet::quorum_capacity(ctx).await?;
            let qt = if n <= cap { QueueType::Quorum } else { QueueType::Classic };
            let backlog = if ctx.quick { 200 } else { 1000 };
            let p = super::fleet::measure(ctx, n, qt, backlog, 1, Duration::from_secs(120)).await?;
            section.notes.push(format!("fleet of {n}: {UNLIMITED_NOTE}"));
            if let Some(problem) = p.problem {
                section.notes.push(format!("fleet of {n}: {problem}"));
            }
            Some((n, qt, p.idle, p.after))
        }
    };
    if let Some((n, qt, idle, after)) = fleet {
        let peak = after.hwm_kib.max(after.rss_kib);
        if qt == QueueType::Classic {
            section.notes.push(format!(
                "The worker was measured with {n} classic tenants: {n} quorum tenants exceed this broker's file-handle \
                 limit (see scenario 4). The worker holds one consumer per tenant either way."
            ));
        }
        section.rows.push(Row {
            metric: format!("worker RSS at {n} {} tenants (peak over start and drain)", qt.as_str()),
            value: format!(
                "{:.1} MiB VmHWM (idle {:.1} MiB, after load {:.1} MiB)",
                mib(peak),
                mib(idle.rss_kib),
                mib(after.rss_kib)
            ),
            ceiling: String::new(),
            ratio: String::new(),
            target: if n >= 1000 { "≤ 64 MiB".into() } else { "≤ 64 MiB at 1,000 (quick: 50)".into() },
            verdict: Verdict::from_bool(mib(peak) <= 64.0),
        });
    }
    section.seconds = started.elapsed().as_secs_f64();
    Ok(section)
}

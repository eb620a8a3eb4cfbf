//! Ingest's accept latency against offered load: open loop at 10, 30, 50, 70 and 90% of the
//! closed-loop saturation measured just before, drawn as a chart (`ingest-latency.svg`) with
//! every sample beside it. One row per load point; the 50% target stays on the scenario's own
//! open-loop row.

use std::time::Duration;

use super::{med, show, Ctx};
use crate::charts::{self, LoadPoint};
use crate::env::{BenchEnv, BenchTenant};
use crate::load::{open_loop, uniform, Target};
use crate::report::{Row, Section};
use crate::stats::{Latencies, Summary};

/// Fractions of saturation swept.
const POINTS: [f64; 5] = [0.1, 0.3, 0.5, 0.7, 0.9];

/// Sweeps the load points against `target` (ingest, `size`-byte bodies, at the closed-loop
/// `saturation` of `conns` connections, with as many connections), purging `tenants`'
/// queues after each run; adds a row per point and a note naming the chart.
pub async fn sweep(
    ctx: &Ctx,
    env: &BenchEnv,
    tenants: &[BenchTenant],
    target: &Target,
    (saturation, conns): (f64, usize),
    size: usize,
    section: &mut Section,
) -> anyhow::Result<()> {
    let dur = ctx.secs(10.0, 1.0);
    let mut points = Vec::new();
    for fraction in POINTS {
        let rate = fraction * saturation;
        if !rate.is_finite() || rate <= 0.0 {
            continue;
        }
        let mut all = Latencies::new();
        let (mut p50, mut p99, mut p999, mut errors) = (Vec::new(), Vec::new(), Vec::new(), 0);
        for _ in 0..ctx.reps() {
            let r = open_loop(target, conns, uniform(rate, dur, tenants.len()), Duration::from_secs(20)).await?;
            let mut l = r.latency(|_| true);
            p50.extend(l.percentile_ms(50.0));
            p99.extend(l.percentile_ms(99.0));
            p999.extend(l.percentile_ms(99.9));
            errors += r.errors();
            all.extend(&l);
            env.purge(tenants).await?;
        }
        let (p50, p99, p999) = (Summary::of(&p50), Summary::of(&p99), Summary::of(&p999));
        section.rows.push(Row::info(
            format!(
                "accept latency p50 / p99 / p99.9 at {:.0}% of saturation ({rate:.0}/s, {conns} conns, {size} B; \
                 {errors} errors)",
                fraction * 100.0
            ),
            format!("{:.2} / {:.2} / {:.2} ms (p99 {})", med(&p50), med(&p99), med(&p999), show(&p99, 2, " ms")),
        ));
        points.push(LoadPoint { offered: rate, latencies: all });
    }
    let title = format!("Ingest accept latency against offered load ({size} B bodies)");
    match charts::latency_vs_load(&ctx.charts_dir, "ingest-latency", &title, &mut points) {
        Ok(files) => section.notes.push(format!(
            "Load sweep: {:.0} s open loop per point and repeat, {} repeats; chart and samples: {files}",
            dur.as_secs_f64(),
            ctx.reps()
        )),
        Err(e) => section.notes.push(format!("ingest latency chart not written: {e:#}")),
    }
    Ok(())
}

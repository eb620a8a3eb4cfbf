//! Scenario 3: Noisy tenant: one tenant at 100× the rate of 20 quiet ones (total ≤ 60% of end-to-end
//! saturation). The quiet tenants' p99 end-to-end latency is compared with a run of the same
//! quiet load without the noisy tenant.

use std::time::{Duration, Instant};

use wafleet_shared::topology::QueueType;

use super::e2e::{open_e2e, worker_drain};
use super::{med, ratio, show, Ctx};
use crate::env::{register_bridges, BenchEnv};
use crate::load::per_tenant;
use crate::report::{Row, Section, Verdict};
use crate::stack::{start_ingest, start_worker, IngestOptions, Sim, UNLIMITED_NOTE};
use crate::stats::Summary;

/// Quiet tenants.
const QUIET: usize = 20;

/// Runs the scenario.
pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Section> {
    let started = Instant::now();
    let mut section = Section::new("noisy", "3. Noisy tenant (1 tenant at 100× the rate of 20 others)");
    let env = BenchEnv::recreate(&ctx.services).await?;
    let tenants = env.add_tenants(QUIET + 1, QueueType::Quorum).await?;
    let sim = Sim::start(&ctx.bins, &["--unlimited"], &[]).await?;
    section.notes.push(UNLIMITED_NOTE.to_owned());
    register_bridges(&sim.base, &tenants).await?;
    let saturation = match ctx.shared.e2e_saturation {
        Some(s) => s,
        None => {
            let count = if ctx.quick { 300 } else { 2000 };
            let (s, _, _) = worker_drain(ctx, &env, &sim, &tenants[1..], count, "sat").await?;
            section.notes.push(format!("e2e saturation measured here (no e2e run before): {s:.0}/s"));
            s
        }
    };
    // Total = 100 r + 20 r = 120 r = 60% of saturation.
    let r = 0.6 * saturation / 120.0;
    let noisy_rate = 100.0 * r;
    let quiet_only: Vec<f64> = std::iter::once(0.0).chain(std::iter::repeat_n(r, QUIET)).collect();
    let with_noisy: Vec<f64> = std::iter::once(noisy_rate).chain(std::iter::repeat_n(r, QUIET)).collect();
    let (ingest, addr) = start_ingest(&ctx.bins, &env, &IngestOptions::default()).await?;
    let (worker, _, _) =
        start_worker(&ctx.bins, &env, &sim.base, &ctx.budget_lifted(), Duration::from_secs(120)).await?;
    let dur = ctx.secs(30.0, 6.0);
    let (mut base_p99, mut noisy_p99, mut loud_p99) = (Vec::new(), Vec::new(), Vec::new());
    let (mut base_n, mut noisy_n, mut missing, mut errors) = (0, 0, 0, 0);
    for rep in 0..ctx.reps() {
        let base = open_e2e(&sim, addr, &tenants, per_tenant(&quiet_only, dur), &format!("qb{rep}")).await?;
        let mut l = base.latency(|t| t != 0);
        base_n += l.len();
        base_p99.extend(l.percentile_ms(99.0));
        let noisy = open_e2e(&sim, addr, &tenants, per_tenant(&with_noisy, dur), &format!("qn{rep}")).await?;
        let mut l = noisy.latency(|t| t != 0);
        noisy_n += l.len();
        noisy_p99.extend(l.percentile_ms(99.0));
        loud_p99.extend(noisy.latency(|t| t == 0).percentile_ms(99.0));
        missing += base.missing + noisy.missing;
        errors += base.errors + noisy.errors;
    }
    let (b, n, loud) = (Summary::of(&base_p99), Summary::of(&noisy_p99), Summary::of(&loud_p99));
    let bound = 2.0 * med(&b) + 10.0;
    section.rows.push(Row {
        metric: format!("quiet tenants' p99 e2e latency with the noisy tenant ({noisy_n} replies)"),
        value: show(&n, 1, " ms"),
        ceiling: format!("same quiet load alone ({base_n} replies): {}", show(&b, 1, " ms")),
        ratio: ratio(med(&n), med(&b)),
        target: format!("≤ 2× baseline + 10 ms = {bound:.1} ms"),
        verdict: Verdict::from_bool(med(&n) <= bound),
    });
    section.rows.push(Row::info("noisy tenant's own p99 e2e latency", show(&loud, 1, " ms")));
    section.notes.push(format!(
        "Rates: quiet {r:.2}/s each ({:.1}/s together), noisy {noisy_rate:.1}/s; total {:.1}/s = 60% of the e2e \
         saturation {saturation:.0}/s. {:.0} s open-loop runs through ingest, baseline and noisy alternated, {} \
         repeats; {errors} ingest errors, {missing} events without a reply.",
        r * QUIET as f64,
        120.0 * r,
        dur.as_secs_f64(),
        ctx.reps()
    ));
    worker.stop(Duration::from_secs(15)).await?;
    ingest.stop(Duration::from_secs(15)).await?;
    sim.proc.stop(Duration::from_secs(5)).await?;
    env.teardown().await?;
    section.seconds = started.elapsed().as_secs_f64();
    Ok(section)
}

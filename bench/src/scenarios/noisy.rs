//! Scenario 3: Noisy tenant. One tenant offers twice what a single consumer path can drain, so a
//! backlog forms, beside 20 quiet tenants with a modest load. The quiet tenants' p99 latency from
//! ingest's 200 to the reply through wafleet (per-tenant queues, the worker) is compared with the
//! same quiet load alone, and the same noisy load is also sent through one shared FIFO queue drained by the raw
//! loop: the baseline that must miss the target, or the load proved nothing.

use std::time::{Duration, Instant};

use wafleet_shared::topology::QueueType;

use super::e2e::worker_drain;
use super::noisy_load::{fifo_drain_rate, offer, offer_fifo, reset, Drain, MixedRun, Rig, NOISY};
use super::{med, ratio, show, Ctx};
use crate::charts::{self, Series};
use crate::env::register_bridges;
use crate::env::BenchEnv;
use crate::load::per_tenant;
use crate::raw::prepare_raw_tables;
use crate::report::{Row, Section, Verdict};
use crate::stack::{start_ingest, start_worker, IngestOptions, Sim, UNLIMITED_NOTE};
use crate::stats::{Latencies, Summary};

/// Quiet tenants.
const QUIET: usize = 20;

/// Per-path results over the repeats.
#[derive(Default)]
struct Tally {
    p99: Vec<f64>,
    e2e_p99: Vec<f64>,
    accept_p99: Vec<f64>,
    backlog: Vec<f64>,
    all: Latencies,
    replies: usize,
    missing: usize,
    errors: usize,
    lag_ms: f64,
}

impl Tally {
    fn add(&mut self, mut run: MixedRun) {
        self.p99.extend(run.quiet.percentile_ms(99.0));
        self.accept_p99.extend(run.accept.percentile_ms(99.0));
        self.e2e_p99.extend(run.e2e.percentile_ms(99.0));
        self.backlog.push(run.backlog as f64);
        self.all.extend(&run.quiet);
        self.replies += run.replies;
        self.missing += run.missing;
        self.errors += run.errors;
        self.lag_ms = self.lag_ms.max(run.lag_ms);
    }

    fn note(&self, name: &str) -> String {
        format!(
            "{name}: {} quiet replies, {} quiet events without a reply at the end of the wait, {} ingest errors, \
             worst dispatcher lag {:.1} ms",
            self.replies, self.missing, self.errors, self.lag_ms
        )
    }
}

/// Runs the scenario.
// layout: a benchmark scenario reads as one script (set up, drive, measure, report) whose steps
// share the measured locals and timings; splitting it would pass them all around.
pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Section> {
    let started = Instant::now();
    let mut section = Section::new("noisy", "3. Noisy tenant (1 tenant offering 2× a drain's capacity, 20 quiet)");
    let env = BenchEnv::recreate(&ctx.services).await?;
    let tenants = env.add_tenants(QUIET + 1, QueueType::Quorum).await?;
    let sim = Sim::start(&ctx.bins, &["--unlimited"], &[]).await?;
    section.notes.push(UNLIMITED_NOTE.to_owned());
    register_bridges(&sim.base, &tenants).await?;
    let owner = env.owner_pool(10).await?;
    prepare_raw_tables(&owner).await?;
    let (ingest, addr) = start_ingest(&ctx.bins, &env, &IngestOptions::default()).await?;
    let rig = Rig { env: &env, sim: &sim, addr, tenants: &tenants, owner: &owner };

    // What one tenant can drain through the worker (4 in flight) and what the FIFO loop drains
    // (64 in flight on one queue), both in this run: the noisy tenant offers twice the larger,
    // so both its own queue and the shared queue must back up.
    let count = if ctx.quick { 200 } else { 3000 };
    let (one_tenant, _, _) = worker_drain(ctx, &env, &sim, &tenants[NOISY..=NOISY], count, "cap").await?;
    let fifo_rate = fifo_drain_rate(&rig, count).await?;
    let noisy_rate = 2.0 * one_tenant.max(fifo_rate);
    // Quiet: 1/s each, at most a quarter of one tenant's drain rate together.
    let r = (0.25 * one_tenant / QUIET as f64).min(1.0);
    let quiet_only: Vec<f64> = std::iter::once(0.0).chain(std::iter::repeat_n(r, QUIET)).collect();
    let with_noisy: Vec<f64> = std::iter::once(noisy_rate).chain(std::iter::repeat_n(r, QUIET)).collect();
    let dur = ctx.secs(20.0, 3.0);
    let wait = dur + ctx.secs(60.0, 15.0);

    let (mut alone, mut worker, mut shared) = (Tally::default(), Tally::default(), Tally::default());
    for rep in 0..ctx.reps() {
        let (proc, _, _) =
            start_worker(&ctx.bins, &env, &sim.base, &ctx.budget_lifted(), Duration::from_secs(120)).await?;
        alone.add(offer(&rig, Drain::Worker, per_tenant(&quiet_only, dur), &format!("qa{rep}"), wait).await?);
        let run = offer(&rig, Drain::Worker, per_tenant(&with_noisy, dur), &format!("qw{rep}"), wait).await;
        proc.stop(Duration::from_secs(15)).await?;
        worker.add(run?);
        reset(&rig).await?;
        shared.add(offer_fifo(&rig, per_tenant(&with_noisy, dur), &format!("qf{rep}"), wait).await?);
    }
    let (a, w, f) = (Summary::of(&alone.p99), Summary::of(&worker.p99), Summary::of(&shared.p99));
    let bound = 2.0 * med(&a) + 10.0;
    let target = format!("≤ 2× alone + 10 ms = {bound:.1} ms");
    section.rows.push(Row {
        metric: format!(
            "quiet tenants' p99 latency from ingest's 200 to the reply, alone, through wafleet ({} replies)",
            alone.replies
        ),
        value: show(&a, 1, " ms"),
        ceiling: "—".into(),
        ratio: String::new(),
        target: "baseline".into(),
        verdict: Verdict::Info,
    });
    section.rows.push(Row {
        metric: format!(
            "quiet tenants' p99 with the noisy tenant, through wafleet (per-tenant queues, worker; {} replies)",
            worker.replies
        ),
        value: show(&w, 1, " ms"),
        ceiling: format!("alone: {}", show(&a, 1, " ms")),
        ratio: ratio(med(&w), med(&a)),
        target: target.clone(),
        verdict: Verdict::from_bool(med(&w) <= bound),
    });
    // The baseline has no isolation: if it meets the target too, the load formed no backlog that
    // could hurt the quiet tenants and the row above says nothing about isolation.
    let fifo_missed = med(&f) > bound;
    section.rows.push(Row {
        metric: format!(
            "quiet tenants' p99 with the noisy tenant, through one shared FIFO queue (raw loop, 64 in flight; {} \
             replies){}",
            shared.replies,
            if fifo_missed {
                ""
            } else {
                ": met the target, so the load formed no backlog: cannot tell isolation from none"
            }
        ),
        value: show(&f, 1, " ms"),
        ceiling: format!("alone: {}", show(&a, 1, " ms")),
        ratio: ratio(med(&f), med(&a)),
        target: format!("must miss {target}"),
        verdict: Verdict::from_bool(fifo_missed),
    });
    let p99s = |pick: fn(&Tally) -> &Vec<f64>| {
        let one = |t: &Tally| show(&Summary::of(pick(t)), 1, " ms");
        format!("{} / {} / {}", one(&alone), one(&worker), one(&shared))
    };
    section.rows.push(Row::info(
        "quiet tenants' p99 e2e latency (due time → reply) alone / wafleet / FIFO",
        p99s(|t| &t.e2e_p99),
    ));
    section.rows.push(Row::info(
        "of which ingest: quiet tenants' p99 accept latency (due time → 200) alone / wafleet / FIFO",
        p99s(|t| &t.accept_p99),
    ));
    section.rows.push(Row::info(
        "messages ready when the offered load ended: noisy tenant's queue (wafleet) / shared queue (FIFO)",
        format!("{} / {}", show(&Summary::of(&worker.backlog), 0, ""), show(&Summary::of(&shared.backlog), 0, "")),
    ));
    section.notes.push(format!(
        "Rates: the noisy tenant offers {noisy_rate:.0}/s = 2× the larger of one tenant's drain rate through the worker \
         ({one_tenant:.0}/s, a backlog of {count} in one tenant queue) and the FIFO loop's drain rate ({fifo_rate:.0}/s, \
         {count} in the shared queue), both measured in this run; quiet tenants {r:.2}/s each ({:.1}/s together). \
         {:.0} s open-loop runs through ingest; per repeat: quiet alone, then with the noisy tenant through the worker, \
         then through the FIFO queue (worker stopped, tenant queues unbound from `wa.inbound` so each message \
         is stored once), {} repeats. After each noisy run the tenant queues are purged and pending replies \
         cancelled; `bench.fifo` exists only during its run. A quiet event without a reply after \
         the wait ({:.0} s after the load began) counts with the time waited.",
        r * QUIET as f64,
        dur.as_secs_f64(),
        ctx.reps(),
        wait.as_secs_f64()
    ));
    section.notes.push(
        "The target is judged from ingest's 200 to the reply: the queue, processing and send, where per-tenant \
         queues and one shared queue differ. The webhook requests of both drains share one load generator and one \
         ingest with the noisy tenant, so a saturated ingest would delay the quiet tenants on both alike; the e2e and \
         accept rows show how much it did."
            .to_owned(),
    );
    section.notes.push(alone.note("alone"));
    section.notes.push(worker.note("with the noisy tenant through wafleet"));
    section.notes.push(shared.note("with the noisy tenant through the FIFO queue"));
    let series = [
        Series::new("quiet alone (wafleet)", alone.all),
        Series::new("quiet with noisy, wafleet", worker.all),
        Series::new("quiet with noisy, shared FIFO", shared.all),
    ];
    match charts::noisy(&ctx.charts_dir, &series, bound) {
        Ok(files) => section.notes.push(format!("Chart and samples: {files}")),
        Err(e) => section.notes.push(format!("chart not written: {e:#}")),
    }
    ingest.stop(Duration::from_secs(15)).await?;
    sim.proc.stop(Duration::from_secs(5)).await?;
    owner.close().await;
    env.teardown().await?;
    section.seconds = started.elapsed().as_secs_f64();
    Ok(section)
}

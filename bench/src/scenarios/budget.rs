//! Scenario 7: Send budget: limiter and simulator on a compressed 6 s "minute". Under a backlog on every
//! tenant the measured send rate must stay within the budget and reach ≥ 0.95× of it, no 429,
//! and equal-weight tenants must get equal shares (the deficit-round-robin fairness bound) even
//! when one tenant holds ten times the backlog of the others.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use wafleet_shared::topology::QueueType;

use super::{load_backlog, med, ratio, show, Ctx};
use crate::env::{register_bridges, BenchEnv};
use crate::report::{Row, Section, Verdict};
use crate::stack::{start_worker, Sim};
use crate::stats::Summary;

const TITLE: &str = "7. Send budget (6 s window)";
/// The compressed "minute".
const WINDOW_SECS: u64 = 6;
/// The worker's default budget: 110 per window plus a burst of 5 (inside the API's 120).
const RATE_PER_WINDOW: f64 = 110.0;
const BURST: f64 = 5.0;
/// Tenants; tenant 0 holds ten times the backlog of the others.
const TENANTS: usize = 10;

/// Whether the send budget has landed in the worker: its settings are read by the worker's
/// config (the shared settings groups) and used by the fleet's budget.
pub fn present(repo: &Path) -> bool {
    fn scan(dir: &Path, found: &mut (bool, bool)) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                scan(&path, found);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                found.0 |= text.contains("WAFLEET_SEND_RATE_PER_MIN");
                found.1 |= text.contains("WAFLEET_BUDGET_WINDOW_SECS");
            }
        }
    }
    let mut found = (false, false);
    for dir in ["shared/src", "fleet/src", "worker/src"] {
        scan(&repo.join(dir), &mut found);
    }
    found.0 && found.1
}

/// Worker settings that lift the budget out of the way (scenarios other than this one).
pub fn lifted_env() -> Vec<(String, String)> {
    vec![
        ("WAFLEET_SEND_RATE_PER_MIN".into(), "1000000".into()),
        ("WAFLEET_SEND_BURST".into(), "100000".into()),
        ("WAFLEET_EGRESS_RATE_PER_MIN".into(), "1000000".into()),
        ("WAFLEET_EGRESS_BURST".into(), "100000".into()),
    ]
}

/// Runs the scenario.
// layout: a benchmark scenario reads as one script (set up, drive, measure, report) whose steps
// share the measured locals and timings; splitting it would pass them all around.
pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Section> {
    if !present(&ctx.repo) {
        return Ok(Section::not_run("budget", TITLE, "not run: send budget not present in worker/src"));
    }
    let started = Instant::now();
    let mut section = Section::new("budget", TITLE);
    let env = BenchEnv::recreate(&ctx.services).await?;
    let tenants = env.add_tenants(TENANTS, QueueType::Quorum).await?;
    let window = WINDOW_SECS.to_string();
    let sim = Sim::start(&ctx.bins, &["--window-secs", &window], &[]).await?;
    register_bridges(&sim.base, &tenants).await?;
    let windows = if ctx.quick { 1 } else { 6 };
    let budget_rate = RATE_PER_WINDOW / WINDOW_SECS as f64;
    // Enough that every tenant stays backlogged for the whole run (tenant 0 with 10×).
    let per_tenant = ((budget_rate * (windows + 3) as f64 * WINDOW_SECS as f64) / TENANTS as f64).ceil() as usize + 20;
    load_backlog(&env, &tenants[..1], per_tenant * 10, "bh").await?;
    load_backlog(&env, &tenants[1..], per_tenant * (TENANTS - 1), "bq").await?;
    let extra = vec![("WAFLEET_BUDGET_WINDOW_SECS".to_owned(), window.clone())];
    let (worker, _, _) = start_worker(&ctx.bins, &env, &sim.base, &extra, Duration::from_secs(120)).await?;
    // One window to fill the outbox, then the measured windows.
    tokio::time::sleep(Duration::from_secs(WINDOW_SECS)).await;
    let from = chrono::Utc::now();
    tokio::time::sleep(Duration::from_secs(WINDOW_SECS * windows)).await;
    let to = chrono::Utc::now();
    let sends = sim.sends().await?;
    let (sim_max, rejected_429) = sim.limit_counts().await?;
    worker.stop(Duration::from_secs(15)).await?;
    sim.proc.stop(Duration::from_secs(5)).await?;

    let in_range: Vec<_> = sends.iter().filter(|s| s.at >= from && s.at < to).collect();
    let span = (to - from).num_milliseconds() as f64 / 1000.0;
    // Per measured window (aligned to the start of the measurement).
    let mut per_window = vec![0f64; windows as usize];
    for s in &in_range {
        let i = ((s.at - from).num_milliseconds() as f64 / 1000.0 / WINDOW_SECS as f64) as usize;
        if let Some(w) = per_window.get_mut(i) {
            *w += 1.0;
        }
    }
    let rates: Vec<f64> = per_window.iter().map(|c| c / WINDOW_SECS as f64).collect();
    let overall = in_range.len() as f64 / span;
    let r = Summary::of(&rates);
    let max_window = per_window.iter().copied().fold(0.0, f64::max);
    section.rows.push(Row {
        metric: format!("send rate under backlog ({windows} windows of {WINDOW_SECS} s)"),
        value: format!("{overall:.2}/s; per window {}", show(&r, 2, "/s")),
        ceiling: format!("budget {RATE_PER_WINDOW:.0}/{WINDOW_SECS} s = {budget_rate:.2}/s"),
        ratio: ratio(overall, budget_rate),
        target: "≥ 0.95×".into(),
        verdict: Verdict::from_bool(overall >= 0.95 * budget_rate),
    });
    section.rows.push(Row {
        metric: "sends in the busiest measured window / proxy calls in the busiest simulator window".into(),
        value: format!("{max_window:.0} / {sim_max}"),
        ceiling: format!("rate + burst = {:.0}; API limit 120", RATE_PER_WINDOW + BURST),
        ratio: ratio(max_window, RATE_PER_WINDOW + BURST),
        target: "≤ budget, no 429".into(),
        verdict: Verdict::from_bool(max_window <= RATE_PER_WINDOW + BURST && sim_max <= 120 && rejected_429 == 0),
    });
    let mut by_tenant: HashMap<&str, f64> = HashMap::new();
    for s in &in_range {
        *by_tenant.entry(s.bridge.as_str()).or_default() += 1.0;
    }
    let counts: Vec<f64> =
        tenants.iter().map(|t| by_tenant.get(t.customer_ref.as_str()).copied().unwrap_or(0.0)).collect();
    let heavy = counts.first().copied().unwrap_or(0.0);
    let (lo, hi) = counts.iter().fold((f64::MAX, 0.0f64), |(lo, hi), c| (lo.min(*c), hi.max(*c)));
    let fair = in_range.len() as f64 / TENANTS as f64;
    section.rows.push(Row {
        metric: format!(
            "fairness: sends per tenant in the measured span ({TENANTS} tenants, weight 1, tenant 1 with 10× backlog)"
        ),
        value: format!("min {lo:.0}, max {hi:.0}, heavy tenant {heavy:.0}"),
        ceiling: format!("equal share {fair:.1}"),
        ratio: format!("max−min = {:.0}", hi - lo),
        target: "max − min ≤ 2".into(),
        verdict: Verdict::from_bool(hi - lo <= 2.0 && med(&r).is_finite()),
    });
    section.notes.push(format!(
        "Simulator `--window-secs {WINDOW_SECS}` (120 proxy calls per window), worker `WAFLEET_BUDGET_WINDOW_SECS={WINDOW_SECS}` \
         with the default 110 + burst 5; backlog loaded straight into the tenant queues ({} for tenant 1, {per_tenant} for \
         each other); measured from the sends recorded at the simulator after one window of fill. 429 answers: {rejected_429}.",
        per_tenant * 10
    ));
    env.teardown().await?;
    section.seconds = started.elapsed().as_secs_f64();
    Ok(section)
}

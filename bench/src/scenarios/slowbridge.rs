//! Scenario 9: wafleet against a seed-style synchronous handler (tenant lookup in Postgres, a
//! 50 ms bot, the send to the bridge, then 200), both beside the same simulator in the same run.
//! First closed loop at 64 and 512 connections with a fast bridge: requests answered and replies
//! delivered per second. Then open loop at one offered load with the bridge answering at once and
//! 300 ms late: ingest's accept latency (the worker running beside it) must stay flat, while the
//! seed handler's answer waits for the bridge.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sqlx::PgPool;
use wafleet_fleet::bot_settings::{set_bot, BotChange};
use wafleet_fleet::tenant::BotKind;
use wafleet_shared::topology::QueueType;

use super::{med, ratio, show, Ctx};
use crate::env::{register_bridges, BenchEnv, BenchTenant, API_KEY};
use crate::load::{closed_loop, open_loop, uniform, BodyFn, Target};
use crate::payload::webhook_body_of;
use crate::report::{Row, Section, Verdict};
use crate::serve::{seed_handler, slow_bot, Seed};
use crate::stack::{epoch_secs, start_ingest, start_worker, IngestOptions, Sim, UNLIMITED_NOTE};
use crate::stats::Summary;

const TITLE: &str = "9. Slow bridge and a seed-style synchronous handler";
/// Tenants the load is spread over (the worker's 64 in flight: 16 × 4).
const TENANTS: usize = 16;
/// The bot's run time, for wafleet's `http` bot and the seed handler alike.
const BOT_DELAY: Duration = Duration::from_millis(50);
/// How late the slow bridge answers a send.
const SLOW_BRIDGE_MS: u64 = 300;
/// Connections of the open-loop runs.
const OPEN_CONNS: usize = 64;
/// wafleet's requests answered per second against the seed handler's, same connections.
const TEN_X: f64 = 10.0;

/// What the two paths answer on: wafleet-ingest and the seed handler, same paths and bodies.
struct Paths {
    ingest: Target,
    seed: Target,
}

/// Empties what a previous run left: the tenant queues, pending replies (cancelled, so the
/// sender stops) and the simulator's record, so each run is measured on an idle worker.
async fn settle(env: &BenchEnv, tenants: &[BenchTenant], owner: &PgPool, sim: &Sim) -> anyhow::Result<()> {
    env.purge(tenants).await?;
    sqlx::query("update outbox set status = 'cancelled', updated_at = now() where status = 'pending'")
        .execute(owner)
        .await?;
    sim.clear().await
}

/// Sends recorded at the simulator per second inside `[from, from + dur)` (epoch seconds).
async fn delivered(sim: &Sim, from: f64, dur: Duration) -> anyhow::Result<f64> {
    let n = sim.sends_between(from, from + dur.as_secs_f64()).await?;
    Ok(n as f64 / dur.as_secs_f64())
}

/// Closed loop at `conns` on `target`: answers per second and replies delivered per second in
/// the same window.
async fn closed(
    sim: &Sim,
    target: &Target,
    conns: usize,
    warmup: Duration,
    dur: Duration,
) -> anyhow::Result<(f64, f64)> {
    let from = epoch_secs(SystemTime::now()) + warmup.as_secs_f64();
    let r = closed_loop(target, conns, warmup, dur).await?;
    Ok((r.rate(), delivered(sim, from, dur).await?))
}

/// Closed-loop rows: requests answered (target ≥ 10×) and replies delivered per second.
async fn ten_times(
    ctx: &Ctx,
    env: &BenchEnv,
    tenants: &[BenchTenant],
    owner: &PgPool,
    sim: &Sim,
    paths: &Paths,
    section: &mut Section,
) -> anyhow::Result<()> {
    let (warmup, dur) = (ctx.secs(1.0, 0.3), ctx.secs(10.0, 1.0));
    for conns in [64usize, 512] {
        let (mut answered, mut replies, mut seed_answered, mut seed_replies) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ctx.reps() {
            settle(env, tenants, owner, sim).await?;
            let (a, r) = closed(sim, &paths.seed, conns, warmup, dur).await?;
            seed_answered.push(a);
            seed_replies.push(r);
            settle(env, tenants, owner, sim).await?;
            let (a, r) = closed(sim, &paths.ingest, conns, warmup, dur).await?;
            answered.push(a);
            replies.push(r);
        }
        let (a, sa) = (Summary::of(&answered), Summary::of(&seed_answered));
        let (r, sr) = (Summary::of(&replies), Summary::of(&seed_replies));
        section.rows.push(Row {
            metric: format!("requests answered/s, {conns} connections, 50 ms bot, fast bridge (wafleet: ingest)"),
            value: show(&a, 0, "/s"),
            ceiling: format!("seed-style handler: {}", show(&sa, 0, "/s")),
            ratio: ratio(med(&a), med(&sa)),
            target: format!("≥ {TEN_X:.0}×"),
            verdict: Verdict::from_bool(med(&a) >= TEN_X * med(&sa)),
        });
        section.rows.push(Row {
            metric: format!("  replies delivered/s at the simulator in the same window, {conns} connections"),
            value: show(&r, 0, "/s"),
            ceiling: format!("seed-style handler: {}", show(&sr, 0, "/s")),
            ratio: ratio(med(&r), med(&sr)),
            target: "report".into(),
            verdict: Verdict::Info,
        });
    }
    section.notes.push(format!(
        "Closed loop: {} s warm-up then {} s measured, {} repeats, seed handler then wafleet in each (queues purged, \
         pending replies cancelled and the simulator's record cleared before each run). Replies delivered are the \
         sends the simulator recorded inside the measured window; wafleet's lag behind its accepts (the worker runs \
         its 50 ms bot and sends while ingest keeps accepting) is the difference between the two rows.",
        warmup.as_secs_f64(),
        dur.as_secs_f64(),
        ctx.reps()
    ));
    Ok(())
}

/// p50, p99 and p99.9 of the repeats, and the errors.
#[derive(Default)]
struct Tail {
    p50: Vec<f64>,
    p99: Vec<f64>,
    p999: Vec<f64>,
    errors: usize,
}

impl Tail {
    fn show(&self) -> String {
        let m = |v: &Vec<f64>| med(&Summary::of(v));
        format!("{:.1} / {:.1} / {:.1} ms", m(&self.p50), m(&self.p99), m(&self.p999))
    }

    fn p99(&self) -> f64 {
        med(&Summary::of(&self.p99))
    }
}

/// One open-loop run at `rate`, added to `tail`.
async fn open_run(target: &Target, rate: f64, dur: Duration, tail: &mut Tail) -> anyhow::Result<()> {
    let r = open_loop(target, OPEN_CONNS, uniform(rate, dur, TENANTS), Duration::from_secs(30)).await?;
    let mut l = r.latency(|_| true);
    tail.p50.extend(l.percentile_ms(50.0));
    tail.p99.extend(l.percentile_ms(99.0));
    tail.p999.extend(l.percentile_ms(99.9));
    tail.errors += r.errors();
    Ok(())
}

/// Open-loop rows: latency of both paths with the bridge fast and 300 ms late.
async fn slow_bridge(
    ctx: &Ctx,
    env: &BenchEnv,
    tenants: &[BenchTenant],
    owner: &PgPool,
    sim: &Sim,
    paths: &Paths,
    section: &mut Section,
) -> anyhow::Result<()> {
    // Half of what the seed handler's connections can carry with the slow bridge, so its
    // latency shows the bridge, not a queue in front of saturated connections.
    let busy = BOT_DELAY.as_secs_f64() + SLOW_BRIDGE_MS as f64 / 1000.0;
    let rate = 0.5 * OPEN_CONNS as f64 / busy;
    let dur = ctx.secs(10.0, 2.0);
    let mut tails: Vec<(Tail, Tail)> = Vec::new();
    for delay in [None, Some(SLOW_BRIDGE_MS)] {
        sim.set_delay(delay).await?;
        let (mut ingest, mut seed) = (Tail::default(), Tail::default());
        for _ in 0..ctx.reps() {
            settle(env, tenants, owner, sim).await?;
            open_run(&paths.ingest, rate, dur, &mut ingest).await?;
            settle(env, tenants, owner, sim).await?;
            open_run(&paths.seed, rate, dur, &mut seed).await?;
        }
        tails.push((ingest, seed));
    }
    sim.set_delay(None).await?;
    let [(fast_ingest, fast_seed), (slow_ingest, slow_seed)] =
        <[(Tail, Tail); 2]>::try_from(tails).map_err(|_| anyhow::anyhow!("expected two bridge speeds"))?;
    let bound = 2.0 * fast_ingest.p99() + 5.0;
    section.rows.push(Row {
        metric: format!(
            "wafleet ingest accept latency p50 / p99 / p99.9, bridge {SLOW_BRIDGE_MS} ms late, worker running \
             ({rate:.0}/s open loop)"
        ),
        value: slow_ingest.show(),
        ceiling: format!("same, bridge answering at once: {}", fast_ingest.show()),
        ratio: ratio(slow_ingest.p99(), fast_ingest.p99()),
        target: format!("p99 ≤ 2× + 5 ms = {bound:.1} ms, no errors"),
        verdict: Verdict::from_bool(slow_ingest.p99() <= bound && slow_ingest.errors == 0),
    });
    section.rows.push(Row {
        metric: format!("seed-style handler latency p50 / p99 / p99.9, bridge {SLOW_BRIDGE_MS} ms late ({rate:.0}/s)"),
        value: slow_seed.show(),
        ceiling: format!("same, bridge answering at once: {}", fast_seed.show()),
        ratio: ratio(slow_seed.p99(), fast_seed.p99()),
        target: "report".into(),
        verdict: Verdict::Info,
    });
    section.notes.push(format!(
        "Open loop: {rate:.0}/s (half of {OPEN_CONNS} connections / ({} ms bot + {SLOW_BRIDGE_MS} ms bridge)) for {} s \
         per run over {OPEN_CONNS} connections, latency from the due time, {} repeats, wafleet then the seed handler \
         in each; the slow bridge is the simulator's delay-only fault on every proxy call. Errors (non-200 or \
         unanswered): wafleet {} with the fast bridge, {} with the slow one; seed handler {} and {}.",
        BOT_DELAY.as_millis(),
        dur.as_secs_f64(),
        ctx.reps(),
        fast_ingest.errors,
        slow_ingest.errors,
        fast_seed.errors,
        slow_seed.errors,
    ));
    Ok(())
}

/// Runs the scenario.
// layout: a benchmark scenario reads as one script (set up, drive, measure, report) whose steps
// share the measured locals and timings; splitting it would pass them all around.
pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Section> {
    let started = Instant::now();
    let mut section = Section::new("slowbridge", TITLE);
    let env = BenchEnv::recreate(&ctx.services).await?;
    let tenants = env.add_tenants(TENANTS, QueueType::Quorum).await?;
    let sim = Sim::start(&ctx.bins, &["--unlimited"], &[]).await?;
    section.notes.push(UNLIMITED_NOTE.to_owned());
    register_bridges(&sim.base, &tenants).await?;

    // wafleet's bot: the worker's `http` bot calling a bench-served endpoint that takes 50 ms.
    let bot = slow_bot(BOT_DELAY).await?;
    let bot_url = url::Url::parse(&format!("http://{}/bot", bot.addr))?;
    let admin = wafleet_fleet::db::app_pool(&env.admin_url, 2)?;
    for t in &tenants {
        let change = BotChange {
            kind: BotKind::Http,
            url: Some(bot_url.clone()),
            rotate_secret: false,
            allow_other_chats: None,
        };
        set_bot(&admin, &t.customer_ref, &change).await?;
    }
    admin.close().await;
    let mut worker_env = ctx.budget_lifted();
    worker_env.push(("WAFLEET_HTTP_BOT_ALLOW_PRIVATE".into(), "true".into()));
    worker_env.push(("WAFLEET_HTTP_BOT_PORTS".into(), bot.addr.port().to_string()));
    let (ingest, addr) = start_ingest(&ctx.bins, &env, &IngestOptions::default()).await?;
    let (worker, _, _) = start_worker(&ctx.bins, &env, &sim.base, &worker_env, Duration::from_secs(120)).await?;

    let owner = env.owner_pool(12).await?;
    let seed_pool = env.owner_pool(10).await?;
    let seed = Seed {
        pool: seed_pool.clone(),
        http: reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build()?,
        sim_base: sim.base.clone(),
        api_key: API_KEY.into(),
        bot_delay: BOT_DELAY,
    };
    let seed_server = seed_handler(seed).await?;
    let paths = targets(&tenants, addr, seed_server.addr);

    ten_times(ctx, &env, &tenants, &owner, &sim, &paths, &mut section).await?;
    slow_bridge(ctx, &env, &tenants, &owner, &sim, &paths, &mut section).await?;

    section.notes.push(format!(
        "wafleet: ingest and one worker with production defaults (64 messages in flight, 4 per tenant) over \
         {TENANTS} quorum tenants, each with the `http` bot pointing at a bench-served endpoint that answers the \
         message's text after {} ms (WAFLEET_HTTP_BOT_ALLOW_PRIVATE=true, its port allowed; its send and egress \
         budgets below). Seed-style handler: a hyper server in the bench process; per request one query \
         on the bench database's `tenants` table (pool of 10), a {} ms sleep for the bot, the send to the tenant's \
         bridge at the same simulator (reqwest), then 200.",
        BOT_DELAY.as_millis(),
        BOT_DELAY.as_millis(),
    ));
    drop(seed_server);
    drop(bot);
    worker.stop(Duration::from_secs(15)).await?;
    ingest.stop(Duration::from_secs(15)).await?;
    sim.proc.stop(Duration::from_secs(5)).await?;
    seed_pool.close().await;
    owner.close().await;
    env.teardown().await?;
    section.seconds = started.elapsed().as_secs_f64();
    Ok(section)
}

/// The load generator's targets: same paths (`/webhook/<ref>/<token>`) and 600 B bodies on both.
fn targets(tenants: &[BenchTenant], ingest: SocketAddr, seed: SocketAddr) -> Paths {
    let refs: Arc<Vec<String>> = Arc::new(tenants.iter().map(|t| t.customer_ref.as_str().to_owned()).collect());
    let body: BodyFn = Arc::new(move |seq, t| webhook_body_of(&refs[t % refs.len()], "sb", seq, 600));
    let paths = Arc::new(tenants.iter().map(|t| t.path.clone()).collect::<Vec<_>>());
    Paths {
        ingest: Target { addr: ingest, paths: paths.clone(), body: body.clone() },
        seed: Target { addr: seed, paths, body },
    }
}

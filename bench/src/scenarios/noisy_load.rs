//! The noisy-tenant scenario's runs: one open-loop load through ingest, drained either by the
//! worker (per-tenant queues) or by the raw loop on the shared FIFO queue, measured as the quiet
//! tenants' end-to-end latency; and the drain rates the noisy tenant's rate is derived from.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use wafleet_shared::topology::QueueType;

use super::load_backlog;
use crate::env::{BenchEnv, BenchTenant, API_KEY};
use crate::fifo;
use crate::load::{open_loop, Arrival, BodyFn, Target};
use crate::payload::webhook_body;
use crate::raw::{raw_e2e, raw_loop};
use crate::stack::{epoch_secs, replies_by_marker, Sim};
use crate::stats::{middle_rate, Latencies};

/// Index of the noisy tenant; every other tenant is quiet.
pub const NOISY: usize = 0;

/// What drains the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drain {
    /// wafleet's worker on the per-tenant queues.
    Worker,
    /// The raw loop on [`fifo::FIFO_QUEUE`], every tenant's messages in one queue.
    Fifo,
}

/// The pieces every run uses.
pub struct Rig<'a> {
    /// The bench environment.
    pub env: &'a BenchEnv,
    /// The simulator (unlimited).
    pub sim: &'a Sim,
    /// Ingest's webhook address.
    pub addr: SocketAddr,
    /// Tenants; [`NOISY`] is the noisy one.
    pub tenants: &'a [BenchTenant],
    /// Owner pool for the raw loop and for clearing the outbox.
    pub owner: &'a PgPool,
}

/// What one run measured.
pub struct MixedRun {
    /// Quiet tenants' latency from ingest's 200 to the reply at the simulator: the queue,
    /// processing and send, the part the two drains differ in (the webhook request itself shares
    /// one load generator and one ingest with the noisy tenant on both). An event still without a
    /// reply at the end of the wait counts with the time waited (a lower bound), so a baseline that
    /// never catches up cannot pass.
    pub quiet: Latencies,
    /// Quiet tenants' e2e latency, due time → reply (same lower bound for missing replies).
    pub e2e: Latencies,
    /// Quiet tenants' accept latency at ingest (due time → 200): the part of `quiet` spent before
    /// the broker, where a saturated ingest or load generator would show.
    pub accept: Latencies,
    /// Quiet events with a reply.
    pub replies: usize,
    /// Quiet events without a reply at the end of the wait.
    pub missing: usize,
    /// Non-200 answers of ingest (either tenant).
    pub errors: usize,
    /// Messages ready when the offered load ended: the noisy tenant's queue (worker) or the shared
    /// queue (FIFO). Zero means no backlog formed.
    pub backlog: u64,
    /// Worst lag of the load generator's dispatcher, ms.
    pub lag_ms: f64,
}

/// Messages still ready for the quiet tenants on this path.
async fn quiet_left(rig: &Rig<'_>, drain: Drain) -> anyhow::Result<u64> {
    match drain {
        Drain::Worker => rig.env.ready_messages(&rig.tenants[NOISY + 1..]).await,
        Drain::Fifo => fifo::depth(&rig.env.amqp_url).await,
    }
}

/// Offers `arrivals` through ingest open-loop, then waits (at most `wait`) until the quiet
/// tenants' messages have left their queues and their replies are recorded at the simulator.
pub async fn offer(
    rig: &Rig<'_>,
    drain: Drain,
    arrivals: Vec<Arrival>,
    tag: &str,
    wait: Duration,
) -> anyhow::Result<MixedRun> {
    rig.sim.clear().await?;
    let owned_tag = tag.to_owned();
    let body: BodyFn = Arc::new(move |seq, _| webhook_body(&owned_tag, seq, 600));
    let paths = Arc::new(rig.tenants.iter().map(|t| t.path.clone()).collect());
    let target = Target { addr: rig.addr, paths, body };
    let r = open_loop(&target, 64, arrivals, Duration::from_secs(30)).await?;
    let backlog = match drain {
        Drain::Worker => rig.env.ready_messages(&rig.tenants[NOISY..=NOISY]).await?,
        Drain::Fifo => fifo::depth(&rig.env.amqp_url).await?,
    };
    let deadline = Instant::now() + wait;
    // Polling the queue depth first keeps the simulator's (large) send list from being fetched
    // while the quiet messages are still queued.
    while quiet_left(rig, drain).await? > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // (seq, due, accepted) of every quiet event ingest accepted, in seconds since the epoch.
    let want: Vec<(u64, f64, f64)> = r
        .outcomes
        .iter()
        .filter(|o| o.status == 200 && o.tenant != NOISY)
        .filter_map(|o| r.due(o.seq).map(|due| (o.seq, epoch_secs(due), epoch_secs(due) + o.latency_us as f64 / 1e6)))
        .collect();
    loop {
        let replies = replies_by_marker(&rig.sim.sends().await?);
        let found = want.iter().filter(|(seq, _, _)| replies.contains_key(&(tag.to_owned(), *seq))).count();
        if found < want.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        let now = epoch_secs(std::time::SystemTime::now());
        let (mut quiet, mut e2e) = (Latencies::new(), Latencies::new());
        for (seq, due, accepted) in &want {
            let at = replies.get(&(tag.to_owned(), *seq)).copied().unwrap_or(now);
            quiet.push_us(((at - accepted).max(0.0) * 1e6) as u64);
            e2e.push_us(((at - due).max(0.0) * 1e6) as u64);
        }
        return Ok(MixedRun {
            quiet,
            e2e,
            accept: r.latency(|t| t != NOISY),
            replies: found,
            missing: want.len() - found,
            errors: r.errors(),
            backlog,
            lag_ms: r.max_dispatch_lag_ms,
        });
    }
}

/// [`offer`] with the tenants routed into the shared FIFO queue and the raw loop draining it
/// (the worker stopped); afterwards the tenants are routed back and their queues purged.
pub async fn offer_fifo(rig: &Rig<'_>, arrivals: Vec<Arrival>, tag: &str, wait: Duration) -> anyhow::Result<MixedRun> {
    let refs: Vec<_> = rig.tenants.iter().map(|t| &t.customer_ref).collect();
    fifo::route_to_fifo(&rig.env.amqp_url, &refs, QueueType::Quorum).await?;
    let stop = CancellationToken::new();
    let (amqp, pool, limits, until) =
        (rig.env.amqp_url.clone(), rig.owner.clone(), fifo::limits(&rig.sim.base, API_KEY), stop.clone());
    let bound = wait + Duration::from_secs(120);
    let consumer = tokio::spawn(async move { raw_loop(&amqp, &pool, &limits, usize::MAX, bound, until).await });
    let run = offer(rig, Drain::Fifo, arrivals, tag, wait).await;
    stop.cancel();
    let consumed = consumer.await.context("the FIFO consumer panicked")?;
    fifo::route_to_tenants(&rig.env.amqp_url, &refs).await?;
    rig.env.purge(rig.tenants).await?;
    consumed.context("the FIFO consumer failed")?;
    run
}

/// After a worker run with the noisy tenant (worker stopped): drops the noisy backlog, in its
/// queue and in the outbox, so the next run starts from the same empty state.
pub async fn reset(rig: &Rig<'_>) -> anyhow::Result<()> {
    rig.env.purge(rig.tenants).await?;
    // The owner is a superuser, so row-level security does not hide other tenants' rows.
    sqlx::query("update outbox set status = 'cancelled' where status = 'pending'").execute(rig.owner).await?;
    Ok(())
}

/// Replies per second while the raw loop drains `count` messages of one tenant from the shared
/// FIFO queue (no worker running): the rate the noisy tenant must exceed for that queue to back up.
pub async fn fifo_drain_rate(rig: &Rig<'_>, count: usize) -> anyhow::Result<f64> {
    let refs: Vec<_> = rig.tenants.iter().map(|t| &t.customer_ref).collect();
    fifo::route_to_fifo(&rig.env.amqp_url, &refs, QueueType::Quorum).await?;
    load_backlog(rig.env, &rig.tenants[NOISY..=NOISY], count, "fcap").await?;
    rig.sim.clear().await?;
    let limits = fifo::limits(&rig.sim.base, API_KEY);
    let timeout = Duration::from_secs_f64((count as f64 / 20.0).max(60.0));
    let drained = raw_e2e(&rig.env.amqp_url, rig.owner, &limits, count, timeout).await;
    fifo::route_to_tenants(&rig.env.amqp_url, &refs).await?;
    rig.env.purge(rig.tenants).await?;
    let mut times = drained?;
    middle_rate(&mut times).context("too few FIFO completions to measure a rate")
}

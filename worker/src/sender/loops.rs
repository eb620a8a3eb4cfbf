//! The sender's long-running loops: the dispatcher and the bridge re-check of each account, plus
//! housekeeping and the account refresh.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::grant::Grant;
use super::settle::Unsettled;
use super::{Sender, Step};
use wafleet_fleet::accounts::{AccountId, AccountRuntime};
use wafleet_fleet::outbox;

impl Sender {
    /// Sends until `shutdown` fires: a dispatcher per account (up to `concurrency` sends in
    /// flight), a housekeeping loop, and an account refresh. Database outages are waited out with
    /// backoff.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        for warning in self.config.budget.warnings() {
            warn!("{warning}");
        }
        let tick = watch::Sender::new(0u64);
        let housekeeping = tokio::spawn(self.clone().housekeeping_loop(shutdown.clone()));
        let mut loops: HashMap<AccountId, (Arc<AccountRuntime>, CancellationToken, tokio::task::JoinHandle<()>)> =
            HashMap::new();
        let mut next_refresh = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_refresh {
                let delay = match self.accounts.refresh().await {
                    Ok((ready, failed)) => {
                        for (name, e) in failed {
                            warn!(account = %name, error = %e, "account key unavailable; its replies wait");
                        }
                        for account in ready {
                            let current = loops
                                .get(&account.id)
                                .is_some_and(|(a, _, h)| Arc::ptr_eq(a, &account) && !h.is_finished());
                            if !current {
                                if let Some((_, stop, _)) = loops.remove(&account.id) {
                                    stop.cancel();
                                }
                                let stop = shutdown.child_token();
                                let mut tasks = tokio::task::JoinSet::new();
                                tasks.spawn(self.clone().dispatch_loop(
                                    account.clone(),
                                    tick.subscribe(),
                                    stop.clone(),
                                ));
                                tasks.spawn(self.clone().recheck_loop(account.clone(), stop.clone()));
                                let task = async move { while tasks.join_next().await.is_some() {} };
                                loops.insert(account.id, (account, stop, tokio::spawn(task)));
                            }
                        }
                        self.config.account_refresh
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot read accounts; retrying");
                        self.config.account_refresh.min(Duration::from_secs(1))
                    }
                };
                next_refresh = tokio::time::Instant::now() + delay;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => tick.send_modify(|n| *n = n.wrapping_add(1)),
                _ = tokio::time::sleep_until(next_refresh) => {}
            }
        }
        for (_, (_, stop, handle)) in loops {
            stop.cancel();
            let _ = handle.await;
        }
        let _ = housekeeping.await;
    }

    /// The dispatcher of `account`: rounds of one transaction each (the finished sends' outcomes
    /// and a grant per free slot), the sends themselves in tasks of their own. Under load a round
    /// collects every send that finished during the one before, so commits grow fewer per reply
    /// as the load grows.
    async fn dispatch_loop(
        self: Arc<Self>,
        account: Arc<AccountRuntime>,
        mut tick: watch::Receiver<u64>,
        stop: CancellationToken,
    ) {
        let slots = self.config.concurrency.max(1);
        let mut in_flight: JoinSet<Unsettled> = JoinSet::new();
        // Outcomes of finished sends, written with the next round.
        let mut outcomes = Vec::new();
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            while let Some(done) = in_flight.try_join_next() {
                collect(done, &mut outcomes);
            }
            let free = slots.saturating_sub(in_flight.len());
            let (wait, wakeable) = if free == 0 {
                // Every slot is busy: only a finished send (or the stop) moves on.
                (Duration::from_secs(3600), false)
            } else {
                // Mark wakes seen before looking, so one that arrives meanwhile is not lost.
                tick.borrow_and_update();
                match self.round(&account, &mut outcomes, free).await {
                    Ok(round) => {
                        failures = 0;
                        for grant in round.grants {
                            in_flight.spawn(self.clone().send_owned(account.clone(), grant));
                        }
                        match round.stopped {
                            Step::Sent | Step::Skipped => continue,
                            Step::Wait(wait) => (wait, false),
                            Step::Idle(hint) => {
                                (hint.map_or(self.config.poll_interval, |h| h.min(self.config.poll_interval)), true)
                            }
                        }
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        warn!(account = %account.name, error = %e, "send round failed; backing off");
                        (Duration::from_millis(200u64.saturating_mul(1 << failures.min(5))), false)
                    }
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(done) = in_flight.join_next() => collect(done, &mut outcomes),
                r = tick.changed(), if wakeable => if r.is_err() { tokio::time::sleep(wait).await },
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // Sends in flight end on their own (the client's timeout bounds each); their outcomes
        // are written before the dispatcher stops.
        while let Some(done) = in_flight.join_next().await {
            collect(done, &mut outcomes);
        }
        for unsettled in outcomes {
            self.settle_alone(unsettled).await;
        }
    }

    /// [`Sender::send_granted`] for a task of its own.
    async fn send_owned(self: Arc<Self>, account: Arc<AccountRuntime>, grant: Grant) -> Unsettled {
        self.send_granted(&account, grant).await
    }

    async fn housekeeping_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let metrics_every = Duration::from_secs(10);
        let mut metrics_due = tokio::time::Instant::now();
        loop {
            if let Err(e) = self.housekeeping().await {
                warn!(error = %e, "outbox housekeeping failed");
            }
            if tokio::time::Instant::now() >= metrics_due {
                if let Err(e) = outbox::publish_metrics(&self.pool, &self.config.budget).await {
                    warn!(error = %e, "could not refresh outbox metrics");
                }
                metrics_due = tokio::time::Instant::now() + metrics_every;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.config.housekeeping_interval) => {}
            }
        }
    }
}

/// Keeps a finished send's outcome for the next round. A send task that panicked leaves its row
/// `sending` with a live claim: the age backstop (`WAFLEET_STALE_SENDING_SECS`) makes it
/// `unknown`, never resent.
fn collect(done: Result<Unsettled, JoinError>, outcomes: &mut Vec<Unsettled>) {
    match done {
        Ok(unsettled) => outcomes.push(unsettled),
        Err(e) => {
            error!(error = %e, "a send task ended without an outcome; its reply stays sending until the stale-sending sweep")
        }
    }
}

//! The sender's long-running loops: the send lanes and the bridge re-check of each account, plus
//! housekeeping and the account refresh.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Sender, Step};
use wafleet_fleet::accounts::{AccountId, AccountRuntime};
use wafleet_fleet::outbox;

impl Sender {
    /// Sends until `shutdown` fires: `concurrency` loops per account, a housekeeping loop, and an
    /// account refresh. Database outages are waited out with backoff.
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
                                let mut lanes = tokio::task::JoinSet::new();
                                for _ in 0..self.config.concurrency.max(1) {
                                    lanes.spawn(self.clone().account_loop(
                                        account.clone(),
                                        tick.subscribe(),
                                        stop.clone(),
                                    ));
                                }
                                lanes.spawn(self.clone().recheck_loop(account.clone(), stop.clone()));
                                let task = async move { while lanes.join_next().await.is_some() {} };
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

    async fn account_loop(
        self: Arc<Self>,
        account: Arc<AccountRuntime>,
        mut tick: watch::Receiver<u64>,
        stop: CancellationToken,
    ) {
        let mut failures = 0u32;
        // The outcome of the lane's last send, written with its next pick.
        let mut unsettled = None;
        while !stop.is_cancelled() {
            // Mark wakes seen before looking, so one that arrives meanwhile is not lost.
            tick.borrow_and_update();
            let (wait, wakeable) = match self.lane_step(&account, &mut unsettled).await {
                Ok(Step::Sent | Step::Skipped) => {
                    failures = 0;
                    continue;
                }
                Ok(Step::Wait(wait)) => {
                    failures = 0;
                    (wait, false)
                }
                Ok(Step::Idle(hint)) => {
                    failures = 0;
                    (hint.map_or(self.config.poll_interval, |h| h.min(self.config.poll_interval)), true)
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    warn!(account = %account.name, error = %e, "send step failed; backing off");
                    (Duration::from_millis(200u64.saturating_mul(1 << failures.min(5))), false)
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                r = tick.changed(), if wakeable => if r.is_err() { tokio::time::sleep(wait).await },
                _ = tokio::time::sleep(wait) => {}
            }
        }
        if let Some(unsettled) = unsettled {
            self.settle_alone(unsettled).await;
        }
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

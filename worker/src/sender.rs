//! The outbox sender: the only code that sends. Per WA Bridges account, one dispatcher keeps up
//! to `concurrency` sends in flight (one per tenant, so a tenant's replies keep their order). Each
//! round of the dispatcher is one transaction: it writes the outcomes of the sends that finished,
//! each in its tenant's scope, and grants every free slot a reply (`grant`): the account's fair
//! scheduler takes the budget token in Postgres (`outbox::pick`: round robin by tenant, weights,
//! caps, bridge state and 429 pauses, shared by every replica), the claim reads the row and its
//! tenant in that tenant's scope, and the send goes to that tenant's bridge with its account's key.
//!
//! States: `pending → sending → sent | failed | unknown | expired | cancelled`. A row is never
//! resent once it may have reached the person (`unknown`): a duplicate reply is worse than a
//! visible, reconcilable one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::ConnectOptions as _;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use wafleet_fleet::accounts::{AccountDirectory, AccountId, AccountRuntime, DirectorySettings};
use wafleet_fleet::budget::BudgetConfig;
use wafleet_fleet::clock::{Clock, DatabaseClock};
use wafleet_fleet::error::Result;
use wafleet_fleet::labels::TenantLabels;
use wafleet_fleet::outbox::{self, ClaimLease};

mod grant;
mod loops;
mod recheck;
mod settle;

use grant::Grant;
use settle::Unsettled;

/// Settings of the sender.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// How many rows one housekeeping pass settles (expired or cancelled replies).
    pub batch: i32,
    /// A row left `sending` for longer than this was cut by a crash: it becomes `unknown`.
    pub stale_sending_after: Duration,
    /// Upper bound of the retry backoff for 401 and connect errors.
    pub max_backoff: Duration,
    /// `WAFLEET_SENDER_ECHO_WINDOW_SECS`: how long a send answered 503 (or a 5xx other than
    /// 500/502/504) waits for the bridge's `from_me` echo before it is resent (default 30 s).
    pub echo_window: Duration,
    /// How often a disconnected bridge with waiting replies is asked for its status again.
    pub recheck: wafleet_fleet::bridge_recheck::RecheckPolicy,
    /// Longest idle wait before the scheduler looks again (other replicas' rows, caps freeing up).
    pub poll_interval: Duration,
    /// Budget of the default account and the window of every bucket.
    pub budget: BudgetConfig,
    /// How often accounts are re-read (new accounts, rotated key files).
    pub account_refresh: Duration,
    /// How often replies that can no longer be sent are settled and the metrics refreshed.
    pub housekeeping_interval: Duration,
    /// `WAFLEET_SENDER_CONCURRENCY`: sends in flight per account and replica (default 4). Grants
    /// stay serialised by the account's bucket row, and a tenant with a send in flight is not
    /// picked again until it completes, so one tenant's replies still go out in order.
    pub concurrency: usize,
    /// `WAFLEET_SENDER_DB_POOL_SIZE`: the sender's own connections (default 3), apart from the
    /// message path's pool, so a burst of inbound work cannot starve the replies.
    pub db_pool_size: u32,
    /// `WAFLEET_CLAIM_LEASE_SECS`: how long a silent (black-holed) worker keeps its claims and
    /// its open transactions before the server ends its sessions (see `outbox::lease`).
    pub claim_lease: Duration,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            batch: 32,
            stale_sending_after: Duration::from_secs(120),
            max_backoff: Duration::from_secs(60),
            echo_window: Duration::from_secs(30),
            recheck: wafleet_fleet::bridge_recheck::RecheckPolicy::default(),
            poll_interval: Duration::from_millis(500),
            budget: BudgetConfig::default(),
            account_refresh: Duration::from_secs(30),
            housekeeping_interval: Duration::from_secs(1),
            concurrency: 4,
            db_pool_size: 3,
            claim_lease: Duration::from_secs(10),
        }
    }
}

/// What one scheduling step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Step {
    /// A reply was sent (whatever the API answered).
    Sent,
    /// The picked row was taken by another replica or is no longer sendable; the token was
    /// returned. Try again at once.
    Skipped,
    /// Replies are due but the budget is empty or paused for this long.
    Wait(Duration),
    /// Nothing may be sent now; the hint says when a retry comes due, if known.
    Idle(Option<Duration>),
}

impl Step {
    /// Combines the steps of several accounts: any progress wins, then the shortest wait.
    fn merge(self, other: Step) -> Step {
        use Step::*;
        let shorter = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (self, other) {
            (Sent, _) | (_, Sent) => Sent,
            (Skipped, _) | (_, Skipped) => Skipped,
            (Wait(a), Wait(b)) => Wait(a.min(b)),
            (Wait(a), Idle(_)) | (Idle(_), Wait(a)) => Wait(a),
            (Idle(a), Idle(b)) => Idle(shorter(a, b)),
        }
    }
}

/// The outbox sender.
pub struct Sender {
    pool: PgPool,
    accounts: Arc<AccountDirectory>,
    config: SenderConfig,
    wake: Arc<Notify>,
    clock: Arc<dyn Clock>,
    /// Budget wait accumulated per account since its last send (the limiter-wait histogram).
    waited: std::sync::Mutex<HashMap<AccountId, Duration>>,
    /// Bounded `tenant` metric labels (shared with the consumers in the worker).
    labels: Arc<TenantLabels>,
    /// The claim token bound to this sender's session; `None` (tests driving [`Sender::step`])
    /// leaves cut claims to the age backstop.
    lease: Option<Arc<ClaimLease>>,
    /// Stops the lease holder when the sender closes.
    lease_stop: CancellationToken,
}

impl Sender {
    /// A sender on `pool` sending for the accounts of `accounts`; `wake` is notified when
    /// replies are queued. Uses the database's clock.
    pub fn new(pool: PgPool, accounts: Arc<AccountDirectory>, config: SenderConfig, wake: Arc<Notify>) -> Self {
        let labels = Arc::new(TenantLabels::default());
        Self {
            pool,
            accounts,
            config,
            wake,
            clock: Arc::new(DatabaseClock),
            waited: Default::default(),
            labels,
            lease: None,
            lease_stop: CancellationToken::new(),
        }
    }

    /// Shares the worker's bounded tenant labels, so sends and processing agree on the top N.
    pub fn with_labels(mut self, labels: Arc<TenantLabels>) -> Self {
        self.labels = labels;
        self
    }

    /// The worker's sender, on its own pool of `config.db_pool_size` connections to
    /// `database_url`, reaching accounts through `settings` (startup maps `env:WA_API_KEY` to
    /// the worker's validated `WA_API_KEY`). Its claims are bound to a lease held on one more
    /// connection, and every connection runs with the lease's liveness timeouts, so a worker
    /// that dies or goes silent frees its claims and its bucket row locks within
    /// `config.claim_lease`.
    pub fn for_worker(
        database_url: &str,
        settings: DirectorySettings,
        config: SenderConfig,
        wake: Arc<Notify>,
    ) -> Result<Self> {
        let options: PgConnectOptions = database_url.parse()?;
        let options = outbox::lease::liveness_options(
            options.application_name("wafleet").log_statements(tracing::log::LevelFilter::Debug),
            config.claim_lease,
        );
        let pool = PgPoolOptions::new()
            .max_connections(config.db_pool_size.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        let accounts = Arc::new(AccountDirectory::new(pool.clone(), settings));
        let lease_stop = CancellationToken::new();
        let lease = ClaimLease::start(database_url, config.claim_lease, lease_stop.clone())?;
        Ok(Self { lease: Some(lease), lease_stop, ..Self::new(pool, accounts, config, wake) })
    }

    /// Closes the sender's pool and releases its lease (after its loops have stopped).
    pub async fn close(&self) {
        self.lease_stop.cancel();
        self.pool.close().await;
    }

    /// Evaluates budget and outbox rules on `clock` instead (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The account directory.
    pub fn accounts(&self) -> &AccountDirectory {
        &self.accounts
    }

    /// Marks crash leftovers `unknown` and settles replies that can no longer be sent. Spends no
    /// budget.
    pub async fn housekeeping(&self) -> Result<()> {
        let now = self.clock.now();
        outbox::mark_stale_sending(&self.pool, now, self.config.stale_sending_after, &self.labels).await?;
        outbox::settle(&self.pool, now, self.config.batch.max(1), &self.labels).await?;
        Ok(())
    }

    /// Housekeeping, then one send attempt per account (tests drive the sender with this and a
    /// manual clock).
    pub async fn step(&self) -> Result<Step> {
        self.housekeeping().await?;
        let (accounts, _) = self.accounts.refresh().await?;
        let mut step = Step::Idle(None);
        for account in &accounts {
            step = step.merge(self.send_next(account).await?);
        }
        Ok(step)
    }

    /// Grants, sends and writes the next reply of `account`, if its budget allows (tests drive the
    /// sender with this; the dispatcher writes each outcome with its next round instead).
    pub async fn send_next(&self, account: &AccountRuntime) -> Result<Step> {
        let round = self.round(account, &mut Vec::new(), 1).await?;
        let sent = !round.grants.is_empty();
        for grant in round.grants {
            let unsettled = self.send_granted(account, grant).await;
            self.settle_alone(unsettled).await;
        }
        Ok(if sent { Step::Sent } else { round.stopped })
    }

    /// One round of the dispatcher, driven by hand (tests): grants up to `slots` replies of
    /// `account` in one transaction, sends them side by side, and writes their outcomes together
    /// in one more. Returns how many were sent.
    pub async fn send_round(&self, account: &AccountRuntime, slots: usize) -> Result<usize> {
        let round = self.round(account, &mut Vec::new(), slots).await?;
        let sent = round.grants.len();
        let sends = round.grants.into_iter().map(|grant| self.send_granted(account, grant));
        let mut outcomes = futures::future::join_all(sends).await;
        if let Err(e) = self.round(account, &mut outcomes, 0).await {
            for unsettled in outcomes {
                self.settle_alone(unsettled).await;
            }
            return Err(e);
        }
        Ok(sent)
    }

    /// Sends a granted reply with its account's key to its tenant's bridge; the outcome is
    /// written later.
    async fn send_granted(&self, account: &AccountRuntime, grant: Grant) -> Unsettled {
        let Grant { claimed, traceparent } = grant;
        // The send joins the trace of the message that produced the reply.
        let span = tracing::info_span!("send", tenant = %claimed.tenant.customer_ref(), outbox_id = claimed.outbox_id, otel.kind = "client");
        wafleet_shared::trace::set_parent_from_traceparent(&span, traceparent.as_deref());
        // ISOLATION: the bridge comes from the tenant row read in the claim's scope, and the key
        // from the account that row names (checked by the grant).
        let outcome =
            account.client.send_text(claimed.tenant.bridge(), &claimed.chat, &claimed.body).instrument(span).await;
        self.unsettled(account, claimed, outcome).await
    }

    fn note_wait(&self, account: &AccountRuntime, wait: Duration) {
        if let Ok(mut waited) = self.waited.lock() {
            *waited.entry(account.id).or_default() += wait;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_beats_waiting_and_the_shortest_wait_wins() {
        let ms = Duration::from_millis;
        assert_eq!(Step::Wait(ms(5)).merge(Step::Sent), Step::Sent);
        assert_eq!(Step::Idle(None).merge(Step::Skipped), Step::Skipped);
        assert_eq!(Step::Wait(ms(50)).merge(Step::Wait(ms(20))), Step::Wait(ms(20)));
        assert_eq!(Step::Idle(Some(ms(1))).merge(Step::Wait(ms(20))), Step::Wait(ms(20)));
        assert_eq!(Step::Idle(Some(ms(9))).merge(Step::Idle(None)), Step::Idle(Some(ms(9))));
    }
}

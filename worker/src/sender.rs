//! The outbox sender: the only code that sends. `concurrency` lanes per WA Bridges account (one
//! send in flight per tenant, so a tenant's replies keep their order). Each send runs
//! the account's fair scheduler and takes its budget token in Postgres (`outbox::pick`: round
//! robin by tenant, weights, caps, bridge state and 429 pauses, shared by every replica), claims
//! the row in the same transaction scoped to its tenant, reads the bridge and the account from
//! that tenant's row, sends with that account's key, and records the outcome in the tenant's
//! scope.
//!
//! States: `pending → sending → sent | failed | unknown | expired | cancelled`. A row is never
//! resent once it may have reached the person (`unknown`): a duplicate reply is worse than a
//! visible, reconcilable one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::ConnectOptions as _;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::error;
use tracing::Instrument as _;

use wafleet_fleet::accounts::{AccountDirectory, AccountId, AccountRuntime, DirectorySettings};
use wafleet_fleet::budget::{self, BudgetConfig};
use wafleet_fleet::clock::{Clock, DatabaseClock};
use wafleet_fleet::db;
use wafleet_fleet::error::Result;
use wafleet_fleet::labels::TenantLabels;
use wafleet_fleet::outbox::{self, ClaimLease, ClaimedRow, Pick};
use wafleet_fleet::tenant::TenantStatus;

mod loops;
mod recheck;
mod settle;

use settle::{Claimed, Unsettled};

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
    /// `WAFLEET_SENDER_CONCURRENCY`: sends in flight per account and replica (default 4). Picks
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

    /// Picks, claims and sends the next reply of `account`, if its budget allows, and writes the
    /// outcome (tests drive the sender with this; the lanes write each outcome with their next
    /// pick instead).
    pub async fn send_next(&self, account: &AccountRuntime) -> Result<Step> {
        let mut unsettled = None;
        let step = self.lane_step(account, &mut unsettled).await;
        if let Some(unsettled) = unsettled {
            self.settle_alone(unsettled).await;
        }
        step
    }

    /// One step of a send lane: writes the outcome of the lane's last send (`unsettled`, taken
    /// once written) and picks, claims and sends the next reply in the same transaction, so a
    /// busy lane commits once per reply. The next send's outcome is left in `unsettled`. On an
    /// error nothing was written and `unsettled` is kept for the next step.
    async fn lane_step(&self, account: &AccountRuntime, unsettled: &mut Option<Unsettled>) -> Result<Step> {
        let claimed_by = match &self.lease {
            // Without a live lease a claim could be taken for a crashed one and its tenant's
            // next reply sent alongside it: wait for the lease (the database is likely away).
            Some(lease) => match lease.token() {
                Some(token) => Some(token),
                None => {
                    if let Some(unsettled) = unsettled.take() {
                        self.settle_alone(unsettled).await;
                    }
                    return Ok(Step::Idle(Some(Duration::from_millis(200))));
                }
            },
            None => None,
        };
        let mut tx = self.pool.begin().await?;
        let (undo, settled) = match unsettled.as_ref() {
            Some(last) => {
                let label = self.settle_in(&mut tx, last).await?;
                db::mark_undo_point(&mut tx).await?;
                (db::Undo::ToUndoPoint, Some(label))
            }
            None => (db::Undo::All, None),
        };
        let next = self.pick_and_claim(tx, account, claimed_by, undo).await?;
        // The transaction has ended, committing the last outcome whatever the pick did.
        if let (Some(last), Some(label)) = (unsettled.take(), settled) {
            self.settled(&last, label);
        }
        let (claimed, traceparent) = match next {
            Ok(granted) => granted,
            Err(step) => return Ok(step),
        };
        // The send joins the trace of the message that produced the reply.
        let span = tracing::info_span!("send", tenant = %claimed.tenant.customer_ref(), outbox_id = claimed.outbox_id, otel.kind = "client");
        wafleet_shared::trace::set_parent_from_traceparent(&span, traceparent.as_deref());
        let outcome =
            account.client.send_text(claimed.tenant.bridge(), &claimed.chat, &claimed.body).instrument(span).await;
        *unsettled = Some(self.unsettled(account, claimed, outcome).await);
        Ok(Step::Sent)
    }

    /// Runs the fair scheduler of `account` in `tx`, claims the reply it grants and takes the
    /// egress token, and ends `tx`: committed with a claimed reply (and its trace context), or
    /// undone as `undo` says with the step to report.
    async fn pick_and_claim(
        &self,
        mut tx: Transaction<'static, Postgres>,
        account: &AccountRuntime,
        claimed_by: Option<i32>,
        undo: db::Undo,
    ) -> Result<std::result::Result<(Claimed, Option<String>), Step>> {
        let now = self.clock.now();
        // An idle or waiting pick changed nothing but the bucket's refill, which the next pick
        // recomputes from the same stored state: undoing it gives the same tokens later and
        // spares a WAL flush while the bucket row is locked (idle lanes woken by new replies
        // otherwise queue durable commits in front of the picks that send).
        let (outbox_id, tenant_id) = match outbox::pick(&mut tx, account, now).await? {
            Pick::Idle(hint) => {
                db::end_undone(tx, undo).await?;
                return Ok(Err(Step::Idle(hint)));
            }
            Pick::Wait(wait) => {
                db::end_undone(tx, undo).await?;
                self.note_wait(account, wait);
                return Ok(Err(Step::Wait(wait)));
            }
            Pick::Granted { outbox_id, tenant_id, .. } => (outbox_id, tenant_id),
        };
        let Some(ClaimedRow { chat, body, attempts, traceparent, tenant }) =
            outbox::claim(&mut tx, tenant_id, outbox_id, now, claimed_by).await?
        else {
            // Another replica claimed it, or it expired meanwhile: undoing returns the token.
            db::end_undone(tx, undo).await?;
            return Ok(Err(Step::Skipped));
        };
        let tenant = match tenant {
            Some(t) if t.status() == TenantStatus::Active && t.account_id() == account.id => t,
            Some(t) if t.account_id() != account.id => {
                db::end_undone(tx, undo).await?;
                error!(tenant = %t.customer_ref(), account = %account.name, "scheduler picked a reply of another account; not sending");
                metrics::counter!(crate::metric::SENDER_ACCOUNT_MISMATCH_TOTAL).increment(1);
                return Ok(Err(Step::Skipped));
            }
            // Disabled or gone: housekeeping cancels the row without spending a token.
            _ => {
                db::end_undone(tx, undo).await?;
                return Ok(Err(Step::Skipped));
            }
        };
        // The egress group's token last, so the group's row (shared by every account behind
        // the same IP) is locked only until this commit. A refusal returns the account's token
        // and the claim with the same undo.
        let claimed = Claimed { outbox_id, tenant, chat, body, attempts, claimed_by };
        match budget::egress::take_and_end(&self.pool, tx, account, now, undo).await {
            Ok(budget::Take::Granted(_)) => {}
            Ok(budget::Take::Wait(wait)) => {
                self.note_wait(account, wait);
                return Ok(Err(Step::Wait(wait)));
            }
            Err(e) => {
                // The commit may have gone through unseen: the claim is given back, since only
                // this lane knows the reply was not sent. The lane's last outcome, written in the
                // same transaction, stays with the lane and is written again.
                self.release_in_doubt(&claimed).await;
                return Err(e);
            }
        }
        let waited = self.waited.lock().ok().and_then(|mut w| w.remove(&account.id)).unwrap_or_default();
        metrics::histogram!(crate::metric::BUDGET_WAIT_SECONDS, "account" => account.name.clone(), "bucket" => crate::metric::BUCKET_PROXY)
            .record(waited.as_secs_f64());
        Ok(Ok((claimed, traceparent)))
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

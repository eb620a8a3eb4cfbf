//! One round of an account's dispatcher: the outcomes of the sends that finished since the last
//! round and a grant for every free send slot, in one transaction and one commit. Each grant runs
//! the account's fair scheduler (`outbox::pick`: the account's token), claims the reply in its
//! tenant's scope and takes the egress group's token; a refused grant is undone to its savepoint
//! and ends the round, keeping the outcomes and the grants before it.

use std::time::Duration;

use sqlx::{Postgres, Transaction};
use tracing::{error, warn};
use wafleet_fleet::accounts::AccountRuntime;
use wafleet_fleet::budget::{self, Take};
use wafleet_fleet::db;
use wafleet_fleet::error::Result;
use wafleet_fleet::outbox::{self, ClaimedRow, Pick};
use wafleet_fleet::tenant::TenantStatus;

use super::settle::{Claimed, Unsettled};
use super::{Sender, Step};

/// A claimed reply, ready to send.
pub(super) struct Grant {
    pub(super) claimed: Claimed,
    /// Trace context of the message that produced the reply.
    pub(super) traceparent: Option<String>,
}

/// What a round granted, and why it stopped granting.
pub(super) struct Round {
    pub(super) grants: Vec<Grant>,
    /// `Sent` when every free slot got a reply; otherwise the step that ended the round.
    pub(super) stopped: Step,
}

/// One grant's result inside the round's transaction.
enum Granting {
    Granted(Grant),
    /// Nothing granted: undo this grant and end the round with the step.
    Refused(Step),
    /// The egress group refused: undo, end the round, and record the wait once it has ended.
    EgressRefused(Duration),
}

impl Sender {
    /// Writes `outcomes` and grants up to `free` replies of `account`, committing both at once.
    /// The outcomes are taken from `outcomes` once committed; on an error nothing was written,
    /// `outcomes` are kept for the next round, and a grant whose commit may have gone through
    /// unseen is given back.
    pub(super) async fn round(
        &self,
        account: &AccountRuntime,
        outcomes: &mut Vec<Unsettled>,
        free: usize,
    ) -> Result<Round> {
        let claimed_by = match &self.lease {
            Some(lease) => match lease.token() {
                Some(token) => Some(token),
                // Without a live lease a claim could be taken for a crashed one and its tenant's
                // next reply sent alongside it: write the outcomes and wait for the lease (the
                // database is likely away).
                None => {
                    for unsettled in outcomes.drain(..) {
                        self.settle_alone(unsettled).await;
                    }
                    return Ok(Round { grants: Vec::new(), stopped: Step::Idle(Some(Duration::from_millis(200))) });
                }
            },
            None => None,
        };
        let mut tx = self.pool.begin().await?;
        let mut labels = Vec::with_capacity(outcomes.len());
        for unsettled in outcomes.iter() {
            labels.push(self.settle_in(&mut tx, unsettled).await?);
        }
        let (grants, stopped, egress_refused) = self.grant_up_to(&mut tx, account, claimed_by, free).await?;
        if grants.is_empty() && outcomes.is_empty() {
            // An idle or waiting round changed nothing but the bucket's refill, which the next
            // pick recomputes from the same stored state: rolling back gives the same tokens
            // later and spares a WAL flush while the bucket row is locked.
            tx.rollback().await?;
        } else if let Err(e) = tx.commit().await {
            // The commit may have gone through unseen: each claim is given back, since only this
            // worker knows its reply was not sent. The outcomes stay and are written again.
            for grant in &grants {
                self.release_in_doubt(&grant.claimed).await;
            }
            return Err(e.into());
        }
        for (unsettled, label) in outcomes.drain(..).zip(labels) {
            self.settled(&unsettled, label);
        }
        // The grants are committed and must reach their sends: a failed note costs the account
        // only its turn at the group's next token.
        if egress_refused {
            if let Err(e) = budget::egress::note_waiting(&self.pool, account, self.clock.now()).await {
                warn!(account = %account.name, error = %e, "could not record the wait for an egress token");
            }
        }
        Ok(Round { grants, stopped })
    }

    /// Grants up to `free` replies inside `tx`, each undone to its own savepoint when refused.
    /// Returns the grants, the step that ended the granting, and whether the egress group refused.
    async fn grant_up_to(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        account: &AccountRuntime,
        claimed_by: Option<i32>,
        free: usize,
    ) -> Result<(Vec<Grant>, Step, bool)> {
        let mut grants = Vec::with_capacity(free);
        while grants.len() < free {
            db::mark_undo_point(tx).await?;
            match self.grant_one(tx, account, claimed_by).await? {
                Granting::Granted(grant) => grants.push(grant),
                Granting::Refused(step) => {
                    db::undo_to_point(tx).await?;
                    return Ok((grants, step, false));
                }
                Granting::EgressRefused(wait) => {
                    db::undo_to_point(tx).await?;
                    return Ok((grants, Step::Wait(wait), true));
                }
            }
        }
        Ok((grants, Step::Sent, false))
    }

    /// Runs the fair scheduler of `account` in `tx`, claims the reply it grants and takes the
    /// egress token.
    async fn grant_one(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        account: &AccountRuntime,
        claimed_by: Option<i32>,
    ) -> Result<Granting> {
        let now = self.clock.now();
        let (outbox_id, tenant_id) = match outbox::pick(tx, account, now).await? {
            Pick::Idle(hint) => return Ok(Granting::Refused(Step::Idle(hint))),
            Pick::Wait(wait) => {
                self.note_wait(account, wait);
                return Ok(Granting::Refused(Step::Wait(wait)));
            }
            Pick::Granted { outbox_id, tenant_id, .. } => (outbox_id, tenant_id),
        };
        // ISOLATION: the claim scopes the transaction to the picked tenant; the bridge and the
        // account of the send come from that tenant's row, read in its scope.
        let Some(ClaimedRow { chat, body, attempts, traceparent, tenant }) =
            outbox::claim(tx, tenant_id, outbox_id, now, claimed_by).await?
        else {
            // Another replica claimed it, or it expired meanwhile: undoing returns the token.
            return Ok(Granting::Refused(Step::Skipped));
        };
        let tenant = match tenant {
            Some(t) if t.status() == TenantStatus::Active && t.account_id() == account.id => t,
            Some(t) if t.account_id() != account.id => {
                error!(tenant = %t.customer_ref(), account = %account.name, "scheduler picked a reply of another account; not sending");
                metrics::counter!(crate::metric::SENDER_ACCOUNT_MISMATCH_TOTAL).increment(1);
                return Ok(Granting::Refused(Step::Skipped));
            }
            // Disabled or gone: housekeeping cancels the row without spending a token.
            _ => return Ok(Granting::Refused(Step::Skipped)),
        };
        // The egress group's token last, so the group's row (shared by every account behind
        // the same IP) is locked from here to the commit.
        if let Take::Wait(wait) = budget::egress::take(tx, account, now).await? {
            self.note_wait(account, wait);
            return Ok(Granting::EgressRefused(wait));
        }
        let waited = self.waited.lock().ok().and_then(|mut w| w.remove(&account.id)).unwrap_or_default();
        metrics::histogram!(crate::metric::BUDGET_WAIT_SECONDS, "account" => account.name.clone(), "bucket" => crate::metric::BUCKET_PROXY)
            .record(waited.as_secs_f64());
        Ok(Granting::Granted(Grant {
            claimed: Claimed { outbox_id, tenant, chat, body, attempts, claimed_by },
            traceparent,
        }))
    }
}

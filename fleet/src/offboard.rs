//! `wafleet tenants offboard`: stop, drain and tombstone one tenant, step by step. Every step is
//! idempotent, so an interrupted run is finished by running the command again; `--dry-run`
//! reports what each step would do and changes nothing.
//!
//! Steps: (1) status `offboarded` (consumers stop, its URLs stop working, the ref is taken for
//! good); (2, 3) purge then delete `wa.tenant.<ref>` and `wa.dlq.<ref>` on a fresh channel
//! (if-empty for classic queues; see `lifecycle::purge_and_delete` for quorum ones); (4) cancel
//! its pending replies; (5) delete its bridge at WA Bridges, found by its own bridge key in the
//! account's listing, and prove by listing again that it is gone; (6) confirm the tombstone.
//!
//! ISOLATION: every step names this tenant only: its ref, its queues, its rows in its own scope,
//! and the bridge whose `customer_ref` is its own bridge key, deleted with its own account's key.

use serde::Serialize;
use wafleet_shared::CustomerRef;

use crate::budget::Bucket;
use crate::db;
use crate::error::{Conflict, Error, Result};
use crate::lifecycle::{purge_and_delete, tenant_queues, Fleet, QueueFate};
use crate::outbox;
use crate::tenant::{self, TenantStatus};

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum StepState {
    /// Done now.
    Done,
    /// Nothing to do: an earlier run did it.
    AlreadyDone,
    /// Dry run: it would do this.
    WouldDo,
}

impl StepState {
    /// Short label for output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::AlreadyDone => "already done",
            Self::WouldDo => "would do",
        }
    }
}

/// One step's report.
#[derive(Clone, Debug, Serialize)]
pub struct OffboardStep {
    /// 1-based step number.
    pub number: u8,
    /// What the step is.
    pub name: String,
    /// How it ended.
    pub state: StepState,
    /// Counts and ids.
    pub detail: String,
}

/// Offboards `customer_ref`, calling `on_step` after each step (the CLI prints as it goes).
pub async fn offboard(
    fleet: &Fleet,
    customer_ref: &CustomerRef,
    dry_run: bool,
    on_step: &mut (dyn FnMut(&OffboardStep) + Send),
) -> Result<Vec<OffboardStep>> {
    let mut steps = Vec::new();
    let mut report = |number: u8, name: String, state: StepState, detail: String| {
        let step = OffboardStep { number, name, state, detail };
        on_step(&step);
        steps.push(step);
    };
    let meta = tenant::lookup(&fleet.pool, customer_ref)
        .await?
        .ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))?;
    let was_offboarded = meta.status == TenantStatus::Offboarded;

    // 1. Stop consuming: the consumers drop tombstoned tenants on the change notification, and
    // the worker refuses their messages from now on.
    let name = "mark offboarded (consumers stop; its webhook URLs stop working)".to_owned();
    if dry_run {
        let state = if was_offboarded { StepState::AlreadyDone } else { StepState::WouldDo };
        report(1, name, state, format!("status is {}", meta.status.as_str()));
    } else {
        let (_, already): (i64, bool) = sqlx::query_as("select tenant_id, already from wafleet_offboard_tenant($1)")
            .bind(customer_ref.as_str())
            .fetch_one(&fleet.pool)
            .await?;
        let state = if already { StepState::AlreadyDone } else { StepState::Done };
        report(1, name, state, "status offboarded".into());
    }

    // 2, 3. The queues (declared with the tenant's queue type, the DLQ too).
    let queue_type = tenant::load_by_ref(&fleet.pool, customer_ref).await?.queue_type();
    for (i, queue) in tenant_queues(customer_ref).into_iter().enumerate() {
        let fate = purge_and_delete(&fleet.endpoints.amqp_url, &queue, queue_type, dry_run).await?;
        let (state, detail) = match fate {
            QueueFate::Absent => (StepState::AlreadyDone, "queue does not exist".to_owned()),
            QueueFate::Deleted(n) => (StepState::Done, format!("purged {n} message(s), deleted")),
            QueueFate::Holds(n) => (StepState::WouldDo, format!("holds {n} message(s)")),
        };
        report(2 + i as u8, format!("purge and delete {queue}"), state, detail);
    }

    // 4. Pending replies, in the tenant's own scope.
    let mut tx = db::begin_tenant(&fleet.pool, meta.id).await?;
    let pending = if dry_run {
        outbox::pending_count(&mut tx, meta.id).await?
    } else {
        outbox::cancel_pending(&mut tx, meta.id).await?
    };
    tx.commit().await?;
    let state = match (dry_run, pending) {
        (true, 0) | (false, 0) => StepState::AlreadyDone,
        (true, _) => StepState::WouldDo,
        (false, _) => StepState::Done,
    };
    report(4, "cancel pending replies".into(), state, format!("{pending} reply(ies)"));

    // 5. The bridge at WA Bridges.
    let (state, detail) = delete_bridge(fleet, customer_ref, dry_run).await?;
    report(5, "delete the bridge at WA Bridges".into(), state, detail);

    // 6. The tombstone: the ref stays taken, and `tenants add` refuses it.
    let (state, detail) = tombstone(fleet, customer_ref, dry_run, was_offboarded).await?;
    report(6, "tombstone".into(), state, detail);
    Ok(steps)
}

/// Step 6: checks that the ref is tombstoned (it stays taken, and `tenants add` refuses it).
async fn tombstone(
    fleet: &Fleet,
    customer_ref: &CustomerRef,
    dry_run: bool,
    was_offboarded: bool,
) -> Result<(StepState, String)> {
    let now = tenant::lookup(&fleet.pool, customer_ref).await?.map(|m| m.status);
    Ok(match (dry_run, now) {
        (_, Some(TenantStatus::Offboarded)) => {
            let state = if dry_run || was_offboarded { StepState::AlreadyDone } else { StepState::Done };
            (state, format!("{customer_ref} can never be used again"))
        }
        (true, _) => (StepState::WouldDo, format!("{customer_ref} would never be usable again")),
        (false, status) => {
            return Err(Conflict::NotTombstoned {
                customer_ref: customer_ref.clone(),
                status: status.map_or("missing", TenantStatus::as_str),
            }
            .into())
        }
    })
}

/// Finds the tenant's bridge in its account's listing by its own bridge key (never trusting a
/// recorded id alone: a wrong id would delete another bridge) and deletes it.
async fn delete_bridge(fleet: &Fleet, customer_ref: &CustomerRef, dry_run: bool) -> Result<(StepState, String)> {
    let tenant = tenant::load_by_ref(&fleet.pool, customer_ref).await?;
    let account = fleet.accounts.get(tenant.account_id()).await?;
    let listing = fleet.call_other(&account, || account.client.list_instances()).await?;
    let Some(instance) = listing.into_iter().find(|i| i.customer_ref == tenant.bridge().key()) else {
        return Ok((StepState::AlreadyDone, format!("no bridge {} at WA Bridges", tenant.bridge().key())));
    };
    if dry_run {
        return Ok((StepState::WouldDo, format!("DELETE /api/instances/{} ({})", instance.id, instance.customer_ref)));
    }
    fleet.call_other(&account, || account.client.delete_instance(instance.id)).await?;
    // The reference does not say whether `/api/instances/:id` takes the numeric id or the
    // customer_ref, and a 404 reads the same as "already gone": only the listing proves it.
    if is_listed(fleet, &account, tenant.bridge().key()).await? {
        // ISOLATION: a key that is a number could be read as another bridge's numeric id, so
        // only a key that cannot be one is sent in its place.
        if tenant.bridge().key().parse::<i64>().is_err() {
            fleet.call_other(&account, || account.client.delete_instance_by_key(tenant.bridge())).await?;
        }
        if is_listed(fleet, &account, tenant.bridge().key()).await? {
            return Err(Conflict::BridgeStillListed { bridge: instance.customer_ref, instance_id: instance.id }.into());
        }
    }
    Ok((StepState::Done, format!("instance {} ({}), no longer listed", instance.id, instance.customer_ref)))
}

/// Whether the account's listing still holds a bridge with this key.
async fn is_listed(fleet: &Fleet, account: &crate::accounts::AccountRuntime, key: &str) -> Result<bool> {
    let listing = fleet.call_other(account, || account.client.list_instances()).await?;
    Ok(listing.iter().any(|i| i.customer_ref == key))
}

impl Fleet {
    /// An API call under the `other` bucket.
    async fn call_other<T, F, Fut>(&self, account: &crate::accounts::AccountRuntime, call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, crate::bridge_client::ApiError>>,
    {
        self.call_api(account, Bucket::Other, call).await
    }
}

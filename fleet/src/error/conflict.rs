//! Requests that conflict with the fleet's current state.

use wafleet_shared::CustomerRef;

/// A request that conflicts with the fleet's current state.
#[derive(Debug, thiserror::Error)]
pub enum Conflict {
    /// A definer function refused the change (its own `raise exception` text).
    #[error("{}", .0.message())]
    Refused(Box<dyn sqlx::error::DatabaseError>),
    /// A live admin token already has this name.
    #[error("a live admin token named {0} exists; revoke it first")]
    TokenName(String),
    /// Another tenant already has this bridge key.
    #[error("bridge {0} already belongs to another tenant")]
    BridgeTaken(String),
    /// `tenants add --bot http` for an existing tenant with another URL.
    #[error("tenant {0} already exists with another bot URL: use `wafleet tenants set-bot`")]
    BotUrl(CustomerRef),
    /// The tenant is not active, so its dead letters cannot be replayed.
    #[error("tenant {customer_ref} is {status}; enable it before replaying")]
    NotActive {
        /// The tenant.
        customer_ref: CustomerRef,
        /// Its status (`disabled`, `offboarded`).
        status: &'static str,
    },
    /// The tenant is a tombstone.
    #[error("tenant {0} was offboarded")]
    Offboarded(CustomerRef),
    /// The tenant is a tombstone and its queues are deleted.
    #[error("tenant {0} was offboarded; its queues are gone")]
    QueuesGone(CustomerRef),
    /// A page of dead letters asked to continue after a message that is no longer where the
    /// previous page saw it (a replay or purge moved the queue).
    #[error("the dead letters of {0} changed since the previous page; start again without a cursor")]
    DeadLettersMoved(CustomerRef),
    /// WA Bridges answered for another bridge than the one asked about.
    #[error(
        "WA Bridges answered customer_ref {answered:?} (id {instance_id}) for bridge {expected:?}; nothing was stored"
    )]
    ForeignInstance {
        /// The bridge key WA Bridges answered with.
        answered: String,
        /// The instance id it answered with.
        instance_id: i64,
        /// The tenant's bridge key.
        expected: String,
    },
    /// Offboarding deleted a tenant's bridge, yet WA Bridges still lists it: it still runs and is
    /// still billed.
    #[error(
        "bridge {bridge:?} (instance {instance_id}) is still listed at WA Bridges after its delete, so it \
         still runs and is billed; delete it in the WA Bridges dashboard, then run the offboard again"
    )]
    BridgeStillListed {
        /// The tenant's bridge key.
        bridge: String,
        /// The instance id that was deleted.
        instance_id: i64,
    },
    /// A queue kept receiving messages while offboarding tried to delete it.
    #[error("{0} kept receiving messages; run offboard again")]
    QueueBusy(String),
    /// The tenant is not a tombstone after offboarding.
    #[error("tenant {customer_ref} is {status} after offboarding; run again")]
    NotTombstoned {
        /// The tenant.
        customer_ref: CustomerRef,
        /// What it is instead (`active`, `disabled`, or `missing`).
        status: &'static str,
    },
    /// An admin operation row disappeared right after it was written.
    #[error("operation {0} vanished right after it was recorded")]
    OperationVanished(uuid::Uuid),
}

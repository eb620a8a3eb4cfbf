//! Installing and upgrading a fleet: the schema with each duty's role, then the broker topology
//! and its policies.

use wafleet_shared::CustomerRef;

use crate::db::{self, DutyRoles, RoleSetup};
use crate::endpoints::Endpoints;
use crate::error::{InvalidInput, ManagementError, Result};
use crate::topology;

/// `wafleet migrate`: schema and the grants of each duty's role as the owner, then the
/// fleet-wide broker topology and its policies, with the default tenant-queue bound.
pub async fn migrate(
    owner_url: &str,
    roles: &DutyRoles,
    endpoints: &Endpoints,
    retry_tiers: &[topology::RetryTier],
) -> Result<RoleSetup> {
    migrate_with(owner_url, roles, endpoints, retry_tiers, topology::DEFAULT_TENANT_QUEUE_MAX_BYTES).await
}

/// Like [`migrate`], with `tenant_queue_max_bytes` (`WAFLEET_TENANT_QUEUE_MAX_BYTES`) as the
/// bound of every tenant queue without an override of its own.
pub async fn migrate_with(
    owner_url: &str,
    roles: &DutyRoles,
    endpoints: &Endpoints,
    retry_tiers: &[topology::RetryTier],
    tenant_queue_max_bytes: u64,
) -> Result<RoleSetup> {
    let setup = db::migrate(owner_url, roles).await?;
    let connection = wafleet_shared::amqp::connect(&endpoints.amqp_url, "wafleet-cli").await?;
    let channel = connection.create_channel().await?;
    topology::declare_base(&channel).await?;
    topology::declare_retry_tiers(&channel, retry_tiers).await?;
    wafleet_shared::amqp::close(connection).await;
    let management = endpoints.management()?;
    management.apply_policies_with(tenant_queue_max_bytes).await.map_err(|e| ManagementError::Policies(Box::new(e)))?;
    // The per-tenant overrides are rebuilt too, so a release that changes a key of the
    // tenant-queue policy (delivery limit, DLX) changes it on overridden queues as well.
    let owner = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(owner_url).await?;
    let overrides: Vec<(String, i64)> = sqlx::query_as(
        "select customer_ref, queue_max_bytes from tenants where queue_max_bytes is not null and status <> 'offboarded'",
    )
    .fetch_all(&owner)
    .await?;
    owner.close().await;
    for (raw, bytes) in overrides {
        let customer_ref = CustomerRef::parse(&raw).map_err(|source| InvalidInput::CustomerRef { raw, source })?;
        let bytes = u64::try_from(bytes).map_err(|_| InvalidInput::QueueBound)?;
        management
            .set_tenant_queue_bound(&customer_ref, Some(bytes))
            .await
            .map_err(|e| ManagementError::Policies(Box::new(e)))?;
    }
    Ok(setup)
}

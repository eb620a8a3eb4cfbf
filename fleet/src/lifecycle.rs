//! Tenant lifecycle against the WA Bridges API and the broker: provision, bridge status,
//! reconcile, URL rotation and offboarding. Every API call takes a token from the right bucket
//! of the tenant's own account and honours 429s (pausing the account for everyone). Shared by the
//! CLI and, later, the admin API.
//!
//! ISOLATION: each command acts on one tenant, read from its own row in its own scope; its bridge
//! key and account come from that row. Reconcile compares per account and only records ids.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::FieldTable;
use secrecy::SecretString;
use serde::Serialize;
use sqlx::PgPool;
use wafleet_shared::topology::{self as names, QueueType};
use wafleet_shared::CustomerRef;

use crate::accounts::{AccountDirectory, AccountRuntime};
use crate::bridge_client::{ApiError, Instance};
use crate::budget::{self, Bucket};
use crate::clock::Clock;
use crate::db;
use crate::endpoints::Endpoints;
use crate::error::{Conflict, Error, InvalidInput, Result};
use crate::tenant::{self, TenantId, TenantStatus};

/// What the lifecycle commands need.
pub struct Fleet {
    /// Application-role pool.
    pub pool: PgPool,
    /// Accounts and their clients.
    pub accounts: Arc<AccountDirectory>,
    /// Broker endpoints (offboarding purges queues).
    pub endpoints: Endpoints,
    /// Clock of the budget (the database's in production).
    pub clock: Arc<dyn Clock>,
    /// Longest wait for a budget token before giving up.
    pub max_budget_wait: Duration,
}

impl Fleet {
    /// The lifecycle context over `pool`, with the accounts of `settings` and the database's
    /// clock; a budget token is waited for at most 120 s.
    pub fn new(pool: PgPool, endpoints: Endpoints, settings: crate::accounts::DirectorySettings) -> Self {
        Self {
            accounts: Arc::new(AccountDirectory::new(pool.clone(), settings)),
            pool,
            endpoints,
            clock: Arc::new(crate::clock::DatabaseClock),
            max_budget_wait: Duration::from_secs(120),
        }
    }

    /// Runs one API call under `bucket` of `account`: a token first; a 429 pauses the account
    /// and the call is tried again (three times at most).
    pub(crate) async fn call_api<T, F, Fut>(&self, account: &AccountRuntime, bucket: Bucket, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, ApiError>>,
    {
        for _ in 0..3 {
            budget::take_waiting(&self.pool, account, bucket, &*self.clock, self.max_budget_wait).await?;
            match call().await {
                Err(ApiError::RateLimited { retry_after }) => {
                    budget::pause(&self.pool, account, bucket, retry_after.map(Duration::from_secs), self.clock.now())
                        .await?;
                }
                other => return other.map_err(Error::from),
            }
        }
        Err(Error::BridgeApi(ApiError::RateLimited { retry_after: None }))
    }
}

/// Result of `provision`.
#[derive(Clone, Debug, Serialize)]
pub struct Provisioned {
    /// The tenant.
    pub customer_ref: String,
    /// WA Bridges' numeric id, now stored in `tenants.instance_id`.
    pub instance_id: i64,
    /// The id recorded before, if any (equal when provisioning again).
    pub previous_instance_id: Option<i64>,
}

/// `wafleet provision`: `POST /api/instances` with the tenant's signed webhook URL, idempotent on
/// the bridge's `customer_ref`, under the provisioning bucket; checks the returned
/// `customer_ref` and stores the id. An existing bridge is returned unchanged by the API, so its
/// webhook URL is not updated (use the dashboard, or `tenants rotate-url` and the dashboard).
pub async fn provision(
    fleet: &Fleet,
    signing_key: &SecretString,
    customer_ref: &CustomerRef,
    base: &str,
) -> Result<Provisioned> {
    let tenant = tenant::load_by_ref(&fleet.pool, customer_ref).await?;
    if tenant.status() == TenantStatus::Offboarded {
        return Err(Conflict::Offboarded(customer_ref.clone()).into());
    }
    // A tenant added before bridge keys had to equal refs: a bridge provisioned for it would
    // deliver events that ingest refuses, so none is made.
    if tenant.bridge().key() != customer_ref.as_str() {
        return Err(InvalidInput::BridgeDiffersFromRef {
            customer_ref: customer_ref.clone(),
            bridge: tenant.bridge().key().to_owned(),
        }
        .into());
    }
    let (url, _) = crate::service::webhook_url(&fleet.pool, signing_key, customer_ref, base).await?;
    let account = fleet.accounts.get(tenant.account_id()).await?;
    // ISOLATION: provisioned with the tenant's own account key, for its own bridge key.
    let instance =
        fleet.call_api(&account, Bucket::Provision, || account.client.provision(tenant.bridge(), &url)).await?;
    check_customer_ref(&instance, tenant.bridge().key())?;
    let previous = record_instance_id(&fleet.pool, tenant.id(), Some(instance.id)).await?;
    Ok(Provisioned { customer_ref: customer_ref.to_string(), instance_id: instance.id, previous_instance_id: previous })
}

/// The API must answer for the bridge we asked about; anything else is stored nowhere.
pub fn check_customer_ref(instance: &Instance, expected: &str) -> Result<()> {
    if instance.customer_ref == expected {
        Ok(())
    } else {
        Err(Conflict::ForeignInstance {
            answered: instance.customer_ref.clone(),
            instance_id: instance.id,
            expected: expected.to_owned(),
        }
        .into())
    }
}

/// Stores the WA Bridges id in the tenant's own scope; returns the previous one.
async fn record_instance_id(pool: &PgPool, tenant: TenantId, instance_id: Option<i64>) -> Result<Option<i64>> {
    let mut tx = db::begin_tenant(pool, tenant).await?;
    let previous: Option<i64> = sqlx::query_scalar("select instance_id from tenants where tenant_id = $1 for update")
        .bind(tenant.get())
        .fetch_one(&mut *tx)
        .await?;
    if previous != instance_id {
        sqlx::query("update tenants set instance_id = $2, updated_at = now() where tenant_id = $1")
            .bind(tenant.get())
            .bind(instance_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(previous)
}

/// `wafleet bridges status`: the bridge's session status. A proxy call: it spends a token of the
/// tenant's account, like a send.
pub async fn bridge_status(fleet: &Fleet, customer_ref: &CustomerRef) -> Result<String> {
    let tenant = tenant::load_by_ref(&fleet.pool, customer_ref).await?;
    let account = fleet.accounts.get(tenant.account_id()).await?;
    fleet.call_api(&account, Bucket::Proxy, || account.client.status(tenant.bridge())).await
}

/// A bridge at WA Bridges that no tenant of its account claims.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ForeignBridge {
    /// Account it was listed in.
    pub account: String,
    /// WA Bridges id.
    pub instance_id: i64,
    /// Its `customer_ref`.
    pub customer_ref: String,
}

/// A recorded id that does not match what WA Bridges lists.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Mismatch {
    /// The tenant.
    pub customer_ref: String,
    /// Its bridge key.
    pub bridge: String,
    /// The id in `tenants.instance_id`.
    pub recorded_instance_id: Option<i64>,
    /// What WA Bridges lists under that id (another `customer_ref`), if anything.
    pub listed_customer_ref: Option<String>,
    /// The id WA Bridges lists for the tenant's bridge key, if any.
    pub listed_instance_id: Option<i64>,
}

/// What `bridges reconcile` found (and fixed).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReconcileReport {
    /// Accounts listed.
    pub accounts: Vec<String>,
    /// Accounts that could not be listed (key missing, API error).
    pub unreachable_accounts: Vec<(String, String)>,
    /// Bridges no tenant of the account claims (still billed). Never deleted automatically.
    pub bridges_without_tenant: Vec<ForeignBridge>,
    /// Bridges of offboarded tenants that still exist (offboarding did not finish).
    pub offboarded_with_bridge: Vec<ForeignBridge>,
    /// Active or disabled tenants whose bridge is not listed.
    pub tenants_without_bridge: Vec<String>,
    /// Recorded ids that disagree with the listing.
    pub mismatches: Vec<Mismatch>,
    /// What `--fix` changed.
    pub fixed: Vec<String>,
}

struct FleetRow {
    tenant_id: i64,
    customer_ref: String,
    bridge: String,
    instance_id: Option<i64>,
    status: String,
    account_id: i64,
}

async fn fleet_rows(pool: &PgPool) -> Result<Vec<FleetRow>> {
    let rows: Vec<(i64, String, String, Option<i64>, String, i64)> = sqlx::query_as(
        "select tenant_id, customer_ref, bridge, instance_id, status, account_id from wafleet_fleet_bridges()",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant_id, customer_ref, bridge, instance_id, status, account_id)| FleetRow {
            tenant_id,
            customer_ref,
            bridge,
            instance_id,
            status,
            account_id,
        })
        .collect())
}

/// `wafleet bridges reconcile [--fix]`: lists every account's bridges (`GET /api/instances`,
/// other bucket) and compares them with the tenants of that account. Webhook URLs cannot be
/// compared: the API does not return them. Read-only unless `fix`, which only records the listed
/// id on tenants whose recorded id is missing or stale. Nothing is ever deleted or provisioned.
pub async fn reconcile_bridges(fleet: &Fleet, fix: bool) -> Result<ReconcileReport> {
    let mut report = ReconcileReport::default();
    let rows = fleet_rows(&fleet.pool).await?;
    let (accounts, failed) = fleet.accounts.refresh().await?;
    report.unreachable_accounts = failed.into_iter().map(|(name, e)| (name, e.to_string())).collect();
    for account in accounts {
        let instances = match fleet.call_api(&account, Bucket::Other, || account.client.list_instances()).await {
            Ok(list) => list,
            Err(e) => {
                report.unreachable_accounts.push((account.name.clone(), e.to_string()));
                continue;
            }
        };
        report.accounts.push(account.name.clone());
        let tenants: Vec<&FleetRow> = rows.iter().filter(|r| r.account_id == account.id.get()).collect();
        for instance in &instances {
            let owner = tenants.iter().find(|t| t.bridge == instance.customer_ref);
            let foreign = ForeignBridge {
                account: account.name.clone(),
                instance_id: instance.id,
                customer_ref: instance.customer_ref.clone(),
            };
            match owner {
                None => report.bridges_without_tenant.push(foreign),
                Some(t) if t.status == "offboarded" => report.offboarded_with_bridge.push(foreign),
                Some(_) => {}
            }
        }
        for t in tenants {
            let listed = instances.iter().find(|i| i.customer_ref == t.bridge);
            let under_recorded_id = t.instance_id.and_then(|id| instances.iter().find(|i| i.id == id));
            if listed.is_none() && t.status != "offboarded" {
                report.tenants_without_bridge.push(t.customer_ref.clone());
            }
            let recorded_is_wrong = matches!(under_recorded_id, Some(i) if i.customer_ref != t.bridge);
            let recorded_is_stale = listed.is_some_and(|l| t.instance_id.is_some_and(|id| id != l.id));
            if recorded_is_wrong || recorded_is_stale {
                report.mismatches.push(Mismatch {
                    customer_ref: t.customer_ref.clone(),
                    bridge: t.bridge.clone(),
                    recorded_instance_id: t.instance_id,
                    listed_customer_ref: under_recorded_id.map(|i| i.customer_ref.clone()),
                    listed_instance_id: listed.map(|l| l.id),
                });
            }
            let wanted = listed.map(|l| l.id);
            // Only ever record what the listing says for this tenant's own bridge key; a wrong
            // id would make offboarding delete another bridge.
            if fix && t.instance_id != wanted && (wanted.is_some() || recorded_is_wrong) {
                record_instance_id(&fleet.pool, TenantId::from_db(t.tenant_id), wanted).await?;
                report.fixed.push(match wanted {
                    Some(id) => format!("{}: recorded instance id {id}", t.customer_ref),
                    None => format!("{}: cleared instance id that named another bridge", t.customer_ref),
                });
            }
        }
    }
    Ok(report)
}

/// `wafleet tenants rotate-url`: bumps the tenant's generation (revoking its current URL, and no
/// other tenant's) and returns the new URL. Set it on the bridge in the WA Bridges dashboard.
pub async fn rotate_url(
    pool: &PgPool,
    signing_key: &SecretString,
    customer_ref: &CustomerRef,
    base: &str,
) -> Result<String> {
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(InvalidInput::BaseOption.into());
    }
    let generation: Option<i64> =
        sqlx::query_scalar("select wafleet_bump_generation($1)").bind(customer_ref.as_str()).fetch_one(pool).await?;
    if generation.is_none() {
        return match tenant::lookup(pool, customer_ref).await? {
            Some(_) => Err(Conflict::Offboarded(customer_ref.clone()).into()),
            None => Err(Error::UnknownTenant(customer_ref.to_string())),
        };
    }
    let (url, _) = crate::service::webhook_url(pool, signing_key, customer_ref, base).await?;
    Ok(url)
}

/// Whether a lapin error is the broker's NOT_FOUND (the queue does not exist).
pub(crate) fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e, lapin::Error::ProtocolError(p) if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}

/// Whether a lapin error is PRECONDITION_FAILED (`if-empty` delete of a non-empty queue).
pub(crate) fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(e, lapin::Error::ProtocolError(p) if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}

/// What happened to a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum QueueFate {
    /// It did not exist (already deleted).
    Absent,
    /// Purged (this many messages) and deleted.
    Deleted(u32),
    /// Dry run: it holds this many messages.
    Holds(u32),
}

/// Purges `queue` and deletes it, each attempt on a fresh channel (a failed declare or delete
/// closes its channel); a message arriving in between only causes another try.
///
/// Classic queues are deleted with `if-empty`. Quorum queues refuse `if-empty` (RabbitMQ 3.10
/// answers NOT_IMPLEMENTED and closes the connection), so for them the queue must be seen empty
/// right after the purge and is then deleted without the flag. Whatever could land in that
/// instant belongs to a tenant already tombstoned, which the worker would drop anyway.
pub(crate) async fn purge_and_delete(
    amqp_url: &str,
    queue: &str,
    queue_type: QueueType,
    dry_run: bool,
) -> Result<QueueFate> {
    let connection = wafleet_shared::amqp::connect(amqp_url, "wafleet-offboard").await?;
    let result = async {
        let mut purged = 0u32;
        for _ in 0..5 {
            let channel = connection.create_channel().await?;
            let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
            let depth = match channel.queue_declare(queue, passive, FieldTable::default()).await {
                Ok(q) => q.message_count(),
                Err(e) if is_not_found(&e) => {
                    return Ok(if purged > 0 { QueueFate::Deleted(purged) } else { QueueFate::Absent });
                }
                Err(e) => return Err(e.into()),
            };
            if dry_run {
                return Ok(QueueFate::Holds(depth));
            }
            purged += channel.queue_purge(queue, QueuePurgeOptions::default()).await?;
            let if_empty = match queue_type {
                QueueType::Classic => true,
                _ => {
                    let now = channel.queue_declare(queue, passive, FieldTable::default()).await?.message_count();
                    if now > 0 {
                        continue;
                    }
                    false
                }
            };
            let options = QueueDeleteOptions { if_empty, ..QueueDeleteOptions::default() };
            match channel.queue_delete(queue, options).await {
                Ok(_) => return Ok(QueueFate::Deleted(purged)),
                Err(e) if is_precondition_failed(&e) || is_not_found(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Conflict::QueueBusy(queue.to_string()).into())
    }
    .await;
    wafleet_shared::amqp::close(connection).await;
    result
}

/// The names of a tenant's queues.
pub(crate) fn tenant_queues(customer_ref: &CustomerRef) -> [String; 2] {
    [names::tenant_queue(customer_ref), names::dlq_queue(customer_ref)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provisioning_answer_for_another_customer_ref_is_refused() {
        let answer = Instance { id: 42, customer_ref: "someone_else".into(), state: Some("running".into()) };
        let err = check_customer_ref(&answer, "cust_1").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("someone_else") && err.contains("nothing was stored"), "{err}");
        let ours = Instance { customer_ref: "cust_1".into(), ..answer };
        assert!(check_customer_ref(&ours, "cust_1").is_ok());
    }
}

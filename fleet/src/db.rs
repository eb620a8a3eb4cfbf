//! Postgres access: pools, migrations with the grants of each duty's role (`roles`), the
//! role check every binary runs at start, and tenant-scoped transactions.
//!
//! ISOLATION: `begin_tenant` is the only way message-handling code opens a transaction on
//! tenant data; it sets `app.tenant_id` transaction-locally, which every RLS policy reads.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{ConnectOptions, PgPool, Postgres, Transaction};

use crate::error::Result;
use crate::tenant::TenantId;

mod roles;
mod tls;

pub use roles::{check as check_role, Duty, DutyRoles, RoleLogin, RoleSetup};
pub use tls::connect_options;

/// Migrations embedded at compile time from the workspace's `migrations/` folder.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Opens a pool for a duty's role. Connections are made lazily, so a worker can start
/// while Postgres is down and hold until it returns.
pub fn app_pool(database_url: &str, max_connections: u32) -> Result<PgPool> {
    let options = connect_options(database_url)?;
    let options = options.application_name("wafleet").log_statements(tracing::log::LevelFilter::Debug);
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options))
}

/// Opens a transaction with `app.tenant_id` set for its duration only.
/// ISOLATION: every tenant-owned row read or written inside is filtered by RLS to `tenant`.
pub async fn begin_tenant(pool: &PgPool, tenant: TenantId) -> Result<Transaction<'static, Postgres>> {
    Ok(pool.begin_with(begin_statement(tenant, false)).await?)
}

/// Scopes an open transaction to `tenant` from here on (the sender's claim, which first runs the
/// cross-tenant scheduler in the same transaction so the budget row stays locked until commit).
/// ISOLATION: call it before touching any tenant-owned row; RLS then filters to `tenant` only.
pub async fn scope_to_tenant(tx: &mut Transaction<'static, Postgres>, tenant: TenantId) -> Result<()> {
    sqlx::query("select set_config('app.tenant_id', $1, true)")
        .bind(tenant.get().to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Opens a read-only tenant-scoped transaction (reads of the message path and of bots).
pub async fn begin_tenant_read_only(pool: &PgPool, tenant: TenantId) -> Result<Transaction<'static, Postgres>> {
    Ok(pool.begin_with(begin_statement(tenant, true)).await?)
}

/// `BEGIN` and the transaction-local tenant setting as one simple-protocol query: one round
/// trip instead of two (three when read-only), which the message path pays several times per
/// event. sqlx checks after it that the connection is in a transaction, so a failed
/// `set_config` aborts the begin instead of leaving an unscoped transaction.
///
/// ISOLATION: the tenant id is formatted into the SQL, which is safe only because it is an
/// `i64` (digits and a sign); never build this from a string.
fn begin_statement(tenant: TenantId, read_only: bool) -> String {
    let id: i64 = tenant.get();
    let mode = if read_only { " READ ONLY" } else { "" };
    format!("BEGIN{mode}; SELECT set_config('app.tenant_id', '{id}', true)")
}

/// Marks the point [`undo_to_point`] returns to (a savepoint). The sender writes the outcomes of
/// finished sends and grants several replies in one transaction, and a grant that is refused must
/// not take the rest with it.
pub async fn mark_undo_point(tx: &mut Transaction<'static, Postgres>) -> Result<()> {
    sqlx::query("savepoint wafleet_undo_point").execute(&mut **tx).await?;
    Ok(())
}

/// Undoes what followed the last [`mark_undo_point`]; the transaction stays open.
pub async fn undo_to_point(tx: &mut Transaction<'static, Postgres>) -> Result<()> {
    sqlx::query("rollback to savepoint wafleet_undo_point").execute(&mut **tx).await?;
    Ok(())
}

/// Runs the migrations as the owner, then creates and grants the role of each duty.
pub async fn migrate(owner_url: &str, roles: &DutyRoles) -> Result<RoleSetup> {
    let owner = roles::owner_pool(owner_url).await?;
    // Parallel test runs migrate different databases; the advisory lock inside sqlx's migrator
    // serialises runs against the same database.
    MIGRATOR.run(&owner).await?;
    let (bypass,): (bool,) =
        sqlx::query_as("select rolsuper or rolbypassrls from pg_roles where rolname = current_user")
            .fetch_one(&owner)
            .await?;
    if !bypass {
        tracing::warn!(
            "the migration role can neither bypass RLS nor is superuser: the SECURITY DEFINER functions it owns \
             (tenant lookup, outbox scheduling) will see no rows. Grant it BYPASSRLS."
        );
    }
    let setup = roles::set_up(&owner, roles).await;
    owner.close().await;
    setup
}

/// The database health probe: whether a fresh connection (not the pool, which may only be busy)
/// answers within `timeout` on a primary that accepts writes. A standby (read-only during a
/// failover) counts as away.
pub async fn probe_writable(pool: &PgPool, timeout: Duration) -> bool {
    use sqlx::Connection as _;
    let options = pool.connect_options();
    let probe = async {
        let mut conn = sqlx::PgConnection::connect_with(&options).await?;
        let writable: bool = sqlx::query_scalar("select not pg_is_in_recovery()").fetch_one(&mut conn).await?;
        let _ = conn.close().await;
        Ok::<_, sqlx::Error>(writable)
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Ok(true)))
}

/// Tries to become the leader for `key`: a session advisory lock on its own direct connection
/// (not a pooled one, and not through a transaction pooler, which would drop the lock). The lock
/// lives as long as the returned connection, so a dead leader's lock is released with it.
pub async fn try_lead(database_url: &str, key: i64) -> Result<Option<sqlx::PgConnection>> {
    let mut conn = connect_options(database_url)?.connect().await?;
    let won: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)").bind(key).fetch_one(&mut conn).await?;
    Ok(won.then_some(conn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unsafe_role_advice_names_each_duty_role_and_its_setting() {
        for duty in Duty::ALL {
            let named = format!("{} (default {})", duty.url_variable(), duty.default_role());
            assert!(crate::error::UnsafeRole::advice().contains(&named), "{named}");
        }
    }
}

//! Postgres access: pools for the application role, the role-safety guard, migrations with the
//! application role's grants, and tenant-scoped transactions.
//!
//! ISOLATION: `begin_tenant` is the only way message-handling code opens a transaction on
//! tenant data; it sets `app.tenant_id` transaction-locally, which every RLS policy reads.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool, Postgres, Transaction};

use crate::error::{Result, UnsafeRole};
use crate::tenant::TenantId;

mod tls;

pub use tls::connect_options;

/// Migrations embedded at compile time from the workspace's `migrations/` folder.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Default application role when `DATABASE_URL` names none.
pub const DEFAULT_APP_ROLE: &str = "wafleet_app";

/// Opens a pool for the application role. Connections are made lazily, so a worker can start
/// while Postgres is down and hold until it returns.
pub fn app_pool(database_url: &str, max_connections: u32) -> Result<PgPool> {
    let options = connect_options(database_url)?;
    let options = options.application_name("wafleet").log_statements(tracing::log::LevelFilter::Debug);
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options))
}

/// Refuses roles that would make row-level security moot: superusers, BYPASSRLS roles, and
/// members of a table owner's role. `allow_unsafe` turns the refusal into a warning.
pub async fn check_role_is_safe(pool: &PgPool, allow_unsafe: bool) -> Result<()> {
    let (role, superuser, bypass): (String, bool, bool) =
        sqlx::query_as("select current_user::text, rolsuper, rolbypassrls from pg_roles where rolname = current_user")
            .fetch_one(pool)
            .await?;
    let owns_or_member: Option<String> = sqlx::query_scalar(
        "select tableowner::text from pg_tables where schemaname = 'public' \
         and pg_has_role(current_user, tableowner, 'MEMBER') limit 1",
    )
    .fetch_optional(pool)
    .await?;
    let problem = if superuser {
        Some(UnsafeRole::Superuser(role))
    } else if bypass {
        Some(UnsafeRole::BypassRls(role))
    } else {
        owns_or_member.map(|owner| UnsafeRole::TableOwner { role, owner })
    };
    match problem {
        None => Ok(()),
        Some(p) if allow_unsafe => {
            tracing::warn!(problem = %p, "WAFLEET_ALLOW_UNSAFE_DB_ROLE is set: tenant isolation relies on application code alone");
            Ok(())
        }
        Some(p) => Err(p.into()),
    }
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

/// The role name in a Postgres URL, or the default application role.
pub fn role_of_url(database_url: &str) -> Result<String> {
    let options: PgConnectOptions = database_url.parse()?;
    let user = options.get_username();
    Ok(if user.is_empty() { DEFAULT_APP_ROLE.to_owned() } else { user.to_owned() })
}

/// What `migrate` did about the application role.
#[derive(Debug, PartialEq, Eq)]
pub enum RoleSetup {
    /// The role exists (created now or before) and has its grants.
    Granted,
    /// The owner may not create roles; an administrator must run these statements.
    NeedsAdministrator(Vec<String>),
}

/// Runs the migrations as the owner, then creates and grants the application role.
pub async fn migrate(owner_url: &str, app_url: &str) -> Result<RoleSetup> {
    let owner = PgPoolOptions::new().max_connections(2).connect_with(connect_options(owner_url)?).await?;
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
    let role = role_of_url(app_url)?;
    let password: Option<String> = app_url.parse::<url::Url>().ok().and_then(|u| u.password().map(str::to_owned));
    let statements = role_statements(&role, password.as_deref());
    let can_create: bool =
        sqlx::query_scalar("select rolsuper or rolcreaterole from pg_roles where rolname = current_user")
            .fetch_one(&owner)
            .await?;
    let exists: bool = sqlx::query_scalar("select exists(select 1 from pg_roles where rolname = $1)")
        .bind(&role)
        .fetch_one(&owner)
        .await?;
    if !exists {
        if !can_create {
            return Ok(RoleSetup::NeedsAdministrator(statements));
        }
        if let Err(e) = sqlx::query(&statements[0]).execute(&owner).await {
            // Another migrate created it at the same moment: 42710 duplicate_object, or 23505
            // when two CREATE ROLEs race on pg_authid's unique index.
            let racing = matches!(&e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("42710") | Some("23505")));
            if !racing {
                return Err(e.into());
            }
        }
    }
    for statement in &statements[1..] {
        sqlx::query(statement).execute(&owner).await?;
    }
    owner.close().await;
    Ok(RoleSetup::Granted)
}

/// The statements that create the application role and grant it exactly what it needs.
pub fn role_statements(role: &str, password: Option<&str>) -> Vec<String> {
    let r = quote_ident(role);
    let create = match password {
        Some(p) => format!("create role {r} login password '{}'", p.replace('\'', "''")),
        None => format!("create role {r} login"),
    };
    vec![
        create,
        format!("grant usage on schema public to {r}"),
        format!("grant select, insert, update, delete on processed_events, outbox, bot_rules, message_log, delivery_attempts, retrying to {r}"),
        // Tenants are created and re-statused only through definer functions; the app role may
        // read its own row (RLS) and record the bridge state.
        format!("grant select on tenants to {r}"),
        format!("grant update (bridge_state, bridge_state_at, updated_at) on tenants to {r}"),
        // Issue #5: `provision` and `bridges reconcile --fix` record the WA Bridges id in the
        // tenant's own scope. Accounts are added and budgets moved only through definer
        // functions; the audit log is append-only for the application role.
        format!("grant update (instance_id) on tenants to {r}"),
        format!("grant select on accounts to {r}"),
        format!("grant select, insert on audit_log to {r}"),
        // Issue #9: admin API tokens (created, listed and revoked by the CLI, checked by the admin
        // API), its operations and idempotency records. None is tenant-owned.
        format!("grant select, insert on admin_tokens to {r}"),
        format!("grant update (revoked_at, last_used_at) on admin_tokens to {r}"),
        format!("grant select, insert, update on admin_operations to {r}"),
        format!("grant select, insert, update, delete on admin_idempotency to {r}"),
        format!("grant usage on all sequences in schema public to {r}"),
        format!("grant execute on all functions in schema public to {r}"),
    ]
}

fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
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
    fn the_unsafe_role_advice_names_the_default_application_role() {
        assert!(UnsafeRole::advice().contains(&format!("(default {DEFAULT_APP_ROLE})")));
    }
}

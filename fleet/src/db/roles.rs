//! A role per duty. The worker (message path, sender, reconciler, canary, retention) connects as
//! one role and the administration surface (CLI, admin API) as another, so a flaw in the worker
//! cannot add, re-status or offboard tenants or change accounts. `wafleet migrate` creates both,
//! grants each its tables, and grants EXECUTE on every SECURITY DEFINER function to exactly the
//! duties that `wafleet_function_grants` (migration 0013) names; every binary checks at start
//! that it connected as its duty's role.

use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};

use crate::error::{Result, SetupError, UnsafeRole};

/// What a database role is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Duty {
    /// `wafleet-worker`: consume, record, send; no tenant or account administration.
    Worker,
    /// `wafleet` (CLI) and `wafleet-admin`: tenant and account administration.
    Admin,
}

impl Duty {
    /// Every duty, in the order `migrate` sets them up.
    pub const ALL: [Duty; 2] = [Duty::Worker, Duty::Admin];

    /// The name in `wafleet_duty_roles` and `wafleet_function_grants`.
    pub fn as_str(self) -> &'static str {
        match self {
            Duty::Worker => "worker",
            Duty::Admin => "admin",
        }
    }

    /// The setting that names this duty's role.
    pub fn url_variable(self) -> &'static str {
        match self {
            Duty::Worker => "DATABASE_URL",
            Duty::Admin => "ADMIN_DATABASE_URL",
        }
    }

    /// The role when the URL names none.
    pub fn default_role(self) -> &'static str {
        match self {
            Duty::Worker => "wafleet_worker",
            Duty::Admin => "wafleet_admin",
        }
    }

    /// Table privileges (statements with `{r}` for the role). Functions are granted from
    /// `wafleet_function_grants` instead.
    fn table_grants(self) -> &'static [&'static str] {
        const COMMON: &str = "grant select on wafleet_duty_roles, wafleet_function_grants to {r}";
        match self {
            Duty::Worker => &[
                "grant usage on schema public to {r}",
                COMMON,
                "grant select, insert, update, delete on processed_events, outbox, message_log, delivery_attempts, retrying to {r}",
                "grant select on bot_rules to {r}",
                // Tenants change only through the administration functions; the worker reads its
                // tenant's row (RLS) and records the bridge state that connection events report.
                "grant select on tenants to {r}",
                "grant update (bridge_state, bridge_state_at, bridge_recheck_at, bridge_recheck_failures, updated_at) on tenants to {r}",
                "grant select on accounts to {r}",
                // Retention and the reconciler leave records; the worker never reads the log.
                "grant insert on audit_log to {r}",
                // The canary replica records each canary tenant's last verdict for the console.
                "grant select, insert, update on canary_results to {r}",
                "grant usage on all sequences in schema public to {r}",
            ],
            Duty::Admin => &[
                "grant usage on schema public to {r}",
                COMMON,
                // Erasure, cancelling a tenant's pending replies, retention and the outbox and
                // DLQ views of the CLI.
                "grant select, insert, update, delete on processed_events, outbox, bot_rules, message_log, delivery_attempts, retrying to {r}",
                "grant select on tenants to {r}",
                "grant update (bridge_state, bridge_state_at, updated_at, instance_id) on tenants to {r}",
                "grant select on accounts to {r}",
                "grant select, insert on audit_log to {r}",
                "grant select, insert on admin_tokens to {r}",
                "grant update (revoked_at, last_used_at) on admin_tokens to {r}",
                "grant select, insert, update on admin_operations to {r}",
                "grant select, insert, update, delete on admin_idempotency to {r}",
                "grant select, insert, delete on console_sessions to {r}",
                "grant select on canary_results to {r}",
                "grant usage on all sequences in schema public to {r}",
            ],
        }
    }
}

/// The role each duty connects as, read from the URLs of its binaries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DutyRoles {
    /// The worker's role (`DATABASE_URL`).
    pub worker: RoleLogin,
    /// The administration role (`ADMIN_DATABASE_URL`).
    pub admin: RoleLogin,
}

/// A role and the password its URL carries, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleLogin {
    /// The role name.
    pub name: String,
    password: Option<String>,
}

impl DutyRoles {
    /// The roles named by `DATABASE_URL` and `ADMIN_DATABASE_URL` (each duty's default role when
    /// a URL names none). One role for both duties is refused: that is the setup this replaces.
    pub fn from_urls(worker_url: &str, admin_url: &str) -> Result<Self> {
        let worker = RoleLogin::from_url(worker_url, Duty::Worker)?;
        let admin = RoleLogin::from_url(admin_url, Duty::Admin)?;
        if worker.name == admin.name {
            return Err(SetupError::OneRoleForTwoDuties(worker.name).into());
        }
        Ok(Self { worker, admin })
    }

    fn login(&self, duty: Duty) -> &RoleLogin {
        match duty {
            Duty::Worker => &self.worker,
            Duty::Admin => &self.admin,
        }
    }
}

impl RoleLogin {
    fn from_url(url: &str, duty: Duty) -> Result<Self> {
        let options: sqlx::postgres::PgConnectOptions = url.parse()?;
        let user = options.get_username();
        let name = if user.is_empty() { duty.default_role().to_owned() } else { user.to_owned() };
        let password = url.parse::<url::Url>().ok().and_then(|u| u.password().map(str::to_owned));
        Ok(Self { name, password })
    }

    fn create_statement(&self) -> String {
        let r = quote_ident(&self.name);
        match &self.password {
            Some(p) => format!("create role {r} login password '{}'", p.replace('\'', "''")),
            None => format!("create role {r} login"),
        }
    }
}

/// What `migrate` did about the roles.
#[derive(Debug, PartialEq, Eq)]
pub enum RoleSetup {
    /// Both roles exist (created now or before) and have exactly their grants.
    Granted,
    /// The owner may not create roles; an administrator must run these statements, then
    /// `wafleet migrate` again to grant them.
    NeedsAdministrator(Vec<String>),
}

/// Creates the duty roles that are missing, records them, and grants each exactly its tables
/// and functions. Runs as the owner, after the migrations.
pub async fn set_up(owner: &PgPool, roles: &DutyRoles) -> Result<RoleSetup> {
    let can_create: bool =
        sqlx::query_scalar("select rolsuper or rolcreaterole from pg_roles where rolname = current_user")
            .fetch_one(owner)
            .await?;
    let mut missing = Vec::new();
    for duty in Duty::ALL {
        let login = roles.login(duty);
        let exists: bool = sqlx::query_scalar("select exists(select 1 from pg_roles where rolname = $1)")
            .bind(&login.name)
            .fetch_one(owner)
            .await?;
        if !exists {
            missing.push(login.create_statement());
        }
    }
    if !missing.is_empty() && !can_create {
        return Ok(RoleSetup::NeedsAdministrator(missing));
    }
    for statement in &missing {
        if let Err(e) = sqlx::query(statement).execute(owner).await {
            // Another migrate created it at the same moment: 42710 duplicate_object, or 23505
            // when two CREATE ROLEs race on pg_authid's unique index.
            let racing = matches!(&e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("42710") | Some("23505")));
            if !racing {
                return Err(e.into());
            }
        }
    }
    let mut tx = owner.begin().await?;
    // Parallel migrations of one database would interleave their revokes and grants.
    sqlx::query("select pg_advisory_xact_lock(hashtext('wafleet.migrate.grants'))").execute(&mut *tx).await?;
    for duty in Duty::ALL {
        let login = roles.login(duty);
        sqlx::query(
            "insert into wafleet_duty_roles (duty, role_name) values ($1, $2) \
             on conflict (duty) do update set role_name = excluded.role_name",
        )
        .bind(duty.as_str())
        .bind(&login.name)
        .execute(&mut *tx)
        .await?;
        let r = quote_ident(&login.name);
        for grant in duty.table_grants() {
            sqlx::query(&grant.replace("{r}", &r)).execute(&mut *tx).await?;
        }
    }
    grant_functions(&mut tx, roles).await?;
    tx.commit().await?;
    Ok(RoleSetup::Granted)
}

/// EXECUTE on each definer function for exactly the duties its row names: revoked from PUBLIC and
/// every other role first, so earlier grants (a single application role of older releases, or a
/// hand-made grant) do not survive a migrate.
async fn grant_functions(tx: &mut Transaction<'static, Postgres>, roles: &DutyRoles) -> Result<()> {
    let ungranted: Vec<String> = sqlx::query_scalar(
        "select p.oid::regprocedure::text from pg_proc p \
         where p.pronamespace = 'public'::regnamespace and p.prosecdef \
           and not exists (select 1 from wafleet_function_grants g where to_regprocedure(g.signature) = p.oid) \
         order by 1",
    )
    .fetch_all(&mut **tx)
    .await?;
    if !ungranted.is_empty() {
        return Err(SetupError::UngrantedFunctions(ungranted).into());
    }
    let rows: Vec<(String, Vec<String>, bool)> = sqlx::query_as(
        "select signature, duties, to_regprocedure(signature) is not null from wafleet_function_grants order by signature",
    )
    .fetch_all(&mut **tx)
    .await?;
    for (signature, duties, exists) in rows {
        if !exists {
            return Err(SetupError::GrantOfMissingFunction(signature).into());
        }
        let others: Vec<String> = sqlx::query_scalar(
            "select distinct quote_ident(pg_get_userbyid(a.grantee)) from pg_proc p cross join aclexplode(p.proacl) a \
             where p.oid = to_regprocedure($1) and a.grantee not in (0, p.proowner)",
        )
        .bind(&signature)
        .fetch_all(&mut **tx)
        .await?;
        // The signature comes from the migrations (a table only the owner can write), and
        // to_regprocedure resolved it above.
        let function = format!("function {signature}");
        sqlx::query(&format!("revoke all on {function} from public")).execute(&mut **tx).await?;
        for other in others {
            sqlx::query(&format!("revoke all on {function} from {other}")).execute(&mut **tx).await?;
        }
        for duty in Duty::ALL.into_iter().filter(|d| duties.iter().any(|x| x == d.as_str())) {
            let r = quote_ident(&roles.login(duty).name);
            sqlx::query(&format!("grant execute on {function} to {r}")).execute(&mut **tx).await?;
        }
    }
    Ok(())
}

/// Refuses a connection that would make row-level security or the duty split moot: a
/// superuser, a BYPASSRLS or CREATEROLE role, a member of such a role or of a table owner, a role
/// that is not the one `migrate` recorded for `duty`, or a worker role that can also administer.
/// `allow_unsafe` turns the refusal into a warning.
pub async fn check(pool: &PgPool, duty: Duty, allow_unsafe: bool) -> Result<()> {
    match problem(pool, duty).await? {
        None => Ok(()),
        Some(p) if allow_unsafe => {
            tracing::warn!(problem = %p, "WAFLEET_ALLOW_UNSAFE_DB_ROLE is set: tenant isolation relies on application code alone");
            Ok(())
        }
        Some(p) => Err(p.into()),
    }
}

async fn problem(pool: &PgPool, duty: Duty) -> Result<Option<UnsafeRole>> {
    let (role, superuser, bypass, createrole): (String, bool, bool, bool) = sqlx::query_as(
        "select current_user::text, rolsuper, rolbypassrls, rolcreaterole from pg_roles where rolname = current_user",
    )
    .fetch_one(pool)
    .await?;
    if superuser {
        return Ok(Some(UnsafeRole::Superuser(role)));
    }
    if bypass {
        return Ok(Some(UnsafeRole::BypassRls(role)));
    }
    if createrole {
        return Ok(Some(UnsafeRole::CreateRole(role)));
    }
    let privileged: Option<String> = sqlx::query_scalar(
        "select p.rolname::text from pg_roles p where p.rolname <> current_user and (p.rolsuper or p.rolbypassrls) \
         and pg_has_role(current_user, p.oid, 'MEMBER') limit 1",
    )
    .fetch_optional(pool)
    .await?;
    if let Some(privileged) = privileged {
        return Ok(Some(UnsafeRole::MemberOfPrivileged { role, privileged }));
    }
    let owner: Option<String> = sqlx::query_scalar(
        "select tableowner::text from pg_tables where schemaname = 'public' \
         and pg_has_role(current_user, tableowner, 'MEMBER') limit 1",
    )
    .fetch_optional(pool)
    .await?;
    if let Some(owner) = owner {
        return Ok(Some(UnsafeRole::TableOwner { role, owner }));
    }
    let recorded: Vec<(String, String)> =
        match sqlx::query_as("select duty, role_name::text from wafleet_duty_roles").fetch_all(pool).await {
            Ok(rows) => rows,
            // 42P01: a schema from before the duty split; 42501: a role without the grant, which
            // is not a duty role of this database either.
            Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P01") | Some("42501")) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
    let holder = |d: Duty| recorded.iter().find(|(name, _)| name == d.as_str()).map(|(_, role)| role.clone());
    let Some(expected) = holder(duty) else {
        return Ok(Some(UnsafeRole::NoDutyRole { role, duty: duty.as_str() }));
    };
    let is_member = |of: &str| {
        sqlx::query_scalar::<_, bool>("select pg_has_role(current_user, $1, 'USAGE')")
            .bind(of.to_owned())
            .fetch_one(pool)
    };
    if !is_member(&expected).await? {
        return Ok(Some(UnsafeRole::NotTheDutyRole {
            role,
            duty: duty.as_str(),
            expected,
            variable: duty.url_variable(),
        }));
    }
    if duty == Duty::Worker {
        if let Some(admin) = holder(Duty::Admin) {
            if is_member(&admin).await? {
                return Ok(Some(UnsafeRole::WorkerCanAdminister { role, admin }));
            }
        }
    }
    Ok(None)
}

fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A throwaway owner pool for `migrate`.
pub(crate) async fn owner_pool(owner_url: &str) -> Result<PgPool> {
    Ok(PgPoolOptions::new().max_connections(2).connect_with(super::connect_options(owner_url)?).await?)
}

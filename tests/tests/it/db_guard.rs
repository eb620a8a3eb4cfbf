//! Database guard: `scripts/db-guard.sql` must find nothing wrong with the migrated
//! schema, and must report every kind of hole it looks for when one is made on purpose. The same
//! query runs against any database through `scripts/db-guard.sh`.

use sqlx::PgPool;
use wafleet_tests::{EnvOptions, TestEnv};

/// The guard's query: one row per violation, none when the schema is sound.
const GUARD_SQL: &str = include_str!("../../../scripts/db-guard.sql");

/// One row of the guard: what is wrong, where, and why it matters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    violation: String,
    object: String,
    detail: String,
}

/// Runs the guard for the application role `app_role` ("" for every recorded duty role).
async fn violations(pool: &PgPool, app_role: &str) -> Vec<Violation> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("select set_config('wafleet.guard_role', $1, true)").bind(app_role).execute(&mut *tx).await.unwrap();
    let rows: Vec<(String, String, String)> = sqlx::query_as(GUARD_SQL).fetch_all(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    rows.into_iter().map(|(violation, object, detail)| Violation { violation, object, detail }).collect()
}

fn has(found: &[Violation], violation: &str, object_contains: &str) -> bool {
    found.iter().any(|v| v.violation == violation && v.object.contains(object_contains))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migrated_schema_passes_the_database_guard() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    for role in ["wafleet_worker", "wafleet_admin", ""] {
        let found = violations(&env.owner_pool, role).await;
        assert!(found.is_empty(), "the schema has isolation holes for {role:?}:\n{found:#?}");
    }
    // The guard really looked: it discovers the tenant-owned tables from the catalog.
    let discovered: i64 = sqlx::query_scalar(
        "select count(distinct c.oid) from pg_class c join pg_attribute a on a.attrelid = c.oid \
         where a.attname = 'tenant_id' and c.relkind in ('r', 'p') and c.relnamespace = 'public'::regnamespace",
    )
    .fetch_one(&env.owner_pool)
    .await
    .unwrap();
    assert!(discovered >= 5, "tenants, processed_events, outbox, bot_rules, message_log at least");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_reports_every_deliberately_broken_table_function_view_and_grant() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    // Each statement opens one hole, in this test's own database only.
    let holes = [
        // A tenant table with no RLS at all.
        "create table guard_no_rls (tenant_id bigint not null references tenants (tenant_id), body text)",
        "create index on guard_no_rls (tenant_id)",
        // RLS enabled but not forced.
        "create table guard_not_forced (tenant_id bigint not null references tenants (tenant_id) primary key)",
        "alter table guard_not_forced enable row level security",
        "create policy tenant_isolation on guard_not_forced using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint)",
        // Forced, but no policy.
        "create table guard_no_policy (tenant_id bigint not null references tenants (tenant_id) primary key)",
        "alter table guard_no_policy enable row level security",
        "alter table guard_no_policy force row level security",
        // A correct policy OR-ed with one that lets everything through.
        "create table guard_open (tenant_id bigint not null references tenants (tenant_id) primary key)",
        "alter table guard_open enable row level security",
        "alter table guard_open force row level security",
        "create policy tenant_isolation on guard_open using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint)",
        "create policy everyone on guard_open using (true)",
        // Nullable tenant_id without index or foreign key.
        "create table guard_loose (tenant_id bigint, note text)",
        "alter table guard_loose enable row level security",
        "alter table guard_loose force row level security",
        "create policy tenant_isolation on guard_loose using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint)",
        // Definer functions: no search_path (and executable by PUBLIC), pg_temp first, returning a
        // body column, a whole tenant row type, and JSON.
        "create function guard_no_path() returns bigint language sql security definer as 'select 1::bigint'",
        "create function guard_temp_first() returns bigint language sql security definer set search_path = pg_temp, public as 'select 1::bigint'",
        "create function guard_leaks_body() returns table (outbox_id bigint, body text) language sql stable security definer set search_path = public, pg_temp as 'select o.outbox_id, o.body from outbox o'",
        "create function guard_leaks_row() returns setof outbox language sql stable security definer set search_path = public, pg_temp as 'select * from outbox'",
        "create function guard_json() returns jsonb language sql stable security definer set search_path = public, pg_temp as 'select ''{}''::jsonb'",
        "revoke all on function guard_temp_first(), guard_leaks_body(), guard_leaks_row(), guard_json() from public",
        // A view over tenant data (it runs with the owner's rights) readable by the app role.
        "create view guard_view as select * from outbox",
        "grant select on guard_view to wafleet_worker",
        // TRUNCATE ignores RLS.
        "grant truncate on outbox to wafleet_worker",
        // The worker may not administer tenants (function ACLs are per database, so this stays
        // in this test's database although the role is shared).
        "grant execute on function wafleet_offboard_tenant(text) to wafleet_worker",
        // A grant row whose function is gone.
        "insert into wafleet_function_grants values ('public.guard_gone(integer)', '{}', 'test')",
    ];
    for statement in holes {
        sqlx::query(statement).execute(&env.owner_pool).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let found = violations(&env.owner_pool, "wafleet_worker").await;
    let expected = [
        ("rls_disabled", "guard_no_rls"),
        ("rls_not_forced", "guard_no_rls"),
        ("no_policy", "guard_no_rls"),
        ("rls_not_forced", "guard_not_forced"),
        ("no_policy", "guard_no_policy"),
        ("policy_not_tenant_scoped", "guard_open policy everyone"),
        ("tenant_id_nullable", "guard_loose"),
        ("tenant_id_not_leading_index", "guard_loose"),
        ("tenant_id_without_foreign_key", "guard_loose"),
        ("definer_without_search_path", "guard_no_path()"),
        ("definer_executable_by_public", "guard_no_path()"),
        ("definer_search_path_pg_temp_not_last", "guard_temp_first()"),
        ("definer_returns_content", "guard_leaks_body()"),
        ("definer_returns_rowtype", "guard_leaks_row()"),
        ("definer_returns_content", "guard_leaks_row()"),
        ("definer_returns_json", "guard_json()"),
        ("view_bypasses_rls", "guard_view"),
        ("tenant_table_privilege", "public.outbox"),
        ("definer_without_duty_row", "guard_no_path()"),
        ("definer_without_duty_row", "guard_temp_first()"),
        ("definer_without_duty_row", "guard_leaks_body()"),
        ("definer_without_duty_row", "guard_leaks_row()"),
        ("definer_without_duty_row", "guard_json()"),
        ("definer_executable_outside_its_duties", "wafleet_offboard_tenant("),
        ("duty_grant_of_missing_function", "guard_gone"),
    ];
    for (violation, object) in expected {
        assert!(has(&found, violation, object), "the guard missed {violation} on {object}; it found:\n{found:#?}");
    }
    // Nothing else: the correct policy of guard_open and the untouched tables pass.
    let extra: Vec<&Violation> =
        found.iter().filter(|v| !expected.iter().any(|(w, o)| v.violation == *w && v.object.contains(o))).collect();
    assert!(extra.is_empty(), "unexpected findings:\n{extra:#?}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_refuses_an_application_role_that_could_bypass_rls_or_act_as_an_owner() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    // Roles are cluster-wide, so the broken ones get names of their own (never the duty roles,
    // which parallel tests use) and are dropped before any assertion can fail.
    let risky = format!("{}_risky", env.name);
    let superuser = format!("{}_super", env.name);
    let owner: String = sqlx::query_scalar("select current_user::text").fetch_one(&env.owner_pool).await.unwrap();
    let setup = [
        format!("create role {risky} login bypassrls createrole"),
        format!("create role {superuser} login superuser"),
        // Member of the (superuser) owner of every table and function.
        format!("grant \"{owner}\" to {risky}"),
        format!("grant create on schema public to {risky}"),
    ];
    for statement in &setup {
        sqlx::query(statement).execute(&env.owner_pool).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let risky_found = violations(&env.owner_pool, &risky).await;
    let super_found = violations(&env.owner_pool, &superuser).await;
    let missing_found = violations(&env.owner_pool, &format!("{}_missing", env.name)).await;
    // This database's duty record pointed at a worker role that inherits the administration role.
    let (worker, admin) = (format!("{}_w", env.name), format!("{}_a", env.name));
    for statement in [
        format!("create role {worker} login"),
        format!("create role {admin} login"),
        format!("grant {admin} to {worker}"),
        format!("update wafleet_duty_roles set role_name = '{worker}' where duty = 'worker'"),
        format!("update wafleet_duty_roles set role_name = '{admin}' where duty = 'admin'"),
    ] {
        sqlx::query(&statement).execute(&env.owner_pool).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let inheriting_found = violations(&env.owner_pool, "").await;
    for statement in [
        format!("drop role {worker}"),
        format!("drop role {admin}"),
        format!("revoke create on schema public from {risky}"),
        format!("drop role {risky}"),
        format!("drop role {superuser}"),
    ] {
        sqlx::query(&statement).execute(&env.owner_pool).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    }

    for violation in [
        "app_role_bypassrls",
        "app_role_createrole",
        "app_role_member_of_privileged_role",
        "app_role_can_create_in_schema",
        "app_role_owns_or_is_member_of_table_owner",
        "app_role_owns_or_is_member_of_definer_owner",
    ] {
        assert!(risky_found.iter().any(|v| v.violation == violation), "missed {violation}:\n{risky_found:#?}");
    }
    assert!(has(&risky_found, "app_role_owns_or_is_member_of_table_owner", "public.outbox"));
    assert!(super_found.iter().any(|v| v.violation == "app_role_superuser"), "{super_found:#?}");
    assert_eq!(missing_found.len(), 1, "{missing_found:#?}");
    assert_eq!(missing_found[0].violation, "app_role_missing");
    assert!(!missing_found[0].detail.is_empty());
    assert!(has(&inheriting_found, "worker_role_can_administer", &worker), "{inheriting_found:#?}");
    env.cleanup().await;
}

//! A role per duty: the worker's role cannot administer tenants or accounts, each binary refuses
//! a role that is not its duty's (or that could bypass row-level security), and `migrate` leaves
//! EXECUTE on each definer function with exactly the duties its grant row names.

use sqlx::PgPool;
use wafleet_fleet::db::{self, Duty};
use wafleet_fleet::error::{Error, UnsafeRole};
use wafleet_tests::{as_role, EnvOptions, TestEnv};

/// `select f(null::t1, …)` for every definer function that some duty may execute, with its duties.
async fn calls(env: &TestEnv) -> Vec<(String, String, Vec<String>)> {
    let rows: Vec<(String, String, Vec<String>, Vec<String>)> = sqlx::query_as(
        "select g.signature, p.proname::text, array(select format_type(t, null) from unnest(p.proargtypes) t), g.duties \
         from wafleet_function_grants g join pg_proc p on p.oid = to_regprocedure(g.signature) \
         where cardinality(g.duties) > 0 order by 1",
    )
    .fetch_all(&env.owner_pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(signature, name, types, duties)| {
            let args: Vec<String> = types.iter().map(|t| format!("null::{t}")).collect();
            (signature, format!("select {name}({})", args.join(", ")), duties)
        })
        .collect()
}

/// The SQLSTATE of running `call` in a transaction that is rolled back, or None if it ran.
async fn sqlstate(pool: &PgPool, call: &str) -> Option<String> {
    let mut tx = pool.begin().await.unwrap();
    let result = sqlx::query(call).execute(&mut *tx).await;
    let _ = tx.rollback().await;
    match result {
        Ok(_) => None,
        Err(sqlx::Error::Database(e)) => Some(e.code().map(|c| c.into_owned()).unwrap_or_default()),
        Err(e) => panic!("{call}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_role_may_call_no_administration_function_and_the_admin_role_may() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let calls = calls(&env).await;
    // Named here, not read from the grant table, so a row that hands one to the worker fails.
    for administration in [
        "wafleet_add_tenant_in_account",
        "wafleet_set_tenant_status",
        "wafleet_set_tenant_limits",
        "wafleet_set_tenant_queue_bound",
        "wafleet_set_tenant_bot",
        "wafleet_bump_generation",
        "wafleet_offboard_tenant",
        "wafleet_add_account",
    ] {
        let (signature, call, _) = calls
            .iter()
            .find(|(signature, _, _)| signature.starts_with(&format!("public.{administration}(")))
            .unwrap_or_else(|| panic!("{administration} has a grant row"));
        assert_eq!(
            sqlstate(&env.worker_pool, call).await.as_deref(),
            Some("42501"),
            "the worker may not call {signature}"
        );
        assert_ne!(
            sqlstate(&env.admin_pool, call).await.as_deref(),
            Some("42501"),
            "the admin role may call {signature}"
        );
    }
    for (signature, call, duties) in &calls {
        // Null arguments may fail a function's own checks, but only a missing grant gives 42501.
        for (pool, duty) in [(&env.worker_pool, "worker"), (&env.admin_pool, "admin")] {
            let refused = sqlstate(pool, call).await.as_deref() == Some("42501");
            let granted = duties.iter().any(|d| d == duty);
            assert_eq!(refused, !granted, "{duty} on {signature} (its duties: {duties:?})");
        }
    }
    // Table privileges follow the duty too: the worker cannot write a tenant's status or read tokens.
    let tenant_write = sqlstate(&env.worker_pool, "update tenants set status = 'disabled'").await;
    assert_eq!(tenant_write.as_deref(), Some("42501"));
    assert_eq!(sqlstate(&env.worker_pool, "select count(*) from admin_tokens").await.as_deref(), Some("42501"));
    assert_eq!(sqlstate(&env.admin_pool, "select count(*) from admin_tokens").await, None);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_binary_refuses_a_role_that_is_not_its_duty_or_could_bypass_row_level_security() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    db::check_role(&env.worker_pool, Duty::Worker, false).await.unwrap();
    db::check_role(&env.admin_pool, Duty::Admin, false).await.unwrap();
    let refused = |r: Result<(), Error>| match r {
        Err(Error::UnsafeRole(u)) => *u,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let u = refused(db::check_role(&env.admin_pool, Duty::Worker, false).await);
    assert!(
        matches!(&u, UnsafeRole::NotTheDutyRole { expected, variable: "DATABASE_URL", .. } if expected == "wafleet_worker"),
        "{u}"
    );
    let u = refused(db::check_role(&env.worker_pool, Duty::Admin, false).await);
    assert!(matches!(&u, UnsafeRole::NotTheDutyRole { variable: "ADMIN_DATABASE_URL", .. }), "{u}");
    assert!(Error::from(u).to_string().contains("wafleet migrate"));

    // Roles are cluster-wide: these get names of their own and are dropped before asserting.
    let (legacy, creator, member, privileged) = (
        format!("{}_legacy", env.name),
        format!("{}_creator", env.name),
        format!("{}_member", env.name),
        format!("{}_bypass", env.name),
    );
    let setup = [
        // The single application role of earlier releases, with its blanket EXECUTE.
        format!("create role {legacy} login"),
        format!("grant usage on schema public to {legacy}"),
        format!("grant select on all tables in schema public to {legacy}"),
        format!("grant execute on all functions in schema public to {legacy}"),
        format!("create role {creator} login createrole"),
        format!("create role {privileged} nologin bypassrls"),
        format!("create role {member} login"),
        format!("grant {privileged} to {member}"),
    ];
    for statement in &setup {
        sqlx::query(statement).execute(&env.owner_pool).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let pool_as = |role: &str| db::app_pool(&as_role(&env.owner_url, role).unwrap(), 1).unwrap();
    let legacy_before = db::check_role(&pool_as(&legacy), Duty::Worker, false).await;
    let creator_found = db::check_role(&pool_as(&creator), Duty::Worker, false).await;
    let member_found = db::check_role(&pool_as(&member), Duty::Admin, false).await;
    let member_allowed = db::check_role(&pool_as(&member), Duty::Admin, true).await;
    // A migrate takes the legacy role's EXECUTE away: only the duties' roles keep theirs.
    let tiers = wafleet_fleet::topology::RetryTier::parse_tiers(wafleet_fleet::topology::DEFAULT_RETRY_TIERS).unwrap();
    wafleet_fleet::service::migrate(&env.owner_url, &env.roles(), &env.endpoints, &tiers).await.unwrap();
    let legacy_after = sqlstate(&pool_as(&legacy), "select wafleet_offboard_tenant(null::text)").await;
    let legacy_executes: i64 = sqlx::query_scalar(
        "select count(*) from pg_proc p cross join aclexplode(p.proacl) a \
         where p.pronamespace = 'public'::regnamespace and p.prosecdef and a.grantee = $1::regrole",
    )
    .bind(&legacy)
    .fetch_one(&env.owner_pool)
    .await
    .unwrap();
    for statement in [
        format!("drop owned by {legacy}"),
        format!("drop role {legacy}"),
        format!("drop role {creator}"),
        format!("drop role {member}"),
        format!("drop role {privileged}"),
    ] {
        sqlx::query(&statement).execute(&env.owner_pool).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    }

    let u = refused(legacy_before);
    assert!(matches!(&u, UnsafeRole::NoDutyRole { duty: "worker", .. } | UnsafeRole::NotTheDutyRole { .. }), "{u}");
    assert!(matches!(refused(creator_found), UnsafeRole::CreateRole(_)));
    let u = refused(member_found);
    assert!(matches!(&u, UnsafeRole::MemberOfPrivileged { privileged: p, .. } if *p == privileged), "{u}");
    member_allowed.expect("WAFLEET_ALLOW_UNSAFE_DB_ROLE turns the refusal into a warning");
    assert_eq!(legacy_after.as_deref(), Some("42501"), "the legacy role lost EXECUTE");
    assert_eq!(legacy_executes, 0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_a_definer_function_that_no_grant_row_names() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    sqlx::query("create function wafleet_unlisted() returns integer language sql security definer set search_path = public, pg_temp as 'select 1'")
        .execute(&env.owner_pool)
        .await
        .unwrap();
    let tiers = wafleet_fleet::topology::RetryTier::parse_tiers(wafleet_fleet::topology::DEFAULT_RETRY_TIERS).unwrap();
    let err = wafleet_fleet::service::migrate(&env.owner_url, &env.roles(), &env.endpoints, &tiers).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("wafleet_unlisted()") && text.contains("wafleet_function_grants"), "{text}");
    // A row for it, and migrate grants it to exactly that duty.
    sqlx::query("insert into wafleet_function_grants values ('public.wafleet_unlisted()', '{admin}', 'test')")
        .execute(&env.owner_pool)
        .await
        .unwrap();
    wafleet_fleet::service::migrate(&env.owner_url, &env.roles(), &env.endpoints, &tiers).await.unwrap();
    assert_eq!(sqlstate(&env.admin_pool, "select wafleet_unlisted()").await, None);
    assert_eq!(sqlstate(&env.worker_pool, "select wafleet_unlisted()").await.as_deref(), Some("42501"));
    env.cleanup().await;
}

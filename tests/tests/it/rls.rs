//! Row-level security, exercised as the worker's role (`SET ROLE`), never as a superuser,
//! which would bypass RLS and make these tests meaningless.

use sqlx::{Connection, PgConnection};
use wafleet_tests::{EnvOptions, TestEnv};

async fn tenant_id(env: &TestEnv, customer_ref: &str) -> i64 {
    sqlx::query_scalar("select tenant_id from tenants where customer_ref = $1")
        .bind(customer_ref)
        .fetch_one(&env.owner_pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_with_a_forgotten_where_reads_and_writes_only_the_current_tenants_rows() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    env.add_tenant("rls_a", "rls_a").await.unwrap();
    env.add_tenant("rls_b", "rls_b").await.unwrap();
    let (a, b) = (tenant_id(&env, "rls_a").await, tenant_id(&env, "rls_b").await);
    for (tenant, body) in [(a, "for a"), (b, "for b"), (b, "for b again")] {
        sqlx::query("insert into outbox (tenant_id, ingest_id, chat, body, expires_at) values ($1, gen_random_uuid(), '1555', $2, now() + interval '1 hour')")
            .bind(tenant)
            .bind(body)
            .execute(&env.owner_pool)
            .await
            .unwrap();
    }

    // The owner connection switches to the worker's role, as the worker connects.
    let mut conn = PgConnection::connect(&env.owner_url).await.unwrap();
    sqlx::query("set role wafleet_worker").execute(&mut conn).await.unwrap();
    let is_super: bool = sqlx::query_scalar("select rolsuper from pg_roles where rolname = current_user")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!is_super, "the test must run as a non-superuser");

    let mut tx = conn.begin().await.unwrap();
    sqlx::query("select set_config('app.tenant_id', $1, true)").bind(a.to_string()).execute(&mut *tx).await.unwrap();
    let bodies: Vec<String> = sqlx::query_scalar("select body from outbox").fetch_all(&mut *tx).await.unwrap();
    assert_eq!(bodies, vec!["for a".to_owned()], "no WHERE, yet only A's rows are visible");
    let touched =
        sqlx::query("update outbox set body = 'overwritten'").execute(&mut *tx).await.unwrap().rows_affected();
    assert_eq!(touched, 1, "an unscoped UPDATE touches only A's rows");
    let deleted = sqlx::query("delete from outbox where tenant_id = $1").bind(b).execute(&mut *tx).await.unwrap();
    assert_eq!(deleted.rows_affected(), 0, "B's rows cannot be deleted from A's scope");
    let tenants: i64 = sqlx::query_scalar("select count(*) from tenants").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(tenants, 1, "only A's own tenant row is visible");
    let forged = sqlx::query("insert into outbox (tenant_id, ingest_id, chat, body, expires_at) values ($1, gen_random_uuid(), '1', 'x', now())")
        .bind(b)
        .execute(&mut *tx)
        .await;
    assert!(forged.is_err(), "writing a row for B from A's scope is refused by the policy");
    tx.rollback().await.unwrap();

    // Without a tenant set, nothing is visible at all.
    let none: i64 = sqlx::query_scalar("select count(*) from outbox").fetch_one(&mut conn).await.unwrap();
    assert_eq!(none, 0);
    // The setting is transaction-local: it does not leak into the next transaction.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("select set_config('app.tenant_id', $1, true)").bind(b.to_string()).execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    let after: i64 = sqlx::query_scalar("select count(*) from outbox").fetch_one(&mut conn).await.unwrap();
    assert_eq!(after, 0, "app.tenant_id must not survive its transaction");
    // And the owner view confirms B's rows were untouched.
    let b_rows: i64 = sqlx::query_scalar("select count(*) from outbox where tenant_id = $1 and body like 'for b%'")
        .bind(b)
        .fetch_one(&env.owner_pool)
        .await
        .unwrap();
    assert_eq!(b_rows, 2);
    conn.close().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_role_cannot_bypass_rls_or_own_tables() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    for role in ["wafleet_worker", "wafleet_admin"] {
        let (bypass, superuser): (bool, bool) =
            sqlx::query_as("select rolbypassrls, rolsuper from pg_roles where rolname = $1")
                .bind(role)
                .fetch_one(&env.owner_pool)
                .await
                .unwrap();
        assert!(!bypass && !superuser, "{role}");
        let owned: i64 = sqlx::query_scalar(
            "select count(*) from pg_tables where schemaname = 'public' and pg_has_role($1, tableowner, 'MEMBER')",
        )
        .bind(role)
        .fetch_one(&env.owner_pool)
        .await
        .unwrap();
        assert_eq!(owned, 0, "{role} owns no table and is no member of an owner");
    }
    // Every tenant-owned table has FORCE RLS and a policy.
    let unprotected: Vec<String> = sqlx::query_scalar(
        "select c.relname::text from pg_class c join pg_attribute a on a.attrelid = c.oid and a.attname = 'tenant_id' \
         join pg_namespace n on n.oid = c.relnamespace \
         where n.nspname = 'public' and c.relkind = 'r' \
         and (not c.relrowsecurity or not c.relforcerowsecurity or not exists (select 1 from pg_policy p where p.polrelid = c.oid))",
    )
    .fetch_all(&env.owner_pool)
    .await
    .unwrap();
    assert!(unprotected.is_empty(), "tables without FORCE RLS and a policy: {unprotected:?}");
    // The worker refuses an unsafe role: the owner (superuser here) is rejected with the fix in the message.
    let owner_pool = wafleet_fleet::db::app_pool(&env.owner_url, 1).unwrap();
    let err = wafleet_fleet::db::check_role(&owner_pool, wafleet_fleet::db::Duty::Worker, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("superuser") && err.contains("wafleet migrate"), "{err}");
    env.cleanup().await;
}

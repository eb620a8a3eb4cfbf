//! A send claim lives as long as its worker's database session. A crashed
//! worker's cut sends turn `unknown` at once and its tenants' next replies go out within seconds
//! of the restart (not after `WAFLEET_STALE_SENDING_SECS`); a black-holed worker loses its claim
//! within `WAFLEET_CLAIM_LEASE_SECS` + 1 s. Nothing is ever sent twice. A claim whose commit
//! its worker could not confirm is given back by that worker and sent once.

use std::collections::HashMap;
use std::process::Child;
use std::time::{Duration, Instant};

use wafleet_fleet::db;
use wafleet_fleet::labels::TenantLabels;
use wafleet_fleet::outbox::{self, CLAIM_LOCK_CLASS};
use wafleet_fleet::tenant::TenantId;
use wafleet_sim::Fault;
use wafleet_tests::fault_proxy::FaultProxy;
use wafleet_tests::{wait_until, EnvOptions, TestEnv};

use crate::crash::worker_command;

/// Kills its worker process when dropped, so a failed assertion leaves none behind.
struct Worker(Child);

impl Worker {
    fn kill(&mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A worker that only the lease can release: the age backstop is far beyond the test's bounds.
fn worker(env: &TestEnv, database_url: &str, lease_secs: u64) -> Worker {
    Worker(
        worker_command(env)
            .env("DATABASE_URL", database_url)
            .env("WAFLEET_STALE_SENDING_SECS", "120")
            .env("WAFLEET_CLAIM_LEASE_SECS", lease_secs.to_string())
            .spawn()
            .unwrap(),
    )
}

fn sends_per_body(env: &TestEnv) -> HashMap<String, usize> {
    let mut per_body = HashMap::new();
    for send in env.sim.all_sends() {
        *per_body.entry(send.body).or_insert(0) += 1;
    }
    per_body
}

async fn sending_claims(env: &TestEnv) -> Vec<(i64, i32)> {
    sqlx::query_as("select outbox_id, claimed_by from outbox where status = 'sending' and claimed_by is not null")
        .fetch_all(&env.owner_pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_send_resumes_every_tenants_replies_within_seconds_and_sends_nothing_twice() {
    const TENANTS: usize = 4;
    const PER_TENANT: usize = 6;
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    for t in 0..TENANTS {
        env.add_tenant(&format!("claim_{t}"), &format!("claim_{t}")).await.unwrap();
    }
    for t in 0..TENANTS {
        for i in 0..PER_TENANT {
            let status = env
                .sim
                .fire_message(&format!("claim_{t}"), &format!("1555200{t:04}"), &format!("c{t}-m{i}"), None, true)
                .await
                .unwrap();
            assert_eq!(status, 200);
        }
    }
    // Slow answers keep one send per tenant in flight when the kill lands.
    env.sim.set_fault(Some(Fault::delay_only(60_000)));
    let mut first = worker(&env, &env.worker_url, 10);
    wait_until(Duration::from_secs(60), || async { sending_claims(&env).await.len() == TENANTS }).await.unwrap();
    let cut: Vec<i64> = sending_claims(&env).await.into_iter().map(|(id, _)| id).collect();
    first.kill();
    env.sim.set_fault(None);
    let before = env.sim.all_sends().len();

    let restarted = Instant::now();
    let _second = worker(&env, &env.worker_url, 10);
    let resumed = wait_until(Duration::from_secs(10), || async {
        (0..TENANTS).all(|t| !env.sim.sends_for(&format!("claim_{t}")).is_empty())
    })
    .await;
    assert!(
        resumed.is_ok(),
        "every tenant sends again within 10 s of the restart (sent {} since, after {:?})",
        env.sim.all_sends().len() - before,
        restarted.elapsed()
    );
    let total = (TENANTS * PER_TENANT) as i64;
    wait_until(Duration::from_secs(60), || async {
        env.count("select count(*) from outbox where status in ('pending', 'sending')").await == 0
            && env.count("select count(*) from outbox").await == total
    })
    .await
    .unwrap();
    let cut_states: Vec<String> = sqlx::query_scalar("select status from outbox where outbox_id = any($1)")
        .bind(&cut)
        .fetch_all(&env.owner_pool)
        .await
        .unwrap();
    assert_eq!(cut_states, vec!["unknown"; TENANTS], "a send cut by the kill is `unknown`, never resent");
    let per_body = sends_per_body(&env);
    assert!(per_body.values().all(|n| *n == 1), "replies sent twice: {per_body:?}");
    assert_eq!(per_body.len(), TENANTS * (PER_TENANT - 1), "every reply but the cut ones went out");
    env.cleanup().await;
}

/// Whether the claim lock of `token` is held by any session.
async fn lock_held(env: &TestEnv, token: i32) -> bool {
    sqlx::query_scalar(
        "select exists(select 1 from pg_locks where locktype = 'advisory' and objsubid = 2 \
         and classid = $1::int::oid and objid = $2::int::oid)",
    )
    .bind(CLAIM_LOCK_CLASS)
    .bind(token)
    .fetch_one(&env.owner_pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_worker_loses_its_claim_within_the_lease_and_nothing_is_sent_twice() {
    const LEASE_SECS: u64 = 4;
    const MESSAGES: usize = 3;
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    env.add_tenant("hole", "hole").await.unwrap();
    for i in 0..MESSAGES {
        let status = env.sim.fire_message("hole", "15552010000", &format!("h-m{i}"), None, true).await.unwrap();
        assert_eq!(status, 200);
    }
    let proxy = FaultProxy::start(wafleet_tests::pg_addr()).await.unwrap();
    let mut via = url::Url::parse(&env.worker_url).unwrap();
    via.set_port(Some(proxy.addr().port())).unwrap();
    // The first send hangs at the bridge (below the 10 s send timeout) while the worker's database
    // traffic goes silent. Every message must be in the outbox, and so acked, before the stall: a
    // delivery still held by the silent worker would wait for it, not for the healthy one.
    env.sim.set_bridge_fault("hole", Some(Fault::delay_only(8_000).with_remaining(1)));
    let _silent = worker(&env, via.as_str(), LEASE_SECS);
    wait_until(Duration::from_secs(60), || async {
        env.count("select count(*) from outbox").await == MESSAGES as i64 && sending_claims(&env).await.len() == 1
    })
    .await
    .unwrap();
    let (cut, token) = sending_claims(&env).await[0];
    proxy.stall();
    let stalled = Instant::now();

    let bound = Duration::from_secs(LEASE_SECS + 1);
    wait_until(bound + Duration::from_secs(5), || async { !lock_held(&env, token).await }).await.unwrap();
    let released = stalled.elapsed();
    assert!(released <= bound + Duration::from_secs(1), "claim released after {released:?}, bound {bound:?}");
    assert!(
        released >= Duration::from_secs(LEASE_SECS / 2),
        "released after {released:?}: a live but silent worker keeps its claim for most of the lease"
    );

    // A healthy worker's sweep finds the claim dead: the reply is `unknown`, the rest go out.
    let _healthy = worker(&env, &env.worker_url, LEASE_SECS);
    wait_until(Duration::from_secs(30), || async { env.sim.sends_for("hole").len() == MESSAGES }).await.unwrap();
    let state: String = sqlx::query_scalar("select status from outbox where outbox_id = $1")
        .bind(cut)
        .fetch_one(&env.owner_pool)
        .await
        .unwrap();
    assert!(state == "unknown" || state == "sent", "the cut claim is settled, not resent: {state}");

    // The silent worker comes back and records what it did; still nothing twice.
    proxy.restore();
    wait_until(Duration::from_secs(30), || async {
        env.count("select count(*) from outbox where status in ('pending', 'sending')").await == 0
    })
    .await
    .unwrap();
    let per_body = sends_per_body(&env);
    assert_eq!(per_body.len(), MESSAGES);
    assert!(per_body.values().all(|n| *n == 1), "replies sent twice: {per_body:?}");
    proxy.stop();
    env.cleanup().await;
}

/// Gives back `tenant`'s claim `(token, attempts)` of `outbox_id` the way a sender does when its
/// claim's commit was cut; whether anything was taken.
async fn give_back(pool: &sqlx::PgPool, tenant: TenantId, outbox_id: i64, token: i32, attempts: i32) -> bool {
    let mut tx = db::begin_tenant(pool, tenant).await.unwrap();
    let released = outbox::release_unsent(&mut tx, tenant, outbox_id, Some(token), attempts).await.unwrap();
    tx.commit().await.unwrap();
    released
}

/// A claim whose commit went through while its worker saw only the connection break (a primary
/// failing mid-commit) leaves a row nobody will send: its token died with the session, so the
/// sweep makes it `unknown`. Its claimer knows it sent nothing and gives it back; it then goes out
/// once. A give-back naming another token or another attempt takes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_cut_at_its_commit_is_given_back_by_its_claimer_and_sent_once() {
    const DEAD_TOKEN: i32 = 0x0dead;
    let mut env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    env.add_tenant("cutclaim", "cutclaim").await.unwrap();
    sqlx::query(
        "insert into outbox (tenant_id, ingest_id, chat, body, expires_at) select tenant_id, gen_random_uuid(), \
         '15552030000', 'given back', now() + interval '1 hour' from tenants where customer_ref = 'cutclaim'",
    )
    .execute(&env.owner_pool)
    .await
    .unwrap();
    let outbox_id: i64 = sqlx::query_scalar("select outbox_id from outbox").fetch_one(&env.owner_pool).await.unwrap();
    let pool = sqlx::PgPool::connect(&env.worker_url).await.unwrap();
    let tenant = wafleet_fleet::tenant::load_by_ref(&pool, &wafleet_shared::CustomerRef::parse("cutclaim").unwrap())
        .await
        .unwrap()
        .id();

    let mut tx = db::begin_tenant(&pool, tenant).await.unwrap();
    let claimed = outbox::claim(&mut tx, tenant, outbox_id, None, Some(DEAD_TOKEN)).await.unwrap().expect("claimed");
    tx.commit().await.unwrap();
    let swept = outbox::mark_stale_sending(&pool, None, Duration::from_secs(120), &TenantLabels::default()).await;
    assert_eq!(swept.unwrap(), 1, "no session holds the token: the sweep takes the claim for a cut send");
    let owner = env.owner_pool.clone();
    let state = || async {
        sqlx::query_as::<_, (String, i32)>("select status, attempts from outbox").fetch_one(&owner).await.unwrap()
    };
    assert_eq!(state().await, ("unknown".to_owned(), 1));

    assert!(!give_back(&pool, tenant, outbox_id, DEAD_TOKEN + 1, claimed.attempts).await, "another claimer's");
    assert!(!give_back(&pool, tenant, outbox_id, DEAD_TOKEN, claimed.attempts + 1).await, "another attempt's");
    assert_eq!(state().await.0, "unknown");
    assert!(give_back(&pool, tenant, outbox_id, DEAD_TOKEN, claimed.attempts).await);
    assert_eq!(state().await, ("pending".to_owned(), 0), "pending again, the attempt not counted");

    env.start_worker().await.unwrap();
    wait_until(Duration::from_secs(30), || async { state().await.0 == "sent" }).await.unwrap();
    assert_eq!(env.sim.sends_for("cutclaim").len(), 1);
    assert!(!give_back(&pool, tenant, outbox_id, DEAD_TOKEN, claimed.attempts).await, "a sent reply stays sent");
    pool.close().await;
    env.cleanup().await;
}

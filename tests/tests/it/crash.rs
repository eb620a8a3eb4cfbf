//! Crash safety with real processes: `kill -9` of the worker mid-batch under load.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wafleet_tests::{wait_until, EnvOptions, TestEnv, TEST_API_KEY};

pub(crate) fn binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(|p| p.parent()).unwrap().join(name);
    assert!(
        path.exists(),
        "{} missing: run `scripts/test.sh`, or `cargo build --workspace --bins` before `cargo test`",
        path.display()
    );
    path
}

fn spawn_worker(env: &TestEnv) -> Child {
    worker_command(env).spawn().unwrap()
}

/// The worker binary configured for `env` (later `.env` calls override these).
pub(crate) fn worker_command(env: &TestEnv) -> Command {
    let mut command = Command::new(binary("wafleet-worker"));
    command
        .env("DATABASE_URL", &env.worker_url)
        .env("AMQP_URL", &env.amqp_url)
        .env("RABBITMQ_API_URL", &env.endpoints.rabbitmq_api_url)
        .env("WA_API_KEY", TEST_API_KEY)
        .env("WA_API_BASE_URL", env.sim.base_url())
        .env("WAFLEET_WORKER_ADDR", "127.0.0.1:0")
        .env("WAFLEET_RETRY_TIERS", "100ms,200ms")
        // The simulator runs unlimited; lift the send budget so it does not pace the test.
        .env("WAFLEET_SEND_RATE_PER_MIN", "60000")
        .env("WAFLEET_SEND_BURST", "1000")
        .env("WAFLEET_EGRESS_RATE_PER_MIN", "60000")
        .env("WAFLEET_EGRESS_BURST", "1000")
        // A send cut by the kill is found `sending` and becomes `unknown` quickly in the test.
        .env("WAFLEET_STALE_SENDING_SECS", "1")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_worker_mid_batch_processes_every_event_once_and_never_sends_twice() {
    const TENANTS: usize = 4;
    const PER_TENANT: usize = 100;
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    for t in 0..TENANTS {
        env.add_tenant(&format!("crash_{t}"), &format!("crash_{t}")).await.unwrap();
    }
    let mut posts = Vec::new();
    for t in 0..TENANTS {
        let sim = env.sim.clone();
        posts.push(tokio::spawn(async move {
            for i in 0..PER_TENANT {
                let status = sim
                    .fire_message(&format!("crash_{t}"), &format!("1555000{t:04}"), &format!("t{t}-m{i}"), None, true)
                    .await
                    .unwrap();
                assert_eq!(status, 200);
            }
        }));
    }
    for p in posts {
        p.await.unwrap();
    }
    let total = (TENANTS * PER_TENANT) as i64;

    let mut first = spawn_worker(&env);
    wait_until(Duration::from_secs(60), || async { env.sim.all_sends().len() >= 60 }).await.unwrap();
    first.kill().unwrap(); // SIGKILL: no drain, no acks for in-flight messages
    first.wait().unwrap();
    let sent_at_kill = env.sim.all_sends().len();

    let mut second = spawn_worker(&env);
    let done = wait_until(Duration::from_secs(90), || async {
        env.count("select count(*) from processed_events").await == total
            && env.count("select count(*) from outbox where status in ('pending', 'sending')").await == 0
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();
    done.unwrap();

    assert!(sent_at_kill < TENANTS * PER_TENANT, "the kill landed after everything was sent; raise the load");
    assert_eq!(env.count("select count(*) from outbox").await, total, "the bot's output was recorded once per event");
    assert_eq!(env.count("select count(*) from outbox where status not in ('sent', 'unknown')").await, 0);
    let mut per_body = std::collections::HashMap::new();
    for send in env.sim.all_sends() {
        *per_body.entry(send.body.clone()).or_insert(0) += 1;
        assert!(send.bridge == format!("crash_{}", &send.body[1..2]), "{} on {}", send.body, send.bridge);
    }
    let doubled: Vec<_> = per_body.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "replies sent twice: {doubled:?}");
    // Every reply recorded as sent really reached its bridge; the rest are visibly `unknown`.
    let sent: Vec<String> =
        sqlx::query_scalar("select body from outbox where status = 'sent'").fetch_all(&env.owner_pool).await.unwrap();
    assert!(sent.iter().all(|b| per_body.contains_key(b)), "a reply marked sent never reached the bridge");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_in_flight_work_and_loses_or_dead_letters_nothing() {
    const TENANTS: usize = 3;
    const PER_TENANT: usize = 80;
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    for t in 0..TENANTS {
        env.add_tenant(&format!("term_{t}"), &format!("term_{t}")).await.unwrap();
    }
    for t in 0..TENANTS {
        for i in 0..PER_TENANT {
            let status = env
                .sim
                .fire_message(&format!("term_{t}"), &format!("1555100{t:04}"), &format!("t{t}-m{i}"), None, true)
                .await
                .unwrap();
            assert_eq!(status, 200);
        }
    }
    let total = (TENANTS * PER_TENANT) as i64;
    let mut first = spawn_worker(&env);
    wait_until(Duration::from_secs(60), || async { env.sim.all_sends().len() >= 30 }).await.unwrap();
    let pid = first.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    // The worker must exit on its own, within its drain deadline.
    let exited = wait_until(Duration::from_secs(30), || {
        let done = first.try_wait().map(|s| s.is_some()).unwrap_or(false);
        async move { done }
    })
    .await;
    if exited.is_err() {
        first.kill().unwrap();
        panic!("the worker did not exit after SIGTERM");
    }
    let mut second = spawn_worker(&env);
    let done = wait_until(Duration::from_secs(90), || async {
        env.count("select count(*) from processed_events").await == total
            && env.count("select count(*) from outbox where status in ('pending', 'sending')").await == 0
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();
    done.unwrap();
    assert_eq!(
        env.count("select count(*) from outbox where status <> 'sent'").await,
        0,
        "a clean stop leaves nothing unknown"
    );
    for t in 0..TENANTS {
        let dlq = wafleet_fleet::dlq::list(
            &env.admin_pool,
            &env.amqp_url,
            Some(&wafleet_shared::CustomerRef::parse(&format!("term_{t}")).unwrap()),
        )
        .await
        .unwrap();
        assert_eq!(dlq[0].count, 0, "a SIGTERM must not push healthy messages towards the DLQ");
    }
    let mut per_body = std::collections::HashMap::new();
    for send in env.sim.all_sends() {
        *per_body.entry(send.body).or_insert(0) += 1;
    }
    assert_eq!(per_body.len(), TENANTS * PER_TENANT);
    assert!(per_body.values().all(|n| *n == 1), "no reply sent twice");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_of_a_fleet_with_no_tenant_yet_becomes_ready() {
    // A fresh install must roll out: readiness is about Postgres and the consumer session, not
    // about having a tenant to consume.
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut worker = worker_command(&env).env("WAFLEET_WORKER_ADDR", format!("127.0.0.1:{port}")).spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let ready = wait_until(Duration::from_secs(30), || async {
        reqwest::get(&url).await.map(|r| r.status().as_u16() == 200).unwrap_or(false)
    })
    .await;
    let _ = worker.kill();
    let _ = worker.wait();
    ready.expect("the worker's /readyz answers 200 with zero tenants");
    env.cleanup().await;
}

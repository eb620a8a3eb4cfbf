//! Crash safety with real processes: `kill -9` of the worker mid-batch under load.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wafleet_tests::{wait_until, EnvOptions, TestEnv, TEST_API_KEY};

fn binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(|p| p.parent()).unwrap().join(name);
    assert!(path.exists(), "{} missing: run `cargo test --workspace`, which builds it", path.display());
    path
}

fn spawn_worker(env: &TestEnv) -> Child {
    Command::new(binary("wafleet-worker"))
        .env("DATABASE_URL", &env.endpoints.database_url)
        .env("AMQP_URL", &env.amqp_url)
        .env("RABBITMQ_API_URL", &env.endpoints.rabbitmq_api_url)
        .env("WA_API_KEY", TEST_API_KEY)
        .env("WA_API_BASE_URL", env.sim.base_url())
        .env("WAFLEET_WORKER_ADDR", "127.0.0.1:0")
        .env("WAFLEET_RETRY_TIERS", "100ms,200ms")
        // A send cut by the kill is found `sending` and becomes `unknown` quickly in the test.
        .env("WAFLEET_STALE_SENDING_SECS", "1")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
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
                let status =
                    sim.fire_message(&format!("crash_{t}"), &format!("1555000{t:04}"), &format!("t{t}-m{i}"), None, true).await.unwrap();
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
    let sent: Vec<String> = sqlx::query_scalar("select body from outbox where status = 'sent'")
        .fetch_all(&env.owner_pool)
        .await
        .unwrap();
    assert!(sent.iter().all(|b| per_body.contains_key(b)), "a reply marked sent never reached the bridge");
    env.cleanup().await;
}

//! A switchover and a failover to a synchronous standby lose nothing. A
//! primary and its standby run on loopback (`scripts/pg-standby.sh`), the worker reaches them
//! through a TCP switch standing in for the read-write Service; during 1,000 signed posts across
//! 10 tenants the primary stops, the standby is promoted and the switch flips. Every accepted
//! event is processed once and answered once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use wafleet_tests::fault_proxy::FaultProxy;
use wafleet_tests::{counter_value, message_event, wait_until, EnvOptions, TestEnv};

const PRIMARY_PORT: u16 = 55432;
const STANDBY_PORT: u16 = 55433;
const TENANTS: usize = 10;
const PER_TENANT: usize = 100;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-standby.sh")
}

fn run(args: &[&str]) {
    let status = Command::new(script())
        .args(args)
        .env("WAFLEET_PG_PRIMARY_PORT", PRIMARY_PORT.to_string())
        .env("WAFLEET_PG_STANDBY_PORT", STANDBY_PORT.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "pg-standby.sh {args:?} failed");
}

/// The primary/standby pair; dropping it stops both clusters and removes their folder.
struct Pair;

impl Pair {
    fn up() -> Self {
        run(&["up"]);
        Pair
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        run(&["down"]);
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A test environment whose database lives behind `admin` (the switch).
async fn env_on(admin: String) -> TestEnv {
    // The shared broker's management API can be slow to create a vhost under the parallel suites.
    let mut tries = 0;
    loop {
        match TestEnv::with(EnvOptions { pg_admin_url: Some(admin.clone()), ..EnvOptions::default() }).await {
            Ok(env) => break env,
            Err(e) if tries < 2 => {
                tries += 1;
                eprintln!("test environment not ready ({e:#}); trying again");
            }
            Err(e) => panic!("no test environment: {e:#}"),
        }
    }
}

/// Posts 1,000 events while the primary is stopped in `mode` (`fast`: a switchover, `immediate`:
/// a failover), the standby promoted and the switch flipped; asserts nothing is lost or doubled.
/// Returns the env's redeliveries that quorum queues counted more than once.
async fn posts_survive(mode: &'static str) -> f64 {
    let _serial = crate::SERIAL.lock().await;
    let pair = tokio::task::spawn_blocking(Pair::up).await.unwrap();
    let switch = FaultProxy::start(loopback(PRIMARY_PORT)).await.unwrap();
    let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", switch.addr().port());
    let env = env_on(admin).await;
    let mut urls = Vec::new();
    for t in 0..TENANTS {
        urls.push(env.add_tenant(&format!("fo_{t}"), &format!("fo_{t}")).await.unwrap());
    }
    let burned_before = counter_value("wafleet_worker_redeliveries_total", &[("delivery_count", "2+")]);
    let client = reqwest::Client::new();
    let mut posters = Vec::new();
    for (t, url) in urls.into_iter().enumerate() {
        let client = client.clone();
        posters.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            for i in 0..PER_TENANT {
                let body = format!("f{t}-{i}");
                let event = message_event(&format!("1555300{t:04}"), &body, &format!("FO-{t}-{i}"));
                let status = client.post(&url).json(&event).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
                if status == 200 {
                    accepted.push(body);
                }
            }
            accepted
        }));
    }
    // Fail over mid-stream: some replies are out, most events are still to come.
    wait_until(Duration::from_secs(120), || async { env.sim.all_sends().len() >= 150 }).await.unwrap();
    tokio::task::spawn_blocking(move || {
        run(&["stop-primary", mode]);
        run(&["promote"]);
    })
    .await
    .unwrap();
    switch.switch_to(loopback(STANDBY_PORT));

    let mut accepted = Vec::new();
    for p in posters {
        accepted.extend(p.await.unwrap());
    }
    assert_eq!(accepted.len(), TENANTS * PER_TENANT, "ingest does not depend on Postgres: every post accepted");
    let total = accepted.len() as i64;
    let done = wait_until(Duration::from_secs(240), || async {
        env.count("select count(*) from processed_events where not from_me").await == total
            && env.count("select count(*) from outbox where status in ('pending', 'sending')").await == 0
            && env.sim.all_sends().len() >= accepted.len()
    })
    .await;
    assert!(
        done.is_ok(),
        "processing resumed on the new primary: processed {} of {total}, sent {}",
        env.count("select count(*) from processed_events where not from_me").await,
        env.sim.all_sends().len()
    );
    assert_eq!(env.count("select count(*) from outbox").await, total, "one reply per event, none lost");
    let mut per_body: HashMap<String, usize> = HashMap::new();
    for send in env.sim.all_sends() {
        assert_eq!(send.bridge, format!("fo_{}", &send.body[1..send.body.find('-').unwrap()]));
        *per_body.entry(send.body).or_default() += 1;
    }
    assert!(accepted.iter().all(|b| per_body.get(b) == Some(&1)), "every accepted event answered exactly once");
    assert_eq!(per_body.len(), accepted.len());
    let burned = counter_value("wafleet_worker_redeliveries_total", &[("delivery_count", "2+")]) - burned_before;
    env.cleanup().await;
    switch.stop();
    drop(pair);
    burned
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_the_synchronous_standby_loses_no_event_and_answers_each_once() {
    posts_survive("immediate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_loses_nothing_and_burns_at_most_one_delivery_attempt_per_message() {
    let burned = posts_survive("fast").await;
    assert_eq!(burned, 0.0, "a message was returned to its queue more than once during the switchover");
}

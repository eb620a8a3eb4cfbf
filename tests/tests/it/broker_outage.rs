//! Broker outages at the edge: ingest keeps answering 200 by spooling to disk, and every event
//! reaches its own tenant once the broker is back. Also `kill -9` of a spooling ingest process.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use wafleet_tests::fault_proxy::FaultProxy;
use wafleet_tests::{message_event, post_json, wait_until, EnvOptions, TestEnv, TEST_SIGNING_KEY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_cut_during_5000_posts_across_20_tenants_loses_and_misroutes_nothing() {
    const TENANTS: usize = 20;
    const PER_TENANT: usize = 250;
    let proxy = FaultProxy::start(wafleet_tests::amqp_addr()).await.unwrap();
    let env = TestEnv::with(EnvOptions { ingest_amqp_via: Some(proxy.addr()), ..EnvOptions::default() }).await.unwrap();
    let mut urls = Vec::new();
    for t in 0..TENANTS {
        urls.push(env.add_tenant(&format!("cut_{t:02}"), &format!("cut_{t:02}")).await.unwrap());
    }
    let client = reqwest::Client::new();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    // 5,000 events from 20 concurrent posters in three phases: broker up, broker cut (every
    // event must be spooled, and still answered 200), broker back.
    let phases = [(0, PER_TENANT / 4), (PER_TENANT / 4, PER_TENANT * 3 / 4), (PER_TENANT * 3 / 4, PER_TENANT)];
    let mut spooled_during_cut = 0.0;
    for (phase, (from, to)) in phases.into_iter().enumerate() {
        let spooled_before = wafleet_tests::counter_value("wafleet_ingest_spooled_total", &[]);
        if phase == 1 {
            proxy.refuse();
        }
        let mut posters = Vec::new();
        for (t, url) in urls.iter().enumerate() {
            let (client, url) = (client.clone(), url.clone());
            posters.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                for i in from..to {
                    let event =
                        message_event(&format!("1555200{t:04}"), &format!("c{t:02}-{i}"), &format!("CUT-{t}-{i}"));
                    seen.push(client.post(&url).json(&event).send().await.map(|r| r.status().as_u16()).unwrap_or(0));
                }
                seen
            }));
        }
        for p in posters {
            for status in p.await.unwrap() {
                *statuses.entry(status).or_default() += 1;
            }
        }
        if phase == 1 {
            spooled_during_cut = wafleet_tests::counter_value("wafleet_ingest_spooled_total", &[]) - spooled_before;
            // What the spool-fill alerts divide: the maximum is exported beside the fill.
            let max = wafleet_tests::counter_value("wafleet_ingest_spool_max_bytes", &[]);
            assert!(max >= (1u64 << 20) as f64, "wafleet_ingest_spool_max_bytes is exported: {max}");
            proxy.restore();
        }
    }
    assert_eq!(statuses.get(&200), Some(&(TENANTS * PER_TENANT)), "every post answered 200: {statuses:?}");
    assert!(
        spooled_during_cut >= (TENANTS * PER_TENANT / 2) as f64,
        "the cut phase went through the spool: {spooled_during_cut}"
    );
    let sent = || env.sim.all_sends().len();
    let _ = wait_until(Duration::from_secs(240), || async { sent() >= TENANTS * PER_TENANT }).await;
    assert_eq!(sent(), TENANTS * PER_TENANT, "every accepted event reached its reply");
    let mut per_body = HashMap::new();
    for send in env.sim.all_sends() {
        // The body names its tenant: it must be on that tenant's bridge, once.
        assert_eq!(send.bridge, format!("cut_{}", &send.body[1..3]), "{} on {}", send.body, send.bridge);
        *per_body.entry(send.body).or_insert(0) += 1;
    }
    assert_eq!(per_body.len(), TENANTS * PER_TENANT);
    assert!(per_body.values().all(|n| *n == 1), "no event answered twice");
    proxy.stop();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_spooling_ingest_process_keeps_every_accepted_event() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant("spooled", "spooled").await.unwrap();
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|p| p.parent()).unwrap().join("wafleet-ingest");
    let spool = tempfile_dir(&env.name);
    let (port, ops_port) = (free_port(), free_port());
    let spawn = |amqp: String| {
        Command::new(&bin)
            .env("AMQP_URL", amqp)
            .env("WAFLEET_INGEST_ADDR", format!("127.0.0.1:{port}"))
            .env("WAFLEET_INGEST_OPS_ADDR", format!("127.0.0.1:{ops_port}"))
            .env("WAFLEET_SIGNING_KEY", TEST_SIGNING_KEY)
            .env("WAFLEET_SPOOL_DIR", &spool)
            .env("WAFLEET_READY_RECHECK_MS", "200")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // The broker is unreachable (closed port): every accepted event is spooled.
    let mut first = spawn("amqp://guest:guest@127.0.0.1:1/x".into());
    let base = format!("http://127.0.0.1:{port}");
    let health = format!("http://127.0.0.1:{ops_port}/healthz");
    wait_until(Duration::from_secs(20), || async {
        reqwest::get(&health).await.is_ok_and(|r| r.status().is_success())
    })
    .await
    .unwrap();
    let url = env.webhook_url("spooled").await.unwrap().replace(&env.ingest_url, &base);
    for i in 0..20 {
        assert_eq!(post_json(&url, &message_event("15553000001", &format!("k{i}"), &format!("K{i}"))).await, 200);
    }
    first.kill().unwrap(); // SIGKILL right after the 200s
    first.wait().unwrap();
    let mut second = spawn(env.amqp_url.clone());
    let sends = env.sim.wait_for_sends("spooled", 20, Duration::from_secs(60)).await;
    second.kill().unwrap();
    second.wait().unwrap();
    assert_eq!(sends.len(), 20, "every event accepted before the kill was drained from the spool");
    let _ = std::fs::remove_dir_all(&spool);
    env.cleanup().await;
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wafleet-kill-spool-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

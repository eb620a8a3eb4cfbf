//! The isolation canary: synthetic events through ingest for two canary tenants, each
//! reply checked to come back on its own tenant only, and a sabotaged routing caught.

use std::time::Duration;

use secrecy::SecretString;
use wafleet_shared::CustomerRef;
use wafleet_sim::SimConfig;
use wafleet_tests::{counter_value, wait_until, EnvOptions, TestEnv, TEST_API_KEY, TEST_SIGNING_KEY};
use wafleet_worker::canary::{Canary, CanaryConfig, Verdict};

const CANARY_CHAT: &str = "15550007777";

/// Refs unique to this run: the metrics recorder is shared by every test of the binary.
fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{prefix}_{}", &id[id.len() - 10..])
}

fn canary_config(env: &TestEnv, tenants: &[&str], require_echo: bool) -> CanaryConfig {
    CanaryConfig {
        tenants: tenants.iter().map(|t| CustomerRef::parse(t).unwrap()).collect(),
        interval: Duration::from_millis(500),
        ingest_url: env.ingest_url.clone(),
        signing_key: SecretString::from(TEST_SIGNING_KEY),
        chat: CANARY_CHAT.into(),
        timeout: Duration::from_secs(20),
        require_echo,
        poll_interval: Duration::from_millis(100),
    }
}

fn gauge(name: &str, tenant: &str) -> Option<f64> {
    let text = wafleet_tests::metrics_handle().render();
    let prefix = format!("{name}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(&format!("tenant=\"{tenant}\"")))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_in_the_worker_passes_for_two_canary_tenants_whose_replies_come_back_on_their_own_bridges() {
    // The bridges echo every send back as a from_me webhook, as WA Bridges does, so the canary
    // can also require the bridge's own copy.
    let sim =
        SimConfig { api_keys: vec![TEST_API_KEY.into()], unlimited: true, echo_from_me: true, ..SimConfig::default() };
    let mut env = TestEnv::with(EnvOptions { no_worker: true, sim: Some(sim), ..EnvOptions::default() }).await.unwrap();
    let (a, b) = (unique("canary_a"), unique("canary_b"));
    env.add_tenant(&a, &a).await.unwrap();
    env.add_tenant(&b, &b).await.unwrap();
    env.add_tenant("bystander", "bystander").await.unwrap();
    env.worker_config.canary = Some(canary_config(&env, &[&a, &b], true));
    env.start_worker().await.unwrap();

    wait_until(Duration::from_secs(60), || async {
        gauge("wafleet_canary_success", &a) == Some(1.0) && gauge("wafleet_canary_success", &b) == Some(1.0)
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: runs {}",
            wafleet_tests::metrics_handle()
                .render()
                .lines()
                .filter(|l| l.contains("canary"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    for tenant in [&a, &b] {
        assert!(gauge("wafleet_canary_last_success_timestamp_seconds", tenant).unwrap_or(0.0) > 0.0);
        assert!(gauge("wafleet_canary_latency_seconds", tenant).is_some_and(|l| (0.0..20.0).contains(&l)));
        assert_eq!(counter_value("wafleet_canary_runs_total", &[("tenant", tenant), ("result", "misrouted")]), 0.0);
    }
    assert_eq!(counter_value("wafleet_canary_leader", &[]), 1.0);
    // The verdicts the console shows, stored by the worker's role.
    wait_until(Duration::from_secs(10), || async {
        let stored = wafleet_fleet::console::canary_results(&env.admin_pool).await.unwrap();
        stored.iter().filter(|r| r.passed && r.reason.is_none() && r.latency_ms.is_some()).count() == 2
    })
    .await
    .unwrap();
    // What the simulator saw: each canary bridge sent only its own canary replies, to the canary chat.
    for tenant in [&a, &b] {
        let sends = env.sim.sends_for(tenant);
        assert!(!sends.is_empty());
        for send in sends {
            assert_eq!(send.chat, CANARY_CHAT);
            assert!(send.body.starts_with(wafleet_worker::canary::CANARY_PREFIX));
        }
    }
    assert!(env.sim.sends_for("bystander").is_empty());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_fails_when_its_nonce_shows_up_under_another_canary_tenant() {
    let env = TestEnv::new().await.unwrap();
    let (a, b) = (unique("canary_a"), unique("canary_b"));
    env.add_tenant(&a, &a).await.unwrap();
    env.add_tenant(&b, &b).await.unwrap();
    let canary = Canary::new(env.admin_pool.clone(), canary_config(&env, &[&a, &b], false)).unwrap();
    let tenant_a = CustomerRef::parse(&a).unwrap();

    // An honest round first: both pass.
    let round = canary.run_round().await;
    assert!(round.iter().all(|(_, v)| v.passed()), "{round:?}");
    assert_eq!(gauge("wafleet_canary_success", &a), Some(1.0));

    // Sabotage: a reply row carrying A's nonce appears under B, as if routing had crossed tenants.
    let probe = canary.send_probe(&tenant_a).await.unwrap();
    sqlx::query(
        "insert into outbox (tenant_id, ingest_id, chat, body, expires_at) \
         select tenant_id, gen_random_uuid(), $2, $3, now() + interval '1 hour' from tenants where customer_ref = $1",
    )
    .bind(&b)
    .bind(CANARY_CHAT)
    .bind(format!("{} {}", wafleet_worker::canary::CANARY_PREFIX, probe.nonce))
    .execute(&env.owner_pool)
    .await
    .unwrap();
    let verdict = canary.verify(&probe).await;
    canary.record(&tenant_a, &verdict);
    match &verdict {
        Verdict::Failed { reason, detail } => {
            assert_eq!(*reason, "misrouted");
            assert!(detail.contains(&b), "{detail}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(gauge("wafleet_canary_success", &a), Some(0.0));
    assert_eq!(counter_value("wafleet_canary_runs_total", &[("tenant", &a), ("result", "misrouted")]), 1.0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_tenant_that_does_not_run_the_echo_bot_fails_the_canary_without_sending_anything() {
    let env = TestEnv::new().await.unwrap();
    let rules = unique("canary_rules");
    env.add_tenant_with(&rules, &rules, wafleet_fleet::tenant::BotKind::Rules, wafleet_shared::AuthMode::Token)
        .await
        .unwrap();
    let canary = Canary::new(env.admin_pool.clone(), canary_config(&env, &[&rules], false)).unwrap();
    let round = canary.run_round().await;
    assert!(matches!(&round[0].1, Verdict::Failed { reason: "setup", .. }), "{round:?}");
    assert_eq!(gauge("wafleet_canary_success", &rules), Some(0.0));
    assert_eq!(env.count("select count(*) from processed_events").await, 0, "nothing was posted");
    env.cleanup().await;
}

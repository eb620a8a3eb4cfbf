//! Offboarding proves its bridge is gone. The WA Bridges reference calls the path parameter of
//! `DELETE /api/instances/:id` an id without saying whether it is the numeric id or the
//! `customer_ref`; the simulator serves each reading strictly, and the client must delete the
//! bridge under both, or fail loudly when it cannot.

use wafleet_fleet::budget::BudgetConfig;
use wafleet_fleet::error::{Conflict, Error};
use wafleet_fleet::offboard::StepState;
use wafleet_fleet::service;
use wafleet_sim::{ErrorStatuses, InstanceIdKind, SimConfig};
use wafleet_tests::{EnvOptions, TestEnv, TEST_API_KEY};

use super::{r, signing_key};

async fn env_with(instance_id: InstanceIdKind) -> TestEnv {
    env_answering(instance_id, ErrorStatuses::Conventional).await
}

async fn env_answering(instance_id: InstanceIdKind, error_statuses: ErrorStatuses) -> TestEnv {
    let sim = SimConfig { api_keys: vec![TEST_API_KEY.into()], instance_id, error_statuses, ..SimConfig::default() };
    TestEnv::with(EnvOptions { sim: Some(sim), no_worker: true, ..EnvOptions::default() }).await.unwrap()
}

fn listed(env: &TestEnv) -> Vec<String> {
    let mut refs: Vec<String> = env.sim.bridges().into_iter().map(|b| b.customer_ref).collect();
    refs.sort();
    refs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_deletes_the_bridge_whether_the_api_takes_the_numeric_id_or_the_customer_ref() {
    // The wrong identifier kind is refused with 404 by a conventional API, and with one status
    // for every error (400 here) by an API as undocumented as the reference: the same proof holds.
    let cases = [InstanceIdKind::Id, InstanceIdKind::Ref]
        .into_iter()
        .flat_map(|kind| [ErrorStatuses::Conventional, ErrorStatuses::Uniform].map(|statuses| (kind, statuses)));
    for (kind, statuses) in cases {
        let kind_and_statuses = format!("{kind:?}, {statuses:?}");
        let env = env_answering(kind, statuses).await;
        let fleet = env.fleet(BudgetConfig::default());
        for t in ["off_gone", "off_stays"] {
            env.add_tenant_in(t, t, "default").await.unwrap();
            service::provision(&fleet, &signing_key(), &r(t), &env.ingest_url).await.unwrap();
        }
        let steps = service::offboard(&fleet, &r("off_gone"), false, &mut |_| {}).await.unwrap();
        assert_eq!(steps[4].state, StepState::Done, "{kind_and_statuses}: {steps:?}");
        assert!(steps[4].detail.contains("no longer listed"), "{kind_and_statuses}: {}", steps[4].detail);
        assert_eq!(listed(&env), ["off_stays"], "{kind_and_statuses}: only the offboarded tenant's bridge is gone");
        env.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_still_listed_after_its_delete_fails_the_offboard_loudly() {
    // Under the customer_ref reading, the numeric id names nothing; a key that is itself a number
    // is never sent in its place (it could be another bridge's id), so nothing can delete it.
    let env = env_with(InstanceIdKind::Ref).await;
    let fleet = env.fleet(BudgetConfig::default());
    env.add_tenant_in("4242", "4242", "default").await.unwrap();
    service::provision(&fleet, &signing_key(), &r("4242"), &env.ingest_url).await.unwrap();

    let err = service::offboard(&fleet, &r("4242"), false, &mut |_| {}).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(Conflict::BridgeStillListed { .. })), "{err:?}");
    assert!(err.to_string().contains("still listed at WA Bridges"), "{err}");
    assert_eq!(listed(&env), ["4242"], "the bridge is still there");
    let status: String = sqlx::query_scalar("select status from tenants where customer_ref = '4242'")
        .fetch_one(&env.owner_pool)
        .await
        .unwrap();
    assert_eq!(status, "offboarded", "step 1 ran; a rerun resumes at the bridge");

    let cli = env.wafleet(&["tenants", "offboard", "4242", "--yes"]);
    assert!(!cli.status.success(), "the CLI fails loudly too");
    assert!(super::text(&cli.stderr).contains("still listed at WA Bridges"), "{}", super::text(&cli.stderr));
    env.cleanup().await;
}

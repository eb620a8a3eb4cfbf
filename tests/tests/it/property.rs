//! Property: for random interleavings of events across N tenants, mixed with unknown refs and
//! payloads naming other tenants' bridges, every recorded send's bridge is the bridge of the
//! tenant that owns the message. `PROPTEST_CASES` raises the case count (default 24).

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use wafleet_shared::{CustomerRef, Generation, Keyring};
use wafleet_tests::{message_event, post_json, TestEnv, TEST_SIGNING_KEY};

const TENANTS: usize = 4;

#[derive(Clone, Debug)]
enum Step {
    /// Tenant index, whether the body carries customer_ref, index of a foreign bridge to name.
    Known(usize, bool, usize),
    /// A signed URL for a ref that has no tenant.
    Unknown(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..TENANTS, any::<bool>(), 0..TENANTS).prop_map(|(t, r, f)| Step::Known(t, r, f)),
        1 => (0u8..8).prop_map(Step::Unknown),
    ]
}

#[test]
fn every_send_lands_on_the_bridge_of_the_tenant_that_owns_the_message() {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let env = runtime.block_on(async {
        let env = TestEnv::new().await.unwrap();
        for i in 0..TENANTS {
            env.add_tenant(&format!("prop_{i}"), &format!("prop_{i}")).await.unwrap();
        }
        env
    });
    let keyring = Keyring::parse(&secrecy::SecretString::from(TEST_SIGNING_KEY)).unwrap();
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    // The runner takes an `Fn`, so the running totals live in cells.
    let expected_total: std::cell::RefCell<HashMap<usize, usize>> = Default::default();
    let case = std::cell::Cell::new(0u32);
    let result = runner.run(&proptest::collection::vec(step(), 1..12), |steps| {
        case.set(case.get() + 1);
        let case = case.get();
        runtime.block_on(async {
            let mut posts = Vec::new();
            for (n, s) in steps.iter().enumerate() {
                let body = format!("case{case}-{n}");
                match s.clone() {
                    Step::Known(t, include_ref, foreign) => {
                        *expected_total.borrow_mut().entry(t).or_default() += 1;
                        let mut event = message_event(&format!("1555{t:07}"), &body, &format!("P{case}-{n}"));
                        // ISOLATION probe: the payload names another tenant's bridge.
                        event["bridge_id"] = format!("prop_{foreign}").into();
                        event["instance"] = format!("prop_{foreign}").into();
                        let sim = env.sim.clone();
                        posts.push(tokio::spawn(async move {
                            sim.fire(&format!("prop_{t}"), event, include_ref).await.unwrap()
                        }));
                    }
                    Step::Unknown(u) => {
                        let r = CustomerRef::parse(&format!("ghost_{u}")).unwrap();
                        let url = format!("{}/webhook/{r}/{}", env.ingest_url, keyring.sign(&r, Generation::FIRST));
                        let event = message_event("15559999999", &body, &format!("G{case}-{n}"));
                        posts.push(tokio::spawn(async move { post_json(&url, &event).await }));
                    }
                }
            }
            for p in posts {
                prop_assert_eq!(p.await.unwrap(), 200);
            }
            let totals = expected_total.borrow().clone();
            for (t, n) in &totals {
                let sends = env.sim.wait_for_sends(&format!("prop_{t}"), *n, Duration::from_secs(30)).await;
                prop_assert_eq!(sends.len(), *n, "tenant {} replies", t);
            }
            for send in env.sim.all_sends() {
                // The chat encodes the owning tenant; it must match the bridge it was sent on.
                let owner: usize = send.chat[4..].parse().unwrap();
                prop_assert_eq!(
                    &send.bridge,
                    &format!("prop_{owner}"),
                    "reply for tenant {} on {}",
                    owner,
                    send.bridge
                );
            }
            Ok(())
        })
    });
    runtime.block_on(env.cleanup());
    result.unwrap();
}

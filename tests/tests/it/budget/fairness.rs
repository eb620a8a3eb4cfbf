//! Fair share: replies are served round robin by tenant (deficit round robin with weights), not
//! by age across the fleet. Driven step by step on a manual clock with the production budget
//! (110 + 5 per minute), so minutes of scheduling take a few seconds and no test sleeps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use wafleet_fleet::clock::ManualClock;
use wafleet_fleet::service;
use wafleet_tests::{EnvOptions, TestEnv};
use wafleet_worker::sender::Step;

use super::{bodies, manual_sender};

/// (active tenants + 1) × 60 / rate + 1 s, the bound, at the production rate of 110/min.
fn bound(active_tenants: usize) -> Duration {
    Duration::from_secs_f64((active_tenants as f64 + 1.0) * 60.0 / 110.0 + 1.0)
}

struct SentRow {
    tenant: String,
    outbox_id: i64,
    created_at: DateTime<Utc>,
    sent_at: DateTime<Utc>,
}

async fn sent_rows(env: &TestEnv) -> Vec<SentRow> {
    let rows: Vec<(String, i64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "select t.customer_ref, o.outbox_id, o.created_at, o.sent_at from outbox o join tenants t using (tenant_id) \
         where o.status = 'sent' order by o.sent_at, o.outbox_id",
    )
    .fetch_all(&env.owner_pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(tenant, outbox_id, created_at, sent_at)| SentRow { tenant, outbox_id, created_at, sent_at })
        .collect()
}

async fn sent_small(env: &TestEnv) -> i64 {
    env.count(
        "select count(*) from outbox o join tenants t using (tenant_id) where o.status = 'sent' and t.customer_ref like 'small_%'",
    )
    .await
}

fn to_std(d: chrono::Duration) -> Duration {
    d.to_std().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_small_tenants_are_never_served_behind_a_tenant_with_500_queued_replies() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let ttl = Duration::from_secs(7200);
    env.add_tenant("flood", "flood").await.unwrap();
    env.queue_replies("flood", "15550000200", &bodies("flood", 500), Some(clock.get()), ttl).await;
    let small: Vec<String> = (1..=9).map(|i| format!("small_{i}")).collect();
    for s in &small {
        env.add_tenant(s, s).await.unwrap();
        env.queue_replies(s, "15550000201", &bodies(s, 5), Some(clock.get()), ttl).await;
    }
    let sender = manual_sender(&env, &clock);
    let mut sends = 0;
    while sent_small(&env).await < 45 {
        for _ in 0..10 {
            match sender.step().await.unwrap() {
                Step::Sent => sends += 1,
                Step::Wait(d) => clock.advance(d),
                Step::Skipped => {}
                Step::Idle(_) => panic!("idle with replies pending"),
            }
        }
        assert!(sends < 200, "small tenants were starved");
    }
    let rows = sent_rows(&env).await;
    let last_small = rows.iter().filter(|r| r.tenant.starts_with("small_")).map(|r| r.sent_at).max().unwrap();
    let flood_before = rows.iter().filter(|r| r.tenant == "flood" && r.sent_at <= last_small).count();
    assert!(flood_before <= 6, "the flood got {flood_before} sends while nine tenants waited for 45");
    let limit = bound(10);
    for s in &small {
        let mut mine: Vec<&SentRow> = rows.iter().filter(|r| &r.tenant == s).collect();
        mine.sort_by_key(|r| r.outbox_id);
        assert_eq!(mine.len(), 5);
        // Head-of-line wait: from the moment a reply is its tenant's oldest (created, or its
        // predecessor sent) to its send. Its p99 (here the max of 5) stays within one round.
        let mut previous: Option<DateTime<Utc>> = None;
        for (k, r) in mine.iter().enumerate() {
            let head_since = previous.map_or(r.created_at, |p| p.max(r.created_at));
            let wait = to_std(r.sent_at - head_since);
            assert!(wait <= limit, "{s} reply {k} waited {wait:?} at the head of its queue (bound {limit:?})");
            let total = to_std(r.sent_at - r.created_at);
            assert!(total <= limit * (k as u32 + 1), "{s} reply {k} waited {total:?} in all");
            previous = Some(r.sent_at);
        }
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_arriving_during_a_flood_wait_at_most_one_round_whatever_the_flood_size() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let t0 = clock.get();
    let ttl = Duration::from_secs(7200);
    env.add_tenant("flood", "flood").await.unwrap();
    env.queue_replies("flood", "15550000210", &bodies("flood", 500), Some(t0), ttl).await;
    // Nine conversations: each tenant gets a reply every 20 s, staggered by 2 s.
    let mut arrivals: Vec<(DateTime<Utc>, String, String)> = Vec::new();
    for i in 1..=9 {
        let s = format!("small_{i}");
        env.add_tenant(&s, &s).await.unwrap();
        for k in 0..5 {
            let at = t0 + chrono::Duration::seconds(20 * k + 2 * i);
            arrivals.push((at, s.clone(), format!("{s}-turn-{k}")));
        }
    }
    arrivals.sort();
    let sender = manual_sender(&env, &clock);
    let mut next = 0;
    for _ in 0..2000 {
        while next < arrivals.len() && arrivals[next].0 <= clock.get() {
            let (at, tenant, body) = &arrivals[next];
            env.queue_replies(tenant, "15550000211", std::slice::from_ref(body), Some(*at), ttl).await;
            next += 1;
        }
        if next == arrivals.len() && sent_small(&env).await == 45 {
            break;
        }
        match sender.step().await.unwrap() {
            Step::Sent | Step::Skipped => {}
            Step::Wait(d) => clock.advance(d),
            Step::Idle(_) => panic!("idle while the flood is pending"),
        }
    }
    assert_eq!(sent_small(&env).await, 45);
    let rows = sent_rows(&env).await;
    let limit = bound(10);
    let mut waits: HashMap<String, Vec<Duration>> = HashMap::new();
    for r in rows.iter().filter(|r| r.tenant.starts_with("small_")) {
        waits.entry(r.tenant.clone()).or_default().push(to_std(r.sent_at - r.created_at));
    }
    for (tenant, mut w) in waits {
        w.sort();
        let p99 = w[((w.len() as f64 * 0.99).ceil() as usize).saturating_sub(1)];
        assert!(p99 <= limit, "{tenant}: p99 wait {p99:?} exceeds {limit:?}");
    }
    let flood_pending = env
        .count("select count(*) from outbox o join tenants t using (tenant_id) where t.customer_ref = 'flood' and o.status = 'pending'")
        .await;
    assert!(flood_pending > 300, "the flood was still queued throughout ({flood_pending} pending)");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_of_weight_two_gets_twice_the_share_of_a_tenant_of_weight_one() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    for (r, weight) in [("heavy", 2), ("light", 1)] {
        env.add_tenant(r, r).await.unwrap();
        let customer_ref = wafleet_shared::CustomerRef::parse(r).unwrap();
        service::set_tenant_limits(&env.admin_pool, &customer_ref, weight, None, None).await.unwrap();
        env.queue_replies(r, "15550000220", &bodies(r, 40), Some(clock.get()), Duration::from_secs(3600)).await;
    }
    let sender = manual_sender(&env, &clock);
    let mut sent = 0;
    while sent < 30 {
        match sender.step().await.unwrap() {
            Step::Sent => sent += 1,
            Step::Wait(d) => clock.advance(d),
            Step::Skipped => {}
            Step::Idle(_) => panic!("idle with replies pending"),
        }
    }
    let (heavy, light) = (env.sim.sends_for("heavy").len(), env.sim.sends_for("light").len());
    assert_eq!(heavy + light, 30);
    assert!((19..=21).contains(&heavy), "weight 2 got {heavy} of 30 (light {light})");
    // Within a tenant, by creation time.
    let heavy_bodies: Vec<String> = env.sim.sends_for("heavy").into_iter().map(|s| s.body).collect();
    assert_eq!(heavy_bodies, bodies("heavy", 40)[..heavy].to_vec());
    env.cleanup().await;
}

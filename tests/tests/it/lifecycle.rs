//! Accounts and tenant lifecycle from the CLI and the service layer against the
//! simulator's API (provision, reconcile, status, URL rotation, offboarding), the provisioning
//! bucket, and the audit log.

mod data;
mod offboard_bridge;

use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use wafleet_fleet::budget::BudgetConfig;
use wafleet_fleet::offboard::StepState;
use wafleet_fleet::service;
use wafleet_shared::CustomerRef;
use wafleet_sim::SimConfig;
use wafleet_tests::{counter_value, key_file, post_json, wait_until, EnvOptions, TestEnv, TEST_SIGNING_KEY};

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub(crate) fn r(raw: &str) -> CustomerRef {
    CustomerRef::parse(raw).unwrap()
}

pub(crate) fn signing_key() -> secrecy::SecretString {
    secrecy::SecretString::from(TEST_SIGNING_KEY)
}

async fn instance_id(env: &TestEnv, customer_ref: &str) -> Option<i64> {
    sqlx::query_scalar("select instance_id from tenants where customer_ref = $1")
        .bind(customer_ref)
        .fetch_one(&env.owner_pool)
        .await
        .unwrap()
}

/// Whether the queue exists (a passive declare on a fresh channel).
async fn queue_exists(env: &TestEnv, queue: &str) -> bool {
    let conn = wafleet_shared::amqp::connect(&env.amqp_url, "lifecycle-test").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let exists = channel.queue_declare(queue, passive, FieldTable::default()).await.is_ok();
    let _ = conn.close(200, "done").await;
    exists
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_naming_a_secret_or_host_outside_the_allow_lists_are_refused_with_a_clear_error() {
    // Whoever adds an account picks the secret sent as a bearer token and its host.
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let refused = |args: &[&str], expected: &str| {
        let out = env.wafleet(&[&["accounts", "add"], args].concat());
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(text(&out.stderr).contains(expected), "{args:?}: {}", text(&out.stderr));
    };
    refused(&["sig", "--key-ref", "env:WAFLEET_SIGNING_KEY"], "use env:WA_API_KEY, env:WA_API_KEY_<SUFFIX> or file:");
    refused(&["outside", "--key-ref", "file:/etc/hostname"], "outside the secrets folder");
    let dotted = format!("file:{}/../etc/hostname", std::env::temp_dir().display());
    refused(&["dotted", "--key-ref", &dotted], "outside the secrets folder");
    refused(
        &["evil", "--key-ref", "env:WA_API_KEY", "--base-url", "https://evil.example"],
        "not in WAFLEET_WA_API_HOSTS",
    );
    refused(&["plain", "--key-ref", "env:WA_API_KEY", "--base-url", "http://wabridges.com"], "must be https");
    let sim = env.sim.base_url();
    refused(&["loop", "--key-ref", "env:WA_API_KEY", "--base-url", &sim], "loopback only for a test account");

    let ok = |args: &[&str]| {
        let out = env.wafleet(&[&["accounts", "add"], args].concat());
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    };
    ok(&["wab", "--key-ref", "env:WA_API_KEY_EU2", "--base-url", "https://wabridges.com"]);
    ok(&["simacct", "--key-ref", "env:WA_API_KEY", "--base-url", &sim, "--test-account"]);
    let test_flag: bool = sqlx::query_scalar("select test_account from accounts where name = 'simacct'")
        .fetch_one(&env.owner_pool)
        .await
        .unwrap();
    assert!(test_flag);
    let names: i64 = sqlx::query_scalar("select count(*) from accounts").fetch_one(&env.owner_pool).await.unwrap();
    assert_eq!(names, 3, "only the default account and the two allowed ones exist");

    // A row written past the CLI (as the owner here) is refused where keys are read.
    sqlx::query("insert into accounts (name, key_ref) values ('sneaky', 'file:/etc/hostname')")
        .execute(&env.owner_pool)
        .await
        .unwrap();
    let directory = wafleet_fleet::accounts::AccountDirectory::new(
        env.admin_pool.clone(),
        env.directory_settings(BudgetConfig::default()),
    );
    let (ready, failed) = directory.refresh().await.unwrap();
    assert!(ready.iter().all(|a| a.name != "sneaky"));
    let refused: Vec<String> = failed.iter().filter(|(n, _)| n == "sneaky").map(|(_, e)| e.to_string()).collect();
    assert!(refused.len() == 1 && refused[0].contains("outside the secrets folder"), "{refused:?}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_added_from_the_cli_with_key_references_only_and_tenants_join_them() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let key = key_file("sk_live_never_stored");
    let key_ref = format!("file:{}", key.display());
    let add =
        env.wafleet(&["accounts", "add", "acct_x", "--key-ref", &key_ref, "--rate-per-min", "60", "--burst", "3"]);
    assert!(add.status.success(), "{}", text(&add.stderr));
    assert!(text(&add.stdout).contains("added account acct_x"));
    let again =
        env.wafleet(&["accounts", "add", "acct_x", "--key-ref", &key_ref, "--rate-per-min", "60", "--burst", "3"]);
    assert!(text(&again.stdout).contains("unchanged"), "identical add is idempotent");
    let literal = env.wafleet(&["accounts", "add", "acct_y", "--key-ref", "sk_live_never_stored"]);
    assert!(!literal.status.success(), "a key in clear is refused");
    assert!(
        text(&literal.stderr).contains("env:WA_API_KEY, env:WA_API_KEY_<SUFFIX> or file:"),
        "{}",
        text(&literal.stderr)
    );
    let greedy =
        env.wafleet(&["accounts", "add", "acct_z", "--key-ref", "env:WA_API_KEY_OTHER", "--rate-per-min", "200"]);
    assert!(greedy.status.success());
    assert!(text(&greedy.stderr).contains("exceeds the documented 120"), "{}", text(&greedy.stderr));

    let list = env.wafleet(&["accounts", "list", "--json"]);
    let accounts: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let names: Vec<&str> = accounts.as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["acct_x", "acct_z", "default"]);
    let stored: String = sqlx::query_scalar("select string_agg(accounts::text, ' ') from accounts")
        .fetch_one(&env.owner_pool)
        .await
        .unwrap();
    assert!(!stored.contains("sk_live_never_stored"), "the key itself is never stored");
    assert!(stored.contains("env:WA_API_KEY"), "the migration's default account refers to WA_API_KEY");

    let joined = env.wafleet(&["tenants", "add", "acc_t1", "--bridge", "acc_t1", "--account", "acct_x"]);
    assert!(joined.status.success(), "{}", text(&joined.stderr));
    let defaulted = env.wafleet(&["tenants", "add", "acc_t2", "--bridge", "acc_t2"]);
    assert!(defaulted.status.success());
    let unknown = env.wafleet(&["tenants", "add", "acc_t3", "--bridge", "acc_t3", "--account", "nope"]);
    assert!(!unknown.status.success());
    assert!(text(&unknown.stderr).contains("no account named nope"), "{}", text(&unknown.stderr));
    let accounts: Vec<(String, String)> = sqlx::query_as(
        "select t.customer_ref, a.name from tenants t join accounts a using (account_id) order by t.customer_ref",
    )
    .fetch_all(&env.owner_pool)
    .await
    .unwrap();
    assert_eq!(accounts, vec![("acc_t1".into(), "acct_x".into()), ("acc_t2".into(), "default".into())]);
    let _ = std::fs::remove_file(key);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_creates_the_bridge_with_the_signed_url_stores_its_id_and_is_idempotent() {
    let env = TestEnv::new().await.unwrap();
    env.add_tenant_in("prov_1", "prov_1", "default").await.unwrap();
    let out = env.wafleet(&["provision", "prov_1", "--base", &env.ingest_url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bridge = env.sim.bridges().into_iter().find(|b| b.customer_ref == "prov_1").expect("bridge created");
    assert_eq!(bridge.webhook_url.as_deref(), Some(env.webhook_url("prov_1").await.unwrap().as_str()));
    assert_eq!(instance_id(&env, "prov_1").await, Some(bridge.id));
    assert!(text(&out.stdout).contains(&format!("instance {}", bridge.id)));

    let fleet = env.fleet(BudgetConfig::default());
    let again = service::provision(&fleet, &signing_key(), &r("prov_1"), &env.ingest_url).await.unwrap();
    assert_eq!((again.instance_id, again.previous_instance_id), (bridge.id, Some(bridge.id)));
    assert_eq!(env.sim.bridges().len(), 1, "idempotent on the ref");
    // The URL it was provisioned with really delivers to this tenant.
    env.sim.fire_message("prov_1", "15550000300", "hello via provisioned url", None, true).await.unwrap();
    let sends = env.sim.wait_for_sends("prov_1", 1, Duration::from_secs(20)).await;
    assert_eq!(sends[0].body, "hello via provisioned url");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_a_burst_of_tenants_stays_inside_the_provisioning_limit() {
    let window = Duration::from_secs(3);
    let sim = SimConfig { api_keys: vec![wafleet_tests::TEST_API_KEY.into()], window, ..SimConfig::default() };
    let env = TestEnv::with(EnvOptions { sim: Some(sim), no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let fleet = env.fleet(BudgetConfig { window, ..BudgetConfig::default() });
    for i in 0..12 {
        let t = format!("burst_{i:02}");
        env.add_tenant_in(&t, &t, "default").await.unwrap();
        service::provision(&fleet, &signing_key(), &r(&t), &env.ingest_url).await.unwrap();
    }
    assert_eq!(env.sim.bridges().len(), 12);
    assert_eq!(env.sim.stats().rejected_429, 0, "10 provisioning calls per window were never exceeded");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_reconcile_reports_orphans_missing_bridges_and_mismatches_and_fix_only_records_ids() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let fleet = env.fleet(BudgetConfig::default());
    for t in ["rec_ok", "rec_unrecorded", "rec_missing", "rec_wrong"] {
        env.add_tenant_in(t, t, "default").await.unwrap();
    }
    service::provision(&fleet, &signing_key(), &r("rec_ok"), &env.ingest_url).await.unwrap();
    env.sim.add_bridge("rec_unrecorded", None, None);
    let stray = env.sim.add_bridge("stray", None, None);
    sqlx::query("update tenants set instance_id = $1 where customer_ref = 'rec_wrong'")
        .bind(stray.id)
        .execute(&env.owner_pool)
        .await
        .unwrap();

    let out = env.wafleet(&["bridges", "reconcile", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let refs =
        |key: &str, field: &str| -> Vec<String> {
            report[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    if field.is_empty() {
                        v.as_str().unwrap().to_owned()
                    } else {
                        v[field].as_str().unwrap().to_owned()
                    }
                })
                .collect()
        };
    assert_eq!(refs("bridges_without_tenant", "customer_ref"), vec!["stray"]);
    assert_eq!(refs("tenants_without_bridge", ""), vec!["rec_missing", "rec_wrong"]);
    assert_eq!(refs("mismatches", "customer_ref"), vec!["rec_wrong"]);
    assert_eq!(report["mismatches"][0]["listed_customer_ref"], "stray");
    assert!(report["fixed"].as_array().unwrap().is_empty());
    assert_eq!(instance_id(&env, "rec_unrecorded").await, None, "read-only without --fix");
    let human = env.wafleet(&["bridges", "reconcile"]);
    assert!(text(&human.stdout).contains("webhook URLs cannot be compared"));

    let fixed = env.wafleet(&["bridges", "reconcile", "--fix", "--json"]);
    assert!(fixed.status.success(), "{}", text(&fixed.stderr));
    let unrecorded = env.sim.bridges().into_iter().find(|b| b.customer_ref == "rec_unrecorded").unwrap();
    assert_eq!(instance_id(&env, "rec_unrecorded").await, Some(unrecorded.id));
    assert_eq!(instance_id(&env, "rec_wrong").await, None, "an id naming another bridge is cleared");
    assert_eq!(env.sim.bridges().len(), 3, "reconcile never deletes or provisions");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_status_spends_one_proxy_token_of_the_tenants_account() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    env.add_tenant("stat_t", "stat_t").await.unwrap();
    env.sim.set_bridge_status("stat_t", "disconnected");
    let calls = |env: &TestEnv| env.sim.proxy_calls_per_window().iter().sum::<u32>();
    let before = calls(&env);
    let out = env.wafleet(&["bridges", "status", "stat_t"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "disconnected");
    assert_eq!(calls(&env) - before, 1);
    let tokens: f64 = sqlx::query_scalar("select tokens from budget_buckets where bucket = 'proxy'")
        .fetch_one(&env.owner_pool)
        .await
        .unwrap();
    assert!(tokens < 4.5, "one of the 5 tokens was taken (tokens now {tokens})");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_url_revokes_the_old_url_of_that_tenant_only() {
    let env = TestEnv::new().await.unwrap();
    let old_a = env.add_tenant("rot_a", "rot_a").await.unwrap();
    let url_b = env.add_tenant("rot_b", "rot_b").await.unwrap();
    let out = env.wafleet(&["tenants", "rotate-url", "rot_a", "--base", &env.ingest_url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let new_a = text(&out.stdout).lines().last().unwrap().trim().to_owned();
    assert_ne!(new_a, old_a);
    assert!(new_a.contains("/webhook/rot_a/test.2."), "{new_a}");

    let dropped = || counter_value("wafleet_worker_dropped_total", &[("reason", "generation_mismatch")]);
    let before = dropped();
    let event = |body: &str, id: &str| wafleet_tests::message_event("15550000310", body, id);
    assert_eq!(
        post_json(&old_a, &event("via the old url", "ROT-1")).await,
        200,
        "ingest still accepts the old key's format"
    );
    wait_until(Duration::from_secs(20), || async { dropped() > before }).await.unwrap();
    assert_eq!(post_json(&new_a, &event("via the new url", "ROT-2")).await, 200);
    assert_eq!(post_json(&url_b, &wafleet_tests::message_event("15550000311", "b untouched", "ROT-3")).await, 200);
    let a = env.sim.wait_for_sends("rot_a", 1, Duration::from_secs(20)).await;
    let b = env.sim.wait_for_sends("rot_b", 1, Duration::from_secs(20)).await;
    env.wait_idle(2).await.unwrap();
    let a_bodies: Vec<String> = env.sim.sends_for("rot_a").into_iter().map(|s| s.body).collect();
    assert_eq!(a_bodies, vec!["via the new url".to_owned()], "the old URL's event was dropped: {a:?}");
    assert_eq!(b[0].body, "b untouched");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboard_stops_purges_cancels_deletes_and_tombstones_step_by_step_and_resumes() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let fleet = env.fleet(BudgetConfig::default());
    for t in ["gone", "stays"] {
        env.add_tenant_in(t, t, "default").await.unwrap();
        service::provision(&fleet, &signing_key(), &r(t), &env.ingest_url).await.unwrap();
    }
    // Queued events, a dead letter and a pending reply.
    for i in 0..3 {
        assert_eq!(env.sim.fire_message("gone", "15550000320", &format!("q{i}"), None, true).await.unwrap(), 200);
    }
    let conn = wafleet_shared::amqp::connect(&env.amqp_url, "lifecycle-test").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .basic_publish("", "wa.dlq.gone", BasicPublishOptions::default(), b"dead", BasicProperties::default())
        .await
        .unwrap()
        .await
        .unwrap();
    let _ = conn.close(200, "done").await;
    env.queue_replies("gone", "15550000320", &["never sent".to_owned()], None, Duration::from_secs(3600)).await;

    let dry = env.wafleet(&["tenants", "offboard", "gone", "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(text(&dry.stdout).contains("[1/6]") && text(&dry.stdout).contains("nothing changed"));
    assert!(text(&dry.stdout).contains("holds 3 message(s)"), "{}", text(&dry.stdout));
    assert_eq!(env.count("select count(*) from tenants where status = 'active'").await, 2, "dry run changes nothing");
    assert!(queue_exists(&env, "wa.tenant.gone").await);
    assert_eq!(env.sim.bridges().len(), 2);

    let mut printed = Vec::new();
    let steps = service::offboard(&fleet, &r("gone"), false, &mut |s| printed.push(s.number)).await.unwrap();
    assert_eq!(printed, vec![1, 2, 3, 4, 5, 6], "each step reported as it ends");
    assert!(steps.iter().all(|s| s.state == StepState::Done), "{steps:?}");
    assert!(!queue_exists(&env, "wa.tenant.gone").await && !queue_exists(&env, "wa.dlq.gone").await);
    assert_eq!(env.count("select count(*) from outbox where status = 'cancelled'").await, 1);
    let bridges: Vec<String> = env.sim.bridges().into_iter().map(|b| b.customer_ref).collect();
    assert_eq!(bridges, vec!["stays".to_owned()]);
    assert!(queue_exists(&env, "wa.tenant.stays").await, "other tenants untouched");

    // Interrupted or not, a second run finds every step done.
    let rerun = env.wafleet(&["tenants", "offboard", "gone", "--yes"]);
    assert!(rerun.status.success(), "{}", text(&rerun.stderr));
    assert_eq!(text(&rerun.stdout).matches("already done").count(), 6, "{}", text(&rerun.stdout));
    let reuse = env.wafleet(&["tenants", "add", "gone"]);
    assert!(!reuse.status.success());
    assert!(text(&reuse.stderr).contains("offboarded"), "{}", text(&reuse.stderr));
    let audit = env.wafleet(&["audit", "--target", "gone", "--json"]);
    let records: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    let outcomes: Vec<&str> = records.as_array().unwrap().iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert!(outcomes.contains(&"dry_run") && outcomes.contains(&"ok"), "{outcomes:?}");

    // A classic queue is deleted with if-empty (quorum queues refuse the flag).
    let classic =
        env.wafleet(&["tenants", "add", "gone_classic", "--bridge", "gone_classic", "--queue-type", "classic"]);
    assert!(classic.status.success(), "{}", text(&classic.stderr));
    let out = env.wafleet(&["tenants", "offboard", "gone_classic", "--yes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!queue_exists(&env, "wa.tenant.gone_classic").await && !queue_exists(&env, "wa.dlq.gone_classic").await);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_cli_reports_the_backlog_in_minutes_of_budget_and_the_lag_per_tenant() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    env.add_tenant("backlogged", "backlogged").await.unwrap();
    let two_minutes_ago = chrono::Utc::now() - chrono::Duration::seconds(120);
    let bodies: Vec<String> = (0..55).map(|i| format!("queued {i}")).collect();
    env.queue_replies("backlogged", "15550000330", &bodies, Some(two_minutes_ago), Duration::from_secs(3600)).await;
    let out = env.wafleet(&["outbox", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let account = summary["accounts"].as_array().unwrap().iter().find(|a| a["account"] == "default").unwrap();
    assert_eq!(account["pending"], 55);
    assert_eq!(account["backlog_minutes"].as_f64().unwrap(), 0.5, "55 replies at 110 per minute");
    let tenant = &summary["tenants"][0];
    assert_eq!(tenant["customer_ref"], "backlogged");
    assert!(tenant["lag_secs"].as_f64().unwrap() >= 120.0);
    let human = env.wafleet(&["outbox"]);
    assert!(text(&human.stdout).contains("BACKLOG_MIN") && text(&human.stdout).contains("backlogged"));
    env.cleanup().await;
}

//! The `wafleet` operator CLI, run as a real process against the test environment.

use std::process::Output;

use wafleet_tests::{post_json, EnvOptions, TestEnv, TEST_SIGNING_KEY};

fn cli_path() -> std::path::PathBuf {
    // target/debug/deps/it-<hash> → target/debug/wafleet
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|p| p.parent()).unwrap();
    let path = dir.join("wafleet");
    assert!(
        path.exists(),
        "{} missing: run `scripts/test.sh`, or `cargo build --workspace --bins` before `cargo test`",
        path.display()
    );
    path
}

fn wafleet(env: &TestEnv, args: &[&str]) -> Output {
    std::process::Command::new(cli_path())
        .args(args)
        .env("ADMIN_DATABASE_URL", &env.endpoints.database_url)
        .env("DATABASE_URL", &env.worker_url)
        .env("AMQP_URL", &env.amqp_url)
        .env("RABBITMQ_API_URL", &env.endpoints.rabbitmq_api_url)
        .env("WAFLEET_SIGNING_KEY", TEST_SIGNING_KEY)
        .env_remove("WAFLEET_ALLOW_UNSAFE_DB_ROLE")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_add_is_idempotent_and_refuses_a_bridge_owned_by_another_tenant() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let first = wafleet(&env, &["tenants", "add", "cli_a", "--bridge", "cli_a"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stdout).contains("added cli_a"));
    let again = wafleet(&env, &["tenants", "add", "cli_a", "--bridge", "cli_a"]);
    assert!(again.status.success(), "identical add is idempotent: {}", text(&again.stderr));
    assert!(text(&again.stdout).contains("unchanged"));
    // A bridge key other than the ref is refused before anything is written: its events would
    // carry a customer_ref that ingest refuses on this tenant's URL.
    let foreign = wafleet(&env, &["tenants", "add", "cli_b", "--bridge", "cli_a"]);
    assert!(!foreign.status.success());
    assert!(text(&foreign.stderr).contains("differs from the tenant's ref cli_b"), "{}", text(&foreign.stderr));
    // The bridge key of a tenant added before that rule is still reserved by it.
    env.owner_exec("update tenants set bridge = 'cli_b' where customer_ref = 'cli_a'").await;
    let stolen = wafleet(&env, &["tenants", "add", "cli_b"]);
    assert!(!stolen.status.success());
    assert!(text(&stolen.stderr).contains("already belongs to another tenant"), "{}", text(&stolen.stderr));
    env.owner_exec("update tenants set bridge = 'cli_a' where customer_ref = 'cli_a'").await;
    let changed = wafleet(&env, &["tenants", "add", "cli_a", "--bridge", "cli_a", "--bot", "rules"]);
    assert!(!changed.status.success());
    assert!(text(&changed.stderr).contains("different settings"));
    let bad_ref = wafleet(&env, &["tenants", "add", "a#b", "--bridge", "x"]);
    assert!(!bad_ref.status.success());
    // The queue was declared before the row was committed.
    let list = wafleet(&env, &["tenants", "list", "--json"]);
    let tenants: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(tenants.as_array().unwrap().len(), 1);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_url_prints_a_working_url_on_the_last_line_and_fails_for_unknown_refs() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    assert!(wafleet(&env, &["tenants", "add", "url_t", "--bridge", "url_t"]).status.success());
    let out = wafleet(&env, &["webhook-url", "url_t", "--base", &env.ingest_url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let url = stdout.lines().last().unwrap().trim().to_owned();
    assert!(url.starts_with(&format!("{}/webhook/url_t/test.1.", env.ingest_url)), "{url}");
    assert_eq!(post_json(&url, &serde_json::json!({"event": "disconnected"})).await, 200);
    let tampered = format!("{}x", &url[..url.len() - 1]);
    assert_eq!(post_json(&tampered, &serde_json::json!({"event": "disconnected"})).await, 401);

    let unknown = wafleet(&env, &["webhook-url", "nobody", "--base", &env.ingest_url]);
    assert!(!unknown.status.success());
    assert!(text(&unknown.stderr).contains("no tenant"));
    // Each read of the credential is in the audit log, without the URL.
    let audit = wafleet(&env, &["audit", "--json", "--target", "url_t"]);
    let records: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    let reads = records.as_array().unwrap().iter().filter(|r| r["command"] == "webhook-url").count();
    assert_eq!(reads, 1, "{records}");
    assert!(!text(&audit.stdout).contains(url.rsplit('/').next().unwrap()), "the URL is not recorded");

    assert!(wafleet(&env, &["tenants", "disable", "url_t"]).status.success());
    let disabled = wafleet(&env, &["webhook-url", "url_t", "--base", &env.ingest_url]);
    assert!(disabled.status.success());
    assert!(text(&disabled.stderr).contains("disabled"));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_refuses_a_superuser_database_role_and_says_how_to_fix_it() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let out = std::process::Command::new(cli_path())
        .args(["tenants", "list"])
        .env("ADMIN_DATABASE_URL", &env.owner_url)
        .env_remove("WAFLEET_ALLOW_UNSAFE_DB_ROLE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("superuser") && stderr.contains("ADMIN_DATABASE_URL"), "{stderr}");
    // The worker's role is no administration role either.
    let out = std::process::Command::new(cli_path())
        .args(["tenants", "list"])
        .env("ADMIN_DATABASE_URL", &env.worker_url)
        .env_remove("WAFLEET_ALLOW_UNSAFE_DB_ROLE")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success() && stderr.contains("the admin role of this database is wafleet_admin"), "{stderr}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_bridge_key_is_not_its_ref_is_named_by_migrate_and_never_provisioned() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let plain = wafleet(&env, &["tenants", "add", "wa-shop"]);
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    let listed: serde_json::Value =
        serde_json::from_slice(&wafleet(&env, &["tenants", "list", "--json"]).stdout).unwrap();
    assert_eq!(listed[0]["bridge"], "wa-shop", "--bridge defaults to the ref");
    assert!(wafleet(&env, &["tenants", "add", "legacy"]).status.success());
    // As a release before the rule could have stored it.
    env.owner_exec("update tenants set bridge = 'legacy-bridge' where customer_ref = 'legacy'").await;

    let migrate = std::process::Command::new(cli_path())
        .arg("migrate")
        .env("MIGRATE_DATABASE_URL", &env.owner_url)
        .env("ADMIN_DATABASE_URL", &env.endpoints.database_url)
        .env("DATABASE_URL", &env.worker_url)
        .env("AMQP_URL", &env.amqp_url)
        .env("RABBITMQ_API_URL", &env.endpoints.rabbitmq_api_url)
        .env_remove("WAFLEET_ALLOW_UNSAFE_DB_ROLE")
        .output()
        .unwrap();
    assert!(migrate.status.success(), "{}", text(&migrate.stderr));
    let warnings: Vec<String> =
        text(&migrate.stderr).lines().filter(|l| l.contains("warning")).map(String::from).collect();
    assert_eq!(warnings.len(), 1, "only the legacy tenant: {warnings:?}");
    assert!(warnings[0].contains("tenant legacy has bridge key \"legacy-bridge\""), "{warnings:?}");

    let provision = wafleet(&env, &["provision", "legacy", "--base", "https://hooks.example.com"]);
    assert!(!provision.status.success());
    assert!(text(&provision.stderr).contains("differs from the tenant's ref legacy"), "{}", text(&provision.stderr));
    assert!(env.sim.bridges().is_empty(), "no bridge was made for it");
    env.cleanup().await;
}

/// WA Bridges repeats the bridge key as `customer_ref` in every event, and ingest accepts only a
/// body whose `customer_ref` is the URL's ref: so a bridge key other than the ref is refused up
/// front, and a tenant named after its bridge gets its events answered on that bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_key_other_than_the_ref_is_refused_and_a_tenant_named_after_its_bridge_is_answered_on_it() {
    let env = TestEnv::new().await.unwrap();
    let refused = wafleet(&env, &["tenants", "add", "shop", "--bridge", "wa-shop"]);
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("differs from the tenant's ref shop") && stderr.contains("wa-shop"), "{stderr}");
    let added = wafleet(&env, &["tenants", "add", "wa-shop"]);
    assert!(added.status.success(), "{}", text(&added.stderr));
    let url = env.webhook_url("wa-shop").await.unwrap();
    env.sim.add_bridge("wa-shop", Some(&url), None);
    // The simulator puts the bridge's customer_ref, "wa-shop", into the body it posts.
    let status = env.sim.fire_message("wa-shop", "15550000500", "where is my order", None, true).await.unwrap();
    assert_eq!(status, 200);
    let sends = env.sim.wait_for_sends("wa-shop", 1, std::time::Duration::from_secs(20)).await;
    assert_eq!(sends.len(), 1, "answered on bridge wa-shop");
    assert!(env.sim.all_sends().iter().all(|s| s.bridge == "wa-shop"));
    env.cleanup().await;
}

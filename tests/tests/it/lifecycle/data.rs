//! Data lifecycle (retention, export, erasure), `unknown` replies reconciled from the bridge's
//! `from_me` echo, and the audit log of every mutating CLI command.

use std::time::Duration;

use sqlx::Connection;
use wafleet_fleet::{db, locks, outbox, service, tenant};
use wafleet_sim::{Fault, SimConfig};
use wafleet_tests::{EnvOptions, TestEnv, TEST_API_KEY};

use super::{r, text};

/// One processed event, one log row and one outbox row for `chat` in `tenant`, `age_days` old.
async fn seed(env: &TestEnv, tenant: i64, chat: &str, body: &str, status: &str, age_days: i32) {
    sqlx::query(
        "insert into processed_events (tenant_id, ingest_id, event_type, chat_id, outcome, received_at, processed_at) \
         values ($1, gen_random_uuid(), 'message', $2 || '@s.whatsapp.net', 'replied', now() - make_interval(days => $3), \
         now() - make_interval(days => $3))",
    )
    .bind(tenant)
    .bind(chat)
    .bind(age_days)
    .execute(&env.owner_pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into message_log (tenant_id, direction, event_type, chat_id, body, created_at) \
         values ($1, 'in', 'message', $2 || '@s.whatsapp.net', $3, now() - make_interval(days => $4))",
    )
    .bind(tenant)
    .bind(chat)
    .bind(body)
    .bind(age_days)
    .execute(&env.owner_pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into outbox (tenant_id, ingest_id, chat, body, status, expires_at, created_at, updated_at) \
         values ($1, gen_random_uuid(), $2, $3, $4, now() + interval '1 hour', now() - make_interval(days => $5), \
         now() - make_interval(days => $5))",
    )
    .bind(tenant)
    .bind(chat)
    .bind(body)
    .bind(status)
    .bind(age_days)
    .execute(&env.owner_pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_rows_older_than_the_retention_for_every_tenant_one_run_at_a_time() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    for t in ["ret_a", "ret_b"] {
        env.add_tenant_in(t, t, "default").await.unwrap();
        let id = env.tenant_id(t).await;
        seed(&env, id, "15550000400", "old", "sent", 40).await;
        seed(&env, id, "15550000400", "new", "sent", 1).await;
        seed(&env, id, "15550000400", "old but pending", "pending", 40).await;
    }
    let mut holder = sqlx::PgConnection::connect(&env.owner_url).await.unwrap();
    sqlx::query("select pg_advisory_lock($1)").bind(locks::RETENTION.key).execute(&mut holder).await.unwrap();
    let blocked = service::run_retention(&env.admin_pool, &env.endpoints.database_url, 30).await.unwrap();
    assert!(blocked.skipped, "another run holds the lock");
    sqlx::query("select pg_advisory_unlock($1)").bind(locks::RETENTION.key).execute(&mut holder).await.unwrap();

    let out = env.wafleet(&["retention", "run", "--days", "30"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("2 tenants"), "{}", text(&out.stdout));
    // Per tenant: two old events and log rows (the pending reply's too), one finished reply.
    assert_eq!(env.count("select count(*) from processed_events").await, 2);
    assert_eq!(env.count("select count(*) from message_log where body = 'new'").await, 2);
    assert_eq!(env.count("select count(*) from message_log").await, 2);
    let left: Vec<String> = sqlx::query_scalar("select body from outbox order by tenant_id, body")
        .fetch_all(&env.owner_pool)
        .await
        .unwrap();
    assert_eq!(left, vec!["new", "old but pending", "new", "old but pending"], "pending replies are not retention's");
    holder.close().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_while_the_canary_leader_holds_its_lock() {
    // The two once shared a key, and the canary leader holds its lock for its lifetime.
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    env.add_tenant_in("ret_canary", "ret_canary", "default").await.unwrap();
    let id = env.tenant_id("ret_canary").await;
    seed(&env, id, "15550000401", "old", "sent", 40).await;
    // Leading exactly as the canary does (worker/src/canary.rs).
    let leader = db::try_lead(&env.endpoints.database_url, locks::CANARY.key).await.unwrap();
    let leader = leader.expect("nobody else leads the canary in this fresh database");
    let report = service::run_retention(&env.admin_pool, &env.endpoints.database_url, 30).await.unwrap();
    assert!(!report.skipped, "retention must not wait for the canary's lock");
    assert_eq!((report.processed_events, report.message_log, report.outbox), (1, 1, 1));
    assert_eq!(env.count("select count(*) from message_log").await, 0);
    leader.close().await.unwrap();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_prints_every_row_of_that_tenant_and_of_no_other_as_json_lines() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    for t in ["exp_a", "exp_b"] {
        env.add_tenant_in(t, t, "default").await.unwrap();
        let id = env.tenant_id(t).await;
        seed(&env, id, "15550000410", &format!("body of {t}"), "sent", 1).await;
        service::add_rule(&env.admin_pool, &r(t), "hours", &format!("rule of {t}")).await.unwrap();
    }
    let a = env.tenant_id("exp_a").await;
    let mut buffer = Vec::new();
    let counts = service::export_tenant(&env.admin_pool, &r("exp_a"), &mut buffer).await.unwrap();
    let lines: Vec<serde_json::Value> = text(&buffer).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().all(|l| l["row"]["tenant_id"] == a), "only exp_a's rows");
    let tables: std::collections::BTreeSet<&str> = lines.iter().map(|l| l["table"].as_str().unwrap()).collect();
    for t in ["bot_rules", "message_log", "outbox", "processed_events", "tenants"] {
        assert!(tables.contains(t), "{t} missing from the export: {tables:?}");
    }
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), lines.len() as u64);
    assert!(!text(&buffer).contains("exp_b"), "nothing of the other tenant");
    let cli = env.wafleet(&["tenants", "export", "exp_a"]);
    assert!(cli.status.success(), "{}", text(&cli.stderr));
    assert_eq!(text(&cli.stdout).lines().count(), lines.len());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_removes_one_contacts_rows_and_leaves_other_contacts_and_tenants_alone() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    for t in ["er_a", "er_b"] {
        env.add_tenant_in(t, t, "default").await.unwrap();
        let id = env.tenant_id(t).await;
        seed(&env, id, "15550000421", "about x", "sent", 1).await;
        seed(&env, id, "15550000422", "about y", "pending", 1).await;
    }
    let out = env.wafleet(&["tenants", "erase", "er_a", "--contact", "+1 555 000 0421", "--yes"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 log row(s), 1 outbox row(s); redacted 1"), "{}", text(&out.stdout));
    let (a, b) = (env.tenant_id("er_a").await, env.tenant_id("er_b").await);
    let count = |sql: &'static str, tenant: i64| {
        let env = &env;
        async move { sqlx::query_scalar::<_, i64>(sql).bind(tenant).fetch_one(&env.owner_pool).await.unwrap() }
    };
    let x_rows = "select (select count(*) from message_log where tenant_id = $1 and chat_id like '15550000421%') \
                  + (select count(*) from outbox where tenant_id = $1 and chat = '15550000421') \
                  + (select count(*) from processed_events where tenant_id = $1 and chat_id like '15550000421%')";
    assert_eq!(count(x_rows, a).await, 0, "no trace of the contact left in er_a");
    assert_eq!(count(x_rows, b).await, 3, "er_b's rows about the same number are untouched");
    assert_eq!(count("select count(*) from message_log where tenant_id = $1 and body = 'about y'", a).await, 1);
    assert_eq!(
        count("select count(*) from processed_events where tenant_id = $1 and chat_id like 'erased:%'", a).await,
        1
    );
    let audit: String = sqlx::query_scalar("select string_agg(audit_log::text, ' ') from audit_log")
        .fetch_one(&env.owner_pool)
        .await
        .unwrap();
    assert!(audit.contains("tenants erase"));
    assert!(
        !audit.contains("15550000421") && !audit.contains("555 000 0421"),
        "the audit log must not re-record the contact"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_reply_becomes_sent_when_the_bridges_from_me_echo_matches_it_in_its_own_tenant_only() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    for t in ["fm_a", "fm_b"] {
        env.add_tenant_in(t, t, "default").await.unwrap();
        let id = env.tenant_id(t).await;
        seed(&env, id, "15550000431", "did it arrive", "unknown", 0).await;
    }
    // A `TenantId` comes out of the repository only (never from a bare id).
    let a = tenant::lookup(&env.admin_pool, &r("fm_a")).await.unwrap().expect("fm_a exists").id;
    let echo = |body: &'static str| {
        let pool = env.admin_pool.clone();
        async move {
            let mut tx = db::begin_tenant(&pool, a).await.unwrap();
            let hit =
                outbox::reconcile_from_me(&mut tx, a, Some("15550000431@s.whatsapp.net"), Some(body), Some("SIMECHO1"))
                    .await
                    .unwrap();
            tx.commit().await.unwrap();
            hit
        }
    };
    assert!(!echo("something else").await, "a different body is not this reply");
    assert!(echo("did it arrive").await);
    assert!(!echo("did it arrive").await, "one echo settles one reply");
    let states: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "select t.customer_ref, o.status, o.provider_message_id from outbox o join tenants t using (tenant_id) order by 1",
    )
    .fetch_all(&env.owner_pool)
    .await
    .unwrap();
    assert_eq!(states[0], ("fm_a".into(), "sent".into(), Some("SIMECHO1".into())));
    assert_eq!(states[1], ("fm_b".into(), "unknown".into(), None), "the other tenant's identical reply is untouched");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_lost_to_a_502_is_marked_sent_when_its_from_me_echo_arrives() {
    let sim =
        SimConfig { api_keys: vec![TEST_API_KEY.into()], unlimited: true, echo_from_me: true, ..SimConfig::default() };
    let env = TestEnv::with(EnvOptions { sim: Some(sim), ..EnvOptions::default() }).await.unwrap();
    env.add_tenant("echoed", "echoed").await.unwrap();
    env.sim.set_fault(Some(Fault::new(502).with_record_then_fail().with_remaining(1)));
    env.sim.fire_message("echoed", "15550000441", "lost answer", None, true).await.unwrap();
    wafleet_tests::wait_until(Duration::from_secs(20), || async {
        env.count("select count(*) from outbox where status = 'sent'").await == 1
    })
    .await
    .unwrap();
    assert_eq!(env.sim.sends_for("echoed").len(), 1, "reconciled, never resent");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutating_cli_command_is_audited_with_its_operator_and_without_secrets() {
    let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
    let run = |args: &[&str]| {
        let out = env.wafleet(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        out
    };
    run(&["tenants", "add", "au_t", "--bridge", "au_t"]);
    run(&["tenants", "limits", "au_t", "--weight", "2", "--max-per-min", "5"]);
    let rotated = run(&["tenants", "rotate-url", "au_t", "--base", &env.ingest_url]);
    run(&["tenants", "disable", "au_t"]);
    run(&["tenants", "enable", "au_t"]);
    run(&["rules", "add", "au_t", "hours", "9-17"]);
    run(&["rules", "remove", "au_t", "hours"]);
    run(&["accounts", "add", "au_acct", "--key-ref", "env:WA_API_KEY_AU"]);
    run(&["retention", "run"]);
    run(&["tenants", "erase", "au_t", "--contact", "15550000451", "--yes"]);
    let failed = env.wafleet(&["tenants", "disable", "nobody"]);
    assert!(!failed.status.success());

    let listed = run(&["audit", "--json", "--limit", "100"]);
    let records: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    let commands: std::collections::BTreeSet<&str> = records.iter().map(|r| r["command"].as_str().unwrap()).collect();
    for c in [
        "tenants add",
        "tenants limits",
        "tenants rotate-url",
        "tenants disable",
        "tenants enable",
        "rules add",
        "rules remove",
        "accounts add",
        "retention run",
        "tenants erase",
    ] {
        assert!(commands.contains(c), "{c} not audited: {commands:?}");
    }
    assert!(records.iter().all(|r| r["operator"] == "test-operator"));
    assert!(records.iter().any(|r| r["target"] == "nobody" && r["outcome"] == "error"), "failures are audited too");
    let all = text(&listed.stdout);
    let token = text(&rotated.stdout).lines().last().unwrap().rsplit('/').next().unwrap().trim().to_owned();
    assert!(!all.contains(&token), "the new URL's token is not in the audit log");
    assert!(!all.contains(wafleet_tests::TEST_SIGNING_KEY.split(':').nth(1).unwrap()));
    assert!(!all.contains("15550000451"), "an erased contact is not re-recorded");
    let human = run(&["audit", "--target", "au_t"]);
    assert!(text(&human.stdout).contains("tenants rotate-url"));
    // Paged by cursor, the same records come back one page at a time, none twice.
    let mut paged = Vec::new();
    let mut args = vec!["audit".to_owned(), "--json".into(), "--limit".into(), "3".into()];
    loop {
        let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let page: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        paged.extend(page);
        let Some(cursor) = text(&out.stderr).lines().find_map(|l| l.strip_prefix("more: --cursor ").map(str::to_owned))
        else {
            break;
        };
        args.truncate(4);
        args.extend(["--cursor".to_owned(), cursor]);
    }
    assert_eq!(paged, records, "--cursor pages the listing --limit 100 gave at once");
    env.cleanup().await;
}

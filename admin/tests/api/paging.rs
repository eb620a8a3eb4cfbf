//! Cursor pagination of the audit log and of a tenant's outbox rows: a stable order, an opaque
//! cursor, a `next` link that keeps the filters, and no record skipped or repeated while other
//! records are written during paging.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use wafleet_fleet::audit::{self, Actor, Entry, Outcome};

use crate::Admin;

/// Seeds `count` audit records about `target` in one statement, so they all share one `at`
/// (a transaction has one `now()`): a keyset on the time alone would skip or repeat them.
async fn seed_audit(admin: &Admin, target: &str, from: i64, count: i64) {
    sqlx::query(
        "insert into audit_log (operator, command, target, arguments, outcome) \
         select 'seed', 'seed', $1, jsonb_build_object('n', g), 'ok' from generate_series($2::bigint, $3::bigint) g",
    )
    .bind(target)
    .bind(from)
    .bind(from + count - 1)
    .execute(&admin.env.owner_pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_the_audit_log_returns_every_existing_record_once_while_records_are_written() {
    let admin = Admin::new().await;
    // 5,000 records: 3,000 sharing one timestamp, then 2,000 sharing another.
    seed_audit(&admin, "page_t", 1, 3000).await;
    seed_audit(&admin, "page_t", 3001, 2000).await;
    let shared: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where target = 'page_t' group by at order by 1 desc limit 1",
    )
    .fetch_one(&admin.env.owner_pool)
    .await
    .unwrap();
    assert!(shared >= 2000, "many records share one timestamp ({shared})");

    // A writer adds records about the same target through the service layer, as the CLI and
    // the API do, for as long as the paging runs.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (pool, stop, written) = (admin.env.admin_pool.clone(), stop.clone(), written.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = written.fetch_add(1, Ordering::Relaxed);
                let entry = Entry::new("live", Some("page_t"), json!({"live": n}));
                audit::record(&pool, &Actor::operator("writer"), &entry, Outcome::Ok, None).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    let mut seeded = Vec::new();
    let mut live = Vec::new();
    let mut uri = "/v1/audit?limit=97&target=page_t".to_owned();
    let mut pages = 0;
    loop {
        let page = admin.get(&uri).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        pages += 1;
        for r in page.json["items"].as_array().unwrap() {
            assert_eq!(r["target"], "page_t", "the filter holds on every page");
            match (r["arguments"]["n"].as_i64(), r["arguments"]["live"].as_u64()) {
                (Some(n), None) => seeded.push(n),
                (None, Some(n)) => live.push(n),
                other => panic!("unexpected record {other:?}: {r}"),
            }
        }
        // Between two pages, more records are surely written, whatever the writer's pace.
        for _ in 0..3 {
            let n = written.fetch_add(1, Ordering::Relaxed);
            let entry = Entry::new("live", Some("page_t"), json!({"live": n}));
            audit::record(&admin.env.admin_pool, &Actor::operator("writer"), &entry, Outcome::Ok, None).await.unwrap();
        }
        match page.json["next"].as_str() {
            Some(next) => {
                let cursor = page.json["next_cursor"].as_str().unwrap();
                assert!(!cursor.chars().all(|c| c.is_ascii_digit()), "the cursor is opaque: {cursor}");
                assert_eq!(next, format!("/v1/audit?limit=97&target=page_t&cursor={cursor}"), "same filters");
                uri = next.to_owned();
            }
            None => {
                assert!(page.json.get("next_cursor").is_none(), "{}", page.text);
                break;
            }
        }
        assert!(pages < 200, "paging does not end");
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    assert!(pages >= 52, "5,000 records in pages of 97 ({pages})");
    assert_eq!(seeded.len(), 5000, "every seeded record exactly once");
    assert!(seeded.windows(2).all(|w| w[0] > w[1]), "newest first, none repeated");
    assert_eq!(seeded.iter().copied().collect::<BTreeSet<_>>(), (1..=5000).collect::<BTreeSet<_>>());
    let unique: BTreeSet<u64> = live.iter().copied().collect();
    assert_eq!(unique.len(), live.len(), "no record written during paging is repeated either");
    assert!(written.load(Ordering::Relaxed) >= 3 * 52, "records were written during the paging");
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_rows_page_by_cursor_with_the_filters_in_the_next_link() {
    let admin = Admin::new().await;
    admin.create_tenant("obx_a").await;
    admin.create_tenant("obx_b").await;
    // 7 rows of one instant (ties broken by id) and 2 older ones; all unknown. Another
    // tenant's rows must never show.
    let now = chrono::Utc::now();
    let bodies: Vec<String> = (0..7).map(|i| format!("reply {i}")).collect();
    let mut ids = admin.env.queue_replies("obx_a", "15550001", &bodies, Some(now), Duration::from_secs(3600)).await;
    let older = now - chrono::Duration::minutes(5);
    ids.extend(
        admin.env.queue_replies("obx_a", "15550001", &bodies[..2], Some(older), Duration::from_secs(3600)).await,
    );
    admin.env.queue_replies("obx_b", "15550002", &bodies, Some(now), Duration::from_secs(3600)).await;
    sqlx::query("update outbox set status = 'unknown'").execute(&admin.env.owner_pool).await.unwrap();

    let mut seen = Vec::new();
    let mut uri = "/v1/tenants/obx_a/outbox?status=unknown&limit=4".to_owned();
    for _ in 0..5 {
        let page = admin.get(&uri).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        seen.extend(page.json["rows"].as_array().unwrap().iter().map(|r| r["outbox_id"].as_i64().unwrap()));
        let Some(next) = page.json["next"].as_str() else { break };
        let cursor = page.json["next_cursor"].as_str().unwrap();
        assert_eq!(next, format!("/v1/tenants/obx_a/outbox?status=unknown&limit=4&cursor={cursor}"));
        uri = next.to_owned();
    }
    // Newest first; within one instant, the higher id first.
    let mut expected = ids[..7].to_vec();
    expected.reverse();
    expected.extend([ids[8], ids[7]]);
    assert_eq!(seen, expected);

    let audit_cursor = admin.get("/v1/audit?limit=1").await.json["next_cursor"].as_str().unwrap().to_owned();
    for bad in ["not-a-cursor", audit_cursor.as_str()] {
        for path in ["/v1/tenants/obx_a/outbox", "/v1/audit"] {
            if path == "/v1/audit" && bad == audit_cursor {
                continue;
            }
            let answer = admin.get(&format!("{path}?cursor={bad}")).await;
            assert_eq!(
                (answer.status, answer.problem()),
                (StatusCode::BAD_REQUEST, "invalid-request".to_owned()),
                "{path} {bad}"
            );
        }
    }
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_dead_letter_listing_pages_tenants_in_ref_order() {
    let admin = Admin::new().await;
    let refs = ["dlqp_a", "dlqp_b", "dlqp_c", "dlqp_d", "dlqp_e"];
    for r in refs {
        admin.create_tenant(r).await;
    }
    // Two dead letters in one tenant's own DLQ (default exchange, queue name as routing key).
    for _ in 0..2 {
        admin.env.publish_raw("", "wa.dlq.dlqp_c", b"not an envelope").await;
    }
    let mut seen = Vec::new();
    let mut uri = "/v1/dlq?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = admin.get(&uri).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        pages += 1;
        for s in page.json["items"].as_array().unwrap() {
            seen.push((s["customer_ref"].as_str().unwrap().to_owned(), s["count"].as_u64().unwrap()));
        }
        let Some(next) = page.json["next"].as_str() else { break };
        assert_eq!(next, format!("/v1/dlq?limit=2&cursor={}", page.json["next_cursor"].as_str().unwrap()));
        uri = next.to_owned();
        assert!(pages < 10);
    }
    assert_eq!(pages, 3);
    let expected: Vec<(String, u64)> =
        refs.iter().map(|r| ((*r).to_owned(), if *r == "dlqp_c" { 2 } else { 0 })).collect();
    assert_eq!(seen, expected, "ref order, each tenant once, its own count");
    let one = admin.get("/v1/dlq?customer_ref=dlqp_c").await;
    assert_eq!(one.json["items"].as_array().unwrap().len(), 1, "{}", one.text);
    assert!(one.json.get("next").is_none());
    let tenants_cursor = admin.get("/v1/tenants?limit=1").await.json["next_cursor"].as_str().unwrap().to_owned();
    let refused = admin.get(&format!("/v1/dlq?cursor={tenants_cursor}")).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "a cursor of another listing: {}", refused.text);
    admin.env.cleanup().await;
}

/// Dead-letters `count` messages into `customer_ref`'s DLQ, each named by its last-error header.
async fn dead_letters(admin: &Admin, customer_ref: &str, count: usize) {
    for i in 0..count {
        crate::dead_letter(admin, customer_ref, &format!("m{i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_dead_letters_page_oldest_first_and_a_moved_queue_refuses_the_stale_cursor() {
    let admin = Admin::new().await;
    admin.create_tenant("dlqm_a").await;
    dead_letters(&admin, "dlqm_a", 5).await;
    let mut seen = Vec::new();
    let mut uri = "/v1/tenants/dlqm_a/dlq?limit=2".to_owned();
    let mut second_page = None;
    for page_number in 0..5 {
        let page = admin.get(&uri).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        seen.extend(
            page.json["items"].as_array().unwrap().iter().map(|d| d["last_error"].as_str().unwrap().to_owned()),
        );
        let Some(next) = page.json["next"].as_str() else { break };
        assert_eq!(
            next,
            format!("/v1/tenants/dlqm_a/dlq?limit=2&cursor={}", page.json["next_cursor"].as_str().unwrap())
        );
        if page_number == 0 {
            second_page = Some(next.to_owned());
        }
        uri = next.to_owned();
    }
    assert_eq!(seen, ["m0", "m1", "m2", "m3", "m4"], "each once, oldest first");
    // Browsing returned every message: the queue still holds all five.
    assert_eq!(admin.env.queue_depth("wa.dlq.dlqm_a").await, 5);

    // The queue moves under the cursor (a purge): the stale page is refused, not made up.
    let purged = admin.post("/v1/tenants/dlqm_a/dlq/purge", json!({})).await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.text);
    let stale = admin.get(&second_page.unwrap()).await;
    assert_eq!((stale.status, stale.problem()), (StatusCode::CONFLICT, "conflict".to_owned()), "{}", stale.text);
    let foreign = admin.get("/v1/tenants/dlqm_a/dlq?cursor=bm90LWEtY3Vyc29y").await;
    assert_eq!(foreign.status, StatusCode::BAD_REQUEST, "{}", foreign.text);
    admin.env.cleanup().await;
}

/// Follows `next` links from `first`, collecting `field` of every item under `list`.
async fn follow(admin: &Admin, first: &str, list: &str, field: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut uri = Some(first.to_owned());
    while let Some(u) = uri {
        let page = admin.get(&u).await;
        assert_eq!(page.status, StatusCode::OK, "{u}: {}", page.text);
        let items = page.json[list].as_array().unwrap();
        assert!(items.len() <= 2, "{u}: the limit holds");
        seen.extend(items.iter().map(|i| i[field].as_str().unwrap().to_owned()));
        uri = page.json["next"].as_str().map(str::to_owned);
        assert_eq!(uri.is_some(), page.json["next_cursor"].is_string());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lists_computed_per_call_page_by_key_and_return_every_item_once() {
    let admin = Admin::new().await;
    for t in ["pg_c", "pg_a", "pg_b"] {
        admin.create_tenant(t).await;
    }
    for (keyword, reply) in [("zeta", "z"), ("alpha", "a"), ("mid", "m")] {
        let added = admin.post("/v1/tenants/pg_a/rules", json!({"keyword": keyword, "reply": reply})).await;
        assert_eq!(added.status, StatusCode::NO_CONTENT, "{}", added.text);
    }
    for name in ["acc_q", "acc_p"] {
        let added = admin.post("/v1/accounts", json!({"name": name, "key_ref": "env:WA_API_KEY"})).await;
        assert!(added.status.is_success(), "{}", added.text);
    }
    assert_eq!(follow(&admin, "/v1/depth?limit=2", "tenants", "customer_ref").await, ["pg_a", "pg_b", "pg_c"]);
    assert_eq!(follow(&admin, "/v1/tenants/pg_a/rules?limit=2", "items", "keyword").await, ["alpha", "mid", "zeta"]);
    assert_eq!(follow(&admin, "/v1/accounts?limit=2", "items", "name").await, ["acc_p", "acc_q", "default"]);
    let tokens = follow(&admin, "/v1/admin-tokens?limit=2", "items", "name").await;
    assert_eq!(tokens, ["ops", "viewer"], "oldest first");
    let foreign = admin.get(&format!("/v1/accounts?cursor={}", wafleet_fleet::paging::encode("d1", "pg_a"))).await;
    assert_eq!(foreign.status, StatusCode::BAD_REQUEST, "a depth cursor is not an accounts cursor");
    admin.env.cleanup().await;
}

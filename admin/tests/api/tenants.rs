//! Tenant, bridge, queue, dead-letter and outbox endpoints: CLI semantics, CLI audit records (with
//! the token as actor), idempotent creation, pagination, and client problems for bad input.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::Admin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_the_first_answer_and_refuses_the_same_key_with_another_body() {
    let admin = Admin::new().await;
    let body = json!({"customer_ref": "idem_a", "bridge": "idem_a"});
    let key = [("idempotency-key", "create-idem-a-1")];
    let first = admin.call(Method::POST, "/v1/tenants", Some(&admin.full), Some(body.clone()), &key).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.headers.get("location").unwrap(), "/v1/tenants/idem_a");
    assert_eq!(first.json["status"], "active");

    let again = admin.call(Method::POST, "/v1/tenants", Some(&admin.full), Some(body.clone()), &key).await;
    assert_eq!((again.status, again.json.clone()), (StatusCode::CREATED, first.json.clone()), "the same answer again");
    assert_eq!(admin.audit_of("idem_a").await.len(), 1, "a replay runs nothing and audits nothing");

    let other = json!({"customer_ref": "idem_a", "bridge": "idem_a", "bot": "rules"});
    let reused = admin.call(Method::POST, "/v1/tenants", Some(&admin.full), Some(other), &key).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.problem(), "idempotency-key-reused");

    // Without a key, an identical tenant is idempotent like `tenants add`: 200, nothing changed.
    let plain = admin.post("/v1/tenants", body.clone()).await;
    assert_eq!(plain.status, StatusCode::OK, "{}", plain.text);

    // A refused request is remembered too: the same key gets the same problem.
    // A conflict only a tenant added before bridge keys had to equal refs can cause.
    admin.env.owner_exec("update tenants set bridge = 'idem_b' where customer_ref = 'idem_a'").await;
    let stolen = json!({"customer_ref": "idem_b", "bridge": "idem_b"});
    let key2 = [("idempotency-key", "create-idem-b-1")];
    let refused = admin.call(Method::POST, "/v1/tenants", Some(&admin.full), Some(stolen.clone()), &key2).await;
    assert_eq!((refused.status, refused.problem()), (StatusCode::CONFLICT, "conflict".to_owned()));
    assert!(refused.json["detail"].as_str().unwrap().contains("already belongs to another tenant"));
    let replayed = admin.call(Method::POST, "/v1/tenants", Some(&admin.full), Some(stolen), &key2).await;
    assert_eq!((replayed.status, replayed.json), (StatusCode::CONFLICT, refused.json));
    admin.env.owner_exec("update tenants set bridge = 'idem_a' where customer_ref = 'idem_a'").await;
    let foreign = admin.post("/v1/tenants", json!({"customer_ref": "idem_f", "bridge": "idem_a"})).await;
    assert_eq!((foreign.status, foreign.problem()), (StatusCode::BAD_REQUEST, "invalid-request".to_owned()));
    assert!(
        foreign.json["detail"].as_str().unwrap().contains("differs from the tenant's ref idem_f"),
        "{}",
        foreign.text
    );
    let defaulted = admin.post("/v1/tenants", json!({"customer_ref": "idem_d"})).await;
    assert_eq!(defaulted.status, StatusCode::CREATED, "{}", defaulted.text);
    assert_eq!(admin.get("/v1/tenants/idem_d").await.json["bridge"], "idem_d", "the bridge key defaults to the ref");

    // An http bot's signing secret is shown once: never stored for a replay, never audited.
    let http = json!({"customer_ref": "idem_h", "bridge": "idem_h", "bot": "http", "bot_url": "https://bot.example.com/h?t=x"});
    let key3 = [("idempotency-key", "create-idem-h-1")];
    let created = admin.call(Method::POST, "/v1/tenants", Some(&admin.full), Some(http.clone()), &key3).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let secret = created.json["bot_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("wfbot_"));
    assert_eq!(created.json["bot_kind"], "http");
    let replay = admin.call(Method::POST, "/v1/tenants", Some(&admin.full), Some(http), &key3).await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert!(replay.json.get("bot_secret").is_none(), "{}", replay.text);
    let stored: String = sqlx::query_scalar(
        "select coalesce(string_agg(i.response::text, ''), '') || coalesce((select string_agg(arguments::text, '') from audit_log), '') \
         from admin_idempotency i",
    )
    .fetch_one(&admin.env.owner_pool)
    .await
    .unwrap();
    assert!(!stored.contains(&secret[6..]), "the secret is stored nowhere but on the tenant row");
    let rotated = admin.post("/v1/tenants/idem_h/bot", json!({"bot": "http", "rotate_secret": true})).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    assert_ne!(rotated.json["bot_secret"].as_str().unwrap(), secret);
    let echo = admin.post("/v1/tenants/idem_h/bot", json!({"bot": "echo"})).await;
    assert_eq!((echo.json["bot"].clone(), echo.json.get("bot_secret")), (json!("echo"), None));
    let audit = admin.audit_of("idem_h").await;
    assert_eq!(audit[0].2["bot_origin"], "https://bot.example.com", "the URL is audited as its origin only");
    assert_eq!(audit.last().unwrap().1, "tenants set-bot");

    // A key must be visible ASCII, 1-255 characters.
    let bad_key = [("idempotency-key", "")];
    let answer = admin.call(Method::POST, "/v1/tenants", Some(&admin.full), Some(body), &bad_key).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_listed_in_ref_order_one_page_at_a_time_with_an_opaque_cursor() {
    let admin = Admin::new().await;
    let refs = ["page_a", "page_b", "page_c", "page_d", "page_e"];
    for r in refs {
        admin.env.add_tenant_in(r, r, "default").await.unwrap();
    }
    let mut seen = Vec::new();
    let mut uri = "/v1/tenants?limit=2".to_owned();
    for _ in 0..5 {
        let page = admin.get(&uri).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        let items = page.json["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|t| t["customer_ref"].as_str().unwrap().to_owned()));
        match page.json["next_cursor"].as_str() {
            Some(cursor) => {
                assert!(!cursor.contains("page_"), "the cursor is opaque: {cursor}");
                uri = page.json["next"].as_str().unwrap().to_owned();
                assert_eq!(uri, format!("/v1/tenants?limit=2&cursor={cursor}"), "the next link keeps the limit");
            }
            None => break,
        }
    }
    assert_eq!(seen, refs);
    for bad in ["/v1/tenants?cursor=page_b", "/v1/tenants?limit=0", "/v1/tenants?limit=501", "/v1/tenants?limit=x"] {
        let answer = admin.get(bad).await;
        assert_eq!((answer.status, answer.problem()), (StatusCode::BAD_REQUEST, "invalid-request".to_owned()), "{bad}");
    }
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_client_problem_with_a_clear_detail_never_a_server_error() {
    let admin = Admin::new().await;
    admin.create_tenant("bad_a").await;
    let checks: Vec<(Method, &str, Option<serde_json::Value>, StatusCode, &str)> = vec![
        (Method::GET, "/v1/tenants/a%23b", None, StatusCode::BAD_REQUEST, "invalid-request"),
        (Method::GET, "/v1/tenants/nobody", None, StatusCode::NOT_FOUND, "tenant-not-found"),
        (Method::GET, "/v1/tenants/nobody/depth", None, StatusCode::NOT_FOUND, "tenant-not-found"),
        (Method::GET, "/v1/tenants/nobody/dlq", None, StatusCode::NOT_FOUND, "tenant-not-found"),
        (Method::GET, "/v1/dlq?customer_ref=nobody", None, StatusCode::NOT_FOUND, "tenant-not-found"),
        (
            Method::GET,
            "/v1/tenants/nobody/webhook-url?base=https://h.example",
            None,
            StatusCode::NOT_FOUND,
            "tenant-not-found",
        ),
        (
            Method::GET,
            "/v1/tenants/bad_a/webhook-url?base=ftp://h.example",
            None,
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (Method::GET, "/v1/tenants/bad_a/webhook-url", None, StatusCode::BAD_REQUEST, "invalid-request"),
        (Method::GET, "/v1/tenants/bad_a/outbox?status=sent", None, StatusCode::BAD_REQUEST, "invalid-request"),
        (Method::GET, "/v1/operations/not-a-uuid", None, StatusCode::BAD_REQUEST, "invalid-request"),
        (
            Method::GET,
            "/v1/operations/0190b2f6-0000-7000-8000-000000000000",
            None,
            StatusCode::NOT_FOUND,
            "operation-not-found",
        ),
        (Method::GET, "/v1/audit?limit=0", None, StatusCode::BAD_REQUEST, "invalid-request"),
        (Method::GET, "/v1/audit?target=%00", None, StatusCode::BAD_REQUEST, "invalid-request"),
        (
            Method::POST,
            "/v1/tenants",
            Some(json!({"customer_ref": "bad b", "bridge": "x"})),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            Method::POST,
            "/v1/tenants",
            Some(json!({"customer_ref": "bad_c", "bridge": "bad_c\u{0}"})),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            Method::POST,
            "/v1/tenants",
            Some(json!({"customer_ref": "bad_c", "bridge": "x", "colour": "red"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
        ),
        (
            Method::POST,
            "/v1/tenants",
            Some(json!({"customer_ref": "bad_c", "bridge": "x", "bot": "gpt"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
        ),
        (
            Method::POST,
            "/v1/tenants",
            Some(json!({"bridge": "bad_c"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
        ),
        (
            Method::POST,
            "/v1/tenants",
            Some(json!({"customer_ref": "bad_c", "bridge": "bad_c", "account": "nope"})),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (Method::POST, "/v1/tenants/bad_a/dlq/replay", Some(json!({})), StatusCode::BAD_REQUEST, "invalid-request"),
        (
            Method::POST,
            "/v1/tenants/bad_a/dlq/replay",
            Some(json!({"all": true, "ids": ["x"]})),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            Method::POST,
            "/v1/tenants/bad_a/erase",
            Some(json!({"contact": "abc"})),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (
            Method::POST,
            "/v1/tenants/bad_a/rotate-url",
            Some(json!({"base": "hooks.example.com"})),
            StatusCode::BAD_REQUEST,
            "invalid-request",
        ),
        (Method::POST, "/v1/tenants/nobody/disable", None, StatusCode::NOT_FOUND, "tenant-not-found"),
    ];
    for (method, uri, body, status, slug) in checks {
        let answer = admin.call(method.clone(), uri, Some(&admin.full), body, &[]).await;
        assert_eq!(answer.status, status, "{method} {uri}: {}", answer.text);
        assert_eq!(answer.problem(), slug, "{method} {uri}");
    }
    let not_json = admin.raw(Method::POST, "/v1/tenants", Some("application/json"), "{not json").await;
    assert_eq!((not_json.status, not_json.problem()), (StatusCode::BAD_REQUEST, "invalid-request".to_owned()));
    let no_type = admin.raw(Method::POST, "/v1/tenants", None, r#"{"customer_ref":"x","bridge":"x"}"#).await;
    assert_eq!(
        (no_type.status, no_type.problem()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type".to_owned())
    );
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_endpoints_answer_like_the_cli_and_write_its_audit_records_with_the_token_as_actor() {
    let admin = Admin::new().await;
    admin.create_tenant("life_a").await;
    let base = admin.env.ingest_url.clone();

    let url = admin.get(&format!("/v1/tenants/life_a/webhook-url?base={base}")).await;
    assert_eq!(url.json["url"], admin.env.webhook_url("life_a").await.unwrap());
    assert_eq!(url.headers.get("cache-control").unwrap(), "no-store", "the URL is a credential");
    assert_eq!(admin.post("/v1/tenants/life_a/disable", json!({})).await.json["status"], "disabled");
    let warned = admin.get(&format!("/v1/tenants/life_a/webhook-url?base={base}")).await;
    assert!(warned.json["warning"].as_str().unwrap().contains("disabled"), "{}", warned.text);
    assert_eq!(admin.post("/v1/tenants/life_a/enable", json!({})).await.json["status"], "active");

    let rotated = admin.post("/v1/tenants/life_a/rotate-url", json!({"base": base})).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    assert_ne!(rotated.json["url"], url.json["url"]);
    assert_eq!(rotated.json["url"], admin.env.webhook_url("life_a").await.unwrap());
    assert_eq!(admin.get("/v1/tenants/life_a").await.json["generation"], 2);

    let provisioned = admin.post("/v1/tenants/life_a/provision", json!({"base": base})).await;
    assert_eq!(provisioned.status, StatusCode::OK, "{}", provisioned.text);
    assert!(provisioned.json["instance_id"].as_i64().is_some());
    let status = admin.get("/v1/tenants/life_a/bridge-status").await;
    assert_eq!((status.status, status.json["status"].clone()), (StatusCode::OK, json!("connected")), "{}", status.text);

    let depth = admin.get("/v1/tenants/life_a/depth").await;
    assert_eq!(depth.status, StatusCode::OK, "{}", depth.text);
    assert_eq!((depth.json["source"].clone(), depth.json["depth"]["ready"].clone()), (json!("management"), json!(0)));
    assert_eq!(admin.get("/v1/tenants/life_a/dlq").await.json, json!({"items": []}));
    let dry = admin.post("/v1/tenants/life_a/dlq/replay", json!({"all": true, "dry_run": true})).await;
    assert_eq!(dry.json, json!({"moved": [], "skipped": [], "dry_run": true}), "{}", dry.text);
    assert_eq!(admin.post("/v1/tenants/life_a/dlq/replay", json!({"all": true})).await.status, StatusCode::OK);
    assert_eq!(admin.post("/v1/tenants/life_a/dlq/purge", json!({})).await.json["purged"], 0);

    let export = admin.get("/v1/tenants/life_a/export?format=json").await;
    assert_eq!(export.headers.get("content-type").unwrap(), "application/json");
    let rows = export.json.as_array().unwrap();
    assert!(rows.iter().any(|r| r["table"] == "tenants" && r["row"]["customer_ref"] == "life_a"), "{}", export.text);
    let lines = admin.get("/v1/tenants/life_a/export").await;
    assert_eq!(lines.headers.get("content-type").unwrap(), "application/x-ndjson");
    assert_eq!(lines.text.lines().count(), rows.len());

    admin
        .env
        .queue_replies("life_a", "447700900123", &["a reply that timed out".into()], None, Duration::from_secs(3600))
        .await;
    sqlx::query("update outbox set status = 'unknown'").execute(&admin.env.owner_pool).await.unwrap();
    let outbox = admin.get("/v1/tenants/life_a/outbox").await;
    let row = &outbox.json["rows"][0];
    assert_eq!(
        (row["status"].clone(), row["chat"].clone()),
        (json!("unknown"), json!("447700900123")),
        "{}",
        outbox.text
    );
    assert!(row.get("body").is_none(), "no personal data unless asked");
    let with_body = admin.get("/v1/tenants/life_a/outbox?status=unknown&body=true").await;
    assert_eq!(with_body.json["rows"][0]["body"], "a reply that timed out");
    assert_eq!(admin.get("/v1/outbox").await.json["tenants"][0]["unknown"], 1);

    let erased = admin.post("/v1/tenants/life_a/erase", json!({"contact": "+44 7700 900123"})).await;
    assert_eq!(erased.json["outbox"], 1, "{}", erased.text);

    let audit = admin.audit_of("life_a").await;
    let commands: Vec<&str> = audit.iter().map(|(_, command, _, _)| command.as_str()).collect();
    assert_eq!(
        commands,
        [
            "tenants add",
            "webhook-url",
            "tenants disable",
            "webhook-url",
            "tenants enable",
            "tenants rotate-url",
            "provision",
            "dlq replay",
            "dlq purge",
            "tenants export",
            "tenants export",
            "outbox rows",
            "tenants erase"
        ],
        "state reads are not audited; credential reads, exports and bodies are; a dry run is not"
    );
    assert!(
        audit.iter().all(|(operator, _, _, outcome)| operator == "admin-token:ops" && outcome == "ok"),
        "{audit:?}"
    );
    let erase_args = &audit.last().unwrap().2;
    assert_eq!(erase_args["contact"], "<redacted>", "the erased contact is not kept in the audit log");

    // The CLI's record of the same command has the same shape.
    let cli = admin.env.wafleet(&["tenants", "add", "life_cli", "--bridge", "life_cli"]);
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let (_, command, cli_args, _) = admin.audit_of("life_cli").await.remove(0);
    assert_eq!(command, "tenants add");
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&cli_args), keys(&audit[0].2));
    assert_eq!(cli_args["bot"], audit[0].2["bot"]);
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_set_and_clear_a_tenants_queue_bound_and_an_omitted_field_stays() {
    let admin = Admin::new().await;
    assert_eq!(admin.create_tenant("lim_a").await.status, StatusCode::CREATED);
    let management = admin.env.endpoints.management().unwrap();
    let vhost = admin.env.name.clone();
    let policy = |m: wafleet_fleet::topology::Management| {
        let vhost = vhost.clone();
        async move { m.get_json(&["policies", &vhost, "wafleet-tenant-queues.lim_a"]).await.unwrap() }
    };
    let stored = || async {
        sqlx::query_scalar::<_, Option<i64>>("select queue_max_bytes from tenants where customer_ref = 'lim_a'")
            .fetch_one(&admin.env.owner_pool)
            .await
            .unwrap()
    };

    let set = admin
        .call(Method::PATCH, "/v1/tenants/lim_a/limits", Some(&admin.full), Some(json!({"queue_max_bytes": 8192})), &[])
        .await;
    assert_eq!(set.status, StatusCode::NO_CONTENT, "{}", set.text);
    let applied = policy(management.clone()).await.expect("the override policy exists");
    assert_eq!(applied["pattern"], r"^wa\.tenant\.lim_a$");
    assert_eq!(applied["definition"]["max-length-bytes"], 8192);
    assert_eq!(applied["definition"]["dead-letter-exchange"], "wa.dlx", "the override still dead-letters");
    assert_eq!(stored().await, Some(8192));

    let unchanged =
        admin.call(Method::PATCH, "/v1/tenants/lim_a/limits", Some(&admin.full), Some(json!({})), &[]).await;
    assert_eq!(unchanged.status, StatusCode::NO_CONTENT);
    assert_eq!(stored().await, Some(8192), "an omitted field stays as it was");

    let read_only = admin
        .call(
            Method::PATCH,
            "/v1/tenants/lim_a/limits",
            Some(&admin.read_only),
            Some(json!({"queue_max_bytes": 1})),
            &[],
        )
        .await;
    assert_eq!(read_only.status, StatusCode::FORBIDDEN);
    let zero = admin
        .call(Method::PATCH, "/v1/tenants/lim_a/limits", Some(&admin.full), Some(json!({"queue_max_bytes": 0})), &[])
        .await;
    assert_eq!(zero.status, StatusCode::BAD_REQUEST, "{}", zero.text);

    let cleared = admin
        .call(Method::PATCH, "/v1/tenants/lim_a/limits", Some(&admin.full), Some(json!({"queue_max_bytes": null})), &[])
        .await;
    assert_eq!(cleared.status, StatusCode::NO_CONTENT);
    assert!(policy(management).await.is_none(), "back to the fleet-wide policy");
    assert_eq!(stored().await, None);
    assert_eq!(admin.audit_of("lim_a").await.iter().filter(|a| a.1 == "tenants limits").count(), 4);
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limits_patch_changes_only_the_fields_it_names() {
    let admin = Admin::new().await;
    admin.create_tenant("lim_p").await;
    let patch = |body: serde_json::Value| {
        let admin = &admin;
        async move { admin.call(Method::PATCH, "/v1/tenants/lim_p/limits", Some(&admin.full), Some(body), &[]).await }
    };
    let limits = || async {
        let row: (i32, Option<i32>, Option<i32>) = sqlx::query_as(
            "select weight, max_sends_per_min, max_sends_per_day from tenants where customer_ref = 'lim_p'",
        )
        .fetch_one(&admin.env.owner_pool)
        .await
        .unwrap();
        row
    };
    assert_eq!(patch(json!({"weight": 5, "max_per_day": 900})).await.status, StatusCode::NO_CONTENT);
    assert_eq!(patch(json!({"max_per_min": 12})).await.status, StatusCode::NO_CONTENT);
    assert_eq!(limits().await, (5, Some(12), Some(900)), "the weight and the daily cap stayed");
    assert_eq!(patch(json!({"max_per_day": null})).await.status, StatusCode::NO_CONTENT);
    assert_eq!(limits().await, (5, Some(12), None), "null removes a cap");
    let bad = patch(json!({"weight": 0})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    assert_eq!(limits().await, (5, Some(12), None));
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_turns_group_replies_of_the_built_in_bots_on_and_off_and_is_audited() {
    let admin = Admin::new().await;
    admin.create_tenant("grp_t").await;
    let stored = || async {
        sqlx::query_scalar::<_, Option<bool>>(
            "select (bot_config->>'reply_in_groups')::boolean from tenants where customer_ref = 'grp_t'",
        )
        .fetch_one(&admin.env.owner_pool)
        .await
        .unwrap()
    };
    assert_eq!(stored().await, None, "off until turned on");
    let on = admin.post("/v1/tenants/grp_t/groups", json!({"reply_in_groups": true})).await;
    assert_eq!(on.status, StatusCode::NO_CONTENT, "{}", on.text);
    assert_eq!(stored().await, Some(true));
    let off = admin.post("/v1/tenants/grp_t/groups", json!({"reply_in_groups": false})).await;
    assert_eq!(off.status, StatusCode::NO_CONTENT, "{}", off.text);
    assert_eq!(stored().await, Some(false));
    let unknown = admin.post("/v1/tenants/nobody/groups", json!({"reply_in_groups": true})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    let audited: i64 =
        sqlx::query_scalar("select count(*) from audit_log where command = 'tenants groups' and target = 'grp_t'")
            .fetch_one(&admin.env.owner_pool)
            .await
            .unwrap();
    assert_eq!(audited, 2);
    admin.env.cleanup().await;
}

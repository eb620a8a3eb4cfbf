//! The fleet console through the real router: sign-in and its cookie, sign-out and revocation,
//! the CSRF token and origin check of every form, scopes (no buttons and 403 without `write`),
//! escaping of what tenants and messages control, the tenant list's search, filter and pages, and
//! the headers every console answer carries.

use axum::http::{Method, StatusCode};
use secrecy::ExposeSecret as _;
use serde_json::json;
use wafleet_fleet::admin_tokens::{self, Scopes};

use crate::{Admin, Answer};

/// A signed-in browser: its cookie header and the CSRF token of its pages.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

/// Signs in with `token`; panics unless the console answers with a session cookie.
pub async fn sign_in(admin: &Admin, token: &str) -> Session {
    let answer = form(admin, "/console/sign-in", None, &[("token", token)], &[]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
    let set_cookie = answer.headers.get("set-cookie").unwrap().to_str().unwrap().to_owned();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let page = get(admin, "/console/fleet", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    Session { cookie, csrf: csrf_of(&page.text) }
}

fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().unwrap().to_owned()
}

/// `GET uri` with a session cookie (none when `None`).
pub async fn get(admin: &Admin, uri: &str, cookie: Option<&str>) -> Answer {
    let headers: Vec<(&str, &str)> = cookie.map(|c| vec![("cookie", c)]).unwrap_or_default();
    admin.call(Method::GET, uri, None, None, &headers).await
}

/// A form POST to `uri` with a session cookie, fields and extra headers.
pub async fn form(
    admin: &Admin,
    uri: &str,
    cookie: Option<&str>,
    fields: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> Answer {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if let Some(cookie) = cookie {
        headers.push(("cookie", cookie));
    }
    headers.extend_from_slice(extra);
    admin.raw_with(Method::POST, uri, &headers, &body).await
}

async fn status_of(admin: &Admin, customer_ref: &str) -> String {
    sqlx::query_scalar("select status from tenants where customer_ref = $1")
        .bind(customer_ref)
        .fetch_one(&admin.env.owner_pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_sets_a_strict_short_lived_cookie_and_a_wrong_token_gets_401() {
    let admin = Admin::new().await;
    let anonymous = get(&admin, "/console/fleet", None).await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(anonymous.headers["location"], "/console/sign-in");
    let page = get(&admin, "/console/sign-in", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("name=\"token\""), "{}", page.text);

    let wrong = form(&admin, "/console/sign-in", None, &[("token", "wfa_not-a-token")], &[]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.headers.get("set-cookie").is_none());

    let ok = form(&admin, "/console/sign-in", None, &[("token", &admin.full)], &[]).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.text);
    let cookie = ok.headers["set-cookie"].to_str().unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/console", "Max-Age=1800"] {
        assert!(cookie.contains(part), "{part} missing from {cookie}");
    }
    assert!(!cookie.contains(&admin.full), "the cookie must not carry the token");
    let stored: i64 =
        sqlx::query_scalar("select count(*) from console_sessions").fetch_one(&admin.env.owner_pool).await.unwrap();
    assert_eq!(stored, 1);
    let operators: Vec<String> = sqlx::query_scalar("select operator from audit_log where command = 'console sign-in'")
        .fetch_all(&admin.env.owner_pool)
        .await
        .unwrap();
    assert_eq!(operators, ["admin-token:ops"]);
    // A token without `read` cannot use any page: refused at sign-in.
    let (_, creds) =
        admin_tokens::create(&admin.env.admin_pool, "vault", &Scopes::parse_list("credentials").unwrap(), "t")
            .await
            .unwrap();
    let refused = form(&admin, "/console/sign-in", None, &[("token", creds.expose_secret())], &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert!(refused.headers.get("set-cookie").is_none());
    // A sign-in from a page of another origin is refused.
    let foreign =
        form(&admin, "/console/sign-in", None, &[("token", &admin.full)], &[("origin", "https://evil.test")]).await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_and_revoking_the_token_each_end_the_session() {
    let admin = Admin::new().await;
    let session = sign_in(&admin, &admin.full).await;
    let out = form(&admin, "/console/sign-out", Some(&session.cookie), &[("csrf", &session.csrf)], &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.text);
    assert!(out.headers["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(get(&admin, "/console/fleet", Some(&session.cookie)).await.status, StatusCode::SEE_OTHER);
    // A panel's htmx refresh after the session ended navigates the page instead of swapping the
    // sign-in form into the panel.
    let headers = [("cookie", session.cookie.as_str()), ("hx-request", "true")];
    let poll = admin.raw_with(Method::GET, "/console/fleet/panel", &headers, "").await;
    assert_eq!(poll.status, StatusCode::UNAUTHORIZED);
    assert_eq!(poll.headers["hx-redirect"], "/console/sign-in");
    // A second sign-in in the same browser ends the first session.
    let first = sign_in(&admin, &admin.full).await;
    let again = form(&admin, "/console/sign-in", Some(&first.cookie), &[("token", &admin.full)], &[]).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    assert_eq!(get(&admin, "/console/fleet", Some(&first.cookie)).await.status, StatusCode::SEE_OTHER);

    let (_, token) = admin_tokens::create(&admin.env.admin_pool, "oncall", &Scopes::all(), "test").await.unwrap();
    let session = sign_in(&admin, token.expose_secret()).await;
    admin_tokens::revoke(&admin.env.admin_pool, "oncall").await.unwrap();
    let after = get(&admin, "/console/tenants", Some(&session.cookie)).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER, "a revoked token's session must end: {}", after.text);
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_without_the_sessions_csrf_token_or_from_another_origin_changes_nothing() {
    let admin = Admin::new().await;
    admin.create_tenant("csrf_t").await;
    let session = sign_in(&admin, &admin.full).await;
    let uri = "/console/tenants/csrf_t/disable";
    let cookie = Some(session.cookie.as_str());
    let missing = form(&admin, uri, cookie, &[], &[]).await;
    let wrong = form(&admin, uri, cookie, &[("csrf", "AAAA")], &[]).await;
    let foreign = form(&admin, uri, cookie, &[("csrf", &session.csrf)], &[("origin", "https://evil.test")]).await;
    for answer in [&missing, &wrong, &foreign] {
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
    }
    assert_eq!(status_of(&admin, "csrf_t").await, "active");
    // Another session's token does not fit this session.
    let other = sign_in(&admin, &admin.full).await;
    assert_ne!(other.csrf, session.csrf);
    assert_eq!(form(&admin, uri, cookie, &[("csrf", &other.csrf)], &[]).await.status, StatusCode::FORBIDDEN);

    let done = form(&admin, uri, cookie, &[("csrf", &session.csrf)], &[]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    assert_eq!(status_of(&admin, "csrf_t").await, "disabled");
    let audit = admin.audit_of("csrf_t").await;
    let last = audit.last().unwrap();
    assert_eq!((last.0.as_str(), last.1.as_str(), last.3.as_str()), ("admin-token:ops", "tenants disable", "ok"));
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_sees_no_action_and_a_forged_post_with_it_gets_403() {
    let admin = Admin::new().await;
    admin.create_tenant("ro_t").await;
    let viewer = sign_in(&admin, &admin.read_only).await;
    let page = get(&admin, "/console/tenants/ro_t", Some(&viewer.cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains("Dead letters") && page.text.contains("Settings"));
    for button in ["/disable", "/dlq/replay", "/dlq/purge", "/rotate-url", "/webhook-url", "/bridge-status"] {
        assert!(!page.text.contains(&format!("/console/tenants/ro_t{button}")), "{button} shown to a read-only token");
    }
    for (uri, fields) in [
        ("/console/tenants/ro_t/disable", vec![]),
        ("/console/tenants/ro_t/dlq/purge", vec![("confirm", "yes")]),
        ("/console/tenants/ro_t/webhook-url", vec![("base", "https://hooks.example.com")]),
    ] {
        let mut fields = fields;
        fields.push(("csrf", viewer.csrf.as_str()));
        let forged = form(&admin, uri, Some(&viewer.cookie), &fields, &[]).await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN, "{uri}: {}", forged.text);
        assert!(!forged.text.contains("https://hooks.example.com/"), "{uri} leaked a URL");
    }
    assert_eq!(status_of(&admin, "ro_t").await, "active");
    // With every scope: the buttons, and the URL behind an audited click.
    let ops = sign_in(&admin, &admin.full).await;
    let page = get(&admin, "/console/tenants/ro_t", Some(&ops.cookie)).await;
    assert!(
        page.text.contains("/console/tenants/ro_t/disable") && page.text.contains("/console/tenants/ro_t/webhook-url")
    );
    assert!(!page.text.contains("https://hooks.example.com/"), "the page itself never shows the URL");
    let fields = [("csrf", ops.csrf.as_str()), ("base", "https://hooks.example.com")];
    let shown = form(&admin, "/console/tenants/ro_t/webhook-url", Some(&ops.cookie), &fields, &[]).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.text);
    assert!(shown.text.contains("https://hooks.example.com/"), "{}", shown.text);
    assert!(admin
        .audit_of("ro_t")
        .await
        .iter()
        .any(|(who, command, _, _)| who == "admin-token:ops" && command == "webhook-url"));
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_tenants_and_messages_control_renders_as_text() {
    let admin = Admin::new().await;
    admin.create_tenant("esc_t").await;
    let rule = json!({"keyword": "<b>hi</b>", "reply": "<script>alert('x')</script>"});
    assert_eq!(admin.post("/v1/tenants/esc_t/rules", rule).await.status, StatusCode::NO_CONTENT);
    let session = sign_in(&admin, &admin.full).await;
    let page = get(&admin, "/console/tenants/esc_t", Some(&session.cookie)).await;
    assert!(page.text.contains("&lt;script&gt;alert('x')&lt;/script&gt;"), "{}", page.text);
    assert!(page.text.contains("&lt;b&gt;hi&lt;/b&gt;"));
    assert!(!page.text.contains("<script>alert"));
    // What a failed message controls (its last error) is text too.
    crate::dead_letter(&admin, "esc_t", "<img src=x onerror=alert(1)>").await;
    let page = get(&admin, "/console/tenants/esc_t", Some(&session.cookie)).await;
    assert!(page.text.contains("&lt;img src=x onerror=alert(1)&gt;"), "{}", page.text);
    assert!(!page.text.contains("<img src=x"));
    let search = get(&admin, "/console/tenants?q=%3Cscript%3Ex", Some(&session.cookie)).await;
    assert_eq!(search.status, StatusCode::OK);
    assert!(search.text.contains("value=\"&lt;script&gt;x\""), "{}", search.text);
    assert!(!search.text.contains("<script>x"));
    // A ref that is not a ref never reaches a page.
    let bad = get(&admin, "/console/tenants/%3Cscript%3E", Some(&session.cookie)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(!bad.text.contains("<script>"));
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_list_searches_filters_and_pages_by_cursor() {
    let admin = Admin::new().await;
    for r in ["pg_alpha", "pg_beta", "pg_gamma", "pg_delta", "other_one"] {
        admin.create_tenant(r).await;
    }
    assert_eq!(admin.post("/v1/tenants/pg_beta/disable", json!({})).await.status, StatusCode::OK);
    let session = sign_in(&admin, &admin.read_only).await;
    let cookie = Some(session.cookie.as_str());
    let refs = |page: &str| -> Vec<String> {
        page.split("href=\"/console/tenants/").skip(1).map(|s| s.split('"').next().unwrap().to_owned()).collect()
    };
    let mut seen = Vec::new();
    let mut uri = "/console/tenants?q=pg_&limit=2".to_owned();
    for _ in 0..5 {
        let page = get(&admin, &uri, cookie).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        let found = refs(&page.text);
        assert!(found.len() <= 2, "{found:?}");
        seen.extend(found);
        match page.text.split("rel=\"next\" href=\"").nth(1) {
            Some(rest) => uri = rest.split('"').next().unwrap().replace("&amp;", "&"),
            None => break,
        }
    }
    assert_eq!(seen, ["pg_alpha", "pg_beta", "pg_delta", "pg_gamma"], "every match once, in ref order");
    // Each row shows its own tenant's queue: two messages in pg_gamma's queue, none in the others.
    for _ in 0..2 {
        admin.env.publish_raw("", "wa.tenant.pg_gamma", b"{}").await;
    }
    // The management API refreshes its queue figures every few seconds.
    let mut seen = (String::new(), String::new());
    for _ in 0..60 {
        let page = get(&admin, "/console/tenants?q=pg_", cookie).await;
        let ready_of = |r: &str| -> String {
            let row = page.text.split("<tr>").find(|row| row.contains(&format!(">{r}</a>"))).unwrap();
            row.split("<td class=\"num\">").nth(1).unwrap().split('<').next().unwrap().to_owned()
        };
        seen = (ready_of("pg_gamma"), ready_of("pg_alpha"));
        if seen.0 == "2" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(seen, ("2".to_owned(), "0".to_owned()));
    let disabled = get(&admin, "/console/tenants?status=disabled", cookie).await;
    assert_eq!(refs(&disabled.text), ["pg_beta"]);
    assert_eq!(get(&admin, "/console/tenants?status=zombie", cookie).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(get(&admin, "/console/tenants?cursor=bogus", cookie).await.status, StatusCode::BAD_REQUEST);
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_sign_in_and_assets_are_open_and_every_answer_carries_the_policy() {
    let admin = Admin::new().await;
    for uri in [
        "/console/sign-in",
        "/console/assets/htmx.min.js",
        "/console/assets/console.js",
        "/console/assets/uPlot.min.css",
    ] {
        let answer = get(&admin, uri, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}");
        let csp = answer.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(answer.headers["x-frame-options"], "DENY");
    }
    assert_eq!(
        get(&admin, "/console/assets/console.js", None).await.headers["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(get(&admin, "/console/assets/nothing.js", None).await.status, StatusCode::NOT_FOUND);
    for (method, route, _) in wafleet_admin::console::API_ROUTES {
        let uri = route.replace("{customer_ref}", "nobody");
        let answer =
            if *method == "GET" { get(&admin, &uri, None).await } else { form(&admin, &uri, None, &[], &[]).await };
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{method} {uri} without a session");
        assert_eq!(answer.headers["location"], "/console/sign-in");
    }
    // Signed in, a page is HTML with no inline script.
    let session = sign_in(&admin, &admin.full).await;
    let page = get(&admin, "/console/fleet", Some(&session.cookie)).await;
    assert!(page.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(!page.text.contains("<script>") && !page.text.contains(" style=\""), "inline script or style");
    assert!(page.text.contains("data-series=\"/console/fleet/series\""));
    let series = get(&admin, "/console/fleet/series", Some(&session.cookie)).await;
    assert_eq!(series.status, StatusCode::OK, "{}", series.text);
    assert_eq!(series.json["t"].as_array().unwrap().len(), 1);
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_url_needs_its_confirmation_and_shows_the_new_url_once() {
    let admin = Admin::new().await;
    admin.create_tenant("rot_t").await;
    let generation = || async {
        sqlx::query_scalar::<_, i64>("select generation from tenants where customer_ref = 'rot_t'")
            .fetch_one(&admin.env.owner_pool)
            .await
            .unwrap()
    };
    let before = generation().await;
    let session = sign_in(&admin, &admin.full).await;
    let uri = "/console/tenants/rot_t/rotate-url";
    let base = ("base", "https://hooks.example.com");
    let unconfirmed = form(&admin, uri, Some(&session.cookie), &[("csrf", &session.csrf), base], &[]).await;
    assert_eq!(unconfirmed.status, StatusCode::BAD_REQUEST, "{}", unconfirmed.text);
    assert_eq!(generation().await, before, "nothing rotated without the confirmation");
    let fields = [("csrf", session.csrf.as_str()), base, ("confirm", "yes")];
    let rotated = form(&admin, uri, Some(&session.cookie), &fields, &[]).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    assert_eq!(generation().await, before + 1);
    let shown = admin.get("/v1/tenants/rot_t/webhook-url?base=https://hooks.example.com").await;
    let url = shown.json["url"].as_str().unwrap();
    assert!(rotated.text.contains(url), "the page shows the new URL: {}", rotated.text);
    assert!(admin
        .audit_of("rot_t")
        .await
        .iter()
        .any(|(who, command, _, _)| who == "admin-token:ops" && command == "tenants rotate-url"));
    admin.env.cleanup().await;
}

//! Scenario 8: the console's pages against the admin API, with a large fleet (10,000 classic
//! tenants; 300 in quick mode). Each page is timed beside the admin API calls that serve the same
//! data, in alternating rounds against one `wafleet-admin`; the target is a page within 2× of
//! those calls. What the page adds (rendering, the session lookup, the reads the API has no single
//! call for) shows in the ratio.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use secrecy::ExposeSecret as _;
use wafleet_fleet::admin_tokens::{self, Scopes};
use wafleet_shared::topology::QueueType;

use super::{ratio, show, Ctx};
use crate::env::BenchEnv;
use crate::report::{Row, Section, Verdict};
use crate::stack::start_admin;
use crate::stats::Summary;

/// A console page and the admin API calls that serve its data.
struct Pair {
    name: &'static str,
    page: String,
    api: Vec<String>,
}

fn pairs(first: &str) -> Vec<Pair> {
    vec![
        Pair {
            name: "fleet",
            page: "/console/fleet".into(),
            api: vec!["/v1/depth?limit=10".into(), "/v1/outbox?limit=10".into(), "/v1/accounts".into()],
        },
        Pair {
            name: "tenants (50 a page)",
            page: "/console/tenants?limit=50".into(),
            api: vec!["/v1/tenants?limit=50".into(), "/v1/depth?limit=50".into()],
        },
        Pair {
            name: "tenant",
            page: format!("/console/tenants/{first}"),
            api: vec![
                format!("/v1/tenants/{first}"),
                format!("/v1/tenants/{first}/depth"),
                format!("/v1/tenants/{first}/dlq?limit=100"),
                format!("/v1/tenants/{first}/rules"),
                format!("/v1/tenants/{first}/outbox"),
                format!("/v1/audit?target={first}&limit=20"),
            ],
        },
        Pair { name: "audit (50 a page)", page: "/console/audit".into(), api: vec!["/v1/audit?limit=50".into()] },
    ]
}

async fn timed_get(client: &reqwest::Client, url: &str, header: (&str, &str)) -> anyhow::Result<f64> {
    let started = Instant::now();
    let answer = client.get(url).header(header.0, header.1).send().await?;
    let status = answer.status();
    answer.bytes().await?;
    if !status.is_success() {
        bail!("GET {url} answered {status}");
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// Runs the scenario.
// layout: a benchmark scenario reads as one script (set up, drive, measure, report) whose steps
// share the measured locals and timings; splitting it would pass them all around.
pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Section> {
    let started = Instant::now();
    let mut section = Section::new("console", "8. Console pages against the admin API");
    let tenants = if ctx.quick { 300 } else { 10_000 };
    let rounds = if ctx.quick { 3 } else { 15 };
    let env = BenchEnv::recreate(&ctx.services).await?;
    let setup = Instant::now();
    let fleet = env.add_tenants(tenants, QueueType::Classic).await?;
    let setup_secs = setup.elapsed().as_secs_f64();
    let first = fleet.first().context("no tenant")?.customer_ref.to_string();
    let pool = wafleet_fleet::db::app_pool(&env.admin_url, 1)?;
    let (_, token) = admin_tokens::create(&pool, "bench", &Scopes::all(), "bench").await?;
    pool.close().await;
    let (admin, base) = start_admin(&ctx.bins, &env).await?;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let signed_in =
        client.post(format!("{base}/console/sign-in")).form(&[("token", token.expose_secret())]).send().await?;
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
        .context("signing in to the console set no cookie")?;
    let bearer = format!("Bearer {}", token.expose_secret());
    let mut results = Vec::new();
    for pair in pairs(&first) {
        let (mut page_ms, mut api_ms) = (Vec::new(), Vec::new());
        // One untimed round warms the pools and caches of both sides.
        for round in 0..=rounds {
            let page = timed_get(&client, &format!("{base}{}", pair.page), ("cookie", &cookie)).await?;
            let mut api = 0.0;
            for path in &pair.api {
                api += timed_get(&client, &format!("{base}{path}"), ("authorization", &bearer)).await?;
            }
            if round > 0 {
                page_ms.push(page);
                api_ms.push(api);
            }
        }
        results.push((pair, Summary::of(&page_ms), Summary::of(&api_ms)));
    }
    admin.stop(Duration::from_secs(10)).await?;
    env.teardown().await?;
    for (pair, page, api) in results {
        let (p, a) = (page.map_or(f64::NAN, |s| s.median), api.map_or(f64::NAN, |s| s.median));
        section.rows.push(Row {
            metric: format!("{} page, {tenants} tenants ({} API call(s) beside it)", pair.name, pair.api.len()),
            value: show(&page, 1, " ms"),
            ceiling: format!("API {}", show(&api, 1, " ms")),
            ratio: ratio(p, a),
            target: "≤ 2.0×".into(),
            verdict: Verdict::from_bool(p <= 2.0 * a),
        });
    }
    section.notes.push(format!(
        "{tenants} classic tenants (rows and queues, {setup_secs:.0} s to set up), one `wafleet-admin` of this build; each \
         round times the page (session cookie) and then the admin API calls that serve the same data (bearer token), \
         sequentially, over {rounds} rounds after one untimed round. API calls: fleet = depth, outbox summary, \
         accounts (the page's status counts have no API call); tenants = a page of tenants and of depth; tenant = the \
         tenant, its depth, dead letters, rules, outbox and audit trail; audit = one page."
    ));
    section.seconds = started.elapsed().as_secs_f64();
    Ok(section)
}

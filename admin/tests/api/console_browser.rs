//! The console in a real browser: Debian's headless chromium driven through chromium-driver
//! (WebDriver) against a real `wafleet-admin` on loopback, with a real database, broker, ingest,
//! worker and WA Bridges simulator. One walk through what an operator does: sign in, find a
//! tenant, watch its depth rise live while its worker is stopped, dead-letter a message, dry-run
//! and replay it and see it delivered, sign out; a read-only token sees no button; markup in a
//! rule text stays text. It saves screenshots of the fleet, tenants and tenant pages in
//! `target/console-screenshots/` (and in `docs/console/` with `WAFLEET_UPDATE_SCREENSHOTS=1`).
//!
//! Needs `chromium` and `chromium-driver` (`.ci/run` installs them); without them it fails and
//! says so.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use wafleet_admin::startup::Listen;
use wafleet_admin::{Application, ConsoleSettings, RateLimit};
use wafleet_fleet::admin_tokens::{self, Scopes};
use wafleet_fleet::budget::BudgetConfig;
use wafleet_tests::{message_event, post_json, wait_until, TestEnv, TEST_SIGNING_KEY};

/// chromium-driver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start_driver() -> Driver {
    let binary = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromium-driver is not installed: apt-get install chromium chromium-driver (.ci/run does)");
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium-driver did not start");
    let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
    let status = format!("{}/status", driver.url);
    wait_until(Duration::from_secs(20), || async {
        reqwest::get(&status).await.is_ok_and(|r| r.status().is_success())
    })
    .await
    .expect("chromium-driver never answered /status");
    driver
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    let args =
        ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1800"];
    caps.insert("goog:chromeOptions".into(), serde_json::json!({"binary": "/usr/bin/chromium", "args": args}));
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("no WebDriver session (is chromium installed?)")
}

/// A real admin server over `env` on a loopback port, stopped when the token is cancelled.
async fn serve_admin(env: &TestEnv, stop: CancellationToken) -> String {
    let budget = BudgetConfig {
        rate_per_window: 60_000,
        burst: 1_000,
        egress: wafleet_tests::lifted_egress(),
        ..BudgetConfig::default()
    };
    let plenty = RateLimit { per_second: 1000.try_into().unwrap(), burst: 1000.try_into().unwrap() };
    let state = wafleet_admin::AppState::new(
        env.admin_pool.clone(),
        env.endpoints.clone(),
        env.fleet(budget.clone()),
        Some(SecretString::from(TEST_SIGNING_KEY)),
        budget,
        (plenty, plenty),
    )
    // As `wafleet-admin` on loopback sets it: a browser reaches it over plain HTTP.
    .with_console(ConsoleSettings { session_lifetime: Duration::from_secs(600), secure_cookie: false });
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listen = Listen { addr: any, ops_addr: any, header_timeout: Duration::from_secs(5), max_connections: 64 };
    let app = Application::bind(listen, state, None).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped(stop));
    base
}

async fn text_of(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until the element `css` of the current page (without reloading it) reads `expected`.
async fn wait_for_text(client: &Client, css: &str, expected: &str, within: Duration) {
    let seen = wait_until(within, || async { text_of(client, css).await.trim() == expected }).await;
    assert!(seen.is_ok(), "{css} never read {expected:?}; it reads {:?}", text_of(client, css).await);
}

/// Clicks `locator` and waits until the browser is at a URL containing `to` with its page loaded.
async fn click_to(client: &Client, locator: Locator<'_>, to: &str) {
    client.find(locator).await.unwrap().click().await.unwrap();
    let arrived = wait_until(Duration::from_secs(10), || async {
        let at = client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
        let ready = client.execute("return document.readyState", vec![]).await.ok();
        at.contains(to) && ready == Some(serde_json::json!("complete"))
    })
    .await;
    assert!(arrived.is_ok(), "never reached {to}; at {:?}", client.current_url().await.map(|u| u.to_string()));
}

async fn sign_in(client: &Client, base: &str, token: &str) {
    client.goto(&format!("{base}/console/fleet")).await.unwrap();
    assert!(client.current_url().await.unwrap().path().ends_with("/console/sign-in"), "not sent to sign in");
    client.find(Locator::Id("token")).await.unwrap().send_keys(token).await.unwrap();
    client.find(Locator::Css("form[action='/console/sign-in'] button")).await.unwrap().click().await.unwrap();
    let opened = wait_until(Duration::from_secs(10), || async {
        client.current_url().await.is_ok_and(|u| u.path() == "/console/fleet")
    })
    .await;
    if opened.is_err() {
        let at = client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
        panic!("signing in did not open the fleet page; at {at}: {}", client.source().await.unwrap_or_default());
    }
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut dirs = vec![root.join("target/console-screenshots")];
    if std::env::var_os("WAFLEET_UPDATE_SCREENSHOTS").is_some() {
        dirs.push(root.join("docs/console"));
    }
    for dir in dirs {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
    }
}

/// Takes the oldest message of `customer_ref`'s queue and rejects it, so the broker
/// dead-letters it into the tenant's DLQ as it would a message nobody can handle. Returns its
/// body.
async fn dead_letter_one(env: &TestEnv, customer_ref: &str) -> Vec<u8> {
    let conn = wafleet_shared::amqp::connect(&env.amqp_url, "console-test").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let queue = wafleet_shared::topology::tenant_queue(&wafleet_shared::CustomerRef::parse(customer_ref).unwrap());
    let message = channel.basic_get(&queue, Default::default()).await.unwrap().expect("a queued message");
    let body = message.delivery.data.clone();
    message.delivery.reject(lapin::options::BasicRejectOptions { requeue: false }).await.unwrap();
    let _ = conn.close(200, "done").await;
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_finds_a_tenant_watches_its_queue_and_replays_its_dead_letter_in_a_real_browser() {
    let mut env = TestEnv::new().await.unwrap();
    let stop = CancellationToken::new();
    let base = serve_admin(&env, stop.clone()).await;
    let (_, full) = admin_tokens::create(&env.admin_pool, "oncall", &Scopes::all(), "test").await.unwrap();
    let (_, viewer) = admin_tokens::create(&env.admin_pool, "viewer", &Scopes::read_only(), "test").await.unwrap();
    let url = env.add_tenant("console_shop", "console_shop").await.unwrap();
    env.add_tenant("console_other", "console_other").await.unwrap();
    let markup = "<script>window.pwned=1</script>";
    wafleet_fleet::service::add_rule(
        &env.admin_pool,
        &wafleet_shared::CustomerRef::parse("console_shop").unwrap(),
        "<b>price</b>",
        markup,
    )
    .await
    .unwrap();
    let driver = start_driver().await;
    let client = browser(&driver).await;
    use secrecy::ExposeSecret as _;

    // Sign in, then find the tenant by searching part of its ref.
    sign_in(&client, &base, full.expose_secret()).await;
    click_to(&client, Locator::LinkText("Tenants"), "/console/tenants").await;
    client.find(Locator::Id("q")).await.unwrap().send_keys("shop").await.unwrap();
    click_to(&client, Locator::Css("form[role='search'] button"), "q=shop").await;
    let links = client.find_all(Locator::Css("#tenants a")).await.unwrap();
    assert_eq!(links.len(), 1, "the search finds console_shop only");
    screenshot(&client, "tenants").await;
    click_to(&client, Locator::Css("#tenants a"), "/console/tenants/console_shop").await;

    // Markup in a rule text is text: shown, never run.
    let rules = text_of(&client, "#rules").await;
    assert!(rules.contains(markup) && rules.contains("<b>price</b>"), "{rules}");
    // As text, not as elements: no script or b element in the table (the CSP would block the
    // script's run, not its element).
    assert!(
        client.find_all(Locator::Css("#rules script, #rules b")).await.unwrap().is_empty(),
        "markup became elements"
    );

    // With the worker stopped, events pile up, and the open page shows the depth rise.
    env.stop_worker().await;
    for i in 0..3 {
        assert_eq!(post_json(&url, &message_event("15550001234", &format!("order {i}"), &format!("C{i}"))).await, 200);
    }
    wait_for_text(&client, "#depth-ready", "3", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // a chart sample with the rise in it
    screenshot(&client, "tenant").await;
    // The fleet-wide listing (one management API call for every queue) agrees.
    let fleet: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/v1/depth"))
        .bearer_auth(full.expose_secret())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let shop = fleet["tenants"].as_array().unwrap().iter().find(|t| t["customer_ref"] == "console_shop").cloned();
    assert_eq!(shop.map(|t| t["ready"].clone()), Some(serde_json::json!(3)), "{fleet}");
    client.goto(&format!("{base}/console/fleet")).await.unwrap();
    let listed = text_of(&client, "#fleet-panel").await;
    assert!(listed.contains("console_shop"), "the deepest queues list the tenant: {listed}");
    screenshot(&client, "fleet").await;
    client.goto(&format!("{base}/console/tenants/console_shop")).await.unwrap();

    // One message is dead-lettered; the page shows it; a dry run moves nothing, a replay moves it.
    let dead = dead_letter_one(&env, "console_shop").await;
    wait_for_text(&client, "#depth-dlq", "1", Duration::from_secs(20)).await;
    client.refresh().await.unwrap();
    click_to(&client, Locator::XPath("//table[@id='dead-letters']//button[text()='Dry run']"), "/dlq/replay").await;
    let summary = text_of(&client, "#replay-summary").await;
    assert!(summary.starts_with("Would move 1"), "{summary}");
    client.goto(&format!("{base}/console/tenants/console_shop")).await.unwrap();
    assert_eq!(text_of(&client, "#depth-dlq").await.trim(), "1", "a dry run moves nothing");
    click_to(&client, Locator::XPath("//table[@id='dead-letters']//button[text()='Replay']"), "/dlq/replay").await;
    let summary = text_of(&client, "#replay-summary").await;
    assert!(summary.starts_with("Moved 1"), "{summary}");

    // The worker comes back and answers all three, the replayed one included, on this bridge only.
    env.start_worker().await.unwrap();
    env.sim.wait_for_sends("console_shop", 3, Duration::from_secs(30)).await;
    let sends = env.sim.sends_for("console_shop");
    let dead_text = String::from_utf8_lossy(&dead).into_owned();
    let replayed = sends.iter().filter(|s| dead_text.contains(&s.body)).count();
    assert_eq!((sends.len(), replayed), (3, 1), "{:?}", sends.iter().map(|s| &s.body).collect::<Vec<_>>());
    assert!(env.sim.sends_for("console_other").is_empty());

    // Signing out ends the session: the fleet page asks for a sign-in again.
    click_to(&client, Locator::Css("form[action='/console/sign-out'] button"), "/console/sign-in").await;
    client.goto(&format!("{base}/console/fleet")).await.unwrap();
    assert!(client.current_url().await.unwrap().path().ends_with("/console/sign-in"));

    // A read-only token sees the tenant and no button that changes anything.
    sign_in(&client, &base, viewer.expose_secret()).await;
    client.goto(&format!("{base}/console/tenants/console_shop")).await.unwrap();
    assert!(!text_of(&client, "#settings-h").await.is_empty());
    let buttons: Vec<String> = {
        let mut texts = Vec::new();
        for b in client.find_all(Locator::Css("main button")).await.unwrap() {
            texts.push(b.text().await.unwrap());
        }
        texts
    };
    assert!(buttons.is_empty(), "a read-only token sees buttons: {buttons:?}");

    let _ = client.close().await;
    drop(driver);
    stop.cancel();
    env.cleanup().await;
}

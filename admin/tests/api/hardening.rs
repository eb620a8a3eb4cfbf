//! The API port against clients that misbehave, over real TCP: slow headers are cut, the
//! connection cap holds, a flood from one address gets 429 before any token is read, and the
//! ops port counts answers by route template, never by tenant ref.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use wafleet_admin::startup::Listen;
use wafleet_admin::{Application, RateLimit};

use crate::{state_over, Admin};

/// A running server over `admin`'s environment; stopped when dropped.
struct Served {
    port: u16,
    ops_port: u16,
    shutdown: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn rate(per_second: u32, burst: u32) -> RateLimit {
    RateLimit { per_second: per_second.try_into().unwrap(), burst: burst.try_into().unwrap() }
}

async fn serve(admin: &Admin, tune: impl FnOnce(&mut Listen), address_rate: RateLimit) -> Served {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut listen = Listen { addr: any, ops_addr: any, header_timeout: Duration::from_secs(5), max_connections: 64 };
    tune(&mut listen);
    let state = state_over(&admin.env, rate(1000, 1000), address_rate);
    let app = Application::bind(listen, state, Some(metrics())).await.unwrap();
    let (port, ops_port) = (app.port(), app.ops_port());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    Served { port, ops_port, shutdown }
}

/// The process's one Prometheus recorder (the harness installs it once per process).
fn metrics() -> PrometheusHandle {
    wafleet_tests::metrics_handle()
}

/// Reads until the server closes the connection or `within` passes; true when it closed.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_its_headers_is_cut_after_the_header_timeout_while_others_are_served() {
    let admin = Admin::new().await;
    let served = serve(&admin, |l| l.header_timeout = Duration::from_millis(400), rate(1000, 1000)).await;
    let mut slow = TcpStream::connect(("127.0.0.1", served.port)).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // One header byte every 50 ms: each read makes progress, but the headers never end.
    let trickle = async {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if slow.write_all(b"X").await.is_err() {
                break;
            }
        }
    };
    let other = async {
        let answer = reqwest::get(format!("http://127.0.0.1:{}/healthz", served.port)).await.unwrap();
        assert_eq!(answer.status(), 200, "other clients are served while one stalls");
    };
    tokio::join!(trickle, other);
    let cut_after = started.elapsed();
    assert!(closed_within(&mut slow, Duration::from_secs(1)).await, "the trickling client was never cut");
    assert!(cut_after >= Duration::from_millis(350), "cut before the timeout: {cut_after:?}");
    assert!(cut_after < Duration::from_secs(4), "cut far too late: {cut_after:?}");
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_and_the_next_client_waits_for_a_free_slot() {
    let admin = Admin::new().await;
    let served = serve(&admin, |l| l.max_connections = 2, rate(1000, 1000)).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut conn = TcpStream::connect(("127.0.0.1", served.port)).await.unwrap();
        conn.write_all(request).await.unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await.unwrap().unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        open.push(conn); // kept alive: it holds its slot
    }
    // The third connection is only in the kernel's backlog: its request gets no answer.
    let mut third = TcpStream::connect(("127.0.0.1", served.port)).await.unwrap();
    third.write_all(request).await.unwrap();
    let mut buf = [0u8; 512];
    let waited = tokio::time::timeout(Duration::from_millis(800), third.read(&mut buf)).await;
    assert!(waited.is_err(), "a third connection was served while two held the cap");
    // One slot frees: the waiting client is served.
    drop(open.remove(0));
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_flood_from_one_address_gets_429_before_any_token_is_checked() {
    let admin = Admin::new().await;
    let served = serve(&admin, |_| {}, rate(1, 5)).await;
    let url = format!("http://127.0.0.1:{}/v1/tenants", served.port);
    let from =
        |ip: &str| reqwest::Client::builder().local_address(ip.parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    let flooder = from("127.0.0.1");
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(flooder.get(&url).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses[..5], [401; 5], "the burst reaches the token check: {statuses:?}");
    assert_eq!(statuses[5..], [429; 3], "then the address is refused: {statuses:?}");
    // Refused before the token is read: a valid token from that address gets 429 too.
    let limited = flooder.get(&url).bearer_auth(&admin.full).send().await.unwrap();
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    let problem: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(problem["type"], "https://wafleet.dev/problems/rate-limited");
    // Another address has its own budget.
    let other = from("127.0.0.2").get(&url).bearer_auth(&admin.full).send().await.unwrap();
    assert_eq!(other.status(), 200, "another client address is not limited");
    admin.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_port_counts_answers_by_route_template_and_never_names_a_tenant_ref() {
    let admin = Admin::new().await;
    let served = serve(&admin, |_| {}, rate(1000, 1000)).await;
    let api = format!("http://127.0.0.1:{}", served.port);
    let ops = format!("http://127.0.0.1:{}", served.ops_port);
    let client = reqwest::Client::new();
    let secret_ref = "met_ref_7c1f";
    let answer = client.get(format!("{api}/v1/tenants/{secret_ref}")).send().await.unwrap();
    assert_eq!(answer.status(), 401);
    let answer = client.get(format!("{api}/v1/tenants/{secret_ref}")).bearer_auth(&admin.full).send().await.unwrap();
    assert_eq!(answer.status(), 404);
    let answer = client.get(format!("{api}/no/such/{secret_ref}")).send().await.unwrap();
    assert_eq!(answer.status(), 404);
    assert_eq!(client.get(format!("{api}/metrics")).send().await.unwrap().status(), 404, "not on the API port");
    assert_eq!(client.get(format!("{ops}/healthz")).send().await.unwrap().status(), 200);

    let text = client.get(format!("{ops}/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        r#"wafleet_admin_requests_total{route="/v1/tenants/{customer_ref}",status="401"}"#,
        r#"wafleet_admin_requests_total{route="/v1/tenants/{customer_ref}",status="404"}"#,
        r#"wafleet_admin_requests_total{route="unmatched",status="404"}"#,
        r#"wafleet_admin_request_duration_seconds_bucket{route="/v1/tenants/{customer_ref}",le="#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(!text.contains(secret_ref), "a tenant ref became a label value");
    admin.env.cleanup().await;
}

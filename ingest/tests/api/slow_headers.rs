//! Slowloris on the headers: a client that never finishes its request headers is cut off by the
//! header-read timeout, and the server keeps answering other clients meanwhile.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use wafleet_ingest::publisher::FakePublisher;
use wafleet_ingest::startup::Application;

use crate::helpers::config;

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected_while_others_are_served() {
    let mut config = config();
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.header_timeout = Duration::from_millis(300);
    let app = Application::build_with_publisher(config, Arc::new(FakePublisher::new()), None).await.unwrap();
    let (port, ops_port) = (app.port(), app.ops_port());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));

    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(b"POST /webhook/a/b HTTP/1.1\r\nHost: x\r\nContent-Ty").await.unwrap();
    let other = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/webhook/a/b"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 401, "other clients are served while one stalls");
    let health = reqwest::get(format!("http://127.0.0.1:{ops_port}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200, "the ops port answers meanwhile");
    // The stalled connection is closed by the server (EOF or reset) well before this bound.
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(_)) | Ok(Err(_))), "the server kept a half-sent request open");
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

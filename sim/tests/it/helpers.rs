//! Shared test plumbing: starting a simulator, a small API client with a chosen key, and a tiny
//! webhook receiver on port 0 that forwards every POST it gets to a channel.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use wafleet_sim::{SimConfig, Simulator};

pub const KEY_A: &str = "sk_test_a";
pub const KEY_B: &str = "sk_test_b";

/// A simulator with accounts A and B and the given tweaks.
pub async fn start_sim(config: SimConfig) -> Simulator {
    let config = SimConfig { api_keys: vec![KEY_A.into(), KEY_B.into()], ..config };
    let (sim, _server) = Simulator::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    sim
}

/// A simulator with default (documented) limits.
pub async fn default_sim() -> Simulator {
    start_sim(SimConfig::default()).await
}

/// An HTTP client for the simulated API that authenticates with one key.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub key: String,
}

impl Api {
    pub fn new(sim: &Simulator, key: &str) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        Self { http, base: sim.base_url(), key: key.to_owned() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(&self.key).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http.post(self.url(path)).bearer_auth(&self.key).json(&body).send().await.unwrap()
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.http.delete(self.url(path)).bearer_auth(&self.key).send().await.unwrap()
    }

    /// `POST /api/instances/{bridge}/proxy/send/text`; `bridge` must already be path-encoded.
    pub async fn send(&self, bridge: &str, chat: &str, body: &str) -> reqwest::Response {
        self.post(&format!("/api/instances/{bridge}/proxy/send/text"), json!({ "chat": chat, "body": body })).await
    }
}

/// Status code and JSON body of a response.
pub async fn status_and_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// One POST a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub content_type: Option<String>,
    pub body: Value,
}

/// A webhook receiver on port 0 answering `status` (200 unless changed).
pub struct Receiver {
    pub base: String,
    pub status: Arc<AtomicU16>,
    rx: mpsc::UnboundedReceiver<Received>,
}

#[derive(Clone)]
struct ReceiverState {
    tx: mpsc::UnboundedSender<Received>,
    status: Arc<AtomicU16>,
}

async fn receive(
    State(state): State<ReceiverState>,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> StatusCode {
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let _ = state.tx.send(Received { path: uri.path().to_owned(), content_type, body });
    StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap()
}

impl Receiver {
    pub async fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Arc::new(AtomicU16::new(200));
        let app = Router::new().fallback(receive).with_state(ReceiverState { tx, status: status.clone() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, status, rx }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The next POST, or a panic after 5 s.
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .expect("webhook receiver got nothing within 5 s")
            .expect("receiver channel closed")
    }
}

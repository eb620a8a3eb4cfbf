//! Shared test harness: a router over a `FakePublisher`, signed URLs, and request helpers.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use secrecy::SecretString;
use serde_json::Value;
use tower::ServiceExt;
use wafleet_ingest::body::InFlight;
use wafleet_ingest::{ops_router, router, AppState, Config, FakePublisher};
use wafleet_shared::{CustomerRef, Envelope, Generation, Keyring};

/// The key that signs new URLs.
pub const NEW_KEY: &str = "k2:fedcba9876543210fedcba9876543210";
/// A key still accepted after rotation.
pub const OLD_KEY: &str = "k1:0123456789abcdef0123456789abcdef";

pub fn keyring(spec: &str) -> Keyring {
    Keyring::parse(&SecretString::from(spec.to_owned())).unwrap()
}

pub fn cref(raw: &str) -> CustomerRef {
    CustomerRef::parse(raw).unwrap()
}

pub fn generation(n: u64) -> Generation {
    Generation::parse_canonical(&n.to_string()).unwrap()
}

/// A config with the rotated keyring (new key first, old key still verifying), and a free ops
/// port wherever it is bound (tests run in parallel).
pub fn config() -> Config {
    let mut config = Config::new(keyring(&format!("{NEW_KEY},{OLD_KEY}")));
    config.ops_addr = "127.0.0.1:0".parse().unwrap();
    config
}

/// The webhook router and the ops router over a fake publisher.
pub struct TestRouter {
    pub router: Router,
    pub ops: Router,
    pub publisher: Arc<FakePublisher>,
    pub config: Config,
    /// The routers' room for bodies in flight (shared with them).
    pub in_flight: InFlight,
}

/// A decoded answer.
pub struct Answer {
    pub status: StatusCode,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

impl TestRouter {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    pub fn with(adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = config();
        adjust(&mut config);
        let publisher = Arc::new(FakePublisher::new());
        let state = AppState::new(&config, publisher.clone(), None);
        let in_flight = state.in_flight.clone();
        Self { router: router(state.clone()), ops: ops_router(state), publisher, config, in_flight }
    }

    /// The signed webhook path for `customer_ref` at `generation`.
    pub fn url(&self, customer_ref: &str, generation: u64) -> String {
        let token = self.config.keyring.sign(&cref(customer_ref), self::generation(generation));
        format!("/webhook/{customer_ref}/{token}")
    }

    pub async fn send(&self, request: Request<Body>) -> Answer {
        answer(self.router.clone(), request).await
    }

    /// A request to the ops port's router.
    pub async fn send_ops(&self, request: Request<Body>) -> Answer {
        answer(self.ops.clone(), request).await
    }

    /// POSTs `body` as `application/json`.
    pub async fn post_json(&self, uri: &str, body: impl Into<Body>) -> Answer {
        self.post(uri, Some("application/json"), body).await
    }

    pub async fn post(&self, uri: &str, content_type: Option<&str>, body: impl Into<Body>) -> Answer {
        let mut request = Request::post(uri);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        self.send(request.body(body.into()).unwrap()).await
    }

    pub async fn get(&self, uri: &str) -> Answer {
        self.send(Request::get(uri).body(Body::empty()).unwrap()).await
    }

    /// GET on the ops port.
    pub async fn ops_get(&self, uri: &str) -> Answer {
        self.send_ops(Request::get(uri).body(Body::empty()).unwrap()).await
    }

    /// The single published envelope, with its routing key.
    pub fn only_envelope(&self) -> (CustomerRef, Envelope) {
        let mut envelopes = self.publisher.envelopes();
        assert_eq!(envelopes.len(), 1, "expected exactly one publish");
        assert_eq!(self.publisher.published().len(), 1, "every publish must decode");
        envelopes.remove(0)
    }

    pub fn assert_nothing_published(&self) {
        assert!(self.publisher.published().is_empty(), "nothing may be published");
    }
}

async fn answer(router: Router, request: Request<Body>) -> Answer {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer { status, text: String::from_utf8_lossy(&bytes).into_owned() }
}

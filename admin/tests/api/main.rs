//! Router tests of the admin API: the real router (`tower::ServiceExt::oneshot`) over a real test
//! environment (own database and vhost, WA Bridges simulator) from the shared harness. One
//! binary for the crate (one link).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod console;
mod console_browser;
mod contract;
mod hardening;
mod idempotency;
mod operations;
mod paging;
mod schemas;
mod scopes;
mod tenants;
mod tokens;
mod upkeep;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt as _;
use secrecy::{ExposeSecret as _, SecretString};
use tower::ServiceExt as _;
use wafleet_admin::{AppState, RateLimit};
use wafleet_fleet::admin_tokens::{self, Scopes};
use wafleet_fleet::budget::BudgetConfig;
use wafleet_tests::{EnvOptions, TestEnv, TEST_SIGNING_KEY};

/// A test environment with the admin router over it and two tokens: `ops` (every scope) and
/// `viewer` (`read` only).
pub struct Admin {
    pub env: TestEnv,
    pub router: Router,
    pub full: String,
    pub read_only: String,
}

/// An answer: status, headers and the body as JSON (`Null` when it is not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: serde_json::Value,
}

impl Answer {
    /// The problem `type` slug, when the answer is a problem.
    pub fn problem(&self) -> String {
        assert_eq!(
            self.headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "not a problem: {} {}",
            self.status,
            self.text
        );
        assert_eq!(self.json["status"].as_u64(), Some(u64::from(self.status.as_u16())), "{}", self.text);
        assert!(self.json["title"].is_string() && self.json["detail"].is_string(), "{}", self.text);
        self.json["type"].as_str().unwrap_or_default().trim_start_matches("https://wafleet.dev/problems/").to_owned()
    }
}

/// Puts a message whose last-error header is `last_error` straight into `customer_ref`'s DLQ.
pub async fn dead_letter(admin: &Admin, customer_ref: &str, last_error: &str) {
    use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
    let conn = wafleet_shared::amqp::connect(&admin.env.amqp_url, "test").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let mut headers = FieldTable::default();
    let name = ShortString::from(wafleet_shared::topology::LAST_ERROR_HEADER);
    headers.insert(name, AMQPValue::LongString(LongString::from(last_error.to_owned())));
    let properties = lapin::BasicProperties::default().with_delivery_mode(2).with_headers(headers);
    let queue = format!("wa.dlq.{customer_ref}");
    let publish = channel.basic_publish("", &queue, Default::default(), b"not an envelope", properties);
    publish.await.unwrap().await.unwrap();
    let _ = conn.close(200, "done").await;
}

/// An application state over `env` with the per-token `rate` and the per-address `address_rate`.
pub fn state_over(env: &TestEnv, rate: RateLimit, address_rate: RateLimit) -> AppState {
    let budget = BudgetConfig {
        rate_per_window: 60_000,
        burst: 1_000,
        egress: wafleet_tests::lifted_egress(),
        ..BudgetConfig::default()
    };
    AppState::new(
        env.admin_pool.clone(),
        env.endpoints.clone(),
        env.fleet(budget.clone()),
        Some(SecretString::from(TEST_SIGNING_KEY)),
        budget,
        (rate, address_rate),
    )
}

impl Admin {
    /// A fresh environment (no worker) and router with a high rate limit.
    pub async fn new() -> Self {
        Self::with_rate(RateLimit { per_second: 1000.try_into().unwrap(), burst: 1000.try_into().unwrap() }).await
    }

    /// Like [`Admin::new`], with `rate` per token.
    pub async fn with_rate(rate: RateLimit) -> Self {
        let env = TestEnv::with(EnvOptions { no_worker: true, ..EnvOptions::default() }).await.unwrap();
        let (_, full) = admin_tokens::create(&env.admin_pool, "ops", &Scopes::all(), "test").await.unwrap();
        let (_, read_only) =
            admin_tokens::create(&env.admin_pool, "viewer", &Scopes::read_only(), "test").await.unwrap();
        let state = state_over(
            &env,
            rate,
            RateLimit { per_second: 10_000.try_into().unwrap(), burst: 10_000.try_into().unwrap() },
        );
        let router = wafleet_admin::router(state);
        Self { env, router, full: full.expose_secret().to_owned(), read_only: read_only.expose_secret().to_owned() }
    }

    /// Sends one request with `token` (none when `None`), an optional JSON body and headers.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        self.send(request.body(body).unwrap()).await
    }

    /// `method uri` with the full token and a raw body of `content_type` (none when `None`).
    pub async fn raw(&self, method: Method, uri: &str, content_type: Option<&str>, body: &str) -> Answer {
        let mut request =
            Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {}", self.full));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        self.send(request.body(Body::from(body.to_owned())).unwrap()).await
    }

    /// `method uri` with only `headers` (no token) and a raw body.
    pub async fn raw_with(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(Body::from(body.to_owned())).unwrap()).await
    }

    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        Answer { status, headers, text, json }
    }

    /// `GET` with the full token.
    pub async fn get(&self, uri: &str) -> Answer {
        self.call(Method::GET, uri, Some(&self.full), None, &[]).await
    }

    /// `POST` with the full token and a JSON body.
    pub async fn post(&self, uri: &str, body: serde_json::Value) -> Answer {
        self.call(Method::POST, uri, Some(&self.full), Some(body), &[]).await
    }

    /// `POST` with the full token and a JSON body, to an owned URI.
    pub async fn post_json(&self, uri: String, body: serde_json::Value) -> Answer {
        self.post(&uri, body).await
    }

    /// Creates a tenant through the API (its bridge registered at the simulator).
    pub async fn create_tenant(&self, customer_ref: &str) -> Answer {
        self.env.sim.add_bridge(customer_ref, None, None);
        let answer =
            self.post("/v1/tenants", serde_json::json!({"customer_ref": customer_ref, "bridge": customer_ref})).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        answer
    }

    /// The audit records of `target` (owner view), oldest first: (operator, command, arguments, outcome).
    pub async fn audit_of(&self, target: &str) -> Vec<(String, String, serde_json::Value, String)> {
        sqlx::query_as(
            "select operator, command, arguments, outcome from audit_log where target = $1 order by audit_id",
        )
        .bind(target)
        .fetch_all(&self.env.owner_pool)
        .await
        .unwrap()
    }
}

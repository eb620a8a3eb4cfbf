//! The disk spool behind the router, over fake publishers: 200 from the spool when the broker
//! fails, drained later under the same ingest id, partitioned by tenant, bounded, and reported by
//! `/readyz`, `/spoolz` and a graceful shutdown.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use wafleet_ingest::{
    ops_router, router, AppState, Application, Config, FakeMode, FakePublisher, PublishError, Publisher, Spool,
};
use wafleet_shared::{CustomerRef, Envelope};

use crate::helpers::{config, cref, generation, Answer, TestRouter};

const OVERALL: Duration = Duration::from_secs(15);

/// A router whose state has an open spool (in a temporary directory) and a running drain.
struct SpoolRouter<P> {
    router: Router,
    ops: Router,
    publisher: Arc<P>,
    spool: Spool,
    config: Config,
    stop: CancellationToken,
    drain: JoinHandle<()>,
    dir: TempDir,
}

impl<P: Publisher> SpoolRouter<P> {
    fn start(publisher: Arc<P>, adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config();
        config.spool_enabled = true;
        config.spool_dir = dir.path().to_path_buf();
        config.publish_timeout = Duration::from_millis(200);
        adjust(&mut config);
        let spool = Spool::open(&config.spool_settings()).unwrap();
        let stop = CancellationToken::new();
        let drain = spool.start_drain(publisher.clone(), config.publish_timeout, stop.clone());
        let state = AppState::new(&config, publisher.clone(), None).with_spool(spool.clone());
        Self { router: router(state.clone()), ops: ops_router(state), publisher, spool, config, stop, drain, dir }
    }

    fn url(&self, customer_ref: &str) -> String {
        let token = self.config.keyring.sign(&cref(customer_ref), generation(1));
        format!("/webhook/{customer_ref}/{token}")
    }

    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer { status, text: String::from_utf8_lossy(&bytes).into_owned() }
    }

    async fn post_event(&self, customer_ref: &str, n: u64) -> Answer {
        let body = json!({"event": "message", "message_id": format!("M{n}")}).to_string();
        let request = Request::post(self.url(customer_ref)).header("content-type", "application/json");
        self.send(request.body(Body::from(body)).unwrap()).await
    }

    /// GET on the ops router (`/readyz`, `/spoolz`).
    async fn get(&self, uri: &str) -> Answer {
        let response = self.ops.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer { status, text: String::from_utf8_lossy(&bytes).into_owned() }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.drain.await.unwrap();
    }
}

/// Ingest ids of every envelope stored in the spool directory's segment files.
fn spooled_ids(dir: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    for file in segment_files(dir) {
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        for piece in text.split("\"ingest_id\":\"").skip(1) {
            ids.push(piece.split('"').next().unwrap_or_default().to_owned());
        }
    }
    ids
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + OVERALL;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_failing_broker_still_gets_200_and_the_drain_publishes_the_same_ingest_id_later() {
    let app = SpoolRouter::start(Arc::new(FakePublisher::new()), |_| {});
    app.publisher.set_mode(FakeMode::Fail);
    let answer = app.post_event("cust_a", 1).await;
    assert_eq!((answer.status, answer.json()), (StatusCode::OK, json!({"status": "accepted"})));
    assert!(app.publisher.published().is_empty());
    assert_eq!(app.spool.pending_of(&cref("cust_a")), 1);
    let ids = spooled_ids(app.dir.path());
    assert_eq!(ids.len(), 1, "the envelope is in a segment file");

    app.publisher.set_mode(FakeMode::Accept);
    eventually("the drain to publish", || app.publisher.published().len() == 1).await;
    let (routing_key, envelope) = app.publisher.envelopes().remove(0);
    let v1 = envelope.into_v1();
    assert_eq!((routing_key, v1.customer_ref.clone()), (cref("cust_a"), cref("cust_a")));
    assert_eq!(v1.ingest_id.to_string(), ids[0], "the dedupe key survives the detour");
    assert_eq!(v1.provider_message_id.as_deref(), Some("M1"));
    eventually("the drained segment deleted", || segment_files(app.dir.path()).is_empty()).await;
    assert_eq!(app.spool.status().records, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_publish_that_hangs_past_the_deadline_is_spooled() {
    let app = SpoolRouter::start(Arc::new(FakePublisher::new()), |c| c.publish_timeout = Duration::from_millis(50));
    app.publisher.set_mode(FakeMode::Hang);
    let started = tokio::time::Instant::now();
    assert_eq!(app.post_event("cust_a", 1).await.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(app.spool.status().records, 1);
    app.stop().await;
}

#[tokio::test]
async fn with_the_spool_switched_off_an_unconfirmed_event_is_refused_with_503() {
    let app = TestRouter::with(|config| config.spool_enabled = false);
    app.publisher.set_mode(FakeMode::Fail);
    let answer = app.post_json(&app.url("cust_a", 1), r#"{"event":"message"}"#).await;
    assert_eq!(
        (answer.status, answer.json()),
        (StatusCode::SERVICE_UNAVAILABLE, json!({"error": "broker unavailable"}))
    );
}

#[tokio::test]
async fn a_full_spool_answers_503_and_readyz_reports_spool_full() {
    let app = SpoolRouter::start(Arc::new(FakePublisher::new()), |c| {
        c.spool_max_bytes = 1024;
        c.spool_segment_bytes = 512;
        // About the whole spool: one tenant may use all of it.
        c.spool_tenant_max_bytes = Some(1024);
    });
    app.publisher.set_mode(FakeMode::Fail);
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);
    let mut accepted = 0;
    let refused = loop {
        let answer = app.post_event("cust_a", accepted).await;
        if answer.status != StatusCode::OK {
            break answer;
        }
        accepted += 1;
        assert!(accepted < 100, "the spool never filled");
    };
    assert!(accepted >= 2, "{accepted} events fit");
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.error(), "broker unavailable and spool full");
    let ready = app.get("/readyz").await;
    assert_eq!((ready.status, ready.json()["reason"].clone()), (StatusCode::SERVICE_UNAVAILABLE, json!("spool full")));
    assert_eq!(app.get("/spoolz").await.json()["full"], json!(true));
    assert_eq!(app.spool.status().records, accepted);

    app.publisher.set_mode(FakeMode::Accept);
    eventually("the drain to free room", || !app.spool.is_full()).await;
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);
    app.stop().await;
}

/// Refuses (nacks) every tenant in `refused`; `None` refuses everyone.
#[derive(Default)]
struct SelectivePublisher {
    refused: Mutex<Option<HashSet<String>>>,
    published: Mutex<Vec<(CustomerRef, Vec<u8>)>>,
    ready: AtomicBool,
}

impl SelectivePublisher {
    fn refuse(&self, refused: Option<&[&str]>) {
        *self.refused.lock().unwrap() = refused.map(|keys| keys.iter().map(|k| k.to_string()).collect());
    }

    fn published_for(&self, customer_ref: &str) -> usize {
        self.published.lock().unwrap().iter().filter(|(key, _)| key.as_str() == customer_ref).count()
    }
}

#[async_trait]
impl Publisher for SelectivePublisher {
    async fn publish(
        &self,
        routing_key: &CustomerRef,
        _: Option<wafleet_shared::IngestId>,
        body: &[u8],
    ) -> Result<(), PublishError> {
        let refused = self.refused.lock().unwrap().as_ref().is_none_or(|keys| keys.contains(routing_key.as_str()));
        if refused {
            return Err(PublishError::Nack);
        }
        self.published.lock().unwrap().push((routing_key.clone(), body.to_vec()));
        Ok(())
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_tenant_whose_queue_rejects_does_not_hold_back_the_other_tenants() {
    let publisher = Arc::new(SelectivePublisher::default());
    // Not ready while the events are spooled, so the drain starts with every backoff fresh.
    publisher.refuse(None);
    let app = SpoolRouter::start(publisher.clone(), |_| {});
    for n in 0..40 {
        assert_eq!(app.post_event("cust_a", n).await.status, StatusCode::OK);
    }
    for n in 0..5 {
        assert_eq!(app.post_event("cust_b", n).await.status, StatusCode::OK);
    }
    // Now only cust_a's queue rejects, as a queue at its length limit with reject-publish does.
    publisher.refuse(Some(&["cust_a"]));
    publisher.ready.store(true, Ordering::SeqCst);
    eventually("cust_b to drain", || publisher.published_for("cust_b") == 5).await;
    assert_eq!(app.spool.pending_of(&cref("cust_b")), 0);
    assert_eq!(app.spool.pending_of(&cref("cust_a")), 40, "cust_a's events wait, none lost");
    assert_eq!(publisher.published_for("cust_a"), 0);
    // New events of the healthy tenant keep flowing through the spool too.
    publisher.refuse(None);
    assert_eq!(app.post_event("cust_b", 99).await.status, StatusCode::OK);
    publisher.refuse(Some(&["cust_a"]));
    eventually("the late cust_b event to drain", || publisher.published_for("cust_b") == 6).await;

    publisher.refuse(Some(&[]));
    eventually("cust_a to drain once its queue accepts", || publisher.published_for("cust_a") == 40).await;
    let bodies = publisher.published.lock().unwrap().clone();
    for (key, body) in bodies {
        assert_eq!(Envelope::decode(&body).unwrap().customer_ref(), &key, "each record goes home");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_whose_full_queue_used_its_spool_share_gets_503_while_others_get_200_and_readyz_stays_ready() {
    let publisher = Arc::new(SelectivePublisher::default());
    publisher.ready.store(true, Ordering::SeqCst);
    // cust_a's queue is at its length bound (reject-publish): every publish is nacked.
    publisher.refuse(Some(&["cust_a"]));
    let app = SpoolRouter::start(publisher.clone(), |c| c.spool_tenant_max_bytes = Some(2048));
    let mut accepted = 0;
    let refused = loop {
        let answer = app.post_event("cust_a", accepted).await;
        if answer.status != StatusCode::OK {
            break answer;
        }
        accepted += 1;
        assert!(accepted < 100, "cust_a's share never filled");
    };
    assert!(accepted >= 2, "{accepted} events fit in the share");
    assert_eq!(
        (refused.status, refused.error().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "tenant queue full; retry later")
    );
    assert!(app.spool.tenant_bytes(&cref("cust_a")) <= 2048);
    for n in 0..5 {
        assert_eq!(app.post_event("cust_b", n).await.status, StatusCode::OK, "another tenant is unaffected");
    }
    assert_eq!(publisher.published_for("cust_b"), 5);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "a tenant's full share is not a full spool: {}", ready.text);

    publisher.refuse(Some(&[]));
    eventually("cust_a's spooled events to drain", || publisher.published_for("cust_a") == accepted as usize).await;
    assert_eq!(app.post_event("cust_a", 1000).await.status, StatusCode::OK, "room again once drained");
    app.stop().await;
}

#[tokio::test]
async fn readyz_waits_for_the_broker_at_start_then_stays_ready_while_spooling() {
    let app = SpoolRouter::start(Arc::new(FakePublisher::new()), |_| {});
    app.publisher.set_ready(false);
    let at_start = app.get("/readyz").await;
    assert_eq!(
        (at_start.status, at_start.json()["reason"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("publisher not ready"))
    );
    app.publisher.set_ready(true);
    assert_eq!(app.get("/readyz").await.json(), json!({"status": "ready"}));
    app.publisher.set_ready(false);
    let outage = app.get("/readyz").await;
    assert_eq!(outage.status, StatusCode::OK, "an outage after start is absorbed by the spool");
    assert_eq!(outage.json()["spooling"], json!("publisher not ready"));
    app.stop().await;
}

#[tokio::test]
async fn spoolz_reports_what_is_owed_and_can_wait_until_it_is_drained() {
    let app = SpoolRouter::start(Arc::new(FakePublisher::new()), |_| {});
    let empty = app.get("/spoolz").await.json();
    assert_eq!((empty["enabled"].clone(), empty["records"].clone()), (json!(true), json!(0)));
    app.publisher.set_mode(FakeMode::Fail);
    app.post_event("cust_a", 1).await;
    app.post_event("cust_b", 2).await;
    let owed = app.get("/spoolz").await.json();
    assert_eq!(owed["records"], json!(2));
    assert!(owed["bytes"].as_u64().unwrap() > 0 && owed["segments"] == json!(1), "{owed}");
    assert!(owed["oldest_age_seconds"].as_f64().unwrap() >= 0.0);

    let waiting = {
        let router = app.ops.clone();
        tokio::spawn(async move {
            let request = Request::get("/spoolz?wait_secs=10").body(Body::empty()).unwrap();
            let response = router.oneshot(request).await.unwrap();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<Value>(&bytes).unwrap()
        })
    };
    app.publisher.set_mode(FakeMode::Accept);
    let drained = tokio::time::timeout(OVERALL, waiting).await.unwrap().unwrap();
    assert_eq!(drained["records"], json!(0));
    let off = TestRouter::new().ops_get("/spoolz").await.json();
    assert_eq!((off["enabled"].clone(), off["records"].clone()), (json!(false), json!(0)));
    app.stop().await;
}

async fn post_over_http(base: &str, path: &str) -> u16 {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(r#"{"event":"message"}"#)
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

#[tokio::test]
async fn shutdown_drains_the_spool_within_its_bound_and_leaves_the_rest_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config();
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.spool_enabled = true;
    config.spool_dir = dir.path().to_path_buf();
    config.shutdown_drain = Duration::from_millis(300);
    let path = format!("/webhook/cust_a/{}", config.keyring.sign(&cref("cust_a"), generation(1)));

    // First run: the broker never comes back, so the bounded drain gives up and the events stay.
    let publisher = Arc::new(FakePublisher::new());
    publisher.set_mode(FakeMode::Fail);
    publisher.set_ready(false);
    let app = Application::build_with_publisher(config.clone(), publisher.clone(), None).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    assert_eq!(post_over_http(&base, &path).await, 200);
    assert_eq!(post_over_http(&base, &path).await, 200);
    shutdown.cancel();
    tokio::time::timeout(OVERALL, server).await.unwrap().unwrap().unwrap();
    assert_eq!(spooled_ids(dir.path()).len(), 2, "what could not be drained stays on disk");

    // Second run on the same directory: recovered, then drained during shutdown.
    let publisher = Arc::new(FakePublisher::new());
    publisher.set_ready(false);
    config.shutdown_drain = Duration::from_secs(10);
    let app = Application::build_with_publisher(config, publisher.clone(), None).await.unwrap();
    assert_eq!(app.spool().map(|s| s.status().records), Some(2));
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    shutdown.cancel();
    publisher.set_ready(true);
    tokio::time::timeout(OVERALL, server).await.unwrap().unwrap().unwrap();
    assert_eq!(publisher.published().len(), 2);
    assert!(segment_files(dir.path()).is_empty(), "a drained spool leaves no segment behind");
}

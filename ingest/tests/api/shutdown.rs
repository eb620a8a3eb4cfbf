//! Graceful shutdown over real HTTP: a request in flight when the token fires still gets its 200.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use wafleet_ingest::{Application, PublishError, Publisher};
use wafleet_shared::CustomerRef;

use crate::helpers::{config, cref, generation};

/// Holds every publish until the test opens the gate.
#[derive(Default)]
struct GatedPublisher {
    entered: Notify,
    gate: Notify,
}

#[async_trait]
impl Publisher for GatedPublisher {
    async fn publish(
        &self,
        _: &CustomerRef,
        _: Option<wafleet_shared::IngestId>,
        _: &[u8],
    ) -> Result<(), PublishError> {
        self.entered.notify_one();
        self.gate.notified().await;
        Ok(())
    }

    fn is_ready(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn an_in_flight_request_finishes_before_the_server_stops() {
    let mut config = config();
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.publish_timeout = Duration::from_secs(30);
    let token = config.keyring.sign(&cref("cust_a"), generation(1));
    let publisher = Arc::new(GatedPublisher::default());
    let app = Application::build_with_publisher(config, publisher.clone(), None).await.unwrap();
    let url = format!("http://127.0.0.1:{}/webhook/cust_a/{token}", app.port());
    let shutdown = CancellationToken::new();
    let mut server = tokio::spawn(app.run_until_stopped(shutdown.clone()));

    let request = tokio::spawn(
        reqwest::Client::new().post(url).header("content-type", "application/json").body(r#"{"event":"x"}"#).send(),
    );
    tokio::time::timeout(Duration::from_secs(10), publisher.entered.notified()).await.unwrap();
    shutdown.cancel();
    // While the publish is held the server must keep running.
    assert!(tokio::time::timeout(Duration::from_millis(100), &mut server).await.is_err());

    publisher.gate.notify_one();
    let response = tokio::time::timeout(Duration::from_secs(10), request).await.unwrap().unwrap().unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
}

//! HTTP servers inside the bench process, on the bench's own runtime: the two ceilings of the
//! ingest scenario (HTTP only; a naive durable ingest publishing on one confirmed channel). They
//! are baselines, not products: each does the least its role needs and nothing ingest promises on
//! top (no authentication, no spool, no envelope).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::BasicProperties;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wafleet_shared::topology::INBOUND_EXCHANGE;

/// What a server does with one request (the path and the body, read in full): the status and
/// the answer's body.
pub type Handler = Arc<dyn Fn(String, Bytes) -> BoxFuture<'static, (StatusCode, Bytes)> + Send + Sync>;

/// An answer with ingest's small JSON body.
fn plain(status: StatusCode) -> (StatusCode, Bytes) {
    let body = if status == StatusCode::OK { r#"{"ok":true}"# } else { r#"{"ok":false}"# };
    (status, Bytes::from_static(body.as_bytes()))
}

/// A running in-process server; stops accepting and drops its connections when dropped.
pub struct Server {
    /// Where it listens (loopback, a free port).
    pub addr: SocketAddr,
    stop: CancellationToken,
    /// Kept open for the server's lifetime (the naive ingest's broker connection).
    _amqp: Option<lapin::Connection>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Serves `handler` over HTTP/1.1 keep-alive on a free loopback port.
pub async fn serve(handler: Handler) -> anyhow::Result<Server> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = token.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((stream, _)) = accepted else { continue };
            let _ = stream.set_nodelay(true);
            let (handler, token) = (handler.clone(), token.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(answer(handler, request).await) }
                });
                let connection =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    () = token.cancelled() => {}
                    _ = connection => {}
                }
            });
        }
    });
    Ok(Server { addr, stop, _amqp: None })
}

async fn answer(handler: Handler, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let (status, body) = match request.into_body().collect().await {
        Ok(body) => handler(path, body.to_bytes()).await,
        Err(_) => plain(StatusCode::BAD_REQUEST),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}

/// Parses a JSON body; `None` when it is not JSON.
fn parse(body: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice(body).ok()
}

/// Ceiling (a): parse the JSON body, answer 200.
pub async fn http_only() -> anyhow::Result<Server> {
    serve(Arc::new(|_, body| {
        Box::pin(async move { plain(if parse(&body).is_some() { StatusCode::OK } else { StatusCode::BAD_REQUEST }) })
    }))
    .await
}

/// Ceiling (b): parse the JSON body, publish it persistent and mandatory on ONE confirmed
/// channel to `wa.inbound` with the body's `customer_ref` as routing key (the exchange and
/// queues wafleet uses), answer 200 once the broker confirmed it.
pub async fn naive_durable(amqp_url: &str) -> anyhow::Result<Server> {
    let connection = wafleet_shared::amqp::connect(amqp_url, "wafleet-bench-naive-ingest").await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut server = serve(Arc::new(move |_, body| {
        let channel = channel.clone();
        Box::pin(async move { plain(publish_one(&channel, &body).await) })
    }))
    .await?;
    server._amqp = Some(connection);
    Ok(server)
}

async fn publish_one(channel: &lapin::Channel, body: &[u8]) -> StatusCode {
    let Some(event) = parse(body) else { return StatusCode::BAD_REQUEST };
    let Some(key) = event.get("customer_ref").and_then(|v| v.as_str()) else {
        return StatusCode::BAD_REQUEST;
    };
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(uuid::Uuid::now_v7().to_string().into());
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let Ok(confirm) = channel.basic_publish(INBOUND_EXCHANGE, key, options, body, properties).await else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    match confirm.await {
        Ok(Confirmation::Ack(None)) => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

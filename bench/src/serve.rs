//! HTTP servers inside the bench process, on the bench's own runtime: the two ceilings of the
//! ingest scenario (HTTP only; a naive durable ingest publishing on one confirmed channel), the
//! seed-style synchronous handler and the 50 ms bot the worker's `http` bot calls. They are
//! baselines, not products: each does the least its role needs and nothing ingest promises on
//! top (no authentication, no spool, no envelope).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::BasicProperties;
use sqlx::PgPool;
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

/// A bot for the worker's `http` bot: sleeps `delay`, then answers one reply with the message's
/// text (so the marker reaches the simulator as the echo bot's would).
pub async fn slow_bot(delay: Duration) -> anyhow::Result<Server> {
    serve(Arc::new(move |_, body| {
        Box::pin(async move {
            let Some(request) = parse(&body) else { return plain(StatusCode::BAD_REQUEST) };
            tokio::time::sleep(delay).await;
            let text = request.get("text").and_then(|v| v.as_str()).unwrap_or_default();
            let answer = serde_json::json!({"replies": [{"text": text}]});
            (StatusCode::OK, Bytes::from(answer.to_string()))
        })
    }))
    .await
}

/// Where the seed-style handler sends and what it waits for.
#[derive(Clone)]
pub struct Seed {
    /// The bench database as its owner (the tenant lookup).
    pub pool: PgPool,
    /// One client for the simulator, as the raw loop uses.
    pub http: reqwest::Client,
    /// Simulator base URL.
    pub sim_base: String,
    /// WA Bridges API key.
    pub api_key: String,
    /// The bot's run time.
    pub bot_delay: Duration,
}

/// The seed-style synchronous handler: per request one tenant lookup in Postgres (the ref from
/// `/webhook/<ref>/<token>`), the bot's delay, the reply sent to the tenant's bridge at the
/// simulator, and only then 200. Nothing is durable before the answer: a crash loses the event.
pub async fn seed_handler(seed: Seed) -> anyhow::Result<Server> {
    let seed = Arc::new(seed);
    serve(Arc::new(move |path, body| {
        let seed = seed.clone();
        Box::pin(async move { plain(seed_one(&seed, &path, &body).await.unwrap_or(StatusCode::BAD_GATEWAY)) })
    }))
    .await
}

async fn seed_one(seed: &Seed, path: &str, body: &[u8]) -> anyhow::Result<StatusCode> {
    let Some(customer_ref) = path.strip_prefix("/webhook/").and_then(|rest| rest.split('/').next()) else {
        return Ok(StatusCode::NOT_FOUND);
    };
    let Some(event) = parse(body) else { return Ok(StatusCode::BAD_REQUEST) };
    let bridge: Option<String> = sqlx::query_scalar("select bridge from tenants where customer_ref = $1")
        .bind(customer_ref)
        .fetch_optional(&seed.pool)
        .await?;
    let Some(bridge) = bridge else { return Ok(StatusCode::NOT_FOUND) };
    tokio::time::sleep(seed.bot_delay).await;
    let chat_id = event.get("chat_id").and_then(|v| v.as_str()).unwrap_or_default();
    let chat = chat_id.strip_suffix("@s.whatsapp.net").unwrap_or(chat_id);
    let text = event.get("body").and_then(|v| v.as_str()).unwrap_or_default();
    let url = format!("{}/api/instances/{bridge}/proxy/send/text", seed.sim_base);
    let response = seed
        .http
        .post(url)
        .bearer_auth(&seed.api_key)
        .json(&serde_json::json!({"chat": chat, "body": text}))
        .send()
        .await?;
    let status = response.status();
    response.bytes().await?;
    Ok(if status.is_success() { StatusCode::OK } else { StatusCode::BAD_GATEWAY })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn post(addr: SocketAddr, body: &'static str) -> (u16, String) {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = http.post(format!("http://{addr}/webhook/x/y")).body(body).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    #[tokio::test]
    async fn the_http_only_ceiling_answers_json_with_200_and_anything_else_with_400() {
        let server = http_only().await.unwrap();
        assert_eq!(post(server.addr, r#"{"event":"message"}"#).await, (200, r#"{"ok":true}"#.to_owned()));
        assert_eq!(post(server.addr, "not json").await.0, 400);
    }

    #[tokio::test]
    async fn the_slow_bot_answers_the_message_text_as_its_reply_after_its_delay() {
        let server = slow_bot(Duration::from_millis(50)).await.unwrap();
        let started = std::time::Instant::now();
        let (status, body) = post(server.addr, r#"{"version":1,"text":"sb-7 hello"}"#).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(status, 200);
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["replies"][0]["text"], "sb-7 hello");
    }
}

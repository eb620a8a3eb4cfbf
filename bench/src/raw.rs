//! Ceilings measured in the same run as the product: a raw lapin publisher with the same number
//! of confirms in flight, a backlog loader, and a raw end-to-end loop (consume, one Postgres
//! transaction, one HTTP send, ack) with the worker's concurrency limits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use wafleet_shared::topology::INBOUND_EXCHANGE;
use wafleet_shared::Envelope;

/// The properties ingest publishes with: persistent, JSON, a message id.
fn properties() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(uuid::Uuid::now_v7().to_string().into())
}

/// Publishes to `wa.inbound` like ingest does (mandatory, persistent, confirmed), keeping
/// `in_flight` confirms outstanding on one channel for `warmup + duration`; returns acks per
/// second inside the last `duration` and all acks. `messages[i]` is `(routing key, body)`, used
/// in turn.
pub async fn raw_publish(
    amqp_url: &str,
    in_flight: usize,
    warmup: Duration,
    duration: Duration,
    messages: Arc<Vec<(String, Vec<u8>)>>,
) -> anyhow::Result<(f64, u64)> {
    let connection = wafleet_shared::amqp::connect(amqp_url, "wafleet-bench-raw-publisher").await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let started = Instant::now();
    let measure_from = started + warmup;
    let end = measure_from + duration;
    let seq = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let all = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (channel, messages, seq, acked, all) =
            (channel.clone(), messages.clone(), seq.clone(), acked.clone(), all.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let n = seq.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((key, body)) = messages.get(n % messages.len().max(1)) else { return };
                let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
                let confirm = match channel.basic_publish(INBOUND_EXCHANGE, key, options, body, properties()).await {
                    Ok(c) => c,
                    Err(_) => return,
                };
                let outcome = confirm.await;
                let now = Instant::now();
                let ok = matches!(outcome, Ok(Confirmation::Ack(None)));
                if ok {
                    all.fetch_add(1, Ordering::Relaxed);
                }
                if ok && now >= measure_from && now <= end {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let deadline = end + Duration::from_secs(20);
    for t in tasks {
        let _ = tokio::time::timeout_at(deadline.into(), t).await;
    }
    let _ = connection.close(200, "done").await;
    Ok((acked.load(Ordering::Relaxed) as f64 / duration.as_secs_f64(), all.load(Ordering::Relaxed)))
}

/// Publishes every `(routing key, body)` with confirms, 512 in flight; fails unless all are
/// acked within `timeout`.
pub async fn publish_all(amqp_url: &str, messages: Vec<(String, Vec<u8>)>, timeout: Duration) -> anyhow::Result<()> {
    let connection = wafleet_shared::amqp::connect(amqp_url, "wafleet-bench-loader").await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let total = messages.len();
    let work = futures::stream::iter(messages)
        .map(|(key, body)| {
            let channel = channel.clone();
            async move {
                let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
                let confirm = channel.basic_publish(INBOUND_EXCHANGE, &key, options, &body, properties()).await?;
                match confirm.await? {
                    Confirmation::Ack(None) => anyhow::Ok(()),
                    other => bail!("backlog publish not acked: {other:?}"),
                }
            }
        })
        .buffer_unordered(512)
        .collect::<Vec<_>>();
    let results = tokio::time::timeout(timeout, work).await.context("loading the backlog timed out")?;
    let _ = connection.close(200, "done").await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if failed > 0 {
        bail!("{failed} of {total} backlog publishes failed");
    }
    Ok(())
}

/// Creates the raw loop's tables (shaped like processed_events and outbox, without RLS).
pub async fn prepare_raw_tables(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "create table if not exists bench_raw_events (tenant text not null, ingest_id uuid not null, \
         chat_id text, provider_message_id text, received_at timestamptz not null, \
         processed_at timestamptz not null default now(), primary key (tenant, ingest_id))",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "create table if not exists bench_raw_outbox (outbox_id bigserial primary key, tenant text not null, \
         ingest_id uuid not null, chat text not null, body text not null, status text not null default 'pending', \
         created_at timestamptz not null default now())",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Settings of the raw loop (the worker's defaults) and where it sends.
#[derive(Clone, Debug)]
pub struct RawLoop {
    /// Simulator base URL.
    pub sim_base: String,
    /// API key for the simulator.
    pub api_key: String,
    /// `(queue, bridge)` pairs to consume; no bridge: each message's own tenant's (a queue shared
    /// by tenants, whose bridge keys are their refs as the bench registers them).
    pub queues: Vec<(String, Option<String>)>,
    /// Unacked messages per queue.
    pub prefetch: u16,
    /// Concurrent messages per queue.
    pub per_queue: usize,
    /// Concurrent messages in total.
    pub total: usize,
}

/// Consumes the queues of `limits` until `expected` messages are done or `timeout` passes: per
/// message one transaction (dedupe insert + outbox insert, one commit), one POST to the
/// simulator's send endpoint, then the ack. Returns completion times (seconds since start).
pub async fn raw_e2e(
    amqp_url: &str,
    pool: &PgPool,
    limits: &RawLoop,
    expected: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<f64>> {
    raw_loop(amqp_url, pool, limits, expected, timeout, CancellationToken::new()).await
}

/// [`raw_e2e`] that also ends, without an error, when `stop` is cancelled (a consumer running
/// beside an open-loop load for as long as the caller needs it).
// layout: one consume loop with its permits, spawned handlers and completion count; splitting
// it would pass the channel, semaphores and consumers between functions.
pub async fn raw_loop(
    amqp_url: &str,
    pool: &PgPool,
    limits: &RawLoop,
    expected: usize,
    timeout: Duration,
    stop: CancellationToken,
) -> anyhow::Result<Vec<f64>> {
    let connection = wafleet_shared::amqp::connect(amqp_url, "wafleet-bench-raw-loop").await?;
    let channel = connection.create_channel().await?;
    channel.basic_qos(limits.prefetch, BasicQosOptions { global: false }).await?;
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build()?;
    let global = Arc::new(Semaphore::new(limits.total));
    let started = Instant::now();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<anyhow::Result<f64>>();
    let mut consumers = Vec::new();
    for (i, (queue, bridge)) in limits.queues.iter().enumerate() {
        let tag = format!("bench-raw-{i}");
        let mut consumer =
            channel.basic_consume(queue, &tag, BasicConsumeOptions::default(), FieldTable::default()).await?;
        let per_queue = Arc::new(Semaphore::new(limits.per_queue));
        let (global, pool, http, done_tx) = (global.clone(), pool.clone(), http.clone(), done_tx.clone());
        let (sim_base, bridge) = (limits.sim_base.clone(), bridge.clone());
        let api_key = limits.api_key.clone();
        consumers.push(tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let (Ok(p1), Ok(p2)) = (per_queue.clone().acquire_owned().await, global.clone().acquire_owned().await)
                else {
                    return;
                };
                let (pool, http, done_tx, sim_base, bridge, api_key) =
                    (pool.clone(), http.clone(), done_tx.clone(), sim_base.clone(), bridge.clone(), api_key.clone());
                tokio::spawn(async move {
                    let _permits = (p1, p2);
                    let send = Send { sim_base: &sim_base, bridge: bridge.as_deref(), api_key: &api_key };
                    let result = handle(&pool, &http, &send, &delivery.data).await;
                    let result = match result {
                        Ok(()) => delivery
                            .acker
                            .ack(BasicAckOptions::default())
                            .await
                            .map(|()| started.elapsed().as_secs_f64())
                            .map_err(anyhow::Error::from),
                        Err(e) => Err(e),
                    };
                    let _ = done_tx.send(result);
                });
            }
        }));
    }
    drop(done_tx);
    let deadline = started + timeout;
    // `expected` may be unbounded (a consumer stopped by its token).
    let mut times = Vec::with_capacity(expected.min(1 << 16));
    let mut errors = 0usize;
    let mut stopped = false;
    while times.len() < expected {
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline.into(), done_rx.recv()) => next,
            () = stop.cancelled() => {
                stopped = true;
                break;
            }
        };
        match next {
            Ok(Some(Ok(t))) => times.push(t),
            Ok(Some(Err(_))) => errors += 1,
            Ok(None) | Err(_) => break,
        }
    }
    for c in &consumers {
        c.abort();
    }
    let _ = connection.close(200, "done").await;
    if times.len() < expected && !stopped {
        bail!("raw loop finished {} of {expected} messages ({errors} errors) within {timeout:?}", times.len());
    }
    Ok(times)
}

/// Where one reply goes.
struct Send<'a> {
    sim_base: &'a str,
    /// The queue's bridge, or none for the envelope's tenant's.
    bridge: Option<&'a str>,
    api_key: &'a str,
}

async fn handle(pool: &PgPool, http: &reqwest::Client, send: &Send<'_>, data: &[u8]) -> anyhow::Result<()> {
    let envelope = Envelope::decode(data)?.into_v1();
    let bridge = send.bridge.unwrap_or(envelope.customer_ref.as_str());
    let url = format!("{}/api/instances/{bridge}/proxy/send/text", send.sim_base);
    // The two fields it needs, read from the payload's text like the worker reads its fields.
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Fields {
        chat_id: String,
        body: String,
    }
    let Fields { chat_id, body: text } = serde_json::from_str(envelope.payload.json()).unwrap_or_default();
    let chat = chat_id.strip_suffix("@s.whatsapp.net").unwrap_or(&chat_id).to_owned();
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "insert into bench_raw_events (tenant, ingest_id, chat_id, provider_message_id, received_at) \
         values ($1, $2, $3, $4, $5) on conflict do nothing",
    )
    .bind(envelope.customer_ref.as_str())
    .bind(envelope.ingest_id.as_uuid())
    .bind(&chat_id)
    .bind(envelope.provider_message_id.as_deref())
    .bind(envelope.received_at)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        sqlx::query("insert into bench_raw_outbox (tenant, ingest_id, chat, body) values ($1, $2, $3, $4)")
            .bind(envelope.customer_ref.as_str())
            .bind(envelope.ingest_id.as_uuid())
            .bind(&chat)
            .bind(&text)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let response =
        http.post(url).bearer_auth(send.api_key).json(&serde_json::json!({"chat": chat, "body": text})).send().await?;
    if !response.status().is_success() {
        bail!("raw send -> {}", response.status());
    }
    response.bytes().await?;
    Ok(())
}

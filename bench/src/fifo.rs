//! The shared-FIFO baseline of the noisy-tenant scenario: one queue, `bench.fifo`, bound to
//! `wa.inbound` under every tenant's ref. The exchange is direct, so each of ingest's publishes
//! would put a copy there beside the tenant queue's; the raw loop drains it in arrival order. While
//! the baseline runs, the tenant queues are unbound, so each message is stored once on either path
//! (as for the worker) and the baseline does not pay for copies nobody reads; afterwards they are
//! bound again and the shared queue is deleted, so it never takes a copy of the worker's messages.

use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use wafleet_shared::topology::{tenant_queue, QueueType, INBOUND_EXCHANGE};
use wafleet_shared::CustomerRef;

use crate::raw::RawLoop;

/// The queue every tenant's messages share.
pub const FIFO_QUEUE: &str = "bench.fifo";

/// Routes the tenants `refs` into [`FIFO_QUEUE`] only: declares and binds it first, then unbinds
/// the tenant queues, so no publish is unroutable in between.
pub async fn route_to_fifo(amqp_url: &str, refs: &[&CustomerRef], queue_type: QueueType) -> anyhow::Result<()> {
    declare(amqp_url, refs, queue_type).await?;
    tenant_bindings(amqp_url, refs, false).await
}

/// Routes the tenants `refs` back into their own queues: binds them first, then deletes
/// [`FIFO_QUEUE`] with whatever it still holds.
pub async fn route_to_tenants(amqp_url: &str, refs: &[&CustomerRef]) -> anyhow::Result<()> {
    tenant_bindings(amqp_url, refs, true).await?;
    delete(amqp_url).await
}

/// Binds (or unbinds) each tenant queue to `wa.inbound` under its ref, as `wafleet migrate` and
/// tenant setup bind it.
async fn tenant_bindings(amqp_url: &str, refs: &[&CustomerRef], bound: bool) -> anyhow::Result<()> {
    let connection = wafleet_shared::amqp::connect(amqp_url, "wafleet-bench-fifo").await?;
    let channel = connection.create_channel().await?;
    for r in refs {
        let queue = tenant_queue(r);
        if bound {
            channel
                .queue_bind(&queue, INBOUND_EXCHANGE, r.as_str(), QueueBindOptions::default(), FieldTable::default())
                .await?;
        } else {
            channel.queue_unbind(&queue, INBOUND_EXCHANGE, r.as_str(), FieldTable::default()).await?;
        }
    }
    let _ = connection.close(200, "done").await;
    Ok(())
}

/// Declares [`FIFO_QUEUE`] with `queue_type` (the tenant queues' type, so both sides pay the same
/// broker cost) and binds it under each of `refs`.
async fn declare(amqp_url: &str, refs: &[&CustomerRef], queue_type: QueueType) -> anyhow::Result<()> {
    let connection = wafleet_shared::amqp::connect(amqp_url, "wafleet-bench-fifo").await?;
    let channel = connection.create_channel().await?;
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString(queue_type.as_str().into()));
    let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(FIFO_QUEUE, options, arguments).await?;
    for r in refs {
        channel
            .queue_bind(FIFO_QUEUE, INBOUND_EXCHANGE, r.as_str(), QueueBindOptions::default(), FieldTable::default())
            .await?;
    }
    let _ = connection.close(200, "done").await;
    Ok(())
}

/// Deletes [`FIFO_QUEUE`], its bindings and whatever it still holds.
async fn delete(amqp_url: &str) -> anyhow::Result<()> {
    let connection = wafleet_shared::amqp::connect(amqp_url, "wafleet-bench-fifo").await?;
    let channel = connection.create_channel().await?;
    channel.queue_delete(FIFO_QUEUE, QueueDeleteOptions::default()).await?;
    let _ = connection.close(200, "done").await;
    Ok(())
}

/// Messages ready in [`FIFO_QUEUE`], exact (a passive declare, not the management API's lagging
/// count).
pub async fn depth(amqp_url: &str) -> anyhow::Result<u64> {
    let connection = wafleet_shared::amqp::connect(amqp_url, "wafleet-bench-fifo").await?;
    let channel = connection.create_channel().await?;
    let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let q = channel.queue_declare(FIFO_QUEUE, options, FieldTable::default()).await?;
    let _ = connection.close(200, "done").await;
    Ok(u64::from(q.message_count()))
}

/// The raw loop's settings for the shared queue: the worker's 64 messages in flight in total,
/// all on the one queue (so a prefetch of 64), each reply sent on its envelope's tenant's bridge.
pub fn limits(sim_base: &str, api_key: &str) -> RawLoop {
    RawLoop {
        sim_base: sim_base.to_owned(),
        api_key: api_key.to_owned(),
        queues: vec![(FIFO_QUEUE.to_owned(), None)],
        prefetch: 64,
        per_queue: 64,
        total: 64,
    }
}

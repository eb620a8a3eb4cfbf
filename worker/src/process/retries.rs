//! Delivery bookkeeping of the message path: the crash-loop count of classic queues (quorum
//! queues count in the broker) and the retry records `wafleet depth` shows. Each writes only the
//! queue's own tenant, in its own scope.

use std::time::Duration;

use chrono::Utc;
use tracing::warn;
use wafleet_fleet::db;
use wafleet_fleet::error::Result;
use wafleet_shared::{CustomerRef, Envelope, EnvelopeV1};

use super::{Disposition, Failure, Processor};

impl Processor {
    /// Handles a redelivered message of a classic queue: counts the delivery in Postgres and
    /// dead-letters it past the crash-loop limit (quorum queues do this in the broker).
    pub async fn handle_redelivered_classic(&self, queue_tenant: &CustomerRef, body: &[u8]) -> Disposition {
        if let Ok(envelope) = Envelope::decode(body) {
            if envelope.customer_ref() == queue_tenant {
                match self.count_delivery(&envelope.into_v1()).await {
                    Ok(attempts) if attempts > i64::from(wafleet_fleet::topology::DELIVERY_LIMIT) => {
                        return Disposition::DeadLetter(Failure::DeliveryLimit(attempts))
                    }
                    Ok(_) => {}
                    Err(e) if e.is_database_unavailable() => return Disposition::HoldDatabaseDown,
                    Err(e) => warn!(tenant = %queue_tenant, error = %e, "could not count the redelivery"),
                }
            }
        }
        self.handle(queue_tenant, body).await
    }

    async fn count_delivery(&self, envelope: &EnvelopeV1) -> Result<i64> {
        let Some(id) = self.tenant_ids.get(&self.pool, &envelope.customer_ref).await? else { return Ok(0) };
        let mut tx = db::begin_tenant(&self.pool, id).await?;
        let attempts: i32 = sqlx::query_scalar(
            "insert into delivery_attempts (tenant_id, ingest_id, attempts) values ($1, $2, 1) \
             on conflict (tenant_id, ingest_id) do update set attempts = delivery_attempts.attempts + 1, updated_at = now() \
             returning attempts",
        )
        .bind(id.get())
        .bind(envelope.ingest_id.as_uuid())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(i64::from(attempts))
    }

    /// Records that the message waits in a retry tier until `due_in` (for `wafleet depth`).
    pub async fn note_retry(
        &self,
        queue_tenant: &CustomerRef,
        body: &[u8],
        tier: &str,
        due_in: Duration,
    ) -> Result<()> {
        let Ok(envelope) = Envelope::decode(body) else { return Ok(()) };
        let envelope = envelope.into_v1();
        // ISOLATION: only the queue's own tenant is ever written, in its own scope.
        if &envelope.customer_ref != queue_tenant {
            return Ok(());
        }
        let Some(id) = self.tenant_ids.get(&self.pool, queue_tenant).await? else { return Ok(()) };
        let due_at = Utc::now() + chrono::Duration::from_std(due_in).unwrap_or(chrono::Duration::zero());
        let mut tx = db::begin_tenant(&self.pool, id).await?;
        sqlx::query(
            "insert into retrying (tenant_id, ingest_id, tier, due_at) values ($1, $2, $3, $4) \
             on conflict (tenant_id, ingest_id) do update set tier = excluded.tier, due_at = excluded.due_at",
        )
        .bind(id.get())
        .bind(envelope.ingest_id.as_uuid())
        .bind(tier)
        .bind(due_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets a message's retry record once it completed or was dead-lettered.
    pub async fn clear_retry(&self, queue_tenant: &CustomerRef, body: &[u8]) -> Result<()> {
        let Ok(envelope) = Envelope::decode(body) else { return Ok(()) };
        let envelope = envelope.into_v1();
        if &envelope.customer_ref != queue_tenant {
            return Ok(());
        }
        let Some(id) = self.tenant_ids.get(&self.pool, queue_tenant).await? else { return Ok(()) };
        let mut tx = db::begin_tenant(&self.pool, id).await?;
        sqlx::query("delete from retrying where tenant_id = $1 and ingest_id = $2")
            .bind(id.get())
            .bind(envelope.ingest_id.as_uuid())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

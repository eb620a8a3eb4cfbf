//! Reads of one tenant's outbox rows, in the caller's tenant-scoped transaction: the operator's
//! view of replies that need a person, and the canary's search for its probe's reply.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Postgres, Row, Transaction};

use crate::error::Result;
use crate::tenant::TenantId;

/// One outbox row for an operator: metadata and the chat; the reply text only when asked for.
#[derive(Clone, Debug, Serialize)]
pub struct OutboxRow {
    /// Row id.
    pub outbox_id: i64,
    /// The event that produced the reply.
    pub ingest_id: uuid::Uuid,
    /// Chat the reply was for.
    pub chat: String,
    /// `unknown` or `failed`.
    pub status: String,
    /// Send attempts made.
    pub attempts: i32,
    /// Last error text.
    pub last_error: Option<String>,
    /// When the reply was queued.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The reply text (personal data), only when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// `tenant`'s rows in `statuses`, newest first, at most `limit`; the reply text only when
/// `with_body` (personal data). The caller validates `statuses`.
pub async fn attention_rows(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    statuses: &[String],
    limit: u32,
    with_body: bool,
) -> Result<Vec<OutboxRow>> {
    let rows = sqlx::query(
        "select outbox_id, ingest_id, chat, status, attempts, last_error, created_at, updated_at, \
         case when $4 then body end as body from outbox \
         where tenant_id = $1 and status = any($2) order by created_at desc, outbox_id desc limit $3",
    )
    .bind(tenant.get())
    .bind(statuses)
    .bind(i64::from(limit))
    .bind(with_body)
    .fetch_all(&mut **tx)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(OutboxRow {
                outbox_id: row.try_get("outbox_id")?,
                ingest_id: row.try_get("ingest_id")?,
                chat: row.try_get("chat")?,
                status: row.try_get("status")?,
                attempts: row.try_get("attempts")?,
                last_error: row.try_get("last_error")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
                body: row.try_get("body")?,
            })
        })
        .collect()
}

/// A reply row found by the canary's nonce.
#[derive(Clone, Debug)]
pub struct NonceRow {
    /// Row status.
    pub status: String,
    /// Chat the reply is for.
    pub chat: String,
    /// When it was sent, if it was.
    pub sent_at: Option<DateTime<Utc>>,
}

/// `tenant`'s reply rows created since `since` whose text carries `nonce` (the canary's probe).
pub async fn nonce_rows(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    since: DateTime<Utc>,
    nonce: &str,
) -> Result<Vec<NonceRow>> {
    let rows: Vec<(String, String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "select status, chat, sent_at from outbox where tenant_id = $1 and created_at >= $2 and strpos(body, $3) > 0",
    )
    .bind(tenant.get())
    .bind(since)
    .bind(nonce)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|(status, chat, sent_at)| NonceRow { status, chat, sent_at }).collect())
}

/// How many of `tenant`'s outbox rows and message log lines since `since` carry `nonce`, in one
/// round trip (the canary's misrouting check of another canary tenant).
pub async fn nonce_counts(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    since: DateTime<Utc>,
    nonce: &str,
) -> Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "select (select count(*) from outbox where tenant_id = $1 and created_at >= $2 and strpos(body, $3) > 0), \
                (select count(*) from message_log where tenant_id = $1 and created_at >= $2 and strpos(body, $3) > 0)",
    )
    .bind(tenant.get())
    .bind(since)
    .bind(nonce)
    .fetch_one(&mut **tx)
    .await?)
}

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

/// Tag of outbox-row cursors (see [`crate::paging`]).
const CURSOR_TAG: &str = "o1";

/// Where the next page of a tenant's outbox rows starts: below this row in the
/// (`created_at`, `outbox_id`) order, newest first. The id breaks ties between rows queued in
/// one transaction, so no row is skipped or repeated; rows that change status meanwhile simply
/// leave or join the later pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxCursor {
    created_at: DateTime<Utc>,
    outbox_id: i64,
}

impl OutboxCursor {
    /// Parses a cursor that [`OutboxCursor::encode`] made; anything else is
    /// [`crate::error::InvalidInput::Cursor`].
    pub fn parse(cursor: &str) -> Result<Self> {
        let key = crate::paging::decode(CURSOR_TAG, cursor)?;
        key.split_once('.')
            .and_then(|(micros, id)| {
                let created_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
                Some(Self { created_at, outbox_id: id.parse().ok()? })
            })
            .ok_or_else(|| crate::error::InvalidInput::Cursor.into())
    }

    /// The opaque form handed to clients. Postgres keeps microseconds, so the key is exact.
    pub fn encode(self) -> String {
        crate::paging::encode(CURSOR_TAG, &format!("{}.{}", self.created_at.timestamp_micros(), self.outbox_id))
    }
}

/// `tenant`'s rows in `statuses`, newest first, at most `limit`, below `after`; the reply text
/// only when `with_body` (personal data). The caller validates `statuses`. Returns the rows and
/// the cursor of the next page (`None` on the last).
pub async fn attention_rows(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    statuses: &[String],
    (limit, after): (u32, Option<OutboxCursor>),
    with_body: bool,
) -> Result<(Vec<OutboxRow>, Option<OutboxCursor>)> {
    // One row more than asked tells whether a next page exists.
    // ISOLATION: a cursor names no tenant and is the client's word; the `where` on the tenant
    // (and RLS) decides whose rows a page holds, so another tenant's cursor only moves the key.
    let rows = sqlx::query(
        "select outbox_id, ingest_id, chat, status, attempts, last_error, created_at, updated_at, \
         case when $4 then body end as body from outbox \
         where tenant_id = $1 and status = any($2) \
         and ($5::timestamptz is null or (created_at, outbox_id) < ($5, $6)) \
         order by created_at desc, outbox_id desc limit $3",
    )
    .bind(tenant.get())
    .bind(statuses)
    .bind(i64::from(limit) + 1)
    .bind(with_body)
    .bind(after.map(|c| c.created_at))
    .bind(after.map_or(0, |c| c.outbox_id))
    .fetch_all(&mut **tx)
    .await?;
    let more = rows.len() > limit as usize;
    let rows = rows
        .into_iter()
        .take(limit as usize)
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
        .collect::<Result<Vec<_>>>()?;
    let next = if more {
        rows.last().map(|r| OutboxCursor { created_at: r.created_at, outbox_id: r.outbox_id })
    } else {
        None
    };
    Ok((rows, next))
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_outbox_cursor_keeps_the_microsecond_and_the_id() {
        let created_at = DateTime::from_timestamp_micros(1_764_800_000_123_456).unwrap();
        let c = OutboxCursor { created_at, outbox_id: 9 };
        assert_eq!(OutboxCursor::parse(&c.encode()).unwrap(), c);
        for key in ["1", "x.1", "1.x", ""] {
            assert!(OutboxCursor::parse(&crate::paging::encode(CURSOR_TAG, key)).is_err(), "{key}");
        }
        assert!(OutboxCursor::parse(&crate::paging::encode("a1", "1.1")).is_err());
    }
}

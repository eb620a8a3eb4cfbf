//! Keyword rules of the `rules` bot: list and remove (add is [`crate::service::add_rule`]). Every
//! statement runs in the tenant's own scope, so a rule id or keyword can only ever name a rule
//! of the tenant the command names.

use sqlx::{PgPool, Row};
use wafleet_shared::CustomerRef;

use crate::db;
use crate::error::{InvalidInput, Result};
use crate::service::require_tenant;

/// One keyword rule.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Rule {
    /// The rule's id (for `rules remove`).
    pub id: i64,
    /// Keyword, matched case-insensitively anywhere in a message.
    pub keyword: String,
    /// Reply text.
    pub reply: String,
    /// When the rule was first added.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// The tenant's rules in keyword order.
pub async fn list(pool: &PgPool, customer_ref: &CustomerRef) -> Result<Vec<Rule>> {
    let meta = require_tenant(pool, customer_ref).await?;
    // ISOLATION: read in the tenant's own scope; RLS hides every other tenant's rules.
    let mut tx = db::begin_tenant_read_only(pool, meta.id).await?;
    let rows = sqlx::query(
        "select rule_id, keyword, reply, created_at from bot_rules where tenant_id = $1 order by keyword, rule_id",
    )
    .bind(meta.id.get())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            Ok(Rule {
                id: r.try_get("rule_id")?,
                keyword: r.try_get("keyword")?,
                reply: r.try_get("reply")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

/// Removes the tenant's rule whose id or keyword is `rule` (an all-digit value is tried as an
/// id first, then as a keyword). Returns the removed rule's keyword.
pub async fn remove(pool: &PgPool, customer_ref: &CustomerRef, rule: &str) -> Result<String> {
    let meta = require_tenant(pool, customer_ref).await?;
    let id: Option<i64> = rule.parse().ok();
    // ISOLATION: written in the tenant's own scope, and the `where` repeats the tenant id.
    let mut tx = db::begin_tenant(pool, meta.id).await?;
    let removed: Option<String> = sqlx::query_scalar(
        "delete from bot_rules where tenant_id = $1 and rule_id = (select rule_id from bot_rules where tenant_id = $1 \
         and (rule_id = $2 or keyword = $3) order by (rule_id = $2) desc nulls last limit 1) \
         returning keyword",
    )
    .bind(meta.id.get())
    .bind(id)
    .bind(rule.trim())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    removed
        .ok_or_else(|| InvalidInput::UnknownRule { customer_ref: customer_ref.to_string(), rule: rule.into() }.into())
}

//! The operator audit log: who ran which mutating command, when, with which arguments (secrets
//! and personal data redacted) and how it ended. Append-only for the duty roles.
//! The CLI, the admin API and the console write it through [`record`] and [`record_result`] only,
//! so the three cannot drift.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::{PgPool, Row};

use crate::error::Result;

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it said.
    Ok,
    /// It failed (possibly half-way; the detail says where).
    Error,
    /// `--dry-run`: nothing changed.
    DryRun,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::DryRun => "dry_run",
        }
    }
}

/// One record to write.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The command, e.g. `tenants offboard`.
    pub command: String,
    /// The tenant ref or account name it acted on, if any.
    pub target: Option<String>,
    /// Its arguments; redacted by [`record`].
    pub arguments: Value,
}

impl Entry {
    /// An entry for `command` on `target` with `arguments`.
    pub fn new(command: &str, target: Option<&str>, arguments: Value) -> Self {
        Self { command: command.to_owned(), target: target.map(str::to_owned), arguments }
    }
}

/// Who ran a command, as the audit log names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor(String);

impl Actor {
    /// An operator of the CLI, by the name its config resolved (`WAFLEET_OPERATOR` or the OS
    /// user); cut to 128 characters.
    pub fn operator(name: &str) -> Self {
        let name = name.trim();
        Self(if name.is_empty() { "unknown".to_owned() } else { name.chars().take(128).collect() })
    }
    /// A caller of the admin API: `admin-token:<name>`.
    pub fn admin_token(name: &str) -> Self {
        Self(format!("admin-token:{name}"))
    }
    /// The name written to the audit log.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Argument names whose values are never stored: keys and tokens, and the phone number an
/// erasure removes (keeping it here would undo the erasure).
const REDACTED_KEYS: &[&str] = &["contact", "key", "api_key", "secret", "token", "password", "signing_key", "url"];

/// Redacts secrets and personal data in `arguments`: values of sensitive names, the token of a
/// signed webhook URL, and passwords in URLs.
pub fn redact(arguments: &Value) -> Value {
    match arguments {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let sensitive = REDACTED_KEYS.iter().any(|s| k.eq_ignore_ascii_case(s));
                out.insert(k.clone(), if sensitive { Value::String("<redacted>".into()) } else { redact(v) });
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        Value::String(s) => Value::String(redact_text(s)),
        other => other.clone(),
    }
}

fn redact_text(s: &str) -> String {
    let mut text = s.to_owned();
    // A signed webhook URL: .../webhook/<ref>/<token>
    if let Some(i) = text.find("/webhook/") {
        let rest = &text[i + "/webhook/".len()..];
        if let Some(slash) = rest.find('/') {
            text = format!("{}/webhook/{}/<redacted>", &text[..i], &rest[..slash]);
        }
    }
    if let Ok(mut url) = url::Url::parse(&text) {
        if url.password().is_some() && url.set_password(Some("redacted")).is_ok() {
            text = url.to_string();
        }
    }
    text
}

/// Writes one record by `actor` (arguments and detail redacted).
pub async fn record(pool: &PgPool, actor: &Actor, entry: &Entry, outcome: Outcome, detail: Option<&str>) -> Result<()> {
    sqlx::query(
        "insert into audit_log (operator, command, target, arguments, outcome, detail) values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(actor.as_str())
    .bind(&entry.command)
    .bind(entry.target.as_deref())
    .bind(redact(&entry.arguments))
    .bind(outcome.as_str())
    .bind(detail.map(|d| redact_text(d).chars().take(500).collect::<String>()))
    .execute(pool)
    .await?;
    Ok(())
}

/// Writes the record of a finished command by `actor`: `ok`, `dry_run`, or `error` with the
/// error as detail.
pub async fn record_result<T>(
    pool: &PgPool,
    actor: &Actor,
    entry: &Entry,
    result: &Result<T>,
    dry_run: bool,
) -> Result<()> {
    let (outcome, detail) = match result {
        Ok(_) if dry_run => (Outcome::DryRun, None),
        Ok(_) => (Outcome::Ok, None),
        Err(e) => (Outcome::Error, Some(e.to_string())),
    };
    record(pool, actor, entry, outcome, detail.as_deref()).await
}

/// A stored record.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Record {
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub operator: String,
    /// What.
    pub command: String,
    /// On what.
    pub target: Option<String>,
    /// With which (redacted) arguments.
    pub arguments: Value,
    /// `ok`, `error` or `dry_run`.
    pub outcome: String,
    /// Error or summary.
    pub detail: Option<String>,
}

/// Tag of audit-log cursors (see [`crate::paging`]).
const CURSOR_TAG: &str = "a1";

/// Where the next page of the audit log starts: below the record with this id.
///
/// The keyset is the record id alone, not its time: many records share one `at` (a whole
/// transaction has one `now()`), and ids are unique and only ever grow. Paging newest first with
/// `audit_id < cursor` therefore returns every record that existed when paging began exactly
/// once, and records written meanwhile (higher ids) never shift a later page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditCursor(i64);

impl AuditCursor {
    /// Parses a cursor that [`AuditCursor::encode`] made; anything else is
    /// [`crate::error::InvalidInput::Cursor`].
    pub fn parse(cursor: &str) -> Result<Self> {
        crate::paging::decode(CURSOR_TAG, cursor)?
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(Self)
            .ok_or_else(|| crate::error::InvalidInput::Cursor.into())
    }

    /// The opaque form handed to clients.
    pub fn encode(self) -> String {
        crate::paging::encode(CURSOR_TAG, &self.0.to_string())
    }
}

/// One page of the audit log, newest first.
#[derive(Clone, Debug)]
pub struct Page {
    /// The records.
    pub records: Vec<Record>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<AuditCursor>,
}

/// Up to `limit` records, newest first, below `after` (the first page when `None`); `target`
/// filters by tenant ref or account.
pub async fn page(pool: &PgPool, limit: u32, target: Option<&str>, after: Option<AuditCursor>) -> Result<Page> {
    // Mapped by hand: deriving sqlx::FromRow in this crate would change the compile-fail
    // snapshots of worker/tests/ui. One row more than asked tells whether a next page exists.
    let rows = sqlx::query(
        "select audit_id, at, operator, command, target, arguments, outcome, detail from audit_log \
         where ($2::text is null or target = $2) and ($3::bigint is null or audit_id < $3) \
         order by audit_id desc limit $1",
    )
    .bind(i64::from(limit) + 1)
    .bind(target)
    .bind(after.map(|c| c.0))
    .fetch_all(pool)
    .await?;
    let mut records = Vec::with_capacity(rows.len());
    let mut last_id = None;
    for row in rows.iter().take(limit as usize) {
        last_id = Some(row.try_get::<i64, _>("audit_id")?);
        records.push(Record {
            at: row.try_get("at")?,
            operator: row.try_get("operator")?,
            command: row.try_get("command")?,
            target: row.try_get("target")?,
            arguments: row.try_get("arguments")?,
            outcome: row.try_get("outcome")?,
            detail: row.try_get("detail")?,
        });
    }
    let next = if rows.len() > limit as usize { last_id.map(AuditCursor) } else { None };
    Ok(Page { records, next })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_audit_cursor_round_trips_and_refuses_what_it_did_not_make() {
        let c = AuditCursor(7_000_000_001);
        assert_eq!(AuditCursor::parse(&c.encode()).unwrap(), c);
        for bad in
            [crate::paging::encode("a1", "0"), crate::paging::encode("a1", "x"), crate::paging::encode("o1", "5")]
        {
            assert!(AuditCursor::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_tokens_and_erased_contacts_never_reach_the_audit_log() {
        let args = serde_json::json!({
            "contact": "15550001111",
            "key_ref": "env:WA_API_KEY",
            "base": "https://hooks.example.com",
            "printed": "https://hooks.example.com/webhook/cust_1/k1.2.c2VjcmV0",
            "db": "postgres://app:hunter2@db/wafleet",
            "nested": [{"token": "abc"}]
        });
        let out = redact(&args);
        assert_eq!(out["contact"], "<redacted>");
        assert_eq!(out["key_ref"], "env:WA_API_KEY", "a reference is not a secret");
        assert_eq!(out["base"], "https://hooks.example.com");
        assert_eq!(out["printed"], "https://hooks.example.com/webhook/cust_1/<redacted>");
        assert!(!out["db"].as_str().unwrap_or_default().contains("hunter2"));
        assert_eq!(out["nested"][0]["token"], "<redacted>");
    }
}

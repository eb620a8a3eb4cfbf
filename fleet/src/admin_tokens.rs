//! Admin API bearer tokens: created, listed and revoked by `wafleet admin-tokens`,
//! checked by `wafleet-admin` on every request. A token is 256 random bits, shown once at
//! creation; only its SHA-256 is stored, so a leaked database does not leak a usable token.
//! Each token has a name (the audit actor is `admin-token:<name>`) and a set of [`Scopes`].
//!
//! Tokens are not tenant data: they act on the whole fleet, like the operator CLI. This module
//! must never log a token or write one anywhere but the creating command's stdout.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::error::{Conflict, InvalidInput, Result};

mod scope;
pub mod session;
pub use scope::{Scope, Scopes};

/// Every token starts with this, so secret scanners and humans can recognise one.
pub const TOKEN_PREFIX: &str = "wfa_";

/// Random bytes in a token (256 bits).
const TOKEN_BYTES: usize = 32;

/// A stored token, without its secret.
#[derive(Clone, Debug, Serialize)]
pub struct TokenInfo {
    /// Database id.
    pub token_id: Uuid,
    /// Unique among live tokens; the audit actor is `admin-token:<name>`.
    pub name: String,
    /// What the token may do.
    pub scopes: Scopes,
    /// The operator who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Last successful authentication (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked; a revoked token authenticates nothing.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The caller a presented token authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    /// Database id of the token.
    pub token_id: Uuid,
    /// Its name.
    pub name: String,
    /// What it may do.
    pub scopes: Scopes,
}

/// Checks a token name: `[a-z0-9][a-z0-9_.-]{0,63}`, like account names.
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && name.len() <= 64 {
        Ok(())
    } else {
        Err(InvalidInput::TokenName(name.to_owned()).into())
    }
}

/// SHA-256 of a presented token: the only form that is stored or looked up.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh token: the prefix and 256 bits from the thread-local CSPRNG, base64url.
pub fn generate() -> SecretString {
    let bytes: [u8; TOKEN_BYTES] = rand::random();
    SecretString::from(format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// Whether `presented` has the shape of a token; anything else is refused without a query.
fn well_formed(presented: &str) -> bool {
    presented.len() == TOKEN_PREFIX.len() + 43
        && presented.starts_with(TOKEN_PREFIX)
        && presented[TOKEN_PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn info_of(row: &sqlx::postgres::PgRow) -> Result<TokenInfo> {
    Ok(TokenInfo {
        token_id: row.try_get("token_id")?,
        name: row.try_get("name")?,
        scopes: Scopes::from_db(&row.try_get::<Vec<String>, _>("scopes")?),
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

const COLUMNS: &str = "token_id, name, scopes, created_by, created_at, last_used_at, revoked_at";

/// Creates a token named `name`; returns it with its secret, which is never stored and cannot be
/// shown again. A live token of the same name is a conflict (revoke it first).
pub async fn create(pool: &PgPool, name: &str, scopes: &Scopes, created_by: &str) -> Result<(TokenInfo, SecretString)> {
    validate_name(name)?;
    let secret = generate();
    // `read_only` is kept for binaries of the previous release during a rolling upgrade: they
    // allow a token without `write` its GETs only.
    let row = sqlx::query(&format!(
        "insert into admin_tokens (token_id, name, token_hash, read_only, scopes, created_by) \
         values ($1, $2, $3, $4, $5, $6) returning {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(name)
    .bind(hash(secret.expose_secret()).as_slice())
    .bind(!scopes.contains(Scope::Write))
    .bind(scopes.names())
    .bind(created_by)
    .fetch_one(pool)
    .await;
    match row {
        Ok(row) => Ok((info_of(&row)?, secret)),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            Err(Conflict::TokenName(name.to_owned()).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Every token, live and revoked, newest first (no secrets: there are none to show).
pub async fn list(pool: &PgPool) -> Result<Vec<TokenInfo>> {
    let rows = sqlx::query(&format!("select {COLUMNS} from admin_tokens order by created_at desc, token_id desc"))
        .fetch_all(pool)
        .await?;
    rows.iter().map(info_of).collect()
}

/// Revokes the live token named `name`; the next request with it gets 401.
pub async fn revoke(pool: &PgPool, name: &str) -> Result<TokenInfo> {
    validate_name(name)?;
    let row = sqlx::query(&format!(
        "update admin_tokens set revoked_at = now() where name = $1 and revoked_at is null returning {COLUMNS}"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => info_of(&row),
        None => Err(InvalidInput::NoLiveToken(name.to_owned()).into()),
    }
}

/// The live token `presented` names, if any. Malformed, unknown and revoked tokens are all
/// `None`, so a caller cannot tell them apart. Marks the token used at most once a minute.
pub async fn authenticate(pool: &PgPool, presented: &str) -> Result<Option<Authenticated>> {
    if !well_formed(presented) {
        return Ok(None);
    }
    // Looked up by its hash: the hash of a 256-bit random token reveals nothing through timing.
    let row = sqlx::query(
        "select token_id, name, scopes, \
         (last_used_at is null or last_used_at < now() - interval '60 seconds') as stale \
         from admin_tokens where token_hash = $1 and revoked_at is null",
    )
    .bind(hash(presented).as_slice())
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => caller_marked_used(pool, &row).await.map(Some),
        None => Ok(None),
    }
}

/// The caller of a row with `token_id`, `name`, `scopes` and `stale` (last use over a minute
/// ago, or never), marking the token used when it is stale.
pub(crate) async fn caller_marked_used(pool: &PgPool, row: &sqlx::postgres::PgRow) -> Result<Authenticated> {
    let caller = Authenticated {
        token_id: row.try_get("token_id")?,
        name: row.try_get("name")?,
        scopes: Scopes::from_db(&row.try_get::<Vec<String>, _>("scopes")?),
    };
    if row.try_get::<bool, _>("stale")? {
        sqlx::query("update admin_tokens set last_used_at = now() where token_id = $1")
            .bind(caller.token_id)
            .execute(pool)
            .await?;
    }
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_well_formed_random_and_only_its_hash_identifies_it() {
        let a = generate();
        let b = generate();
        assert!(well_formed(a.expose_secret()), "{}", a.expose_secret().len());
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_ne!(hash(a.expose_secret()), hash(b.expose_secret()));
        assert_eq!(hash(a.expose_secret()), hash(a.expose_secret()));
    }

    #[test]
    fn malformed_tokens_are_refused_before_any_lookup() {
        for bad in [
            "",
            "wfa_",
            "Bearer wfa_x",
            "wfa_short",
            &format!("xyz_{}", "a".repeat(43)),
            &format!("wfa_{}", "a+".repeat(22)),
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
    }

    #[test]
    fn token_names_are_lowercase_slugs() {
        assert!(validate_name("ci-deploy.v2").is_ok());
        for bad in ["", "CI", "-x", "a b", &"a".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}

//! Console sessions: a sign-in with an admin token opens one, a cookie carries its random
//! secret, and only the secret's SHA-256 is stored. A session acts with its token's name and
//! scopes and lives while the token does: every lookup joins the live token, so revoking the
//! token ends its sessions at once. Each session has a CSRF token derived from its secret, so a
//! page of another origin (which cannot read the cookie) cannot forge a form.

use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;

use super::{hash, Authenticated};
use crate::error::Result;

/// Every session secret starts with this, so a leaked cookie is recognisable.
const SESSION_PREFIX: &str = "wfs_";

/// A fresh session secret: 256 bits from the thread-local CSPRNG, base64url.
fn generate() -> SecretString {
    let bytes: [u8; 32] = rand::random();
    SecretString::from(format!("{SESSION_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

fn well_formed(presented: &str) -> bool {
    presented.len() == SESSION_PREFIX.len() + 43
        && presented.starts_with(SESSION_PREFIX)
        && presented[SESSION_PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Opens a session for the live token `token_id` that ends after `lifetime`; returns its secret
/// (the cookie value). Expired sessions of every token are deleted on the way.
pub async fn open(pool: &PgPool, token_id: uuid::Uuid, lifetime: std::time::Duration) -> Result<SecretString> {
    sqlx::query("delete from console_sessions where expires_at < now()").execute(pool).await?;
    let secret = generate();
    sqlx::query(
        "insert into console_sessions (session_hash, token_id, expires_at) \
         values ($1, $2, now() + make_interval(secs => $3))",
    )
    .bind(hash(secret.expose_secret()).as_slice())
    .bind(token_id)
    .bind(lifetime.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(secret)
}

/// The caller of the live, unexpired session `presented` names, if any. Malformed, unknown,
/// expired and signed-out sessions, and sessions of revoked tokens, are all `None`.
pub async fn authenticate(pool: &PgPool, presented: &str) -> Result<Option<Authenticated>> {
    if !well_formed(presented) {
        return Ok(None);
    }
    let row = sqlx::query(
        "select t.token_id, t.name, t.scopes, \
         (t.last_used_at is null or t.last_used_at < now() - interval '60 seconds') as stale \
         from console_sessions s join admin_tokens t using (token_id) \
         where s.session_hash = $1 and s.expires_at > now() and t.revoked_at is null",
    )
    .bind(hash(presented).as_slice())
    .fetch_optional(pool)
    .await?;
    // The token is in use through the console: its last use says so, as for an API request.
    match row {
        Some(row) => super::caller_marked_used(pool, &row).await.map(Some),
        None => Ok(None),
    }
}

/// Ends the session `presented` names (signing out); nothing happens for an unknown one.
pub async fn close(pool: &PgPool, presented: &str) -> Result<()> {
    if well_formed(presented) {
        sqlx::query("delete from console_sessions where session_hash = $1")
            .bind(hash(presented).as_slice())
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// The CSRF token of the session `secret`: a hash of it under its own label, so it reveals
/// nothing of the secret and needs no storage.
pub fn csrf_token(secret: &str) -> String {
    let digest = Sha256::new().chain_update(b"wafleet-console-csrf\0").chain_update(secret.as_bytes()).finalize();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_secrets_are_random_well_formed_and_their_csrf_tokens_differ_from_them() {
        let (a, b) = (generate(), generate());
        assert!(well_formed(a.expose_secret()));
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_ne!(csrf_token(a.expose_secret()), csrf_token(b.expose_secret()));
        assert_eq!(csrf_token(a.expose_secret()), csrf_token(a.expose_secret()));
        assert!(!csrf_token(a.expose_secret()).contains(&a.expose_secret()[4..]));
        assert!(!well_formed("wfa_x") && !well_formed(&a.expose_secret()[..20]));
    }
}

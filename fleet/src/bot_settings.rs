//! Bot settings on a tenant row: `wafleet tenants add … --bot http --bot-url …` and
//! `wafleet tenants set-bot`. The `http` bot's signing secret is generated here, stored on the
//! tenant row through the definer function `wafleet_set_tenant_bot`, and handed back once so the
//! CLI can show it. It is never logged or audited.

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use sqlx::{PgPool, Postgres, Transaction};
use url::Url;
use wafleet_shared::CustomerRef;

use crate::db;
use crate::endpoints::Endpoints;
use crate::error::{BadBotUrl, Conflict, Error, InvalidInput, Result};
use crate::service;
use crate::tenant::{self, BotKind, NewTenant};

/// Prefix of generated bot secrets, so a leaked one is recognisable.
pub const SECRET_PREFIX: &str = "wfbot_";

/// The `http` bot part of `tenants add`.
#[derive(Clone, Debug)]
pub struct HttpBotSettings {
    /// The tenant's bot URL.
    pub url: Url,
    /// `bot_config.allow_other_chats`; `None` leaves it as it is.
    pub allow_other_chats: Option<bool>,
}

/// What `tenants add` did.
#[derive(Debug)]
pub struct AddOutcome {
    /// False when an identical tenant already existed.
    pub created: bool,
    /// The new `http` bot secret, to show once; `None` when none was generated.
    pub secret: Option<SecretString>,
}

/// A bot URL as stored: `http` or `https`, a host, no credentials, no fragment, ≤ 2048 bytes.
/// Where it may connect (addresses, ports) is the worker's decision at request time.
pub fn validate_bot_url(raw: &str) -> Result<Url> {
    if raw.len() > 2048 || raw.chars().any(char::is_whitespace) {
        return Err(BadBotUrl::Shape.into());
    }
    let url = Url::parse(raw).map_err(BadBotUrl::Unparsable)?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().filter(|h| !h.is_empty()).is_none() {
        return Err(BadBotUrl::NotHttp.into());
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(BadBotUrl::Credentials.into());
    }
    Ok(url)
}

/// Scheme, host and port of a bot URL: what the audit log keeps (a query may carry a token).
pub fn origin(raw: &str) -> String {
    Url::parse(raw).map(|u| u.origin().ascii_serialization()).unwrap_or_else(|_| "<invalid>".into())
}

/// A fresh secret: the prefix and 256 bits from the thread-local CSPRNG, base64url.
pub fn new_secret() -> SecretString {
    let bytes: [u8; 32] = rand::random();
    SecretString::from(format!("{SECRET_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// The `http` settings of `tenants add`, checked against the bot kind.
pub fn http_settings(bot: BotKind, bot_url: Option<&str>, allow_other_chats: bool) -> Result<Option<HttpBotSettings>> {
    match (bot, bot_url) {
        (BotKind::Http, Some(raw)) => {
            Ok(Some(HttpBotSettings { url: validate_bot_url(raw)?, allow_other_chats: Some(allow_other_chats) }))
        }
        (BotKind::Http, None) => Err(InvalidInput::HttpBotWithoutUrl.into()),
        (_, Some(_)) => Err(InvalidInput::BotUrlWithoutHttp.into()),
        (_, None) if allow_other_chats => Err(InvalidInput::AllowOtherChatsWithoutHttp.into()),
        (_, None) => Ok(None),
    }
}

/// `wafleet tenants add`, with the `http` bot's URL and a new secret set in the same transaction
/// as the tenant row (so the row never exists as an `http` tenant without them).
pub async fn add_tenant(
    pool: &PgPool,
    endpoints: &Endpoints,
    new: &NewTenant,
    account: &str,
    http: Option<&HttpBotSettings>,
) -> Result<AddOutcome> {
    let Some(http) = http else {
        let created = service::add_tenant_in_account(pool, endpoints, new, account).await?;
        return Ok(AddOutcome { created, secret: None });
    };
    if new.bot_kind != BotKind::Http {
        return Err(InvalidInput::BotUrlWithoutHttp.into());
    }
    let mut tx = pool.begin().await?;
    let (id, created) = tenant::insert_in_account(&mut tx, new, account).await?;
    let secret = if created {
        let secret = new_secret();
        set_in(&mut tx, &new.customer_ref, BotKind::Http, Some(&http.url), Some(&secret), http.allow_other_chats)
            .await?;
        Some(secret)
    } else {
        // ISOLATION: the existing row is read in its own scope, from here to the commit.
        db::scope_to_tenant(&mut tx, id).await?;
        let stored: Option<String> = sqlx::query_scalar("select bot_url from tenants where tenant_id = $1")
            .bind(id.get())
            .fetch_one(&mut *tx)
            .await?;
        if stored.as_deref() != Some(http.url.as_str()) {
            return Err(Conflict::BotUrl(new.customer_ref.clone()).into());
        }
        None
    };
    let connection = wafleet_shared::amqp::connect(&endpoints.amqp_url, "wafleet-cli").await?;
    let channel = connection.create_channel().await?;
    crate::topology::declare_tenant(&connection, &channel, &new.customer_ref, new.queue_type).await?;
    wafleet_shared::amqp::close(connection).await;
    tx.commit().await?;
    Ok(AddOutcome { created, secret })
}

/// A change of a tenant's bot (`wafleet tenants set-bot`).
#[derive(Clone, Debug)]
pub struct BotChange {
    /// The new bot kind.
    pub kind: BotKind,
    /// `http` only: the new URL (`None` keeps the stored one).
    pub url: Option<Url>,
    /// `http` only: generate a new secret even if one is stored.
    pub rotate_secret: bool,
    /// `http` only: set `bot_config.allow_other_chats`.
    pub allow_other_chats: Option<bool>,
}

/// Applies `change`; returns the new secret when one was generated (switching to `http`, or
/// `rotate_secret`). Leaving `http` deletes the URL and the secret.
pub async fn set_bot(pool: &PgPool, customer_ref: &CustomerRef, change: &BotChange) -> Result<Option<SecretString>> {
    if change.kind != BotKind::Http {
        if change.url.is_some() || change.rotate_secret || change.allow_other_chats.is_some() {
            return Err(InvalidInput::HttpOptionsWithoutHttp.into());
        }
        let mut tx = pool.begin().await?;
        set_in(&mut tx, customer_ref, change.kind, None, None, None).await?;
        tx.commit().await?;
        return Ok(None);
    }
    let current = tenant::load_by_ref(pool, customer_ref).await?;
    // ISOLATION: the tenant's own row, in its own read-only scope.
    let mut tx = db::begin_tenant_read_only(pool, current.id()).await?;
    let (has_url, has_secret): (bool, bool) =
        sqlx::query_as("select bot_url is not null, bot_secret is not null from tenants where tenant_id = $1")
            .bind(current.id().get())
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
    if change.url.is_none() && !has_url {
        return Err(InvalidInput::BotUrlRequired.into());
    }
    let secret = (change.rotate_secret || !has_secret).then(new_secret);
    let mut tx = pool.begin().await?;
    set_in(&mut tx, customer_ref, BotKind::Http, change.url.as_ref(), secret.as_ref(), change.allow_other_chats)
        .await?;
    tx.commit().await?;
    Ok(secret)
}

async fn set_in(
    tx: &mut Transaction<'static, Postgres>,
    customer_ref: &CustomerRef,
    kind: BotKind,
    url: Option<&Url>,
    secret: Option<&SecretString>,
    allow_other_chats: Option<bool>,
) -> Result<()> {
    let id: Option<i64> = sqlx::query_scalar("select wafleet_set_tenant_bot($1, $2, $3, $4, $5)")
        .bind(customer_ref.as_str())
        .bind(kind.as_str())
        .bind(url.map(Url::as_str))
        .bind(secret.map(|s| s.expose_secret().to_owned()))
        .bind(allow_other_chats)
        .fetch_one(&mut **tx)
        .await?;
    id.map(|_| ()).ok_or_else(|| Error::UnknownTenant(customer_ref.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_urls_must_be_plain_http_or_https_urls_with_a_host() {
        assert!(validate_bot_url("https://bot.example.com/hook?x=1").is_ok());
        assert!(validate_bot_url("http://127.0.0.1:8080/hook").is_ok());
        for bad in [
            "ftp://bot.example.com/",
            "https://u:p@bot.example.com/",
            "https://bot.example.com/#x",
            "bot.example.com",
            "https://",
            "mailto:bot@example.com",
        ] {
            assert!(validate_bot_url(bad).is_err(), "{bad}");
        }
        assert_eq!(origin("https://bot.example.com/hook?token=abc"), "https://bot.example.com");
    }

    #[test]
    fn secrets_are_prefixed_random_and_long_enough_for_the_database() {
        let (a, b) = (new_secret(), new_secret());
        assert!(a.expose_secret().starts_with(SECRET_PREFIX));
        assert!((32..=256).contains(&a.expose_secret().len()));
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn the_bot_url_belongs_to_the_http_bot_only() {
        assert!(http_settings(BotKind::Http, Some("https://bot.example.com/"), false).is_ok_and(|s| s.is_some()));
        assert!(http_settings(BotKind::Http, None, false).is_err());
        assert!(http_settings(BotKind::Echo, Some("https://bot.example.com/"), false).is_err());
        assert!(http_settings(BotKind::Echo, None, true).is_err());
        assert!(http_settings(BotKind::Rules, None, false).is_ok_and(|s| s.is_none()));
    }
}

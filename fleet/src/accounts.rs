//! WA Bridges accounts: one API key each, held as a reference (`env:VAR` or `file:/path`) and
//! resolved only in memory, never stored or logged. Every tenant belongs to exactly one account;
//! its replies are sent with that account's key, under that account's budget.
//!
//! ISOLATION: an account's client is only ever used for tenants whose own row names that account
//! (the scheduler picks per account, and the sender re-checks the tenant row before sending).

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::{PgPool, Row};

use crate::bridge_client::BridgeClient;
use crate::budget::{BucketSettings, BudgetConfig, EgressBucket};
use crate::error::{Conflict, Error, InvalidInput, Result, SetupError};

mod id;
mod policy;

pub use id::AccountId;
pub use policy::{AccountPolicy, DEFAULT_API_HOSTS, DEFAULT_SECRETS_DIR};

/// Name of the account created by the migration, whose key is `WA_API_KEY`.
pub const DEFAULT_ACCOUNT: &str = "default";

/// The environment variable of the default account's key; every `env:` reference must be it or
/// start with it and `_`, so no account can name another secret of the process
/// (`env:WAFLEET_SIGNING_KEY`).
pub const KEY_ENV_PREFIX: &str = "WA_API_KEY";

/// Where an account's API key is found. The key itself is never stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRef {
    /// An environment variable of the worker and CLI processes.
    Env(String),
    /// A file (for example a mounted Kubernetes secret); re-read on every account refresh, so a
    /// rotated file takes effect without a restart.
    File(PathBuf),
}

impl KeyRef {
    /// Parses `env:WA_API_KEY`, `env:WA_API_KEY_<SUFFIX>` or `file:/absolute/path` (where the
    /// file may lie is [`AccountPolicy`]'s to check).
    pub fn parse(raw: &str) -> Result<Self> {
        let bad = || Error::from(InvalidInput::KeyRef(raw.to_owned()));
        if let Some(name) = raw.strip_prefix("env:") {
            let valid = !name.is_empty()
                && name.len() <= 128
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && (name == KEY_ENV_PREFIX
                    || name.strip_prefix(KEY_ENV_PREFIX).is_some_and(|s| s.len() > 1 && s.starts_with('_')));
            return if valid { Ok(Self::Env(name.to_owned())) } else { Err(bad()) };
        }
        if let Some(path) = raw.strip_prefix("file:") {
            return if path.starts_with('/') && path.len() < 4096 { Ok(Self::File(path.into())) } else { Err(bad()) };
        }
        Err(bad())
    }

    /// Reads the key. `overrides` maps a reference (`env:WA_API_KEY`) to a key already read
    /// (the worker's validated `WA_API_KEY`). Errors name the reference, never a key.
    pub fn resolve(&self, overrides: &HashMap<String, SecretString>) -> Result<SecretString> {
        if let Some(key) = overrides.get(&self.to_string()) {
            return Ok(key.clone());
        }
        let key = match self {
            Self::Env(name) => std::env::var(name)
                .map_err(|_| SetupError::KeyUnset { reference: self.to_string(), variable: name.clone() })?,
            Self::File(path) => std::fs::read_to_string(path)
                .map_err(|source| SetupError::KeyUnreadable { reference: self.to_string(), source })?,
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(SetupError::KeyEmpty(self.to_string()).into());
        }
        Ok(SecretString::from(key.to_owned()))
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(name) => write!(f, "env:{name}"),
            Self::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

/// An account row (no secret in it).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Account {
    /// Database id.
    #[serde(serialize_with = "serialize_id")]
    pub id: AccountId,
    /// Unique name (`default` for `WA_API_KEY`).
    pub name: String,
    /// Where the key is found (`env:VAR` or `file:/path`).
    pub key_ref: String,
    /// WA Bridges base URL; `None` = `WA_API_BASE_URL`.
    pub base_url: Option<String>,
    /// Proxy budget per window; `None` = `WAFLEET_SEND_RATE_PER_MIN`.
    pub rate_per_min: Option<i32>,
    /// Bucket capacity; `None` = `WAFLEET_SEND_BURST`.
    pub burst: Option<i32>,
    /// Tenants in the account (offboarded ones included).
    pub tenants: i64,
    /// A test account (the simulator): its base URL may be loopback.
    pub test_account: bool,
}

fn serialize_id<S: serde::Serializer>(id: &AccountId, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_i64(id.get())
}

/// Settings of a new account.
#[derive(Clone, Debug)]
pub struct NewAccount {
    /// Unique name: `[a-z0-9][a-z0-9_.-]{0,63}`.
    pub name: String,
    /// Where the key is found.
    pub key_ref: KeyRef,
    /// WA Bridges base URL; `None` = `WA_API_BASE_URL`.
    pub base_url: Option<String>,
    /// Proxy budget per window; `None` = the worker's default.
    pub rate_per_min: Option<i32>,
    /// Bucket capacity; `None` = the worker's default.
    pub burst: Option<i32>,
    /// A test account (the simulator): its base URL may be loopback.
    pub test_account: bool,
}

/// Lists accounts (no key is read).
pub async fn list(pool: &PgPool) -> Result<Vec<Account>> {
    let rows = sqlx::query(
        "select a.account_id, a.name, a.key_ref, a.base_url, a.rate_per_min, a.burst, a.test_account, \
         (select count(*) from wafleet_fleet_bridges() f where f.account_id = a.account_id) as tenants \
         from accounts a order by a.name",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(Account {
                id: AccountId::from_db(row.try_get("account_id")?),
                name: row.try_get("name")?,
                key_ref: row.try_get("key_ref")?,
                base_url: row.try_get("base_url")?,
                rate_per_min: row.try_get("rate_per_min")?,
                burst: row.try_get("burst")?,
                tenants: row.try_get("tenants")?,
                test_account: row.try_get("test_account")?,
            })
        })
        .collect()
}

/// Adds an account through the definer function; idempotent for identical settings. Returns the
/// id and whether it is new. Its key reference and base URL must pass `policy`.
pub async fn add(pool: &PgPool, new: &NewAccount, policy: &AccountPolicy) -> Result<(AccountId, bool)> {
    if let Some(url) = &new.base_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(InvalidInput::AccountBaseUrl.into());
        }
    }
    policy.check(&new.key_ref, new.base_url.as_deref(), new.test_account)?;
    if new.rate_per_min.is_some_and(|r| r < 1) || new.burst.is_some_and(|b| b < 1) {
        return Err(InvalidInput::AccountRates.into());
    }
    let result =
        sqlx::query_as::<_, (i64, bool)>("select account_id, created from wafleet_add_account($1, $2, $3, $4, $5, $6)")
            .bind(&new.name)
            .bind(new.key_ref.to_string())
            .bind(new.base_url.as_deref().map(|u| u.trim_end_matches('/')))
            .bind(new.rate_per_min)
            .bind(new.burst)
            .bind(new.test_account)
            .fetch_one(pool)
            .await;
    match result {
        Ok((id, created)) => Ok((AccountId::from_db(id), created)),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("P0001") => Err(Conflict::Refused(db).into()),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23514") => {
            Err(InvalidInput::Account(db.constraint().unwrap_or("check failed").to_owned()).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// An account ready to call the API: its client (holding the resolved key) and its buckets.
pub struct AccountRuntime {
    /// Database id.
    pub id: AccountId,
    /// Name, used as the `account` metric label.
    pub name: String,
    /// Client with this account's key and base URL.
    pub client: BridgeClient,
    /// `/proxy/*` bucket (sends, status polls, canaries).
    pub proxy: BucketSettings,
    /// `POST /api/instances` bucket.
    pub provision: BucketSettings,
    /// Every other `/api/*` call.
    pub other: BucketSettings,
    /// The egress group every call also spends from (the per-IP limit).
    pub egress: EgressBucket,
    fingerprint: String,
    key: SecretString,
}

impl fmt::Debug for AccountRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountRuntime").field("id", &self.id).field("name", &self.name).finish_non_exhaustive()
    }
}

/// How the directory turns account rows into clients.
#[derive(Clone)]
pub struct DirectorySettings {
    /// `WA_API_BASE_URL`, for accounts without their own base URL.
    pub default_base_url: String,
    /// Keys already read, by reference (the worker passes its validated `WA_API_KEY` as
    /// `env:WA_API_KEY`).
    pub key_overrides: HashMap<String, SecretString>,
    /// Bound of one API request.
    pub timeout: Duration,
    /// Budget defaults and window.
    pub budget: BudgetConfig,
    /// The allow-lists every account is checked against before its key is read, so a row
    /// written past `accounts add` still cannot send a secret outside the secrets folder or to
    /// another host.
    pub policy: AccountPolicy,
}

/// Builds and caches one [`AccountRuntime`] per account; a refresh rebuilds only accounts whose
/// row or key changed.
pub struct AccountDirectory {
    pool: PgPool,
    settings: DirectorySettings,
    cache: Mutex<HashMap<AccountId, Arc<AccountRuntime>>>,
}

impl AccountDirectory {
    /// A directory reading accounts from `pool`.
    pub fn new(pool: PgPool, settings: DirectorySettings) -> Self {
        Self { pool, settings, cache: Mutex::new(HashMap::new()) }
    }

    /// The budget settings in use.
    pub fn budget(&self) -> &BudgetConfig {
        &self.settings.budget
    }

    /// Where account keys and base URLs may point (checked when an account is added or used).
    pub fn policy(&self) -> &AccountPolicy {
        &self.settings.policy
    }

    /// Re-reads every account. An account whose key cannot be resolved is reported in the
    /// second list (its replies wait) and does not stop the others.
    pub async fn refresh(&self) -> Result<(Vec<Arc<AccountRuntime>>, Vec<(String, Error)>)> {
        let accounts = list(&self.pool).await?;
        let mut ready = Vec::new();
        let mut failed = Vec::new();
        for account in accounts {
            match self.runtime_for(&account) {
                Ok(runtime) => ready.push(runtime),
                Err(e) => {
                    metrics::counter!(crate::metric::ACCOUNT_KEY_ERRORS_TOTAL, "account" => account.name.clone())
                        .increment(1);
                    failed.push((account.name, e));
                }
            }
        }
        Ok((ready, failed))
    }

    /// The runtime of one account, by id.
    pub async fn get(&self, id: AccountId) -> Result<Arc<AccountRuntime>> {
        let account =
            list(&self.pool).await?.into_iter().find(|a| a.id == id).ok_or(InvalidInput::UnknownAccount(id.get()))?;
        self.runtime_for(&account)
    }

    fn runtime_for(&self, account: &Account) -> Result<Arc<AccountRuntime>> {
        let key_ref = KeyRef::parse(&account.key_ref)?;
        self.settings.policy.check(&key_ref, account.base_url.as_deref(), account.test_account)?;
        let key = key_ref.resolve(&self.settings.key_overrides)?;
        let base_url = account.base_url.clone().unwrap_or_else(|| self.settings.default_base_url.clone());
        let fingerprint =
            format!("{}|{}|{:?}|{:?}|{}", account.key_ref, base_url, account.rate_per_min, account.burst, account.name);
        let mut cache = self.cache.lock().map_err(|_| SetupError::AccountCachePoisoned)?;
        if let Some(existing) = cache.get(&account.id) {
            if existing.fingerprint == fingerprint && existing.key.expose_secret() == key.expose_secret() {
                return Ok(existing.clone());
            }
        }
        let budget = &self.settings.budget;
        let runtime = Arc::new(AccountRuntime {
            id: account.id,
            name: account.name.clone(),
            client: BridgeClient::new(&base_url, key.clone(), self.settings.timeout)?,
            proxy: budget.proxy(account.rate_per_min, account.burst),
            provision: budget.provision(),
            other: budget.other(),
            egress: budget.egress_bucket(),
            fingerprint,
            key,
        });
        for warning in budget.account_warnings(&account.name, &runtime.proxy) {
            tracing::warn!(account = %account.name, "{warning}");
        }
        cache.insert(account.id, runtime.clone());
        Ok(runtime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_references_are_wa_api_key_variables_or_absolute_files_only() {
        assert_eq!(KeyRef::parse("env:WA_API_KEY").ok(), Some(KeyRef::Env("WA_API_KEY".into())));
        assert_eq!(KeyRef::parse("file:/run/secrets/wa").ok(), Some(KeyRef::File("/run/secrets/wa".into())));
        let bad = ["WA_API_KEY", "env:", "env:1X", "env:A-B", "file:relative", "sk_live_123", "vault:x"];
        // Only the WA_API_KEY family, never another secret of the process.
        let outside = ["env:WAFLEET_SIGNING_KEY", "env:DATABASE_URL", "env:WA_API_KEYX", "env:WA_API_KEY_", "env:X_1"];
        for bad in bad.iter().chain(&outside) {
            assert!(KeyRef::parse(bad).is_err(), "{bad} should be refused");
        }
        let eu2 = KeyRef::parse("env:WA_API_KEY_EU2").map(|k| k.to_string());
        assert_eq!(eu2.ok().as_deref(), Some("env:WA_API_KEY_EU2"));
    }

    #[test]
    fn overrides_win_and_errors_never_contain_the_key() {
        let mut overrides = HashMap::new();
        overrides.insert("env:WA_API_KEY".to_owned(), SecretString::from("sk_secret_value"));
        let key = KeyRef::Env("WA_API_KEY".into()).resolve(&overrides);
        assert_eq!(key.map(|k| k.expose_secret().to_owned()).ok().as_deref(), Some("sk_secret_value"));
        let missing = KeyRef::Env("WAFLEET_TEST_SURELY_UNSET_VARIABLE".into()).resolve(&HashMap::new());
        let message = missing.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("is not set") && !message.contains("sk_"), "{message}");
    }

    #[test]
    fn a_file_key_is_read_and_trimmed() {
        let path = std::env::temp_dir().join(format!("wafleet-key-{}", std::process::id()));
        std::fs::write(&path, "sk_from_file\n").unwrap_or_default();
        let key = KeyRef::File(path.clone()).resolve(&HashMap::new());
        assert_eq!(key.map(|k| k.expose_secret().to_owned()).ok().as_deref(), Some("sk_from_file"));
        let _ = std::fs::remove_file(path);
    }
}

//! WA Bridges accounts (`wafleet accounts`): the API keys (by reference) that send the tenants'
//! replies, each with its own send budget.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wafleet_fleet::accounts;

/// One account. Its key is never shown, only where it is read from.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Account {
    /// Unique name (`default` for `WA_API_KEY`).
    pub name: String,
    /// Where the key is read from: `env:NAME` or `file:/path`.
    pub key_ref: String,
    /// WA Bridges base URL; absent: `WA_API_BASE_URL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Proxy calls per budget window; absent: the fleet default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_min: Option<i32>,
    /// Budget bucket capacity; absent: the fleet default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<i32>,
    /// Tenants in the account (offboarded ones included).
    pub tenants: i64,
    /// A test account (the simulator): its base URL may be loopback.
    pub test_account: bool,
}

impl From<accounts::Account> for Account {
    fn from(a: accounts::Account) -> Self {
        Self {
            name: a.name,
            key_ref: a.key_ref,
            base_url: a.base_url,
            rate_per_min: a.rate_per_min,
            burst: a.burst,
            tenants: a.tenants,
            test_account: a.test_account,
        }
    }
}

/// `POST /v1/accounts`: the arguments of `wafleet accounts add`. Adding an identical account
/// again changes nothing (200).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// Unique name: `[a-z0-9][a-z0-9_.-]{0,63}`.
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$", example = "eu_accounts")]
    pub name: String,
    /// Where the key is read from: `env:WA_API_KEY`, `env:WA_API_KEY_<SUFFIX>` or
    /// `file:/absolute/path`. Never the key itself.
    #[schema(max_length = 512, example = "env:WA_API_KEY_EU")]
    pub key_ref: String,
    /// WA Bridges base URL (http or https); omitted: `WA_API_BASE_URL`.
    #[schema(max_length = 2048)]
    pub base_url: Option<String>,
    /// Proxy calls per budget window (at least 1); omitted: the fleet default.
    #[schema(minimum = 1)]
    pub rate_per_min: Option<i32>,
    /// Budget bucket capacity (at least 1); omitted: the fleet default.
    #[schema(minimum = 1)]
    pub burst: Option<i32>,
    /// A test account (the simulator): its base URL may be loopback.
    #[serde(default)]
    pub test_account: bool,
}

/// Answer of `POST /v1/accounts`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountAdded {
    /// The account.
    pub name: String,
    /// Whether it was created (false: an identical account existed).
    pub created: bool,
    /// Budget settings that look wrong for WA Bridges' limits, and a key this server cannot
    /// read (the worker must be able to).
    pub warnings: Vec<String>,
}

/// One page of accounts, by name.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountPage {
    /// The accounts, by name of this page.
    pub items: Vec<Account>,
    /// Opaque cursor of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The next page's URL (same limit, this cursor); absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

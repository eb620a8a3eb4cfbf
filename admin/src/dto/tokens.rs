//! Admin tokens (`wafleet admin-tokens`): names, scopes and use, never a token but once, in the
//! answer that created it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wafleet_fleet::admin_tokens;

/// A scope of an admin token (see docs/admin-api.md, Tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenScope {
    /// Fleet and tenant state.
    Read,
    /// Webhook URLs.
    Credentials,
    /// Message bodies and exports.
    Pii,
    /// Every change, and calls that spend send budget.
    Write,
    /// Token management.
    Admin,
}

impl From<TokenScope> for admin_tokens::Scope {
    fn from(s: TokenScope) -> Self {
        match s {
            TokenScope::Read => Self::Read,
            TokenScope::Credentials => Self::Credentials,
            TokenScope::Pii => Self::Pii,
            TokenScope::Write => Self::Write,
            TokenScope::Admin => Self::Admin,
        }
    }
}

/// An admin token, without its secret.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AdminToken {
    /// Its name; the audit log names its requests `admin-token:<name>`.
    pub name: String,
    /// What it may do (names of [`TokenScope`]).
    pub scopes: Vec<TokenScope>,
    /// Who created it (an operator, or `admin-token:<name>`).
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Last successful authentication (updated at most once a minute).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<admin_tokens::TokenInfo> for AdminToken {
    fn from(t: admin_tokens::TokenInfo) -> Self {
        let scopes = admin_tokens::Scope::ALL
            .into_iter()
            .filter(|s| t.scopes.contains(*s))
            .map(|s| match s {
                admin_tokens::Scope::Read => TokenScope::Read,
                admin_tokens::Scope::Credentials => TokenScope::Credentials,
                admin_tokens::Scope::Pii => TokenScope::Pii,
                admin_tokens::Scope::Write => TokenScope::Write,
                admin_tokens::Scope::Admin => TokenScope::Admin,
            })
            .collect();
        Self {
            name: t.name,
            scopes,
            created_by: t.created_by,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// `POST /v1/admin-tokens`: the arguments of `wafleet admin-tokens create`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Name: 1-64 characters `[a-z0-9_.-]`, starting with a letter or digit.
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,63}$", example = "ci-deploy")]
    pub name: String,
    /// Its scopes (one or more); only scopes the creating token holds itself.
    #[schema(min_items = 1)]
    pub scopes: Vec<TokenScope>,
}

/// Answer of `POST /v1/admin-tokens`: the token, shown in this answer only.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The token's metadata.
    #[serde(flatten)]
    pub info: AdminToken,
    /// The token (`wfa_…`); only its SHA-256 is stored. An Idempotency-Key replay leaves it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// One page of admin tokens, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AdminTokenPage {
    /// The admin tokens, oldest first of this page.
    pub items: Vec<AdminToken>,
    /// Opaque cursor of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The next page's URL (same limit, this cursor); absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

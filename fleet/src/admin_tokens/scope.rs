//! What an admin token may do: a set of scopes. Each scope is a kind of power, not a list of
//! endpoints, so a dashboard can read the fleet without holding a credential, a person's data or
//! a way to spend the send budget. The admin API maps every route to the scopes it needs.

use std::collections::BTreeSet;
use std::fmt;

use crate::error::{InvalidInput, Result};

/// One scope of an admin token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Fleet and tenant state, depth, dead-letter metadata, the audit log, stored bridge state.
    Read,
    /// Credentials: a tenant's webhook URL (anyone holding it can make the tenant's bot answer).
    Credentials,
    /// Personal data: message bodies (dead letters, replies) and tenant exports.
    Pii,
    /// Changes: tenants, accounts, limits, replay, purge, erase, and every call that spends send
    /// budget (provisioning, a live bridge status).
    Write,
    /// Admin token management.
    Admin,
}

impl Scope {
    /// Every scope, in the order they are listed.
    pub const ALL: [Scope; 5] = [Scope::Read, Scope::Credentials, Scope::Pii, Scope::Write, Scope::Admin];

    /// The name used by the CLI, the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Credentials => "credentials",
            Scope::Pii => "pii",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// Parses a scope name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A non-empty set of scopes. Serialized as the list of names.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    /// Every scope (what a full token of an earlier release became).
    pub fn all() -> Self {
        Self(Scope::ALL.into_iter().collect())
    }

    /// `read` alone (what a read-only token of an earlier release became).
    pub fn read_only() -> Self {
        Self([Scope::Read].into_iter().collect())
    }

    /// The given scopes; an empty set is refused (a token that may do nothing is a mistake).
    pub fn of(scopes: impl IntoIterator<Item = Scope>) -> Result<Self> {
        let set: BTreeSet<Scope> = scopes.into_iter().collect();
        if set.is_empty() {
            return Err(InvalidInput::TokenScopes(String::new()).into());
        }
        Ok(Self(set))
    }

    /// Parses `read,write,...` (the CLI's `--scopes`); unknown names and an empty list are refused.
    pub fn parse_list(raw: &str) -> Result<Self> {
        let mut set = BTreeSet::new();
        for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            set.insert(Scope::parse(name).ok_or_else(|| InvalidInput::TokenScopes(name.to_owned()))?);
        }
        Self::of(set).map_err(|_| InvalidInput::TokenScopes(raw.to_owned()).into())
    }

    /// Reads the database column; a name this release does not know is ignored (a newer
    /// release may add scopes; an older one never grants what it cannot name).
    pub fn from_db(names: &[String]) -> Self {
        Self(names.iter().filter_map(|n| Scope::parse(n)).collect())
    }

    /// The names, for the database column and for display.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|s| s.as_str()).collect()
    }

    /// Whether the set holds `scope`.
    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    /// The scopes of `required` this set lacks, in order.
    pub fn missing(&self, required: &[Scope]) -> Vec<Scope> {
        let mut missing: Vec<Scope> = required.iter().copied().filter(|s| !self.0.contains(s)).collect();
        missing.sort();
        missing.dedup();
        missing
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn scope_lists_parse_known_names_only_and_never_to_an_empty_set() {
        let s = Scopes::parse_list("write, read,read").unwrap();
        assert_eq!(s.names(), ["read", "write"]);
        for bad in ["", ",", "read,everything", "READ", "full"] {
            assert!(Scopes::parse_list(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Scopes::all().names(), ["read", "credentials", "pii", "write", "admin"]);
    }

    #[test]
    fn missing_names_exactly_the_scopes_a_call_lacks() {
        let s = Scopes::parse_list("read,write").unwrap();
        assert!(s.missing(&[Scope::Read, Scope::Write]).is_empty());
        assert_eq!(s.missing(&[Scope::Write, Scope::Pii, Scope::Credentials]), [Scope::Credentials, Scope::Pii]);
    }

    #[test]
    fn unknown_names_in_the_database_grant_nothing() {
        let s = Scopes::from_db(&["read".into(), "superpower".into()]);
        assert_eq!(s, Scopes::read_only());
    }
}

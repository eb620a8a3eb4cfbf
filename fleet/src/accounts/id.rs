//! An account's database identity: a plain id that grants nothing, kept apart from the accounts
//! repository so the tenant module can name a tenant's account without depending on it.

use std::fmt;

/// An account's database id. Plain id: safe to copy around.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(i64);

impl AccountId {
    /// Wraps an id read from the database.
    pub fn from_db(id: i64) -> Self {
        Self(id)
    }
    /// The raw id.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

//! The tenant's database identity. A plain id, unlike the capability types of [`super`]: it
//! names a tenant but grants nothing, so it may be copied, logged and passed around.

use std::fmt;

/// A tenant's database identity, used for foreign keys and RLS. Plain id: safe to copy around.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(i64);

impl TenantId {
    /// Wraps an id read from the database.
    pub fn from_db(id: i64) -> Self {
        Self(id)
    }
    /// The raw id.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

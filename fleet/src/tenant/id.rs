//! The tenant's database identity. A plain id, unlike the capability types of [`super`]: it
//! names a tenant but grants nothing, so it may be copied, logged and passed around, but it is
//! never made from a bare number outside this crate.

use std::fmt;

/// A tenant's database identity, used for foreign keys and RLS. Plain id: safe to copy around,
/// and serialized as the bare number, but never made from one outside this crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct TenantId(i64);

impl TenantId {
    /// Wraps an id read from the database.
    ///
    /// ISOLATION: crate-private, like [`load_in`]: outside the fleet crate a `TenantId` only
    /// comes out of a repository function (a lookup by ref, a tenant row, the scheduler), so no
    /// bare `i64` from a payload or a CLI argument can be turned into a `Tenant` and its bridge.
    /// `fleet/tests/ui/tenant_from_bare_id.rs` proves it.
    pub(crate) fn from_db(id: i64) -> Self {
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

//! Id newtypes. Each one validates on `parse` and exposes no mutable or public inner field, so a
//! value of the type is always well formed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted `customer_ref`, in bytes.
pub const MAX_REF_LEN: usize = 128;

/// A tenant's `customer_ref`: non-empty, at most 128 bytes, only `[A-Za-z0-9_.:-]`.
///
/// The allowed set excludes `#`, `*`, whitespace and control characters, so a ref can never act
/// as a routing-key wildcard, and keeps `.`/`:` because WA Bridges refs in the wild use them.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CustomerRef(String);

/// Why a string is not a valid `customer_ref`. The message never echoes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRef {
    /// The ref was empty.
    #[error("customer_ref is empty")]
    Empty,
    /// The ref was longer than [`MAX_REF_LEN`] bytes.
    #[error("customer_ref is longer than {MAX_REF_LEN} bytes")]
    TooLong,
    /// The ref contained a byte outside `[A-Za-z0-9_.:-]`.
    #[error("customer_ref may only contain A-Z, a-z, 0-9, '_', '.', ':' and '-'")]
    BadCharacter,
    /// The ref was `.` or `..`, which HTTP clients and proxies normalise out of URL paths, so
    /// a webhook URL for it could never work.
    #[error("customer_ref may not be '.' or '..'")]
    DotSegment,
}

impl CustomerRef {
    /// Validates `raw` as a customer ref.
    pub fn parse(raw: &str) -> Result<Self, InvalidRef> {
        if raw.is_empty() {
            return Err(InvalidRef::Empty);
        }
        if raw.len() > MAX_REF_LEN {
            return Err(InvalidRef::TooLong);
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-');
        if !raw.bytes().all(allowed) {
            return Err(InvalidRef::BadCharacter);
        }
        if raw == "." || raw == ".." {
            return Err(InvalidRef::DotSegment);
        }
        Ok(Self(raw.to_owned()))
    }

    /// The ref as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for CustomerRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for CustomerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CustomerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CustomerRef({})", self.0)
    }
}

/// A tenant's URL generation. Bumping it revokes the tenant's current webhook URL.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Generation(u64);

impl Generation {
    /// The generation of a freshly added tenant.
    pub const FIRST: Generation = Generation(1);

    /// Builds a generation from a database `bigint`; negative values are rejected.
    pub fn from_db(value: i64) -> Option<Self> {
        u64::try_from(value).ok().map(Self)
    }

    /// Builds a generation from its canonical decimal form: digits only, no sign, no leading
    /// zero, and within `i64` so the database can store it.
    pub fn parse_canonical(raw: &str) -> Option<Self> {
        let canonical = !raw.is_empty()
            && raw.bytes().all(|b| b.is_ascii_digit())
            && (raw == "0" || !raw.starts_with('0'))
            && raw.len() <= 19;
        if !canonical {
            return None;
        }
        let value: u64 = raw.parse().ok()?;
        i64::try_from(value).ok()?;
        Some(Self(value))
    }

    /// The value for the database.
    pub fn to_db(self) -> i64 {
        // parse_canonical and from_db both bound the value to i64.
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    /// The raw number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The id ingest gives an accepted event: a UUIDv7, fixed before publish, and the dedupe key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IngestId(uuid::Uuid);

impl IngestId {
    /// A new time-ordered id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// Wraps an existing UUID (read back from the database or a message).
    pub fn from_uuid(id: uuid::Uuid) -> Self {
        Self(id)
    }

    /// The UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl Default for IngestId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for IngestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refs_with_routing_wildcards_or_whitespace_are_rejected() {
        for bad in ["#", "*", "a b", "a\u{0}b", "cust#1", "ｃust", "a/b", "a%2Fb", ""] {
            assert!(CustomerRef::parse(bad).is_err(), "{bad:?} must be rejected");
        }
        assert_eq!(CustomerRef::parse(&"a".repeat(129)), Err(InvalidRef::TooLong));
        assert!(CustomerRef::parse(&"a".repeat(128)).is_ok());
        assert!(CustomerRef::parse("cust_8842.eu:1-x").is_ok());
    }

    #[test]
    fn generation_accepts_only_canonical_decimal() {
        assert_eq!(Generation::parse_canonical("21").map(Generation::get), Some(21));
        assert_eq!(Generation::parse_canonical("0").map(Generation::get), Some(0));
        for bad in ["021", "+1", "-1", "", "1e3", " 1", "9223372036854775808"] {
            assert!(Generation::parse_canonical(bad).is_none(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn ref_parser_accepts_exactly_the_documented_alphabet(s in "\\PC{0,140}") {
            let expected = !s.is_empty()
                && s.len() <= MAX_REF_LEN
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
                && s != "."
                && s != "..";
            prop_assert_eq!(CustomerRef::parse(&s).is_ok(), expected);
        }

        #[test]
        fn valid_refs_round_trip_through_serde(s in "[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,127}") {
            let r = CustomerRef::parse(&s).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let json = serde_json::to_string(&r).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: CustomerRef = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, r);
        }

        #[test]
        fn refs_one_byte_away_from_valid_are_refused_and_valid_ones_name_exactly_one_queue(
            valid in "[A-Za-z0-9_.:-]{0,130}",
            bad in prop::option::of("[#* /%\\x00\u{430}\u{ff41}\u{200b}+]"),
            at in any::<prop::sample::Index>(),
        ) {
            let mut s = valid;
            if let Some(bad) = &bad {
                let mut at = at.index(s.len() + 1);
                while !s.is_char_boundary(at) {
                    at -= 1;
                }
                s.insert_str(at, bad);
            }
            let expected = bad.is_none() && !s.is_empty() && s.len() <= MAX_REF_LEN && s != "." && s != "..";
            let parsed = CustomerRef::parse(&s);
            prop_assert_eq!(parsed.is_ok(), expected, "{:?}", s);
            if let Ok(r) = parsed {
                // A valid ref is never a routing-key wildcard, and its queue maps back to it alone.
                prop_assert!(!r.as_str().contains(['#', '*']));
                let queue = crate::topology::tenant_queue(&r);
                prop_assert_eq!(crate::topology::tenant_of_queue(&queue), Some(r));
            }
        }
    }
}

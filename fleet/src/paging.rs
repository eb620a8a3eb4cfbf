//! Opaque cursors for keyset pagination, shared by every paged listing of the CLI and the admin
//! API. A cursor names the last item a page returned (its sort key), never an offset, so rows
//! written or removed while a client pages cannot shift a page and make it skip or repeat one.
//!
//! The encoding is base64url of `<listing tag>:<key>`. The tag stops a cursor of one listing from
//! being taken by another; clients must treat the whole string as opaque.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::error::{InvalidInput, Result};

/// Longest cursor accepted: far above any key this crate encodes, and a bound on what a
/// client can make us decode.
pub const MAX_CURSOR_LEN: usize = 400;

/// Encodes `key` as a cursor of the listing `tag`.
pub fn encode(tag: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{tag}:{key}"))
}

/// The key of a cursor of the listing `tag`; [`InvalidInput::Cursor`] for anything else.
pub fn decode(tag: &str, cursor: &str) -> Result<String> {
    if cursor.len() > MAX_CURSOR_LEN {
        return Err(InvalidInput::Cursor.into());
    }
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix(tag).and_then(|rest| rest.strip_prefix(':')).map(str::to_owned))
        .ok_or_else(|| InvalidInput::Cursor.into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_is_refused_by_another_listing() {
        let c = encode("a1", "42");
        assert_eq!(decode("a1", &c).unwrap(), "42");
        assert!(decode("o1", &c).is_err(), "a cursor of another listing");
        assert!(decode("a", &c).is_err(), "a tag that is a prefix of another");
        for bad in ["", "!!", "YTE", &"A".repeat(MAX_CURSOR_LEN + 1)] {
            assert!(decode("a1", bad).is_err(), "{bad}");
        }
    }
}

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

/// One page of a listing computed in memory (queue depths, backlog summaries): the items whose
/// unique `key` sorts after the cursor's, in key order, at most `limit`, and the cursor of the
/// next page when more follow.
pub fn page_by_key<T>(
    mut items: Vec<T>,
    key: impl Fn(&T) -> String,
    tag: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<T>, Option<String>)> {
    let after = cursor.map(|c| decode(tag, c)).transpose()?;
    items.retain(|item| after.as_deref().is_none_or(|a| key(item).as_str() > a));
    items.sort_by_cached_key(|item| key(item));
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|last| encode(tag, &key(last)))
    } else {
        None
    };
    Ok((items, next))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pages_by_key_return_every_item_once_in_key_order() {
        let items: Vec<String> = ["c", "a", "e", "b", "d"].iter().map(|s| s.to_string()).collect();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = page_by_key(items.clone(), String::clone, "k1", cursor.as_deref(), 2).unwrap();
            seen.extend(page);
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, ["a", "b", "c", "d", "e"]);
        assert!(page_by_key(items, String::clone, "k1", Some(&encode("k2", "a")), 2).is_err());
    }

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

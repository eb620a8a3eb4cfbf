//! The on-disk record: framing, checksum and the scan that recovers records from a segment.
//!
//! This module owns the byte layout and nothing else. It must not touch files or the index: it
//! turns a record into bytes and bytes back into records, and says where a segment is damaged.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! magic [FF 57 53 31] | body_len u32 | crc32c u32 | body
//! body = ref_len u8 | customer_ref | spooled_at_unix_ms u64 | envelope bytes
//! ```
//!
//! The CRC covers `body_len` and `body`, so a damaged length is caught too. The magic starts with
//! 0xFF, which never occurs in UTF-8 (the envelope is JSON, the ref is ASCII): after a damaged
//! record the scan resynchronises on the next magic whose record checks out.

use wafleet_shared::CustomerRef;

/// Marks the start of every record.
pub const MAGIC: [u8; 4] = [0xFF, b'W', b'S', b'1'];
/// Magic, body length and CRC.
pub const HEADER_LEN: usize = 12;
/// Upper bound on a body. Far above any envelope (bodies are limited to a few hundred KiB), so a
/// larger length can only be damage, and the scan never allocates on a corrupt length.
pub const MAX_BODY_LEN: usize = 64 * 1024 * 1024;

/// CRC-32C: hardware-friendly and with better error detection than the zlib polynomial.
const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// A record read back from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The routing key the envelope was spooled for.
    pub customer_ref: CustomerRef,
    /// Wall-clock time of the append, for the oldest-age gauge after a restart.
    pub spooled_at_ms: u64,
    /// The envelope exactly as it would have been published.
    pub envelope: &'a [u8],
}

/// The encoded size of a record, or `None` when it would exceed [`MAX_BODY_LEN`].
pub fn encoded_len(customer_ref: &CustomerRef, envelope: &[u8]) -> Option<usize> {
    let body = 1 + customer_ref.as_str().len() + 8 + envelope.len();
    (body <= MAX_BODY_LEN).then_some(HEADER_LEN + body)
}

/// Appends one record to `out`. The caller has checked [`encoded_len`].
pub fn encode(customer_ref: &CustomerRef, spooled_at_ms: u64, envelope: &[u8], out: &mut Vec<u8>) {
    let key = customer_ref.as_str().as_bytes();
    // Refs are at most 128 bytes (validated by `CustomerRef::parse`), so the length fits a byte.
    let key_len = u8::try_from(key.len()).unwrap_or(u8::MAX);
    let body_len = 1 + usize::from(key_len) + 8 + envelope.len();
    let body_len = u32::try_from(body_len).unwrap_or(u32::MAX);
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(key_len);
    out.extend_from_slice(&key[..usize::from(key_len)]);
    out.extend_from_slice(&spooled_at_ms.to_le_bytes());
    out.extend_from_slice(envelope);
    let mut digest = CRC.digest();
    digest.update(&out[start + 4..start + 8]);
    digest.update(&out[start + HEADER_LEN..]);
    let crc = digest.finalize();
    out[start + 8..start + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the record at the start of `bytes`, with its total length, or `None` when no intact
/// record starts there (bad magic, length, checksum or ref, or cut short).
pub fn decode(bytes: &[u8]) -> Option<(Decoded<'_>, usize)> {
    let header = bytes.get(..HEADER_LEN)?;
    if header[..4] != MAGIC {
        return None;
    }
    let body_len = usize::try_from(u32::from_le_bytes(header[4..8].try_into().ok()?)).ok()?;
    if body_len > MAX_BODY_LEN {
        return None;
    }
    let body = bytes.get(HEADER_LEN..HEADER_LEN + body_len)?;
    let mut digest = CRC.digest();
    digest.update(&header[4..8]);
    digest.update(body);
    if digest.finalize() != u32::from_le_bytes(header[8..12].try_into().ok()?) {
        return None;
    }
    let key_len = usize::from(*body.first()?);
    let key = std::str::from_utf8(body.get(1..1 + key_len)?).ok()?;
    let customer_ref = CustomerRef::parse(key).ok()?;
    let stamp = body.get(1 + key_len..1 + key_len + 8)?;
    let spooled_at_ms = u64::from_le_bytes(stamp.try_into().ok()?);
    let envelope = &body[1 + key_len + 8..];
    Some((Decoded { customer_ref, spooled_at_ms, envelope }, HEADER_LEN + body_len))
}

/// An intact record found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Byte offset of the record in the segment.
    pub offset: u64,
    /// Total encoded length.
    pub len: u32,
    /// Its routing key.
    pub customer_ref: CustomerRef,
    /// When it was spooled.
    pub spooled_at_ms: u64,
}

/// Every intact record of a segment, and how many damaged stretches lie between them (a torn
/// tail counts as one).
pub fn scan(segment: &[u8]) -> (Vec<Found>, u64) {
    let mut found = Vec::new();
    let mut corrupt = 0;
    let mut at = 0;
    while at < segment.len() {
        if let Some((record, len)) = decode(&segment[at..]) {
            found.push(Found {
                offset: at as u64,
                len: u32::try_from(len).unwrap_or(u32::MAX),
                customer_ref: record.customer_ref,
                spooled_at_ms: record.spooled_at_ms,
            });
            at += len;
            continue;
        }
        // One damaged stretch: skip to the next magic that starts an intact record.
        corrupt += 1;
        let mut next = at + 1;
        loop {
            match find_magic(&segment[next..]) {
                None => return (found, corrupt),
                Some(relative) => {
                    next += relative;
                    if decode(&segment[next..]).is_some() {
                        break;
                    }
                    next += 1;
                }
            }
        }
        at = next;
    }
    (found, corrupt)
}

fn find_magic(bytes: &[u8]) -> Option<usize> {
    bytes.windows(MAGIC.len()).position(|window| window == MAGIC)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn cref(raw: &str) -> CustomerRef {
        CustomerRef::parse(raw).unwrap()
    }

    fn segment(records: &[(&str, &[u8])]) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut offsets = Vec::new();
        for (i, (key, envelope)) in records.iter().enumerate() {
            offsets.push(out.len());
            encode(&cref(key), 1_000 + i as u64, envelope, &mut out);
        }
        (out, offsets)
    }

    #[test]
    fn a_record_round_trips_with_its_ref_timestamp_and_envelope() {
        let envelope = br#"{"v":"1","ingest_id":"x","payload":{"body":"hi"}}"#;
        let mut bytes = Vec::new();
        encode(&cref("cust_a"), 42, envelope, &mut bytes);
        assert_eq!(Some(bytes.len()), encoded_len(&cref("cust_a"), envelope));
        let (decoded, len) = decode(&bytes).unwrap();
        assert_eq!(len, bytes.len());
        assert_eq!(decoded, Decoded { customer_ref: cref("cust_a"), spooled_at_ms: 42, envelope });
    }

    #[test]
    fn any_single_flipped_byte_is_detected() {
        let mut bytes = Vec::new();
        encode(&cref("cust_a"), 7, b"{\"a\":1}", &mut bytes);
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x01;
            assert!(decode(&damaged).is_none(), "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn a_torn_tail_keeps_every_record_before_it_and_counts_one_corrupt() {
        let (bytes, offsets) = segment(&[("cust_a", b"{\"n\":1}"), ("cust_b", b"{\"n\":2}"), ("cust_a", b"{\"n\":3}")]);
        let cut = offsets[2] + 9;
        let (found, corrupt) = scan(&bytes[..cut]);
        assert_eq!(found.iter().map(|f| f.spooled_at_ms).collect::<Vec<_>>(), [1_000, 1_001]);
        assert_eq!(corrupt, 1);
    }

    #[test]
    fn a_damaged_middle_record_is_skipped_and_the_scan_resyncs_on_the_next_one() {
        let (mut bytes, offsets) =
            segment(&[("cust_a", b"{\"n\":1}"), ("cust_b", b"{\"n\":2}"), ("cust_c", b"{\"n\":3}")]);
        for target in [offsets[1] + 2, offsets[1] + 5, offsets[1] + HEADER_LEN + 3, offsets[2] - 1] {
            let mut damaged = bytes.clone();
            damaged[target] ^= 0x40;
            let (found, corrupt) = scan(&damaged);
            let refs: Vec<&str> = found.iter().map(|f| f.customer_ref.as_str()).collect();
            assert_eq!((refs, corrupt), (vec!["cust_a", "cust_c"], 1), "damage at {target}");
            assert_eq!(found[1].offset, offsets[2] as u64);
        }
        // Garbage that contains a fake magic does not invent a record.
        bytes.splice(offsets[1]..offsets[1], MAGIC.iter().copied().chain([9, 9, 9, 9]));
        let (found, corrupt) = scan(&bytes);
        assert_eq!((found.len(), corrupt), (3, 1));
    }

    #[test]
    fn an_impossible_length_is_corrupt_not_an_allocation() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 8]);
        assert_eq!(scan(&bytes), (Vec::new(), 1));
        assert_eq!(scan(&[]), (Vec::new(), 0));
    }
}

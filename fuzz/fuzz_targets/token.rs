//! Fuzzes webhook token verification (`Keyring::verify`) with an arbitrary ref and token.
//!
//! The input is split at the first NUL: the part before is the claimed ref, the rest the token.
//! Checks: verification never panics; a ref the parser refuses never reaches `verify`; a token
//! only verifies if it is byte for byte the one `sign` makes for that ref and generation (so
//! each ref and generation has exactly one accepted spelling), and a token never verifies for a
//! different ref or under a keyring that lacks its key.

#![no_main]

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use wafleet_shared::{CustomerRef, Generation, Keyring, TokenError};

const CURRENT: &str = "k1:0123456789abcdef0123456789abcdef";
const OTHER: &str = "k2:fedcba9876543210fedcba9876543210";

fn ring(spec: &str) -> Option<Keyring> {
    Keyring::parse(&SecretString::from(spec.to_owned())).ok()
}

fuzz_target!(|data: &[u8]| {
    let (Some(current), Some(retired_only)) = (ring(CURRENT), ring(OTHER)) else { return };
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (raw_ref, rest) = data.split_at(split);
    let token = String::from_utf8_lossy(rest.get(1..).unwrap_or_default());
    let Ok(raw_ref) = std::str::from_utf8(raw_ref) else { return };
    let Ok(customer_ref) = CustomerRef::parse(raw_ref) else { return };

    // A token the fuzzer made up: under either ring it may only verify if it is exactly the
    // signature that ring makes for this ref (so also never under a ring lacking its key).
    for ring in [&current, &retired_only] {
        if let Ok(generation) = ring.verify(&customer_ref, &token) {
            assert_eq!(ring.sign(&customer_ref, generation), token, "a non-canonical or foreign token verified");
        }
    }

    // The real token for this ref, at a generation taken from the input.
    let generation = i64::try_from(data.len()).ok().and_then(Generation::from_db).unwrap_or(Generation::FIRST);
    let signed = current.sign(&customer_ref, generation);
    assert_eq!(current.verify(&customer_ref, &signed), Ok(generation));
    assert_eq!(retired_only.verify(&customer_ref, &signed), Err(TokenError::UnknownKey));
    // The same token in another tenant's URL never verifies.
    let other_ref = format!("{raw_ref}x");
    if let Ok(other_ref) = CustomerRef::parse(&other_ref) {
        assert_eq!(current.verify(&other_ref, &signed), Err(TokenError::BadMac));
    }
});

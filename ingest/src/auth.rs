//! Authentication of `/webhook/{customer_ref}/{token}` from the URL alone, before any body byte
//! is read.
//!
//! This module owns the rule "a URL names one tenant and proves it with a token". It must not
//! read the body, and it must not accept a ref or token in any spelling but the literal one: a
//! percent-encoded path is refused, because refs and tokens never need encoding
//! (`[A-Za-z0-9_.:-]` and base64url plus dots), and one spelling per ref keeps comparisons exact.

use wafleet_shared::{CustomerRef, Generation, Keyring};

use crate::error::Error;

/// Checks the URL's ref and token. `raw_path` is the request path as received (still encoded);
/// `url_ref` and `token` are the matched path segments.
pub fn authenticate(
    keyring: &Keyring,
    raw_path: &str,
    url_ref: &str,
    token: &str,
) -> Result<(CustomerRef, Generation), Error> {
    if raw_path.contains('%') {
        return Err(Error::UrlRef(None));
    }
    // ISOLATION: the ref parsed here, and only after its token verifies, is the tenant of the
    // event. The MAC covers the ref, so a token for A never verifies in B's URL.
    let customer_ref = CustomerRef::parse(url_ref).map_err(|e| Error::UrlRef(Some(e)))?;
    let generation = keyring.verify(&customer_ref, token).map_err(|err| {
        // The ref is unverified but well formed, so it is safe to name: operators need it to find
        // a bridge still carrying a revoked or rotated-out URL. Never the token.
        tracing::info!(claimed_ref = %customer_ref, error = %err, "webhook token refused");
        Error::Token(err)
    })?;
    Ok((customer_ref, generation))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use secrecy::SecretString;

    use super::*;

    fn ring() -> Keyring {
        Keyring::parse(&SecretString::from("k1:0123456789abcdef0123456789abcdef")).unwrap()
    }

    #[test]
    fn a_token_verifies_only_for_the_ref_it_was_signed_for() {
        let keyring = ring();
        let token = keyring.sign(&CustomerRef::parse("cust_a").unwrap(), Generation::FIRST);
        let ok = authenticate(&keyring, "/webhook/cust_a/t", "cust_a", &token).unwrap();
        assert_eq!((ok.0.as_str(), ok.1), ("cust_a", Generation::FIRST));
        assert!(matches!(authenticate(&keyring, "/webhook/cust_b/t", "cust_b", &token), Err(Error::Token(_))));
    }

    #[test]
    fn an_encoded_path_is_refused_even_for_a_valid_ref() {
        let keyring = ring();
        let token = keyring.sign(&CustomerRef::parse("cust_a").unwrap(), Generation::FIRST);
        let result = authenticate(&keyring, "/webhook/cust%5Fa/t", "cust_a", &token);
        assert!(matches!(result, Err(Error::UrlRef(None))));
    }
}

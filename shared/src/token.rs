//! Webhook URL tokens: `key_id.generation.mac`, where
//! `mac = base64url_nopad(HMAC-SHA256(secret, "wafleet-webhook-v1\0" ‖ ref ‖ "\0" ‖ u64_be(generation)))`.
//!
//! WA Bridges signs nothing, so the URL configured on each bridge is the credential. The NUL
//! separator and the fixed-width generation stop `("cust_884", 21)` and `("cust_8842", 1)` from
//! ever producing the same MAC input. A keyring holds several keys: the first signs, all verify,
//! so rotating keys never breaks bridges that still carry an older URL.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::ids::{CustomerRef, Generation};

const DOMAIN: &[u8] = b"wafleet-webhook-v1\0";
/// Shortest accepted signing secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Why `WAFLEET_SIGNING_KEY` could not be parsed. Never contains secret material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    /// The setting was empty.
    #[error("WAFLEET_SIGNING_KEY is empty: set it to `key_id:secret[,key_id:secret...]`")]
    Empty,
    /// An entry had no `:`.
    #[error("WAFLEET_SIGNING_KEY entry {0} is not `key_id:secret`")]
    Malformed(usize),
    /// A key id was outside `[a-z0-9_-]+`.
    #[error("WAFLEET_SIGNING_KEY entry {0}: key_id must match [a-z0-9_-]+")]
    BadKeyId(usize),
    /// A secret was shorter than [`MIN_SECRET_LEN`].
    #[error("WAFLEET_SIGNING_KEY entry {0}: secret must be at least {MIN_SECRET_LEN} bytes")]
    ShortSecret(usize),
    /// Two entries used the same key id.
    #[error("WAFLEET_SIGNING_KEY entry {0}: duplicate key_id")]
    DuplicateKeyId(usize),
}

/// Why a token was refused. Callers answer 401 for every variant; the variant is for metrics.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not three dot-separated parts, or a part is not in canonical form.
    #[error("malformed token")]
    Malformed,
    /// No key in the ring has this id (a retired key, or a forged one).
    #[error("unknown key id")]
    UnknownKey,
    /// The MAC does not match the ref and generation.
    #[error("bad signature")]
    BadMac,
}

struct SigningKey {
    id: String,
    secret: SecretBox<Vec<u8>>,
}

/// The signing keys, parsed from `WAFLEET_SIGNING_KEY`.
pub struct Keyring {
    keys: Vec<SigningKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish_non_exhaustive()
    }
}

impl Keyring {
    /// Parses `key_id:secret[,key_id:secret...]`. The first entry signs new URLs.
    pub fn parse(raw: &SecretString) -> Result<Self, KeyringError> {
        let raw = raw.expose_secret().trim();
        if raw.is_empty() {
            return Err(KeyringError::Empty);
        }
        let mut keys: Vec<SigningKey> = Vec::new();
        for (index, entry) in raw.split(',').enumerate() {
            let position = index + 1;
            let (id, secret) = entry.trim().split_once(':').ok_or(KeyringError::Malformed(position))?;
            let id_ok = !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
            if !id_ok {
                return Err(KeyringError::BadKeyId(position));
            }
            if secret.len() < MIN_SECRET_LEN {
                return Err(KeyringError::ShortSecret(position));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyringError::DuplicateKeyId(position));
            }
            keys.push(SigningKey { id: id.to_owned(), secret: SecretBox::new(Box::new(secret.as_bytes().to_vec())) });
        }
        Ok(Self { keys })
    }

    /// The id of the key that signs new URLs.
    pub fn signing_key_id(&self) -> &str {
        // parse guarantees at least one key.
        self.keys.first().map(|k| k.id.as_str()).unwrap_or_default()
    }

    /// The token for `customer_ref` at `generation`, signed with the first key.
    pub fn sign(&self, customer_ref: &CustomerRef, generation: Generation) -> String {
        let Some(key) = self.keys.first() else { return String::new() };
        let mac = URL_SAFE_NO_PAD.encode(mac_bytes(key, customer_ref, generation));
        format!("{}.{}.{}", key.id, generation, mac)
    }

    /// Checks `token` for `customer_ref` and returns the generation it was signed for.
    /// The MAC comparison is constant-time.
    pub fn verify(&self, customer_ref: &CustomerRef, token: &str) -> Result<Generation, TokenError> {
        let mut parts = token.split('.');
        let (Some(key_id), Some(generation), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let generation = Generation::parse_canonical(generation).ok_or(TokenError::Malformed)?;
        let presented = URL_SAFE_NO_PAD.decode(mac).map_err(|_| TokenError::Malformed)?;
        let key = self.keys.iter().find(|k| k.id == key_id).ok_or(TokenError::UnknownKey)?;
        let expected = mac_bytes(key, customer_ref, generation);
        if bool::from(expected.as_slice().ct_eq(presented.as_slice())) {
            Ok(generation)
        } else {
            Err(TokenError::BadMac)
        }
    }
}

fn mac_bytes(key: &SigningKey, customer_ref: &CustomerRef, generation: Generation) -> Vec<u8> {
    // HMAC accepts keys of any length, so new_from_slice cannot fail here.
    let mut mac = match HmacSha256::new_from_slice(key.secret.expose_secret()) {
        Ok(mac) => mac,
        Err(_) => return Vec::new(),
    };
    mac.update(DOMAIN);
    mac.update(customer_ref.as_str().as_bytes());
    mac.update(b"\0");
    mac.update(&generation.get().to_be_bytes());
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &str) -> Keyring {
        Keyring::parse(&SecretString::from(spec.to_owned())).unwrap_or_else(|e| panic!("{e}"))
    }
    fn r(s: &str) -> CustomerRef {
        CustomerRef::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }
    const S1: &str = "0123456789abcdef0123456789abcdef";
    const S2: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn signed_token_verifies_for_its_ref_and_generation_only() {
        let k = ring(&format!("k1:{S1}"));
        let token = k.sign(&r("cust_a"), Generation::FIRST);
        assert_eq!(k.verify(&r("cust_a"), &token), Ok(Generation::FIRST));
        assert_eq!(k.verify(&r("cust_b"), &token), Err(TokenError::BadMac));
        let forged_generation = token.replacen(".1.", ".2.", 1);
        assert_eq!(k.verify(&r("cust_a"), &forged_generation), Err(TokenError::BadMac));
    }

    #[test]
    fn refs_ending_in_digits_cannot_collide_across_generations() {
        let k = ring(&format!("k1:{S1}"));
        let a = k.sign(&r("cust_884"), Generation::parse_canonical("21").unwrap_or(Generation::FIRST));
        let b = k.sign(&r("cust_8842"), Generation::FIRST);
        let mac = |t: &str| t.rsplit('.').next().unwrap_or_default().to_owned();
        assert_ne!(mac(&a), mac(&b));
        // Neither token verifies for the other ref.
        assert!(k.verify(&r("cust_8842"), &a).is_err());
        assert!(k.verify(&r("cust_884"), &b).is_err());
        // Moving the digit between the ref and the generation fails too.
        let moved = format!("k1.1.{}", mac(&a));
        assert_eq!(k.verify(&r("cust_8842"), &moved), Err(TokenError::BadMac));
    }

    #[test]
    fn older_keys_verify_and_only_the_first_signs() {
        let old = ring(&format!("old:{S1}"));
        let rotated = ring(&format!("new:{S2},old:{S1}"));
        let old_token = old.sign(&r("t"), Generation::FIRST);
        assert_eq!(rotated.verify(&r("t"), &old_token), Ok(Generation::FIRST));
        assert!(rotated.sign(&r("t"), Generation::FIRST).starts_with("new.1."));
        let retired = ring(&format!("new:{S2}"));
        assert_eq!(retired.verify(&r("t"), &old_token), Err(TokenError::UnknownKey));
    }

    #[test]
    fn non_canonical_generations_and_shapes_are_malformed() {
        let k = ring(&format!("k1:{S1}"));
        let token = k.sign(&r("t"), Generation::FIRST);
        let mac = token.rsplit('.').next().unwrap_or_default();
        for bad in
            [format!("k1.01.{mac}"), format!("k1.+1.{mac}"), "k1.1".to_owned(), format!("k1.1.{mac}.x"), "".to_owned()]
        {
            assert_eq!(k.verify(&r("t"), &bad), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn keyring_rejects_bad_entries_without_echoing_secrets() {
        let parse = |s: &str| Keyring::parse(&SecretString::from(s.to_owned())).map(|_| ());
        assert_eq!(parse(""), Err(KeyringError::Empty));
        assert_eq!(parse("nocolon"), Err(KeyringError::Malformed(1)));
        assert_eq!(parse(&format!("K1:{S1}")), Err(KeyringError::BadKeyId(1)));
        assert_eq!(parse("k1:short"), Err(KeyringError::ShortSecret(1)));
        assert_eq!(parse(&format!("k1:{S1},k1:{S2}")), Err(KeyringError::DuplicateKeyId(2)));
        let msg = parse(&format!("k1:{S1},k2:tooshortsecret")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(!msg.contains("tooshortsecret"));
    }
}

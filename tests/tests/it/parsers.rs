//! Property tests of the three parsers that face untrusted bytes, with the same oracles as the
//! cargo-fuzz targets in `fuzz/` (see `scripts/fuzz-smoke.sh`): ingest's body parser, webhook
//! token verification and envelope decoding. They need no service, run in every `cargo test`,
//! and are the fuzz smoke's fallback (with `PROPTEST_CASES` raised) where libFuzzer cannot run.

use proptest::prelude::*;
use secrecy::SecretString;
use serde_json::Value;
use wafleet_ingest::payload::parse_object;
use wafleet_shared::{CustomerRef, Envelope, Generation, Keyring, TokenError};

const CURRENT: &str = "k1:0123456789abcdef0123456789abcdef";
const RETIRED: &str = "k2:fedcba9876543210fedcba9876543210";

fn ring(spec: &str) -> Keyring {
    Keyring::parse(&SecretString::from(spec.to_owned())).unwrap()
}

/// Bodies built from JSON fragments that matter here: refs at several depths, repeated and
/// escaped keys, deep nesting, broken UTF-8 and stray syntax.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b",".to_vec()),
        Just(b":".to_vec()),
        Just(b"\"customer_ref\"".to_vec()),
        Just(b"\"customer\\u005fref\"".to_vec()),
        Just(b"\"cust_a\"".to_vec()),
        Just(b"\"cust_b\"".to_vec()),
        Just(b"\"event\"".to_vec()),
        Just(b"null".to_vec()),
        Just(b"1e400".to_vec()),
        Just(b"-0".to_vec()),
        Just(vec![0xff]),
        Just(vec![0xc3, 0x28]),
        "[a-z0-9 \"\\\\]{0,6}".prop_map(String::into_bytes),
    ];
    prop_oneof![
        prop::collection::vec(fragment, 0..40).prop_map(|parts| parts.concat()),
        // Well-formed objects with one or two top-level refs.
        ("[a-z_]{1,8}", prop::option::of("[a-z_]{1,8}"), "[a-z_]{1,8}").prop_map(|(a, b, key)| {
            let second = b.map(|b| format!(",\"customer_ref\":\"{b}\"")).unwrap_or_default();
            format!("{{\"customer_ref\":\"{a}\",\"{key}\":{{\"customer_ref\":\"x\"}}{second}}}").into_bytes()
        }),
        (1usize..300).prop_map(|depth| format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth)).into_bytes()),
    ]
}

proptest! {
    #[test]
    fn whenever_ingest_accepts_a_body_every_json_reader_sees_the_same_tenant(bytes in body()) {
        if let Ok(object) = parse_object(&bytes) {
            let other: Value = serde_json::from_slice(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(object.customer_ref(), other.get("customer_ref"));
            // What ingest forwards is the body's own text, which reads as the same object.
            prop_assert_eq!(object.into_payload().to_value(), other);
        }
    }

    #[test]
    fn a_token_verifies_only_in_its_canonical_spelling_for_its_own_ref(
        raw_ref in "[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,19}",
        generation in 0i64..1_000_000,
        key_id in prop_oneof![Just("k1".to_owned()), Just("k2".to_owned()), "[a-z0-9]{1,3}"],
        generation_text in prop_oneof![Just(None), "[0-9+-]{1,4}".prop_map(Some)],
        mac_edit in prop_oneof![Just(0u8), Just(1u8), Just(2u8)],
    ) {
        let (current, retired) = (ring(CURRENT), ring(RETIRED));
        let customer_ref = CustomerRef::parse(&raw_ref).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let generation = Generation::from_db(generation).unwrap_or(Generation::FIRST);
        let signed = current.sign(&customer_ref, generation);
        prop_assert_eq!(current.verify(&customer_ref, &signed), Ok(generation));
        prop_assert_eq!(retired.verify(&customer_ref, &signed), Err(TokenError::UnknownKey));
        if let Ok(other) = CustomerRef::parse(&format!("{raw_ref}x")) {
            prop_assert_eq!(current.verify(&other, &signed), Err(TokenError::BadMac));
        }
        // Rebuild the token with another key id, generation spelling or MAC.
        let mut parts = signed.split('.').map(str::to_owned).collect::<Vec<_>>();
        parts[0] = key_id;
        if let Some(text) = generation_text {
            parts[1] = text;
        }
        match mac_edit {
            1 => parts[2].push('='),
            2 => parts[2] = parts[2].chars().rev().collect(),
            _ => {}
        }
        let edited = parts.join(".");
        if let Ok(verified) = current.verify(&customer_ref, &edited) {
            prop_assert_eq!(current.sign(&customer_ref, verified), edited);
        }
    }

    #[test]
    fn a_decoded_envelope_always_names_a_valid_ref_and_re_encodes_to_the_same_tenant(
        customer_ref in prop_oneof!["[A-Za-z0-9_.:-]{1,20}", "\\PC{0,10}", Just("a#b".to_owned()), Just(String::new())],
        version in prop_oneof![Just(Value::from("1")), Just(Value::from(1)), Just(Value::from("2")), Just(Value::Null)],
        generation in prop_oneof![Just(Value::from(1)), Just(Value::from(-1)), Just(Value::from("1")), Just(Value::from(u64::MAX))],
        auth in prop_oneof![Just("token"), Just("open"), Just("admin")],
    ) {
        let json = serde_json::json!({
            "v": version, "ingest_id": "01890a5d-ac96-774b-bcce-b302099a8057", "customer_ref": customer_ref,
            "generation": generation, "auth": auth, "received_at": "2026-05-01T12:00:00Z",
            "event_type": "message", "provider_message_id": null, "payload": {"customer_ref": "other"}
        });
        let bytes = serde_json::to_vec(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Ok(envelope) = Envelope::decode(&bytes) {
            prop_assert!(CustomerRef::parse(envelope.customer_ref().as_str()).is_ok());
            prop_assert_eq!(envelope.customer_ref().as_str(), customer_ref.as_str());
            let again = Envelope::decode(&envelope.to_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(again, envelope);
        }
    }
}

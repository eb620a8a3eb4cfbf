//! Fuzzes queue message decoding (`Envelope::decode`) with arbitrary bytes.
//!
//! Checks: decoding never panics; a decoded envelope always names a valid ref (the routing key
//! the worker compares with its queue); and it round-trips through `to_bytes` unchanged, so a
//! retry, dead-letter or replay republish cannot alter the tenant, its metadata or the payload.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wafleet_shared::{CustomerRef, Envelope};

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = Envelope::decode(data) else { return };
    let customer_ref = envelope.customer_ref().clone();
    assert!(CustomerRef::parse(customer_ref.as_str()).is_ok(), "decoded an invalid ref");
    let Some(again) = Envelope::decode(&envelope.to_bytes()).ok() else {
        panic!("an envelope this binary wrote does not decode");
    };
    let (before, after) = (envelope.into_v1(), again.into_v1());
    assert_eq!(after.customer_ref, customer_ref, "tenant changed on re-encode");
    assert_eq!(
        (
            after.ingest_id,
            after.generation,
            after.auth,
            after.received_at,
            &after.event_type,
            &after.provider_message_id
        ),
        (
            before.ingest_id,
            before.generation,
            before.auth,
            before.received_at,
            &before.event_type,
            &before.provider_message_id
        ),
        "envelope metadata changed on re-encode"
    );
    // The payload is kept as text, so it survives byte for byte.
    assert_eq!(after.payload, before.payload, "payload changed on re-encode");
});

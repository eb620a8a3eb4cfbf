//! Fuzzes ingest's body parser (`payload::parse_object`) with arbitrary bytes.
//!
//! Beyond "never panics, never overflows the stack", it checks the isolation property the parser
//! exists for: whenever ingest accepts a body, a plain `serde_json` reader (another layer) sees
//! the same top-level `customer_ref` and the same object in the payload ingest forwards, so no
//! two layers can read two different refs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wafleet_ingest::payload::parse_object;

fuzz_target!(|data: &[u8]| {
    let Ok(object) = parse_object(data) else { return };
    // Another layer reading the same bytes must agree on the ref and on the whole object.
    let Ok(Value::Object(other)) = serde_json::from_slice::<Value>(data) else {
        panic!("ingest accepted a body that serde_json refuses or reads as a non-object");
    };
    assert_eq!(object.customer_ref(), other.get("customer_ref"), "two layers read different refs");
    // What ingest forwards is the body's own text: every later reader parses the same bytes.
    let forwarded: Option<Value> = serde_json::from_str(object.into_payload().json()).ok();
    assert_eq!(forwarded, Some(Value::Object(other)), "the forwarded payload reads differently");
});

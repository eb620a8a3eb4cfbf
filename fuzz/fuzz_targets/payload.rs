//! Fuzzes ingest's body parser (`payload::parse_object`) with arbitrary bytes.
//!
//! Beyond "never panics, never overflows the stack", it checks the isolation property the parser
//! exists for: whenever ingest accepts a body, a plain `serde_json` reader (another layer) sees
//! the same object, so no two layers can read two different top-level `customer_ref`s.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wafleet_ingest::payload::parse_object;

fuzz_target!(|data: &[u8]| {
    let Ok(object) = parse_object(data) else { return };
    // Another layer reading the same bytes must agree on every top-level key, customer_ref first.
    let Ok(Value::Object(other)) = serde_json::from_slice::<Value>(data) else {
        panic!("ingest accepted a body that serde_json refuses or reads as a non-object");
    };
    assert_eq!(object.get("customer_ref"), other.get("customer_ref"), "two layers read different refs");
    assert_eq!(object, other, "two layers read different objects");
    // What ingest accepted survives a round trip through its own parser unchanged (floats
    // aside: serde_json parses them best-effort, so the last bit may move; no ref is a float).
    let Ok(bytes) = serde_json::to_vec(&object) else { return };
    let again = parse_object(&bytes).ok();
    assert_eq!(again.as_ref().map(|o| o.get("customer_ref")), Some(object.get("customer_ref")));
    if !object.values().any(has_float) {
        assert_eq!(again, Some(object), "re-encoded body parses differently");
    }
});

fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}

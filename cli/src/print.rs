//! Human and JSON output of `tenants show`, `rules list` and `depth`.

use wafleet_fleet::depth::{DepthSource, TenantDepth};
use wafleet_fleet::rules::Rule;
use wafleet_fleet::tenant::TenantDetail;

fn print_json<T: serde::Serialize + ?Sized>(value: &T) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// `tenants show`: one `field value` line each, or the JSON object.
pub fn print_tenant(t: &TenantDetail, json: bool) {
    if json {
        return print_json(t);
    }
    let cap = |c: Option<i32>| c.map_or_else(|| "no cap".to_owned(), |n| n.to_string());
    let at = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let lines = [
        ("customer_ref", t.customer_ref.to_string()),
        ("status", t.status.as_str().to_owned()),
        ("bridge", t.bridge.clone()),
        ("instance_id", t.instance_id.map_or_else(|| "-".to_owned(), |i| i.to_string())),
        ("bridge_state", t.bridge_state.clone()),
        ("account", t.account.clone()),
        ("bot", t.bot_kind.as_str().to_owned()),
        ("auth", t.auth_mode.as_str().to_owned()),
        ("queue_type", t.queue_type.as_str().to_owned()),
        ("queue_max_bytes", t.queue_max_bytes.map_or_else(|| "fleet default".to_owned(), |b| b.to_string())),
        ("generation", t.generation.to_db().to_string()),
        ("weight", t.limits.weight.to_string()),
        ("max_per_min", cap(t.limits.max_per_min)),
        ("max_per_day", cap(t.limits.max_per_day)),
        ("created_at", at(t.created_at)),
        ("updated_at", at(t.updated_at)),
    ];
    for (name, value) in lines {
        println!("{name:<16} {value}");
    }
}

/// `rules list`.
pub fn print_rules(rules: &[Rule], json: bool) {
    if json {
        return print_json(rules);
    }
    println!("{:>8}  {:<32} REPLY", "ID", "KEYWORD");
    for r in rules {
        println!("{:>8}  {:<32} {}", r.id, r.keyword, r.reply);
    }
}

/// `depth`.
pub fn print_depth(rows: &[TenantDepth], source: DepthSource, json: bool) {
    if json {
        return print_json(&serde_json::json!({ "source": source, "tenants": rows }));
    }
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    println!(
        "{:<32} {:>8} {:>8} {:>9} {:>6} {:>12} {:>9}",
        "CUSTOMER_REF", "READY", "UNACKED", "RETRYING", "DLQ", "OLDEST_AGE_S", "CONSUMERS"
    );
    for d in rows {
        println!(
            "{:<32} {:>8} {:>8} {:>9} {:>6} {:>12} {:>9}",
            d.customer_ref,
            d.ready,
            opt(d.unacked),
            d.retrying,
            d.dlq,
            d.oldest_age_secs.map_or_else(|| "-".to_owned(), |a| a.to_string()),
            opt(d.consumers)
        );
    }
    if source == DepthSource::PassiveDeclare {
        eprintln!("note: management API unavailable; unacked, oldest age use passive declares and are unknown");
    }
}

/// `dlq show`: metadata lines, or the JSON array (which alone can carry `--body`'s payloads).
pub fn print_dead_letters(letters: &[wafleet_fleet::dlq::DeadLetter], json: bool) {
    if json {
        return print_json(letters);
    }
    println!("{:<38} {:<14} {:<20} {:<12} {:>8}  LAST_ERROR", "INGEST_ID", "EVENT", "RECEIVED", "REASON", "ATTEMPTS");
    for d in letters {
        println!(
            "{:<38} {:<14} {:<20} {:<12} {:>8}  {}",
            d.ingest_id.as_deref().unwrap_or("-"),
            d.event_type.as_deref().unwrap_or("-"),
            d.received_at.map_or_else(|| "-".to_owned(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            d.reason,
            d.attempts,
            d.last_error
        );
    }
}

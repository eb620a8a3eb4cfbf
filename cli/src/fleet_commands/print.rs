//! Human and JSON output of `bridges reconcile` and `outbox`.

pub(super) fn print_reconcile(r: &wafleet_fleet::lifecycle::ReconcileReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(r).unwrap_or_default());
        return;
    }
    println!("accounts listed: {}", r.accounts.join(", "));
    for (name, e) in &r.unreachable_accounts {
        println!("account {name} could not be listed: {e}");
    }
    for b in &r.bridges_without_tenant {
        println!("bridge without tenant: {} (id {}, account {})", b.customer_ref, b.instance_id, b.account);
    }
    for b in &r.offboarded_with_bridge {
        println!(
            "bridge of an offboarded tenant: {} (id {}); run `wafleet tenants offboard` again",
            b.customer_ref, b.instance_id
        );
    }
    for t in &r.tenants_without_bridge {
        println!("tenant without bridge: {t} (run `wafleet provision {t} --base ...`)");
    }
    for m in &r.mismatches {
        println!(
            "mismatch: tenant {} (bridge {}) records instance {:?}; listed under that id: {:?}; listed id of its bridge: {:?}",
            m.customer_ref, m.bridge, m.recorded_instance_id, m.listed_customer_ref, m.listed_instance_id
        );
    }
    for f in &r.fixed {
        println!("fixed: {f}");
    }
    println!("note: webhook URLs cannot be compared: the WA Bridges API does not return them");
}

pub(super) fn print_outbox(s: &wafleet_fleet::outbox::OutboxSummary, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(s).unwrap_or_default());
        return;
    }
    println!(
        "{:<20} {:>8} {:>10} {:>12} {:>8}  PAUSED_UNTIL",
        "ACCOUNT", "PENDING", "SENDS/MIN", "BACKLOG_MIN", "TOKENS"
    );
    for a in &s.accounts {
        println!(
            "{:<20} {:>8} {:>10.1} {:>12.1} {:>8}  {}",
            a.account,
            a.pending,
            a.sends_per_minute,
            a.backlog_minutes,
            a.tokens.map_or_else(|| "-".into(), |t| format!("{t:.1}")),
            a.paused_until.map_or_else(|| "-".into(), |p| p.to_rfc3339())
        );
    }
    println!();
    println!(
        "{:<32} {:<12} {:<12} {:>8} {:>8} {:>8} {:>7} {:>9} {:>12}",
        "CUSTOMER_REF", "ACCOUNT", "BRIDGE", "PENDING", "SENDING", "UNKNOWN", "FAILED", "LAG_S", "BACKLOG_MIN"
    );
    for t in &s.tenants {
        println!(
            "{:<32} {:<12} {:<12} {:>8} {:>8} {:>8} {:>7} {:>9} {:>12.1}",
            t.customer_ref,
            t.account,
            t.bridge_state,
            t.pending,
            t.sending,
            t.unknown,
            t.failed,
            t.lag_secs.map_or_else(|| "-".into(), |l| format!("{l:.0}")),
            t.backlog_minutes
        );
    }
}

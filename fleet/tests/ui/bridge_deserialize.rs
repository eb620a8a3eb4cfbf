use wafleet_fleet::tenant::{Tenant, TenantBridge};

fn main() {
    let _b: TenantBridge = serde_json::from_value(serde_json::json!({"key": "bridge-of-b"})).unwrap();
    let _t: Tenant = serde_json::from_value(serde_json::json!({"bridge": "bridge-of-b"})).unwrap();
}

use std::str::FromStr;
use wafleet_fleet::tenant::TenantBridge;

fn main() {
    let _a = TenantBridge::new("bridge-of-b");
    let _b = TenantBridge::from("bridge-of-b".to_owned());
    let _c = TenantBridge::from_str("bridge-of-b");
    let _d: TenantBridge = "bridge-of-b".parse().unwrap();
    let _e = TenantBridge::default();
}

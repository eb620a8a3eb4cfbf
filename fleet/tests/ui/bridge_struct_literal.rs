use wafleet_fleet::tenant::TenantBridge;

fn main() {
    let _bridge = TenantBridge { key: "bridge-of-b".to_owned() };
}

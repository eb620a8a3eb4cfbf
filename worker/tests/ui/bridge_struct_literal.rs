use wafleet_worker::tenant::TenantBridge;

fn main() {
    let _bridge = TenantBridge { key: "bridge-of-b".to_owned() };
}

use wafleet_fleet::tenant::{Tenant, TenantId};

fn forge(id: TenantId) -> Tenant {
    Tenant { id }
}

fn main() {
    let _ = forge;
}

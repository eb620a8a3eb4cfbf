use wafleet_fleet::tenant::{Tenant, TenantId};

fn main() {
    let _t = Tenant { id: TenantId::from_db(2) };
}

// ISOLATION: a bare number (from a payload, an argument, a row read elsewhere) never becomes a
// `Tenant` and its bridge: `TenantId` has no public constructor or deserializer, and reading a
// tenant's row by id is crate-private. Outside the fleet crate a tenant comes from its ref.
use wafleet_fleet::db;
use wafleet_fleet::tenant::{self, TenantId};

async fn forge(pool: &sqlx::PgPool) {
    let id = TenantId::from_db(7);
    let mut tx = db::begin_tenant(pool, id).await.unwrap();
    let _t = tenant::load_in(&mut tx, id).await;
    let _parsed: TenantId = serde_json::from_value(serde_json::json!(7)).unwrap();
}

fn main() {
    let _ = forge;
}

use wafleet_fleet::tenant::{Tenant, TenantBridge};

async fn forge(pool: &sqlx::PgPool) {
    let _t = sqlx::query_as::<_, Tenant>("select 'b' as bridge").fetch_one(pool).await;
    let _b = sqlx::query_scalar::<_, TenantBridge>("select 'b'").fetch_one(pool).await;
}

fn main() {
    let _ = forge;
}

//! The live charts: total ready messages of the fleet, and one tenant's ready messages. The
//! admin process samples the management API only while a page asks (its chart polls every few
//! seconds), through [`super::samples::Samples`].

use std::time::Instant;

use axum::extract::State;
use axum::Json;
use wafleet_fleet::{depth, service};

use super::layout::PageError;
use super::samples::Series;
use crate::routes::{parse_ref, Path, RefPath};
use crate::state::AppState;

/// `GET /console/fleet/series`: total ready messages over the tenants' queues.
pub async fn fleet(State(state): State<AppState>) -> Result<Json<Series>, PageError> {
    let now = Instant::now();
    let value = if state.samples.due("fleet", now) {
        let (rows, _) = depth::depth(&state.pool, &state.endpoints).await?;
        Some(rows.iter().map(|d| d.ready as f64).sum())
    } else {
        None
    };
    Ok(Json(state.samples.add("fleet", value, now)))
}

/// `GET /console/tenants/{ref}/series`: the tenant's ready messages.
pub async fn tenant(State(state): State<AppState>, Path(path): Path<RefPath>) -> Result<Json<Series>, PageError> {
    let customer_ref = parse_ref(&path.customer_ref)?;
    // Only a known tenant gets a chart kept in memory: a new chart's first read, which refuses
    // an unknown tenant, comes before the chart is kept.
    let key = format!("tenant:{customer_ref}");
    let now = Instant::now();
    let value = if state.samples.due(&key, now) {
        let (d, _) = service::tenant_depth(&state.pool, &state.endpoints, &customer_ref).await?;
        Some(d.ready as f64)
    } else {
        None
    };
    Ok(Json(state.samples.add(&key, value, now)))
}

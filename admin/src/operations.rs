//! Asynchronous operations (offboarding): a row in `admin_operations` that moves pending →
//! running → succeeded or failed, with the steps reported so far. The run itself is
//! `service::offboard`, the CLI's; this module only records its progress and its audit record.
//!
//! A run renews its heartbeat while alive. A pending or running operation whose heartbeat stopped
//! (the process died) is reported as failed when read; offboarding is resumable, so the caller
//! starts it again.

use std::time::Duration;

use serde_json::json;
use sqlx::{PgPool, Row};
use uuid::Uuid;
use wafleet_fleet::audit::Entry;
use wafleet_fleet::offboard::OffboardStep;
use wafleet_fleet::{service, Result};
use wafleet_shared::CustomerRef;

use crate::auth::Caller;
use crate::dto::{Operation, OperationStatus, OperationStep};
use crate::problem::error_chain;
use crate::state::AppState;

/// How often a running operation renews its heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// A heartbeat older than this means the run is gone.
const STALE_AFTER_SECS: i64 = 120;

/// Records a pending offboarding of `customer_ref` and starts it in the background.
pub async fn start_offboard(
    state: &AppState,
    caller: &Caller,
    customer_ref: CustomerRef,
    dry_run: bool,
) -> Result<Operation> {
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into admin_operations (operation_id, kind, target, arguments, created_by, heartbeat_at) \
         values ($1, 'offboard', $2, $3, $4, now())",
    )
    .bind(id)
    .bind(customer_ref.as_str())
    .bind(json!({ "dry_run": dry_run }))
    .bind(caller.actor().as_str())
    .execute(&state.pool)
    .await?;
    let operation = get(&state.pool, id).await?.ok_or(wafleet_fleet::error::Conflict::OperationVanished(id))?;
    let task_state = state.clone();
    let caller = caller.clone();
    let run = state.tasks.spawn(async move { run_offboard(&task_state, &caller, id, customer_ref, dry_run).await });
    // A panic inside the run must not leave the operation running forever.
    let pool = state.pool.clone();
    state.tasks.spawn(async move {
        if let Err(e) = run.await {
            let _ = finish(&pool, id, OperationStatus::Failed, Some(&format!("the run panicked: {e}"))).await;
        }
    });
    Ok(operation)
}

async fn run_offboard(state: &AppState, caller: &Caller, id: Uuid, customer_ref: CustomerRef, dry_run: bool) {
    let pool = &state.pool;
    if let Err(e) = sqlx::query(
        "update admin_operations set status = 'running', started_at = now(), heartbeat_at = now() where operation_id = $1",
    )
    .bind(id)
    .execute(pool)
    .await
    {
        tracing::warn!(operation = %id, error = %error_chain(&e), "cannot mark the operation running");
    }
    let (steps_tx, mut steps_rx) = tokio::sync::mpsc::unbounded_channel::<OperationStep>();
    // ISOLATION: the run names one tenant, the one from the request path; `service::offboard` acts on
    // that tenant's own queues, rows and bridge only.
    let fleet = state.background_fleet.clone();
    let target = customer_ref.clone();
    let offboarding = async move {
        // The callback (and with it the sender) lives inside this future, so the step writer
        // below ends when the run does.
        let mut on_step = move |s: &OffboardStep| {
            let _ = steps_tx.send(OperationStep::from(s));
        };
        service::offboard(&fleet, &target, dry_run, &mut on_step).await
    };
    let recorder = async {
        let mut steps = Vec::new();
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                step = steps_rx.recv() => match step {
                    Some(step) => {
                        steps.push(step);
                        let _ = sqlx::query("update admin_operations set steps = $2, heartbeat_at = now() where operation_id = $1")
                            .bind(id)
                            .bind(json!(steps))
                            .execute(pool)
                            .await;
                    }
                    None => break,
                },
                _ = heartbeat.tick() => {
                    let _ = sqlx::query("update admin_operations set heartbeat_at = now() where operation_id = $1")
                        .bind(id)
                        .execute(pool)
                        .await;
                }
            }
        }
    };
    let (result, ()) = tokio::join!(offboarding, recorder);
    let entry = Entry::new("tenants offboard", Some(customer_ref.as_str()), json!({"dry_run": dry_run}));
    if let Err(e) = wafleet_fleet::audit::record_result(pool, &caller.actor(), &entry, &result, dry_run).await {
        tracing::warn!(operation = %id, error = %error_chain(&e), "the audit record of an offboarding could not be written");
    }
    let outcome = match &result {
        Ok(_) => finish(pool, id, OperationStatus::Succeeded, None).await,
        Err(e) => finish(pool, id, OperationStatus::Failed, Some(&e.to_string())).await,
    };
    if let Err(e) = outcome {
        tracing::warn!(operation = %id, error = %error_chain(&e), "cannot record the end of an operation");
    }
}

async fn finish(pool: &PgPool, id: Uuid, status: OperationStatus, error: Option<&str>) -> Result<()> {
    let status = match status {
        OperationStatus::Succeeded => "succeeded",
        _ => "failed",
    };
    sqlx::query(
        "update admin_operations set status = $2, error = $3, finished_at = now(), heartbeat_at = now() \
         where operation_id = $1 and status in ('pending', 'running')",
    )
    .bind(id)
    .bind(status)
    .bind(error.map(|e| e.chars().take(1000).collect::<String>()))
    .execute(pool)
    .await?;
    Ok(())
}

/// The operation `id`, if it exists. A pending or running one whose heartbeat stopped is marked
/// failed first.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Operation>> {
    sqlx::query(
        "update admin_operations set status = 'failed', finished_at = now(), \
         error = 'interrupted: the admin API stopped while it ran; offboarding is resumable, start it again' \
         where operation_id = $1 and status in ('pending', 'running') \
         and heartbeat_at < now() - make_interval(secs => $2)",
    )
    .bind(id)
    .bind(STALE_AFTER_SECS as f64)
    .execute(pool)
    .await?;
    let row = sqlx::query(
        "select operation_id, kind, target, arguments, status, steps, error, created_by, created_at, started_at, \
         finished_at from admin_operations where operation_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let arguments: serde_json::Value = row.try_get("arguments")?;
    let status = match row.try_get::<String, _>("status")?.as_str() {
        "pending" => OperationStatus::Pending,
        "running" => OperationStatus::Running,
        "succeeded" => OperationStatus::Succeeded,
        _ => OperationStatus::Failed,
    };
    Ok(Some(Operation {
        operation_id: row.try_get("operation_id")?,
        kind: row.try_get("kind")?,
        customer_ref: row.try_get("target")?,
        dry_run: arguments.get("dry_run").and_then(serde_json::Value::as_bool).unwrap_or(false),
        status,
        steps: serde_json::from_value(row.try_get("steps")?).unwrap_or_default(),
        error: row.try_get("error")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    }))
}

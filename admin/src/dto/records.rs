//! The audit log, asynchronous operations and health.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use wafleet_fleet::offboard;

/// One audit record.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    /// When.
    pub at: DateTime<Utc>,
    /// Who: an operator, or `admin-token:<name>`.
    pub operator: String,
    /// The command, e.g. `tenants offboard`.
    pub command: String,
    /// The tenant ref or account it acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Its (redacted) arguments.
    #[schema(value_type = Object)]
    pub arguments: serde_json::Value,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// Error or summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl From<wafleet_fleet::audit::Record> for AuditRecord {
    fn from(r: wafleet_fleet::audit::Record) -> Self {
        Self {
            at: r.at,
            operator: r.operator,
            command: r.command,
            target: r.target,
            arguments: r.arguments,
            // A check constraint on audit_log allows only these three.
            outcome: match r.outcome.as_str() {
                "ok" => AuditOutcome::Ok,
                "dry_run" => AuditOutcome::DryRun,
                _ => AuditOutcome::Error,
            },
            detail: r.detail,
        }
    }
}

/// How an audited command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// It did what it said.
    Ok,
    /// It failed (possibly half-way; `detail` says where).
    Error,
    /// A dry run: nothing changed.
    DryRun,
}

/// One page of the audit log, newest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// The records of this page.
    pub items: Vec<AuditRecord>,
    /// Opaque cursor of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The next page's URL (same filters, this cursor); absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Status of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationStatus {
    /// Accepted, not started.
    Pending,
    /// Running.
    Running,
    /// Finished.
    Succeeded,
    /// Failed (or cut by a restart); offboarding is resumable: start it again.
    Failed,
}

/// One step of an offboarding.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct OperationStep {
    /// 1-based step number.
    pub number: u8,
    /// What the step is.
    pub name: String,
    /// `done`, `already done` or `would do`.
    pub state: String,
    /// Counts and ids.
    pub detail: String,
}

impl From<&offboard::OffboardStep> for OperationStep {
    fn from(s: &offboard::OffboardStep) -> Self {
        Self { number: s.number, name: s.name.clone(), state: s.state.as_str().to_owned(), detail: s.detail.clone() }
    }
}

/// A long-running command (offboarding).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Operation {
    /// Its id.
    pub operation_id: Uuid,
    /// `offboard`.
    pub kind: String,
    /// The tenant it acts on.
    pub customer_ref: String,
    /// Whether it only reports.
    pub dry_run: bool,
    /// pending → running → succeeded or failed.
    pub status: OperationStatus,
    /// Steps reported so far.
    pub steps: Vec<OperationStep>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `admin-token:<name>`.
    pub created_by: String,
    /// Accepted at.
    pub created_at: DateTime<Utc>,
    /// Started at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// Finished at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

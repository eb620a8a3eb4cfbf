//! `wafleet_worker_tenant_consuming`: per active tenant, whether this worker consumes its queue.
//! Labels are bounded like every per-tenant metric (`wafleet_fleet::labels`); tenants past the
//! labelled top N share `other`, which is 1 only if every one of them is consumed.

use std::collections::{BTreeMap, HashMap, HashSet};

use wafleet_fleet::tenant::{TenantStatus, TenantSummary};
use wafleet_shared::CustomerRef;

use super::Running;
use crate::process::Processor;

/// The label values this session has exported, so a label that disappears can be cleared.
#[derive(Default)]
pub(super) struct ConsumingGauge {
    exported: HashSet<String>,
}

impl ConsumingGauge {
    /// Sets the gauge from the tenant list and the running consumers.
    pub(super) fn set(&mut self, processor: &Processor, tenants: &[TenantSummary], running: &HashMap<CustomerRef, Running>) {
        let mut values: BTreeMap<String, f64> = BTreeMap::new();
        for summary in tenants.iter().filter(|t| t.status == TenantStatus::Active) {
            let consuming = running.get(&summary.customer_ref).is_some_and(|r| !r.task.is_finished());
            let value = if consuming { 1.0 } else { 0.0 };
            let label = processor.tenant_label_peek(&summary.customer_ref);
            let slot = values.entry(label).or_insert(1.0);
            *slot = slot.min(value);
        }
        // The facade cannot delete a series: a label no longer exported (tenant offboarded or
        // disabled, or moved under `other`) reads 1, so a stale 0 can never page anyone.
        for gone in self.exported.iter().filter(|l| !values.contains_key(*l)) {
            metrics::gauge!(crate::metric::WORKER_TENANT_CONSUMING, "tenant" => gone.clone()).set(1.0);
        }
        for (label, value) in &values {
            metrics::gauge!(crate::metric::WORKER_TENANT_CONSUMING, "tenant" => label.clone()).set(*value);
        }
        self.exported = values.into_keys().collect();
    }

    /// The session ended (broker lost, database down, shutdown): nothing is consumed.
    pub(super) fn none_consumed(&self) {
        for label in &self.exported {
            metrics::gauge!(crate::metric::WORKER_TENANT_CONSUMING, "tenant" => label.clone()).set(0.0);
        }
    }
}

//! The one service layer of the fleet: every command of the `wafleet` CLI and every endpoint of
//! the admin API calls these functions, so the two cannot drift apart. The rules themselves live
//! in the domain modules (tenant, accounts, budget, outbox, lifecycle, …); this module sequences
//! them into commands and re-exports the ones that need no sequencing, so a caller needs no other
//! path.

mod inspect;
mod setup;
mod tenants;

pub use inspect::{
    depth_of, dlq_list, dlq_list_page, dlq_purge, dlq_show, dlq_show_page, outbox_rows, tenant_depth,
    ATTENTION_STATUSES,
};
pub use setup::{migrate, migrate_with};
pub use tenants::{
    add_rule, add_tenant, add_tenant_in_account, check_base_url, get_tenant, list_tenants, list_tenants_page,
    require_tenant, set_reply_in_groups, set_status, set_tenant_limits, set_tenant_queue_bound, signed_url,
    tenants_with_foreign_bridge_keys, update_tenant_limits, webhook_url, LimitsChange,
};

pub use crate::accounts::{add as add_account, list as list_accounts};
pub use crate::audit::{page as audit_page, record as record_audit, Actor, AuditCursor};
pub use crate::endpoints::Endpoints;
pub use crate::lifecycle::{bridge_status, provision, reconcile_bridges, rotate_url, Fleet};
pub use crate::offboard::offboard;
pub use crate::outbox::{summary as outbox_summary, OutboxCursor, OutboxRow};
pub use crate::retention::{erase_contact, export as export_tenant, run_once as run_retention};
pub use crate::rules::{list as list_rules, remove as remove_rule};
pub use crate::tenant::detail as show_tenant;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_api_callers_are_named_by_their_token_in_the_audit_log() {
        assert_eq!(Actor::admin_token("ci").as_str(), "admin-token:ci");
        assert_eq!(Actor::operator("  "), Actor::operator("unknown"));
    }
}

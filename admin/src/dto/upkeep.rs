//! Keyword rules of the `rules` bot, and the fleet's upkeep: retention runs and the bridge
//! reconciliation against WA Bridges.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wafleet_fleet::{lifecycle, retention, rules};

/// One keyword rule of a tenant's `rules` bot.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Rule {
    /// The rule's number within the fleet (removal takes it or the keyword).
    pub id: i64,
    /// Keyword, matched case-insensitively anywhere in a message.
    pub keyword: String,
    /// Reply text.
    pub reply: String,
    /// When the rule was first added.
    pub created_at: DateTime<Utc>,
}

impl From<rules::Rule> for Rule {
    fn from(r: rules::Rule) -> Self {
        Self { id: r.id, keyword: r.keyword, reply: r.reply, created_at: r.created_at }
    }
}

/// `POST .../rules`: the arguments of `wafleet rules add`. A rule with the same keyword gets the
/// new reply.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    /// Keyword (1-200 characters, trimmed).
    #[schema(min_length = 1, max_length = 200, example = "hours")]
    pub keyword: String,
    /// Reply text (not blank).
    #[schema(min_length = 1, max_length = 4096, example = "We are open 9-17.")]
    pub reply: String,
}

/// Answer of `DELETE .../rules/{rule}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RuleRemoved {
    /// The tenant.
    pub customer_ref: String,
    /// The keyword of the removed rule.
    pub keyword: String,
}

/// `POST /v1/retention/run`: the arguments of `wafleet retention run`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionRun {
    /// Delete processed events, log rows and finished outbox rows older than this many days.
    #[schema(minimum = 1, maximum = 3650, example = 30)]
    pub days: u32,
}

/// What a retention run deleted.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RetentionReport {
    /// Another run (a worker replica or the CLI) held the retention lock: nothing was done.
    pub skipped: bool,
    /// Tenants visited.
    pub tenants: u32,
    /// Rows deleted from `processed_events`.
    pub processed_events: u64,
    /// Rows deleted from the message log.
    pub message_log: u64,
    /// Finished outbox rows deleted.
    pub outbox: u64,
}

impl From<retention::RetentionReport> for RetentionReport {
    fn from(r: retention::RetentionReport) -> Self {
        Self {
            skipped: r.skipped,
            tenants: r.tenants,
            processed_events: r.processed_events,
            message_log: r.message_log,
            outbox: r.outbox,
        }
    }
}

/// `POST /v1/bridges/reconcile`: the arguments of `wafleet bridges reconcile`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileRequest {
    /// Record the listed id on tenants whose recorded id is missing or names another bridge
    /// (the only change it makes); without it, only report.
    #[serde(default)]
    pub fix: bool,
}

/// A bridge listed at WA Bridges.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ListedBridge {
    /// Account it was listed in.
    pub account: String,
    /// WA Bridges id.
    pub instance_id: i64,
    /// Its `customer_ref`.
    pub customer_ref: String,
}

/// A recorded bridge id that disagrees with WA Bridges' listing.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BridgeMismatch {
    /// The tenant.
    pub customer_ref: String,
    /// Its bridge key.
    pub bridge: String,
    /// The id recorded for the tenant.
    pub recorded_instance_id: Option<i64>,
    /// What WA Bridges lists under that id (another `customer_ref`), if anything.
    pub listed_customer_ref: Option<String>,
    /// The id WA Bridges lists for the tenant's bridge key, if any.
    pub listed_instance_id: Option<i64>,
}

/// An account whose bridges could not be listed.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct UnreachableAccount {
    /// The account.
    pub account: String,
    /// Why (key missing, WA Bridges error).
    pub error: String,
}

/// What the reconciliation found (and, with `fix`, changed).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ReconcileReport {
    /// Accounts listed.
    pub accounts: Vec<String>,
    /// Accounts that could not be listed.
    pub unreachable_accounts: Vec<UnreachableAccount>,
    /// Bridges no tenant of the account claims (still billed; never deleted automatically).
    pub bridges_without_tenant: Vec<ListedBridge>,
    /// Bridges of offboarded tenants that still exist.
    pub offboarded_with_bridge: Vec<ListedBridge>,
    /// Active or disabled tenants whose bridge is not listed.
    pub tenants_without_bridge: Vec<String>,
    /// Recorded ids that disagree with the listing.
    pub mismatches: Vec<BridgeMismatch>,
    /// What `fix` changed.
    pub fixed: Vec<String>,
}

impl From<lifecycle::ReconcileReport> for ReconcileReport {
    fn from(r: lifecycle::ReconcileReport) -> Self {
        let listed = |b: lifecycle::ForeignBridge| ListedBridge {
            account: b.account,
            instance_id: b.instance_id,
            customer_ref: b.customer_ref,
        };
        Self {
            accounts: r.accounts,
            unreachable_accounts: r
                .unreachable_accounts
                .into_iter()
                .map(|(account, error)| UnreachableAccount { account, error })
                .collect(),
            bridges_without_tenant: r.bridges_without_tenant.into_iter().map(listed).collect(),
            offboarded_with_bridge: r.offboarded_with_bridge.into_iter().map(listed).collect(),
            tenants_without_bridge: r.tenants_without_bridge,
            mismatches: r
                .mismatches
                .into_iter()
                .map(|m| BridgeMismatch {
                    customer_ref: m.customer_ref,
                    bridge: m.bridge,
                    recorded_instance_id: m.recorded_instance_id,
                    listed_customer_ref: m.listed_customer_ref,
                    listed_instance_id: m.listed_instance_id,
                })
                .collect(),
            fixed: r.fixed,
        }
    }
}

/// One page of rules, by keyword.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RulePage {
    /// The rules, by keyword of this page.
    pub items: Vec<Rule>,
    /// Opaque cursor of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The next page's URL (same limit, this cursor); absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

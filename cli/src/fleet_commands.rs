//! CLI commands (accounts, budget, bridge and tenant lifecycle, data lifecycle,
//! audit): argument parsing and output only. Each command calls one function of the service
//! layer ([`wafleet_fleet::service`]) and, when it changes anything, writes an audit record.

use clap::Subcommand;
use serde_json::json;
use wafleet_shared::CustomerRef;

use wafleet_fleet::accounts::{KeyRef, NewAccount};
use wafleet_fleet::audit::{self, Entry};
use wafleet_fleet::db;
use wafleet_fleet::error::{InvalidInput, Result};
use wafleet_fleet::lifecycle::Fleet;
use wafleet_fleet::service;

use crate::settings::Settings;

mod print;
use print::{print_outbox, print_reconcile};

/// Accounts, provisioning, bridges, outbox, retention and audit commands (flattened into `wafleet`).
#[derive(Subcommand, Debug)]
pub enum FleetCommand {
    /// Manage WA Bridges accounts (one API key and one budget each).
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Create the tenant's bridge at WA Bridges with its signed webhook URL (idempotent; stores
    /// the returned id). Needs WAFLEET_SIGNING_KEY and the account's key.
    Provision {
        /// The tenant's customer_ref.
        customer_ref: String,
        /// Public base URL of ingest, e.g. https://hooks.example.com.
        #[arg(long)]
        base: String,
    },
    /// Bridges at WA Bridges.
    #[command(subcommand)]
    Bridges(BridgesCommand),
    /// Outbox summary: backlog in minutes of budget, lag, unknown and failed replies.
    Outbox {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Data retention.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// The operator audit log, newest first.
    Audit {
        /// How many records.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Only records about this tenant ref or account.
        #[arg(long)]
        target: Option<String>,
        /// Continue below the last page: the cursor printed (on stderr) after a full page.
        #[arg(long)]
        cursor: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `wafleet accounts ...`.
#[derive(Subcommand, Debug)]
pub enum AccountsCommand {
    /// Add an account (idempotent for identical settings).
    Add {
        /// Account name ([a-z0-9][a-z0-9_.-]*).
        name: String,
        /// Where the API key is: env:VARIABLE or file:/absolute/path (never the key itself).
        #[arg(long)]
        key_ref: String,
        /// WA Bridges base URL (default: WA_API_BASE_URL).
        #[arg(long)]
        base_url: Option<String>,
        /// Proxy calls per minute for this account (default: WAFLEET_SEND_RATE_PER_MIN).
        #[arg(long)]
        rate_per_min: Option<i32>,
        /// Bucket capacity for this account (default: WAFLEET_SEND_BURST).
        #[arg(long)]
        burst: Option<i32>,
        /// A test account (the simulator): its --base-url may be loopback http(s).
        #[arg(long)]
        test_account: bool,
    },
    /// List accounts (key references only).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `wafleet bridges ...`.
#[derive(Subcommand, Debug)]
pub enum BridgesCommand {
    /// Compare every account's bridges with the tenants (read-only unless --fix).
    Reconcile {
        /// Record the listed ids on tenants whose recorded id is missing or stale.
        #[arg(long)]
        fix: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A bridge's session status (spends one proxy token of the tenant's account).
    Status {
        /// The tenant's customer_ref.
        customer_ref: String,
    },
}

/// `wafleet retention ...`.
#[derive(Subcommand, Debug)]
pub enum RetentionCommand {
    /// Delete processed events, message log and finished outbox rows older than the retention.
    Run {
        /// Days to keep (default: WAFLEET_RETENTION_DAYS).
        #[arg(long)]
        days: Option<u32>,
    },
}

pub(crate) fn parse_ref(raw: &str) -> Result<CustomerRef> {
    CustomerRef::parse(raw).map_err(|source| InvalidInput::CustomerRef { raw: raw.to_owned(), source }.into())
}

pub(crate) async fn app_pool(settings: &Settings) -> Result<sqlx::PgPool> {
    let pool = db::app_pool(&settings.database.admin_database_url, 3)?;
    db::check_role(&pool, db::Duty::Admin, settings.database.allow_unsafe_db_role).await?;
    Ok(pool)
}

/// The lifecycle context of the CLI: `WA_API_KEY` from the settings, other `env:` key
/// references from this process's environment; the budget is the fleet's, in Postgres.
pub fn fleet(pool: sqlx::PgPool, settings: &Settings) -> Result<Fleet> {
    Ok(Fleet::new(pool, settings.endpoints(), settings.directory_settings()?))
}

/// Writes the audit record of a finished command. A failure to write it is reported on stderr
/// and turns the exit code non-zero, but cannot undo the command.
pub async fn audit_result<T>(settings: &Settings, entry: &Entry, result: &Result<T>, dry_run: bool) -> Result<()> {
    let written = async {
        let pool = app_pool(settings).await?;
        audit::record_result(&pool, &settings.actor(), entry, result, dry_run).await
    }
    .await;
    if let Err(e) = &written {
        eprintln!("warning: the audit record of `{}` could not be written: {e}", entry.command);
    }
    written
}

/// Runs a top-level command.
// layout: the dispatch table of these commands, one match arm per subcommand (a
// service call, its audit entry and its printing); split, it would scatter one table.
pub async fn run_fleet(settings: &Settings, command: FleetCommand) -> Result<()> {
    let pool = app_pool(settings).await?;
    match command {
        FleetCommand::Accounts(AccountsCommand::Add { name, key_ref, base_url, rate_per_min, burst, test_account }) => {
            let entry = Entry::new(
                "accounts add",
                Some(&name),
                json!({"key_ref": key_ref, "base_url": base_url, "rate_per_min": rate_per_min, "burst": burst,
                       "test_account": test_account}),
            );
            let result = async {
                let key_ref = KeyRef::parse(&key_ref)?;
                let new = NewAccount { name: name.clone(), key_ref, base_url, rate_per_min, burst, test_account };
                let budget = settings.budget()?;
                for w in budget.account_warnings(&name, &budget.proxy(rate_per_min, burst)) {
                    eprintln!("warning: {w}");
                }
                if let Err(e) = new.key_ref.resolve(&Default::default()) {
                    eprintln!("warning: {e} here; the worker must be able to read it");
                }
                service::add_account(&pool, &new, &settings.account_policy()).await
            }
            .await;
            audit_result(settings, &entry, &result, false).await?;
            let (_, created) = result?;
            println!("{} account {name}", if created { "added" } else { "unchanged" });
        }
        FleetCommand::Accounts(AccountsCommand::List { json }) => {
            let accounts = service::list_accounts(&pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&accounts).unwrap_or_default());
            } else {
                println!(
                    "{:<20} {:<32} {:>9} {:>6} {:>8}  BASE_URL",
                    "NAME", "KEY_REF", "RATE/MIN", "BURST", "TENANTS"
                );
                for a in accounts {
                    let opt = |v: Option<i32>| v.map_or_else(|| "default".to_owned(), |v| v.to_string());
                    println!(
                        "{:<20} {:<32} {:>9} {:>6} {:>8}  {}",
                        a.name,
                        a.key_ref,
                        opt(a.rate_per_min),
                        opt(a.burst),
                        a.tenants,
                        a.base_url.as_deref().unwrap_or("(WA_API_BASE_URL)")
                    );
                }
            }
        }
        FleetCommand::Provision { customer_ref, base } => {
            let entry = Entry::new("provision", Some(&customer_ref), json!({"base": base}));
            let fleet = fleet(pool.clone(), settings)?;
            let result =
                async { service::provision(&fleet, &settings.signing_key()?, &parse_ref(&customer_ref)?, &base).await }
                    .await;
            audit_result(settings, &entry, &result, false).await?;
            let p = result?;
            if p.previous_instance_id == Some(p.instance_id) {
                println!("bridge of {customer_ref} already provisioned: instance {}", p.instance_id);
                eprintln!("note: WA Bridges returns an existing bridge unchanged; its webhook URL was not updated");
            } else {
                println!("provisioned {customer_ref}: instance {}", p.instance_id);
            }
        }
        FleetCommand::Bridges(BridgesCommand::Reconcile { fix, json }) => {
            let fleet = fleet(pool.clone(), settings)?;
            let result = service::reconcile_bridges(&fleet, fix).await;
            if fix {
                audit_result(settings, &Entry::new("bridges reconcile --fix", None, json!({})), &result, false).await?;
            }
            print_reconcile(&result?, json);
        }
        FleetCommand::Bridges(BridgesCommand::Status { customer_ref }) => {
            let fleet = fleet(pool.clone(), settings)?;
            println!("{}", service::bridge_status(&fleet, &parse_ref(&customer_ref)?).await?);
        }
        FleetCommand::Outbox { json } => {
            let summary = service::outbox_summary(&pool, &settings.budget()?, None).await?;
            print_outbox(&summary, json);
        }
        FleetCommand::Retention(RetentionCommand::Run { days }) => {
            let days = match days {
                Some(d) => d,
                None => settings.retention.retention_days,
            };
            let entry = Entry::new("retention run", None, json!({"days": days}));
            let result = service::run_retention(&pool, &settings.database.admin_database_url, days).await;
            audit_result(settings, &entry, &result, false).await?;
            let r = result?;
            if r.skipped {
                println!("another retention run holds the lock; nothing done");
            } else {
                println!(
                    "retention {days} days: {} tenants, deleted {} processed events, {} log rows, {} outbox rows",
                    r.tenants, r.processed_events, r.message_log, r.outbox
                );
            }
        }
        FleetCommand::Audit { limit, target, cursor, json } => {
            let after = cursor.as_deref().map(service::AuditCursor::parse).transpose()?;
            let limit = u32::try_from(limit.clamp(1, 10_000)).unwrap_or(50);
            let page = service::audit_page(&pool, limit, target.as_deref(), after).await?;
            let records = page.records;
            // On stderr, so `--json` output stays one array that scripts can parse.
            if let Some(next) = page.next {
                eprintln!("more: --cursor {}", next.encode());
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&records).unwrap_or_default());
            } else {
                for r in records {
                    println!(
                        "{} {:<12} {:<26} {:<20} {:<8} {}{}",
                        r.at.format("%Y-%m-%dT%H:%M:%SZ"),
                        r.operator,
                        r.command,
                        r.target.as_deref().unwrap_or("-"),
                        r.outcome,
                        r.arguments,
                        r.detail.map(|d| format!(" ({d})")).unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(())
}

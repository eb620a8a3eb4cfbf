//! Tenant commands beyond add/list/enable/disable: show, rotate-url, offboard, export, erase and
//! limits (flattened into `wafleet tenants`). Offboard and erase cannot be undone, so they run
//! only with `--yes` or after the operator types the ref at a prompt.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use wafleet_fleet::audit::Entry;
use wafleet_fleet::error::{InvalidInput, Result};
use wafleet_fleet::service::{self, LimitsChange};

use crate::confirm::confirm;
use crate::fleet_commands::{app_pool, audit_result, fleet, parse_ref};
use crate::settings::Settings;

/// Tenant commands flattened into `wafleet tenants`.
#[derive(Subcommand, Debug)]
pub enum TenantLifecycle {
    /// Show one tenant: status, bridge, account, bot, limits, queue, generation and timestamps.
    Show {
        /// The tenant's customer_ref.
        customer_ref: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke the tenant's webhook URL (next generation) and print the new one on the last line.
    RotateUrl {
        /// The tenant's customer_ref.
        customer_ref: String,
        /// Public base URL of ingest.
        #[arg(long)]
        base: String,
    },
    /// Stop, drain and tombstone a tenant step by step, deleting its bridge (irreversible;
    /// resumable: run it again).
    Offboard {
        /// The tenant's customer_ref.
        customer_ref: String,
        /// Only print what each step would do (needs no confirmation).
        #[arg(long)]
        dry_run: bool,
        /// Confirm without a prompt (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Print every row of the tenant as JSON lines.
    Export {
        /// The tenant's customer_ref.
        customer_ref: String,
        /// Write to this file instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Delete one contact's messages and replies, and redact its chat id in processed events
    /// (irreversible).
    Erase {
        /// The tenant's customer_ref.
        customer_ref: String,
        /// The contact's phone number (with country code) or JID.
        #[arg(long)]
        contact: String,
        /// Confirm without a prompt (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Whether the built-in bots (echo, rules) answer in group chats; off for every tenant until
    /// turned on. An http bot decides for itself.
    Groups {
        /// The tenant's customer_ref.
        customer_ref: String,
        /// `on` or `off`.
        #[arg(value_enum)]
        reply: Switch,
    },
    /// Change the tenant's fair-share weight, send caps or queue bound; limits not given stay
    /// as they are.
    Limits {
        /// The tenant's customer_ref.
        customer_ref: String,
        /// Consecutive sends per round-robin turn (1-100; a new tenant has 1).
        #[arg(long)]
        weight: Option<i32>,
        /// At most this many sends per minute (budget window), or `none` for no cap.
        #[arg(long, value_parser = parse_cap)]
        max_per_min: Option<Cap>,
        /// At most this many sends per day, or `none` for no cap.
        #[arg(long, value_parser = parse_cap)]
        max_per_day: Option<Cap>,
        /// Bound of the tenant's queue in bytes, or `default` for the fleet-wide bound.
        #[arg(long, value_parser = parse_queue_bound)]
        queue_max_bytes: Option<QueueBound>,
    },
}

/// A setting turned `on` or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// Turn it on.
    On,
    /// Turn it off.
    Off,
}

/// `--max-per-min` / `--max-per-day`: a positive count, or `none` (no cap).
#[derive(Clone, Copy, Debug)]
pub struct Cap(Option<i32>);

fn parse_cap(raw: &str) -> std::result::Result<Cap, String> {
    if raw == "none" {
        return Ok(Cap(None));
    }
    match raw.parse::<i32>() {
        Ok(n) if n > 0 => Ok(Cap(Some(n))),
        _ => Err("expected a positive number or `none`".into()),
    }
}

/// `--queue-max-bytes`: a positive byte count, or `default` (the fleet-wide bound).
#[derive(Clone, Copy, Debug)]
pub struct QueueBound(Option<u64>);

fn parse_queue_bound(raw: &str) -> std::result::Result<QueueBound, String> {
    if raw == "default" {
        return Ok(QueueBound(None));
    }
    match raw.parse::<u64>() {
        Ok(n) if n > 0 => Ok(QueueBound(Some(n))),
        _ => Err("expected a positive number of bytes or `default`".into()),
    }
}

/// `tenants limits`: the send limits and/or the queue bound, audited as one command.
async fn set_limits(
    settings: &Settings,
    pool: &sqlx::PgPool,
    customer_ref: &str,
    change: LimitsChange,
    queue_max_bytes: Option<QueueBound>,
) -> Result<()> {
    let mut arguments = change.audit_arguments();
    arguments.insert("queue_max_bytes".into(), json!(queue_max_bytes.map(|b| b.0)));
    let entry = Entry::new("tenants limits", Some(customer_ref), arguments.into());
    let result = async {
        let customer_ref = parse_ref(customer_ref)?;
        let limits = match change.is_empty() {
            true => None,
            false => Some(service::update_tenant_limits(pool, &customer_ref, change).await?),
        };
        if let Some(QueueBound(bytes)) = queue_max_bytes {
            service::set_tenant_queue_bound(pool, &settings.endpoints(), &customer_ref, bytes).await?;
        }
        Ok(limits)
    }
    .await;
    audit_result(settings, &entry, &result, false).await?;
    if let Some(l) = result? {
        let cap = |c: Option<i32>| c.map_or_else(|| "no cap".to_owned(), |n| n.to_string());
        println!(
            "limits of {customer_ref}: weight {}, per minute {}, per day {}",
            l.weight,
            cap(l.max_per_min),
            cap(l.max_per_day)
        );
    }
    if let Some(QueueBound(bytes)) = queue_max_bytes {
        match bytes {
            Some(bytes) => println!("queue bound of {customer_ref}: {bytes} bytes"),
            None => println!("queue bound of {customer_ref}: the fleet-wide default"),
        }
    }
    Ok(())
}

/// Refuses an irreversible command that was not confirmed, before anything else runs (no
/// database connection, no audit record: nothing happened).
fn confirmed(command: &TenantLifecycle) -> Result<()> {
    match command {
        TenantLifecycle::Offboard { customer_ref, dry_run: false, yes } => {
            confirm(*yes, &format!("offboarding tenant {customer_ref} (its bridge is deleted)"), customer_ref)
        }
        TenantLifecycle::Erase { customer_ref, yes, .. } => {
            confirm(*yes, &format!("erasing a contact's data of tenant {customer_ref}"), customer_ref)
        }
        TenantLifecycle::Limits {
            weight: None, max_per_min: None, max_per_day: None, queue_max_bytes: None, ..
        } => Err(InvalidInput::NoLimitGiven.into()),
        _ => Ok(()),
    }
}

/// Runs a tenant command.
// layout: the dispatch table of these commands, one match arm per subcommand (a service call,
// its audit entry and its printing); split, it would scatter one table.
pub async fn run_tenant_lifecycle(settings: &Settings, command: TenantLifecycle) -> Result<()> {
    confirmed(&command)?;
    let pool = app_pool(settings).await?;
    match command {
        TenantLifecycle::Show { customer_ref, json } => {
            let t = service::show_tenant(&pool, &parse_ref(&customer_ref)?).await?;
            crate::print::print_tenant(&t, json);
        }
        TenantLifecycle::RotateUrl { customer_ref, base } => {
            let entry = Entry::new("tenants rotate-url", Some(&customer_ref), json!({"base": base}));
            let result =
                async { service::rotate_url(&pool, &settings.signing_key()?, &parse_ref(&customer_ref)?, &base).await }
                    .await;
            audit_result(settings, &entry, &result, false).await?;
            let url = result?;
            eprintln!(
                "{customer_ref}: the previous URL no longer works; set this one on the bridge (WA Bridges dashboard)"
            );
            // The URL is a credential: stdout only, alone on the last line.
            println!("{url}");
        }
        TenantLifecycle::Offboard { customer_ref, dry_run, .. } => {
            let entry = Entry::new("tenants offboard", Some(&customer_ref), json!({"dry_run": dry_run}));
            let fleet = fleet(pool.clone(), settings)?;
            let mut print = |s: &wafleet_fleet::offboard::OffboardStep| {
                println!("[{}/6] {}: {} ({})", s.number, s.name, s.state.as_str(), s.detail);
            };
            let result =
                async { service::offboard(&fleet, &parse_ref(&customer_ref)?, dry_run, &mut print).await }.await;
            audit_result(settings, &entry, &result, dry_run).await?;
            result?;
            if dry_run {
                println!("dry run: nothing changed");
            } else {
                println!("offboarded {customer_ref}");
            }
        }
        TenantLifecycle::Export { customer_ref, output } => {
            let entry = Entry::new("tenants export", Some(&customer_ref), json!({"to_file": output.is_some()}));
            let result = async {
                let r = parse_ref(&customer_ref)?;
                match &output {
                    Some(path) => {
                        let mut file = std::fs::File::create(path)
                            .map_err(|source| InvalidInput::ExportFile { path: path.clone(), source })?;
                        service::export_tenant(&pool, &r, &mut file).await
                    }
                    None => service::export_tenant(&pool, &r, &mut std::io::stdout()).await,
                }
            }
            .await;
            audit_result(settings, &entry, &result, false).await?;
            for (table, n) in result? {
                eprintln!("exported {n} row(s) of {table}");
            }
        }
        TenantLifecycle::Erase { customer_ref, contact, .. } => {
            // The contact is personal data: the audit log records that an erasure happened, not whom.
            let entry = Entry::new("tenants erase", Some(&customer_ref), json!({"contact": contact}));
            let result = async { service::erase_contact(&pool, &parse_ref(&customer_ref)?, &contact).await }.await;
            audit_result(settings, &entry, &result, false).await?;
            let r = result?;
            println!(
                "erased: {} log row(s), {} outbox row(s); redacted {} processed event(s)",
                r.message_log, r.outbox, r.processed_events
            );
        }
        TenantLifecycle::Groups { customer_ref, reply } => {
            let reply = reply == Switch::On;
            let entry = Entry::new("tenants groups", Some(&customer_ref), json!({"reply": reply}));
            let result = async { service::set_reply_in_groups(&pool, &parse_ref(&customer_ref)?, reply).await }.await;
            audit_result(settings, &entry, &result, false).await?;
            result?;
            let state = if reply { "answer" } else { "do not answer" };
            println!("the built-in bots of {customer_ref} {state} in group chats");
        }
        TenantLifecycle::Limits { customer_ref, weight, max_per_min, max_per_day, queue_max_bytes } => {
            let change =
                LimitsChange { weight, max_per_min: max_per_min.map(|c| c.0), max_per_day: max_per_day.map(|c| c.0) };
            set_limits(settings, &pool, &customer_ref, change, queue_max_bytes).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn queue_max_bytes_takes_a_positive_count_or_default_and_nothing_else() {
        assert_eq!(parse_queue_bound("4096").unwrap().0, Some(4096));
        assert_eq!(parse_queue_bound("default").unwrap().0, None);
        for bad in ["0", "-1", "", "1k", "Default"] {
            assert!(parse_queue_bound(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn a_cap_is_a_positive_count_or_none() {
        assert_eq!(parse_cap("30").unwrap().0, Some(30));
        assert_eq!(parse_cap("none").unwrap().0, None);
        for bad in ["0", "-3", "", "None", "unlimited"] {
            assert!(parse_cap(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn offboard_and_erase_without_yes_are_refused_off_a_terminal_and_dry_runs_are_not() {
        // `cargo test` runs with stdin not a terminal in CI; skip where a developer's is one.
        if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            return;
        }
        let offboard = TenantLifecycle::Offboard { customer_ref: "acme".into(), dry_run: false, yes: false };
        let err = confirmed(&offboard).unwrap_err().to_string();
        assert!(err.contains("--yes") && err.contains("acme"), "{err}");
        let erase = TenantLifecycle::Erase { customer_ref: "acme".into(), contact: "+1555".into(), yes: false };
        assert!(confirmed(&erase).is_err());
        let dry = TenantLifecycle::Offboard { customer_ref: "acme".into(), dry_run: true, yes: false };
        assert!(confirmed(&dry).is_ok());
        let yes = TenantLifecycle::Offboard { customer_ref: "acme".into(), dry_run: false, yes: true };
        assert!(confirmed(&yes).is_ok());
    }
}

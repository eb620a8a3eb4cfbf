//! `wafleet admin-tokens ...`: bearer tokens of the admin API, over
//! [`wafleet_fleet::admin_tokens`]. A token is printed once, to stdout, alone on the last line.

use chrono::{DateTime, Utc};
use clap::Subcommand;
use secrecy::ExposeSecret as _;
use serde_json::json;
use wafleet_fleet::admin_tokens::{create, list, revoke, Scopes};
use wafleet_fleet::audit::Entry;
use wafleet_fleet::db;
use wafleet_fleet::error::Result;

use crate::settings::Settings;

/// `wafleet admin-tokens ...`.
#[derive(Subcommand, Debug)]
pub enum AdminTokensCommand {
    /// Create a token for the admin API; it is printed once, alone on the last line.
    Create {
        /// Token name ([a-z0-9][a-z0-9_.-]*); the audit log names it as admin-token:<name>.
        name: String,
        /// What the token may do, comma-separated: read (fleet state), credentials (webhook
        /// URLs), pii (message bodies, exports), write (changes, and calls that spend send budget),
        /// admin (tokens).
        #[arg(long, value_parser = parse_scopes, required_unless_present = "read_only")]
        scopes: Option<Scopes>,
        /// Shorthand for --scopes read.
        #[arg(long, conflicts_with = "scopes")]
        read_only: bool,
    },
    /// List tokens (names, scopes, last use; never a token).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke the live token with this name.
    Revoke {
        /// Token name.
        name: String,
    },
}

fn parse_scopes(raw: &str) -> std::result::Result<Scopes, String> {
    Scopes::parse_list(raw).map_err(|e| e.to_string())
}

/// Runs `wafleet admin-tokens ...`; create and revoke are audited like every mutating command.
pub async fn run_cli(settings: &Settings, command: AdminTokensCommand) -> Result<()> {
    let pool = db::app_pool(&settings.database.admin_database_url, 2)?;
    db::check_role(&pool, db::Duty::Admin, settings.database.allow_unsafe_db_role).await?;
    match command {
        AdminTokensCommand::Create { name, scopes, read_only: _ } => {
            // clap lets scopes be absent only with --read-only.
            let scopes = scopes.unwrap_or_else(Scopes::read_only);
            let entry = Entry::new("admin-tokens create", Some(&name), json!({"scopes": scopes.names()}));
            let result = create(&pool, &name, &scopes, settings.actor().as_str()).await;
            crate::fleet_commands::audit_result(settings, &entry, &result, false).await?;
            let (info, secret) = result?;
            eprintln!(
                "created admin token {} (scopes {}); it is shown once, below. Store it as a secret.",
                info.name, info.scopes
            );
            // The token is a credential: stdout only, alone on the last line.
            println!("{}", secret.expose_secret());
        }
        AdminTokensCommand::List { json } => {
            let tokens = list(&pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens).unwrap_or_default());
            } else {
                let at = |t: Option<DateTime<Utc>>| {
                    t.map_or_else(|| "-".to_owned(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                };
                println!(
                    "{:<24} {:<32} {:<20} {:<20} {:<20} CREATED_BY",
                    "NAME", "SCOPES", "CREATED", "LAST_USED", "REVOKED"
                );
                for t in tokens {
                    println!(
                        "{:<24} {:<32} {:<20} {:<20} {:<20} {}",
                        t.name,
                        t.scopes.to_string(),
                        at(Some(t.created_at)),
                        at(t.last_used_at),
                        at(t.revoked_at),
                        t.created_by
                    );
                }
            }
        }
        AdminTokensCommand::Revoke { name } => {
            let entry = Entry::new("admin-tokens revoke", Some(&name), json!({}));
            let result = revoke(&pool, &name).await;
            crate::fleet_commands::audit_result(settings, &entry, &result, false).await?;
            result?;
            println!("revoked admin token {name}");
        }
    }
    Ok(())
}

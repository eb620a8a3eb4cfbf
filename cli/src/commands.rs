//! The `wafleet` operator CLI: argument parsing and output. Every command calls one function
//! of [`wafleet_fleet::service`].

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use wafleet_shared::topology::QueueType;
use wafleet_shared::{AuthMode, CustomerRef};

use wafleet_fleet::audit::Entry;
use wafleet_fleet::db::{self, RoleSetup};
use wafleet_fleet::error::{InvalidInput, Result};
use wafleet_fleet::service;
use wafleet_fleet::tenant::{BotKind, NewTenant, TenantStatus};

use crate::settings::Settings;

/// The operator CLI of a wafleet fleet. Every setting below is a global flag and an environment
/// variable.
#[derive(Parser, Debug)]
#[command(
    name = "wafleet",
    version,
    about = "Operate a wafleet fleet: tenants, accounts, bridges, queues, dead letters and the audit log.",
    long_about = "Operate a wafleet fleet: tenants, accounts, bridges, queues, dead letters and the audit log.\n\n\
                  Every setting is a global flag and an environment variable. Listings take --json for \
                  scripts; commands that cannot be undone ask for the tenant ref on a terminal, or --yes."
)]
pub struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub settings: Settings,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run database migrations as the owner (MIGRATE_DATABASE_URL), create and grant the worker's
    /// role (DATABASE_URL) and the administration role (ADMIN_DATABASE_URL), declare the broker
    /// topology and apply its policies.
    Migrate,
    /// Manage tenants.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Print the signed webhook URL to configure on a tenant's bridge (alone on the last line).
    WebhookUrl {
        /// The tenant's customer_ref.
        customer_ref: String,
        /// Public base URL of ingest, e.g. https://hooks.example.com.
        #[arg(long)]
        base: String,
    },
    /// Manage keyword rules of the `rules` bot.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Inspect, replay and purge per-tenant dead letters (wa.dlq.<ref>).
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Per-tenant queue depth: ready, unacked, retrying, DLQ and oldest age, deepest first.
    Depth {
        /// Only these tenants (default: every tenant).
        customer_refs: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Accounts, provisioning, bridges, outbox backlog, retention and audit.
    #[command(flatten)]
    Fleet(crate::fleet_commands::FleetCommand),
    /// Bearer tokens of the admin API (wafleet-admin).
    #[command(subcommand)]
    AdminTokens(crate::admin_tokens::AdminTokensCommand),
}

/// `wafleet dlq ...`.
#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// Count, oldest age and reasons per tenant, largest first.
    List {
        /// Only this tenant.
        customer_ref: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show dead letters of one tenant: metadata, and the payload only with --body.
    Show {
        /// The tenant's customer_ref.
        customer_ref: String,
        /// How many messages to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Include the webhook payload (personal data: handle with care; JSON only).
        #[arg(long, requires = "json")]
        body: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move dead letters back into the tenant's own queue (only if it is active and of the same URL generation).
    Replay {
        /// The tenant's customer_ref.
        customer_ref: String,
        /// Replay every message.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// Replay these ingest ids (repeatable).
        #[arg(long)]
        id: Vec<String>,
        /// Only print what would move.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete every dead letter of a tenant.
    Purge {
        /// The tenant's customer_ref.
        customer_ref: String,
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
}

/// `wafleet tenants ...`.
#[derive(Subcommand, Debug)]
pub enum TenantsCommand {
    /// Add a tenant and declare its queue (idempotent for an identical tenant).
    Add(AddTenant),
    /// List tenants.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Disable a tenant: its messages are dropped with a warning, its queue is kept.
    Disable {
        /// The tenant's customer_ref.
        customer_ref: String,
    },
    /// Enable a disabled tenant.
    Enable {
        /// The tenant's customer_ref.
        customer_ref: String,
    },
    /// show, rotate-url, offboard, export, erase, groups, limits.
    #[command(flatten)]
    Lifecycle(crate::tenant_commands::TenantLifecycle),
    /// Change a tenant's bot; for `--bot http`, its URL and signing secret (shown once).
    SetBot(crate::bot_args::SetBotArgs),
}

/// Arguments of `tenants add`.
#[derive(Args, Debug)]
pub struct AddTenant {
    /// The tenant's customer_ref ([A-Za-z0-9_.:-], at most 128 bytes).
    pub customer_ref: String,
    /// The bridge's key at WA Bridges (its provisioning customer_ref). Defaults to the tenant's
    /// ref and must equal it: WA Bridges repeats it in every webhook body, and ingest refuses a
    /// body whose customer_ref is not the URL's ref.
    #[arg(long)]
    pub bridge: Option<String>,
    /// Bot: echo, rules or http.
    #[arg(long, default_value = "echo")]
    pub bot: String,
    /// `--bot http`: the tenant's own bot URL; a signing secret is generated and shown once.
    #[arg(long)]
    pub bot_url: Option<String>,
    /// `--bot http`: let the bot reply to other chats (still only on the tenant's own bridge).
    #[arg(long)]
    pub allow_other_chats: bool,
    /// Webhook auth: token (signed URL, default) or open (also accept the unsigned route).
    #[arg(long, default_value = "token")]
    pub auth: String,
    /// Queue type of wa.tenant.<ref>: quorum (default) or classic.
    #[arg(long, default_value = "quorum")]
    pub queue_type: String,
    /// WA Bridges account whose key and budget send the tenant's replies.
    #[arg(long, default_value = wafleet_fleet::accounts::DEFAULT_ACCOUNT)]
    pub account: String,
}

/// `wafleet rules ...`.
#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// Add or replace a keyword rule.
    Add {
        /// The tenant's customer_ref.
        customer_ref: String,
        /// Keyword (case-insensitive, matched anywhere in the message).
        keyword: String,
        /// Reply text.
        reply: String,
    },
    /// List a tenant's keyword rules, in keyword order.
    List {
        /// The tenant's customer_ref.
        customer_ref: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a keyword rule, named by its id (from `rules list`) or its keyword.
    Remove {
        /// The tenant's customer_ref.
        customer_ref: String,
        /// The rule's id or keyword.
        rule: String,
    },
}

fn parse_ref(raw: &str) -> Result<CustomerRef> {
    CustomerRef::parse(raw).map_err(|source| InvalidInput::CustomerRef { raw: raw.to_owned(), source }.into())
}

async fn app_pool(settings: &Settings) -> Result<sqlx::PgPool> {
    let pool = db::app_pool(&settings.database.admin_database_url, 2)?;
    db::check_role(&pool, db::Duty::Admin, settings.database.allow_unsafe_db_role).await?;
    Ok(pool)
}

/// Runs one CLI command. Output goes to stdout, warnings to stderr. Mutating commands are
/// audited: the core ones here, the others by `crate::fleet_commands` itself.
pub async fn run(cli: Cli) -> Result<()> {
    let entry = core_audit_entry(&cli.command);
    let settings = cli.settings.clone();
    let result = run_command(cli).await;
    if let Some(entry) = entry {
        crate::fleet_commands::audit_result(&settings, &entry, &result, false).await?;
    }
    result
}

/// The audit entry of a core command, if it changes anything or reads a credential or
/// personal data.
pub fn core_audit_entry(command: &Command) -> Option<Entry> {
    match command {
        Command::Migrate => Some(Entry::new("migrate", None, json!({}))),
        Command::Tenants(TenantsCommand::Add(a)) => Some(Entry::new(
            "tenants add",
            Some(&a.customer_ref),
            json!({"bridge": a.bridge.as_ref().unwrap_or(&a.customer_ref), "bot": a.bot, "auth": a.auth, "queue_type": a.queue_type, "account": a.account,
                   "bot_origin": a.bot_url.as_deref().map(wafleet_fleet::bot_settings::origin)}),
        )),
        // The secret is generated, never an argument; the URL is kept as its origin only.
        Command::Tenants(TenantsCommand::SetBot(s)) => Some(Entry::new(
            "tenants set-bot",
            Some(&s.customer_ref),
            json!({"bot": s.bot, "bot_origin": s.bot_url.as_deref().map(wafleet_fleet::bot_settings::origin),
                   "rotate_secret": s.rotate_secret, "allow_other_chats": s.allow_other_chats}),
        )),
        Command::Tenants(TenantsCommand::Disable { customer_ref }) => {
            Some(Entry::new("tenants disable", Some(customer_ref), json!({})))
        }
        Command::Tenants(TenantsCommand::Enable { customer_ref }) => {
            Some(Entry::new("tenants enable", Some(customer_ref), json!({})))
        }
        Command::Rules(RulesCommand::Add { customer_ref, keyword, .. }) => {
            Some(Entry::new("rules add", Some(customer_ref), json!({"keyword": keyword})))
        }
        Command::Rules(RulesCommand::Remove { customer_ref, rule }) => {
            Some(Entry::new("rules remove", Some(customer_ref), json!({"rule": rule})))
        }
        Command::Dlq(DlqCommand::Replay { customer_ref, all, id, dry_run }) if !dry_run => {
            Some(Entry::new("dlq replay", Some(customer_ref), json!({"all": all, "ids": id})))
        }
        Command::Dlq(DlqCommand::Purge { customer_ref, yes: true }) => {
            Some(Entry::new("dlq purge", Some(customer_ref), json!({})))
        }
        // Reading a credential or personal data is audited like a change.
        Command::WebhookUrl { customer_ref, base } => {
            Some(Entry::new("webhook-url", Some(customer_ref), json!({"base": base})))
        }
        Command::Dlq(DlqCommand::Show { customer_ref, limit, body: true, .. }) => {
            Some(Entry::new("dlq show", Some(customer_ref), json!({"limit": limit, "body": true})))
        }
        _ => None,
    }
}

/// Tenants added before a bridge key had to equal the ref lose every event; each migrate names them.
async fn warn_of_foreign_bridge_keys(settings: &Settings) -> Result<()> {
    let pool = app_pool(settings).await?;
    for t in service::tenants_with_foreign_bridge_keys(&pool).await? {
        eprintln!(
            "warning: tenant {} has bridge key {:?}: ingest refuses every event of that bridge (its body's \
             customer_ref is {:?}, not {}). Serve the bridge with a tenant named {:?}: \
             docs/runbooks.md#a-tenant-whose-bridge-key-differs-from-its-ref",
            t.customer_ref, t.bridge, t.bridge, t.customer_ref, t.bridge
        );
    }
    Ok(())
}

// layout: the dispatch table of the core commands, one match arm per subcommand (a service
// call and its printing); split, it would scatter one table over several functions.
async fn run_command(cli: Cli) -> Result<()> {
    let settings = &cli.settings;
    let endpoints = settings.endpoints();
    match cli.command {
        Command::Migrate => {
            let tiers = settings.retry_tiers()?;
            let bound = settings.tenant_queue_max_bytes;
            let roles = db::DutyRoles::from_urls(&settings.database_url, &settings.database.admin_database_url)?;
            match service::migrate_with(&settings.migrate_database_url, &roles, &endpoints, &tiers, bound).await? {
                RoleSetup::Granted => {
                    println!(
                        "migrations applied; roles {} (worker) and {} (admin) granted; topology and policies in place",
                        roles.worker.name, roles.admin.name
                    );
                    warn_of_foreign_bridge_keys(settings).await?;
                }
                RoleSetup::NeedsAdministrator(statements) => {
                    eprintln!(
                        "migrations applied, but this role may not create roles. An administrator must run these, \
                         then `wafleet migrate` again to grant them:"
                    );
                    for s in statements {
                        println!("{s};");
                    }
                }
            }
        }
        Command::Tenants(TenantsCommand::Add(args)) => {
            let new = NewTenant {
                customer_ref: parse_ref(&args.customer_ref)?,
                bridge: args.bridge.unwrap_or_else(|| args.customer_ref.clone()),
                bot_kind: BotKind::parse(&args.bot)?,
                auth_mode: AuthMode::parse(&args.auth).ok_or_else(|| InvalidInput::AuthOption(args.auth.clone()))?,
                queue_type: QueueType::parse(&args.queue_type)
                    .ok_or_else(|| InvalidInput::QueueTypeOption(args.queue_type.clone()))?,
            };
            let pool = app_pool(settings).await?;
            let http = wafleet_fleet::bot_settings::http_settings(
                new.bot_kind,
                args.bot_url.as_deref(),
                args.allow_other_chats,
            )?;
            let outcome =
                wafleet_fleet::bot_settings::add_tenant(&pool, &endpoints, &new, &args.account, http.as_ref()).await?;
            println!("{} {}", if outcome.created { "added" } else { "unchanged" }, new.customer_ref);
            crate::bot_args::print_secret(outcome.secret.as_ref());
        }
        Command::Tenants(TenantsCommand::List { json }) => {
            let pool = app_pool(settings).await?;
            let tenants = service::list_tenants(&pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tenants).unwrap_or_default());
            } else {
                println!(
                    "{:<32} {:<10} {:<4} {:<6} {:<8} {:<6} BRIDGE",
                    "CUSTOMER_REF", "STATUS", "GEN", "AUTH", "QUEUE", "BOT"
                );
                for t in tenants {
                    println!(
                        "{:<32} {:<10} {:<4} {:<6} {:<8} {:<6} {}",
                        t.customer_ref.as_str(),
                        t.status.as_str(),
                        t.generation.to_db(),
                        t.auth_mode.as_str(),
                        t.queue_type.as_str(),
                        t.bot_kind.as_str(),
                        t.bridge
                    );
                }
            }
        }
        Command::Tenants(TenantsCommand::Disable { customer_ref }) => {
            let pool = app_pool(settings).await?;
            service::set_status(&pool, &parse_ref(&customer_ref)?, TenantStatus::Disabled).await?;
            println!("disabled {customer_ref}");
        }
        Command::Tenants(TenantsCommand::Enable { customer_ref }) => {
            let pool = app_pool(settings).await?;
            service::set_status(&pool, &parse_ref(&customer_ref)?, TenantStatus::Active).await?;
            println!("enabled {customer_ref}");
        }
        Command::WebhookUrl { customer_ref, base } => {
            let key = settings.signing_key()?;
            let pool = app_pool(settings).await?;
            let (url, status) = service::webhook_url(&pool, &key, &parse_ref(&customer_ref)?, &base).await?;
            if status != TenantStatus::Active {
                eprintln!("warning: tenant {customer_ref} is {}; events sent to this URL are dropped", status.as_str());
            }
            // The URL is a credential: it goes to stdout only, alone on the last line.
            println!("{url}");
        }
        Command::Dlq(command) => run_dlq(settings, command).await?,
        Command::Fleet(command) => crate::fleet_commands::run_fleet(settings, command).await?,
        Command::AdminTokens(command) => crate::admin_tokens::run_cli(settings, command).await?,
        Command::Tenants(TenantsCommand::SetBot(args)) => {
            let change = args.change()?;
            let pool = app_pool(settings).await?;
            let secret = wafleet_fleet::bot_settings::set_bot(&pool, &parse_ref(&args.customer_ref)?, &change).await?;
            println!("bot of {} is {}", args.customer_ref, change.kind.as_str());
            crate::bot_args::print_secret(secret.as_ref());
        }
        Command::Tenants(TenantsCommand::Lifecycle(command)) => {
            crate::tenant_commands::run_tenant_lifecycle(settings, command).await?
        }
        Command::Depth { customer_refs, json } => {
            let refs = customer_refs.iter().map(|r| parse_ref(r)).collect::<Result<Vec<_>>>()?;
            let pool = app_pool(settings).await?;
            let (rows, source) = wafleet_fleet::service::depth_of(&pool, &endpoints, &refs).await?;
            crate::print::print_depth(&rows, source, json);
        }
        Command::Rules(command) => run_rules(settings, command).await?,
    }
    Ok(())
}

async fn run_rules(settings: &Settings, command: RulesCommand) -> Result<()> {
    let pool = app_pool(settings).await?;
    match command {
        RulesCommand::Add { customer_ref, keyword, reply } => {
            service::add_rule(&pool, &parse_ref(&customer_ref)?, &keyword, &reply).await?;
            println!("rule saved for {customer_ref}");
        }
        RulesCommand::List { customer_ref, json } => {
            let rules = service::list_rules(&pool, &parse_ref(&customer_ref)?).await?;
            crate::print::print_rules(&rules, json);
        }
        RulesCommand::Remove { customer_ref, rule } => {
            let keyword = service::remove_rule(&pool, &parse_ref(&customer_ref)?, &rule).await?;
            println!("removed rule {keyword:?} of {customer_ref}");
        }
    }
    Ok(())
}
async fn run_dlq(settings: &Settings, command: DlqCommand) -> Result<()> {
    let pool = app_pool(settings).await?;
    let endpoints = settings.endpoints();
    match command {
        DlqCommand::List { customer_ref, json } => {
            let only = customer_ref.as_deref().map(parse_ref).transpose()?;
            let summaries = wafleet_fleet::dlq::list(&pool, &endpoints.amqp_url, only.as_ref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summaries).unwrap_or_default());
            } else {
                println!("{:<32} {:>7} {:>12}  REASONS", "CUSTOMER_REF", "COUNT", "OLDEST_AGE_S");
                for s in summaries {
                    let reasons: Vec<String> = s.reasons.iter().map(|(r, n)| format!("{r}={n}")).collect();
                    let age = s.oldest_age_secs.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
                    println!("{:<32} {:>7} {:>12}  {}", s.customer_ref, s.count, age, reasons.join(","));
                }
            }
        }
        DlqCommand::Show { customer_ref, limit, body, json } => {
            let letters =
                wafleet_fleet::dlq::show(&endpoints.amqp_url, &parse_ref(&customer_ref)?, limit, body).await?;
            crate::print::print_dead_letters(&letters, json);
        }
        DlqCommand::Replay { customer_ref, all, id, dry_run } => {
            let selection = match (all, id.is_empty()) {
                (true, _) => wafleet_fleet::dlq::Selection::All,
                (false, false) => wafleet_fleet::dlq::Selection::Ids(id),
                (false, true) => return Err(InvalidInput::ReplaySelection.into()),
            };
            let r = parse_ref(&customer_ref)?;
            let report = wafleet_fleet::dlq::replay(&pool, &endpoints.amqp_url, &r, &selection, dry_run).await?;
            let verb = if dry_run { "would replay" } else { "replayed" };
            for id in &report.moved {
                println!("{verb} {id}");
            }
            for (id, why) in &report.skipped {
                eprintln!("skipped {id}: {why}");
            }
            println!(
                "{verb} {} message(s) into wa.tenant.{customer_ref}, skipped {}",
                report.moved.len(),
                report.skipped.len()
            );
        }
        DlqCommand::Purge { customer_ref, yes } => {
            if !yes {
                return Err(InvalidInput::PurgeUnconfirmed.into());
            }
            let purged = wafleet_fleet::dlq::purge(&endpoints.amqp_url, &parse_ref(&customer_ref)?).await?;
            println!("purged {purged} message(s) from wa.dlq.{customer_ref}");
        }
    }
    Ok(())
}

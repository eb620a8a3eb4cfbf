//! The CLI's settings that are not arguments of one command, read from the environment once.

use std::time::Duration;

use wafleet_fleet::accounts::DirectorySettings;
use wafleet_fleet::audit::Actor;
use wafleet_fleet::budget::BudgetConfig;
use wafleet_fleet::error::Result;
use wafleet_shared::config::{env_or, env_parse, DEFAULT_WA_API_BASE_URL};

/// The operator named in the audit log: `WAFLEET_OPERATOR`, else the OS user, else `unknown`.
pub fn actor() -> Actor {
    let name = ["WAFLEET_OPERATOR", "USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
        .unwrap_or_default();
    Actor::operator(&name)
}

/// How the CLI reaches WA Bridges accounts: `WA_API_BASE_URL`, `WAFLEET_SEND_TIMEOUT_MS` and the
/// default account's budget.
pub fn directory_settings() -> Result<DirectorySettings> {
    Ok(DirectorySettings {
        default_base_url: env_or("WA_API_BASE_URL", DEFAULT_WA_API_BASE_URL),
        key_overrides: Default::default(),
        timeout: Duration::from_millis(env_parse("WAFLEET_SEND_TIMEOUT_MS", 10_000)?),
        budget: BudgetConfig::from_env()?,
    })
}

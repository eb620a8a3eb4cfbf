//! `wafleet tenants set-bot` and the one-time display of a bot's signing secret.

use clap::Args;
use secrecy::{ExposeSecret as _, SecretString};
use wafleet_fleet::bot_settings::{validate_bot_url, BotChange};
use wafleet_fleet::error::Result;
use wafleet_fleet::tenant::BotKind;

/// Arguments of `wafleet tenants set-bot`.
#[derive(Args, Debug)]
pub struct SetBotArgs {
    /// The tenant's customer_ref.
    pub customer_ref: String,
    /// Bot: echo, rules or http.
    #[arg(long)]
    pub bot: String,
    /// `--bot http`: the tenant's bot URL (required when the tenant has none yet).
    #[arg(long)]
    pub bot_url: Option<String>,
    /// `--bot http`: generate and show a new signing secret (the old one stops working).
    #[arg(long)]
    pub rotate_secret: bool,
    /// `--bot http`: true lets the bot reply to other chats (still on the tenant's own bridge).
    #[arg(long)]
    pub allow_other_chats: Option<bool>,
}

impl SetBotArgs {
    /// The change these arguments ask for.
    pub fn change(&self) -> Result<BotChange> {
        Ok(BotChange {
            kind: BotKind::parse(&self.bot)?,
            url: self.bot_url.as_deref().map(validate_bot_url).transpose()?,
            rotate_secret: self.rotate_secret,
            allow_other_chats: self.allow_other_chats,
        })
    }
}

/// Prints a new secret once, alone on the last line of stdout.
pub fn print_secret(secret: Option<&SecretString>) {
    if let Some(secret) = secret {
        println!("http bot signing secret (shown once; the bot checks X-Wafleet-Signature with it):");
        println!("{}", secret.expose_secret());
    }
}

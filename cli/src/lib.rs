//! `wafleet`, the operator CLI: argument parsing, confirmation and output over the service layer
//! of [`wafleet_fleet`]. It holds no domain logic: every command calls one service function and,
//! when it changes anything, writes an audit record.

pub mod admin_tokens;
pub mod bot_args;
pub mod commands;
pub mod confirm;
pub mod fleet_commands;
pub mod print;
pub mod settings;
pub mod tenant_commands;

#[cfg(test)]
mod help_tests;

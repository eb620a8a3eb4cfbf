//! Built-in bots, except that a message saying "poison" panics (until `fixed` is set): the tests
//! of failure side paths (retries, dead letters, quarantine) give one tenant a failing message.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use wafleet_fleet::tenant::Tenant;
use wafleet_worker::bots::{self, Bot, BotError, BotFactory, InboundMessage, Reply, TenantScope};

/// Shared state of the poisoned bots: how often a poison message ran, and whether it still fails.
#[derive(Default)]
pub struct Poison {
    /// Set to let poison messages through to the built-in bot.
    pub fixed: AtomicBool,
    /// Poison messages handled so far.
    pub runs: AtomicU32,
}

struct PoisonBot(Arc<Poison>, Box<dyn Bot>);

#[async_trait]
impl Bot for PoisonBot {
    async fn handle(&self, scope: &TenantScope, message: &InboundMessage) -> Result<Vec<Reply>, BotError> {
        if message.body.contains("poison") {
            self.0.runs.fetch_add(1, Ordering::SeqCst);
            if !self.0.fixed.load(Ordering::SeqCst) {
                panic!("poisoned by the test");
            }
        }
        self.1.handle(scope, message).await
    }
}

/// The bots of an environment whose poison messages fail while `poison.fixed` is unset.
pub struct PoisonFactory(pub Arc<Poison>);

impl BotFactory for PoisonFactory {
    fn bot_for(&self, tenant: &Tenant) -> Box<dyn Bot> {
        Box::new(PoisonBot(self.0.clone(), bots::bot_for(tenant.bot_kind())))
    }
}

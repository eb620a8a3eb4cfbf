//! The `echo` bot: replies with the text it received.

use async_trait::async_trait;

use super::{Bot, BotError, InboundMessage, Reply, TenantScope};

/// Replies with the message text; ignores empty messages.
pub struct EchoBot;

#[async_trait]
impl Bot for EchoBot {
    async fn handle(&self, _scope: &TenantScope, message: &InboundMessage) -> Result<Vec<Reply>, BotError> {
        let text = message.body.trim();
        if text.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![Reply { body: text.to_owned(), chat: None }])
    }
}

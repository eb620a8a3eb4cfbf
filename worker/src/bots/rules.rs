//! The `rules` bot: per-tenant keyword → reply rules stored in `bot_rules`.

use async_trait::async_trait;

use super::{Bot, BotError, InboundMessage, Reply, TenantScope};

/// Replies with the rule whose keyword appears in the message (case-insensitive, longest
/// keyword first). With no match, replies with `bot_config.fallback` if the tenant set one.
pub struct RulesBot;

#[async_trait]
impl Bot for RulesBot {
    async fn handle(&self, scope: &TenantScope, message: &InboundMessage) -> Result<Vec<Reply>, BotError> {
        let rules = scope.keyword_rules().await?;
        let fallback = scope.tenant().bot_config().get("fallback").and_then(|v| v.as_str()).map(str::to_owned);
        Ok(pick(&rules, &message.body).or(fallback).map(|body| vec![Reply { body, chat: None }]).unwrap_or_default())
    }
}

fn pick(rules: &[(String, String)], text: &str) -> Option<String> {
    let text = text.to_lowercase();
    rules.iter().find(|(keyword, _)| text.contains(&keyword.to_lowercase())).map(|(_, reply)| reply.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_rule_wins_case_insensitively() {
        let rules = vec![("opening hours".to_owned(), "9-5".to_owned()), ("open".to_owned(), "yes".to_owned())];
        assert_eq!(pick(&rules, "What are your OPENING HOURS?"), Some("9-5".into()));
        assert_eq!(pick(&rules, "are you open"), Some("yes".into()));
        assert_eq!(pick(&rules, "hello"), None);
    }
}

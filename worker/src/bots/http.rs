//! The `http` bot: forwards each message to the tenant's own bot URL and turns the answer into
//! replies. The request is signed with the tenant's secret:
//! `X-Wafleet-Signature: v1=hex(HMAC-SHA256(secret, timestamp + "." + body))` with
//! `X-Wafleet-Timestamp: <unix seconds>`.
//!
//! It goes out through one [`HttpBotClient`] built at start: SSRF-guarded resolver
//! ([`crate::ssrf`]), no redirects, no proxy from the environment, a timeout, and a bound on the
//! response size. Timeouts, connect errors, 5xx, 408 and 429 are [`BotError::Transient`] (retry
//! tiers); other 4xx, redirects, refused targets and malformed or oversized answers are
//! [`BotError::Permanent`].
//!
//! ISOLATION: the URL and the secret are read from the tenant's own row in its own RLS scope.
//! Replies go to the message's chat; a reply naming another chat is dropped and counted unless the
//! tenant's `bot_config.allow_other_chats` is true. Either way replies leave only on the tenant's
//! own bridge, because the sender reads the bridge from the tenant row.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tracing::warn;
use url::Url;

use super::{Bot, BotError, InboundMessage, Reply, TenantScope};
use crate::ssrf::{self, GuardedResolver, TargetPolicy};
use wafleet_fleet::db;
use wafleet_fleet::error::{Error, Result};
use wafleet_fleet::outbox::reply_chat;

/// Header with the request's unix time in seconds.
pub const TIMESTAMP_HEADER: &str = "X-Wafleet-Timestamp";
/// Header with `v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "X-Wafleet-Signature";
/// Most replies one answer may carry.
pub const MAX_REPLIES: usize = 10;
/// Longest reply text, in characters (the WA Bridges send limit).
pub const MAX_REPLY_CHARS: usize = 65_536;

/// Settings of the bot client, read once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpBotConfig {
    /// `WAFLEET_HTTP_BOT_TIMEOUT_MS` (default 5000): bound of one request, body included. Keep it
    /// below `WAFLEET_BOT_TIMEOUT_MS`, which bounds the whole bot run.
    pub timeout: Duration,
    /// `WAFLEET_HTTP_BOT_MAX_RESPONSE_BYTES` (default 65536): larger answers are refused.
    pub max_response_bytes: usize,
    /// `WAFLEET_HTTP_BOT_PORTS` (default `443,80`): ports a bot URL may use.
    pub ports: Vec<u16>,
    /// `WAFLEET_HTTP_BOT_ALLOW_PRIVATE` (default false): development only, see [`TargetPolicy`].
    pub allow_private: bool,
}

impl Default for HttpBotConfig {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(5), max_response_bytes: 65_536, ports: vec![443, 80], allow_private: false }
    }
}

/// The one HTTP client of every tenant's `http` bot. Cheap to clone (shares the connection pool).
#[derive(Clone, Debug)]
pub struct HttpBotClient {
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    max_response_bytes: usize,
    timeout: Duration,
}

impl HttpBotClient {
    /// Builds the client: guarded resolver, no redirects, no proxy, timeouts.
    pub fn new(config: &HttpBotConfig) -> Result<Self> {
        let client = reqwest::Client::builder()
            // A redirect could point anywhere, including inside the cluster: never followed.
            .redirect(reqwest::redirect::Policy::none())
            // HTTP(S)_PROXY would dial a proxy instead of the checked address.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver::system(config.allow_private)))
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("wafleet-http-bot/", env!("CARGO_PKG_VERSION")))
            .build()?;
        if config.allow_private {
            warn!("WAFLEET_HTTP_BOT_ALLOW_PRIVATE is set: bot URLs may reach loopback and private addresses (development only)");
        }
        Ok(Self {
            client,
            policy: Arc::new(TargetPolicy { allow_private: config.allow_private, ports: config.ports.clone() }),
            max_response_bytes: config.max_response_bytes,
            timeout: config.timeout,
        })
    }

    /// POSTs `body` to `url`, signed with `secret`, and returns the parsed answer.
    async fn call(&self, url: &Url, secret: &SecretString, body: Vec<u8>) -> std::result::Result<BotAnswer, BotError> {
        let host = url.host_str().unwrap_or_default().to_owned();
        if let Err(refused) = self.policy.check_url(url) {
            return Err(refused_error(&refused));
        }
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(secret.expose_secret().as_bytes(), timestamp, &body);
        let sent = self
            .client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Err(self.transport_error(&host, &e)),
        };
        let status = response.status();
        if status.is_redirection() {
            count("redirect");
            return Err(BotError::Permanent(format!(
                "bot at {host} answered {status}: redirects are not followed, configure the final URL"
            )));
        }
        if status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
        {
            count("status_retryable");
            return Err(BotError::Transient(format!("bot at {host} answered {status}")));
        }
        if !status.is_success() {
            count("status_refused");
            return Err(BotError::Permanent(format!("bot at {host} answered {status}")));
        }
        let bytes = self.read_limited(&host, response).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            count("ok");
            return Ok(BotAnswer::default());
        }
        match serde_json::from_slice::<BotAnswer>(&bytes) {
            Ok(answer) => {
                count("ok");
                Ok(answer)
            }
            Err(e) => {
                count("malformed");
                Err(BotError::Permanent(format!("bot at {host} answered malformed JSON: {e}")))
            }
        }
    }

    async fn read_limited(
        &self,
        host: &str,
        mut response: reqwest::Response,
    ) -> std::result::Result<Vec<u8>, BotError> {
        let limit = self.max_response_bytes;
        let too_large = || {
            count("too_large");
            BotError::Permanent(format!("bot at {host} answered more than {limit} bytes"))
        };
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > limit {
                        return Err(too_large());
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(bytes),
                Err(e) => return Err(self.transport_error(host, &e)),
            }
        }
    }

    /// A request that got no complete answer: refused by the guard (permanent), else transient.
    fn transport_error(&self, host: &str, e: &reqwest::Error) -> BotError {
        if let Some(refused) = ssrf::find_refusal(e) {
            return refused_error(refused);
        }
        let what = if e.is_timeout() {
            count("timeout");
            format!("bot at {host} did not answer within {} ms", self.timeout.as_millis())
        } else if e.is_connect() {
            count("connect");
            format!("cannot connect to the bot at {host}")
        } else {
            count("transport");
            format!("request to the bot at {host} failed")
        };
        BotError::Transient(what)
    }
}

fn refused_error(refused: &ssrf::Refused) -> BotError {
    metrics::counter!(crate::metric::HTTP_BOT_REFUSED_TOTAL, "reason" => refused.reason.as_str()).increment(1);
    count("refused");
    BotError::Permanent(refused.to_string())
}

fn count(outcome: &'static str) {
    metrics::counter!(crate::metric::HTTP_BOT_REQUESTS_TOTAL, "outcome" => outcome).increment(1);
}

/// `v1=` and the hex HMAC-SHA256 of `timestamp + "." + body` under `secret`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return String::new() };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + digest.len() * 2);
    out.push_str("v1=");
    for byte in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 0x0f)]));
    }
    out
}

/// What the bot receives (JSON). `message_id` is stable across retries: bots should treat a
/// repeated id as the same message.
#[derive(Debug, Serialize)]
pub struct BotRequest<'a> {
    /// Version of this body.
    pub version: u8,
    /// The tenant's ref.
    pub customer_ref: &'a str,
    /// WhatsApp message id, when WA Bridges sent one.
    pub message_id: Option<&'a str>,
    /// Conversation JID.
    pub chat_id: &'a str,
    /// Sender display name.
    pub sender_name: Option<&'a str>,
    /// Whether the chat is a group.
    pub is_group: bool,
    /// The sender's JID; in a group, the member who wrote.
    pub contact_id: Option<&'a str>,
    /// What the message holds: `text`, `image`, `video`, `audio`, `document`, `sticker`,
    /// `location`, `contact`, or another type as WA Bridges named it.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// WA Bridges' `media_type`, when not empty.
    pub media_type: Option<&'a str>,
    /// Message text, or a media message's caption (empty when it has none).
    pub text: &'a str,
}

/// What the bot answers: `{"replies":[{"text":"..."}]}`; an empty body means no reply.
#[derive(Debug, Default, Deserialize)]
pub struct BotAnswer {
    /// Replies, at most [`MAX_REPLIES`].
    #[serde(default)]
    pub replies: Vec<BotReply>,
}

/// One reply of a [`BotAnswer`].
#[derive(Debug, Deserialize)]
pub struct BotReply {
    /// Text to send.
    pub text: String,
    /// Another chat to send it to; only honoured with `allow_other_chats`.
    #[serde(default)]
    pub chat_id: Option<String>,
}

/// The tenant's bot URL and secret, read from its own row.
struct Target {
    url: Url,
    secret: SecretString,
}

impl TenantScope {
    /// The `http` bot's URL and secret from the tenant's own row.
    /// ISOLATION: read in a read-only transaction scoped to this tenant; RLS hides other rows.
    async fn http_target(&self) -> std::result::Result<Target, BotError> {
        let transient = |e: Error| BotError::Transient(e.to_string());
        let mut tx = db::begin_tenant_read_only(&self.pool, self.tenant.id()).await.map_err(transient)?;
        let row: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("select bot_url, bot_secret from tenants where tenant_id = $1")
                .bind(self.tenant.id().get())
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| transient(e.into()))?;
        tx.commit().await.map_err(|e| transient(e.into()))?;
        let (Some(url), Some(secret)) = row.unwrap_or_default() else {
            return Err(BotError::Permanent("the http bot has no URL or secret: run `wafleet tenants set-bot`".into()));
        };
        let url = Url::parse(&url).map_err(|_| BotError::Permanent("the stored bot URL is not a valid URL".into()))?;
        Ok(Target { url, secret: SecretString::from(secret) })
    }
}

/// Forwards the message to the tenant's bot URL.
pub struct HttpBot;

#[async_trait]
impl Bot for HttpBot {
    async fn handle(&self, scope: &TenantScope, message: &InboundMessage) -> std::result::Result<Vec<Reply>, BotError> {
        let Some(client) = scope.http.as_ref() else {
            return Err(BotError::Permanent("this worker has no http bot client".into()));
        };
        let target = scope.http_target().await?;
        let request = BotRequest {
            version: 1,
            customer_ref: scope.tenant().customer_ref().as_str(),
            message_id: message.message_id.as_deref(),
            chat_id: &message.chat_id,
            sender_name: message.sender_name.as_deref(),
            is_group: message.is_group,
            contact_id: message.contact_id.as_deref(),
            kind: message.kind.as_str(),
            media_type: message.media_type.as_deref(),
            text: &message.body,
        };
        let body = serde_json::to_vec(&request).map_err(|e| BotError::Permanent(e.to_string()))?;
        let answer = client.call(&target.url, &target.secret, body).await?;
        let allow_other_chats =
            scope.tenant().bot_config().get("allow_other_chats").and_then(serde_json::Value::as_bool).unwrap_or(false);
        replies_from(answer, &message.chat_id, allow_other_chats)
    }
}

/// Checks an answer and keeps the replies it may send. A reply to another chat is dropped and
/// counted, unless `allow_other_chats`; a malformed answer is a permanent failure.
pub fn replies_from(
    answer: BotAnswer,
    chat_id: &str,
    allow_other_chats: bool,
) -> std::result::Result<Vec<Reply>, BotError> {
    if answer.replies.len() > MAX_REPLIES {
        count_malformed();
        return Err(BotError::Permanent(format!("the bot answered more than {MAX_REPLIES} replies")));
    }
    let own_chat = reply_chat(chat_id);
    let mut replies = Vec::with_capacity(answer.replies.len());
    for reply in answer.replies {
        let chars = reply.text.chars().count();
        if reply.text.trim().is_empty() || chars > MAX_REPLY_CHARS {
            count_malformed();
            return Err(BotError::Permanent(format!("a reply text must have 1-{MAX_REPLY_CHARS} characters")));
        }
        let chat = match reply.chat_id.as_deref().map(reply_chat) {
            None => None,
            Some(chat) if chat == own_chat => None,
            // ISOLATION: another chat, still on this tenant's own bridge, and only if the tenant opted in.
            Some(chat) if allow_other_chats && valid_chat(&chat) => Some(chat),
            Some(chat) => {
                let reason = if valid_chat(&chat) { "other_chat" } else { "invalid_chat" };
                metrics::counter!(crate::metric::HTTP_BOT_REPLIES_REJECTED_TOTAL, "reason" => reason).increment(1);
                warn!(reason, "dropping a bot reply addressed to another chat");
                continue;
            }
        };
        replies.push(Reply { body: reply.text, chat });
    }
    Ok(replies)
}

fn count_malformed() {
    count("malformed");
}

/// A chat WA Bridges accepts: 6-20 digits, or a `…@s.whatsapp.net` / `…@g.us` JID.
fn valid_chat(chat: &str) -> bool {
    let digits = |s: &str| (6..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(group) = chat.strip_suffix("@g.us") {
        return !group.is_empty() && group.len() <= 64 && group.bytes().all(|b| b.is_ascii_digit() || b == b'-');
    }
    digits(chat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body_in_hex() {
        // Reference value from `printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret`.
        assert_eq!(
            sign(b"secret", 1_700_000_000, br#"{"a":1}"#),
            "v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
        assert_ne!(sign(b"secret", 1_700_000_001, br#"{"a":1}"#), sign(b"secret", 1_700_000_000, br#"{"a":1}"#));
        assert_ne!(sign(b"other", 1_700_000_000, br#"{"a":1}"#), sign(b"secret", 1_700_000_000, br#"{"a":1}"#));
    }

    fn answer(json: &str) -> BotAnswer {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn replies_go_to_the_message_chat_and_another_chat_is_dropped_unless_allowed() {
        let json = r#"{"replies":[{"text":"hi"},{"text":"same","chat_id":"447700900123"},{"text":"x","chat_id":"15550001111"}]}"#;
        let strict = replies_from(answer(json), "447700900123@s.whatsapp.net", false).unwrap_or_default();
        assert_eq!(strict, vec![Reply { body: "hi".into(), chat: None }, Reply { body: "same".into(), chat: None }]);
        let open = replies_from(answer(json), "447700900123@s.whatsapp.net", true).unwrap_or_default();
        assert_eq!(open[2], Reply { body: "x".into(), chat: Some("15550001111".into()) });
        let junk = r#"{"replies":[{"text":"x","chat_id":"../../etc"}]}"#;
        assert!(replies_from(answer(junk), "447700900123@s.whatsapp.net", true).unwrap_or_default().is_empty());
    }

    /// `Some(true)` transient, `Some(false)` permanent, `None` success.
    fn transient(result: &std::result::Result<BotAnswer, BotError>) -> Option<bool> {
        match result {
            Ok(_) => None,
            Err(BotError::Transient(_)) => Some(true),
            Err(BotError::Permanent(_)) => Some(false),
        }
    }

    #[tokio::test]
    async fn statuses_timeouts_and_bad_answers_map_to_transient_or_permanent_failures() {
        use wiremock::matchers::path;
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        let ok = ResponseTemplate::new(200);
        let cases: Vec<(&str, ResponseTemplate, Option<bool>)> = vec![
            ("ok", ok.clone().set_body_json(serde_json::json!({"replies": [{"text": "hi"}]})), None),
            ("empty", ok.clone(), None),
            ("e500", ResponseTemplate::new(500), Some(true)),
            ("e503", ResponseTemplate::new(503), Some(true)),
            ("e429", ResponseTemplate::new(429), Some(true)),
            ("e400", ResponseTemplate::new(400), Some(false)),
            ("e404", ResponseTemplate::new(404), Some(false)),
            ("redirect", ResponseTemplate::new(302).insert_header("Location", "http://127.0.0.1:1/"), Some(false)),
            ("big", ok.clone().set_body_string("x".repeat(2048)), Some(false)),
            ("bad", ok.clone().set_body_string("not json"), Some(false)),
            ("slow", ok.clone().set_delay(Duration::from_secs(3)), Some(true)),
        ];
        for (name, template, _) in &cases {
            Mock::given(path(format!("/{name}"))).respond_with(template.clone()).mount(&server).await;
        }
        // A port that refuses connections: bound, then closed.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.and_then(|l| l.local_addr()).map(|a| a.port());
        let closed = closed.unwrap_or_else(|e| panic!("{e}"));
        let config = HttpBotConfig {
            timeout: Duration::from_millis(300),
            max_response_bytes: 1024,
            ports: vec![server.address().port(), closed],
            allow_private: true,
        };
        let client = HttpBotClient::new(&config).unwrap_or_else(|e| panic!("{e}"));
        let secret = SecretString::from("s".repeat(32));
        let url = |raw: String| Url::parse(&raw).unwrap_or_else(|e| panic!("{e}"));
        for (name, _, expected) in &cases {
            let result = client.call(&url(format!("{}/{name}", server.uri())), &secret, b"{}".to_vec()).await;
            assert_eq!(transient(&result), *expected, "{name}: {result:?}");
        }
        let answered = client.call(&url(format!("{}/ok", server.uri())), &secret, b"{}".to_vec()).await;
        assert_eq!(answered.map(|a| a.replies.len()).ok(), Some(1));
        let refused = client.call(&url(format!("http://127.0.0.1:{closed}/")), &secret, b"{}".to_vec()).await;
        assert_eq!(transient(&refused), Some(true), "connection refused is transient");
        let other_port = client.call(&url("http://127.0.0.1:1/".into()), &secret, b"{}".to_vec()).await;
        assert_eq!(transient(&other_port), Some(false), "a port off the allow-list is refused");
        // Every request carried the signature of its timestamp and body.
        for request in server.received_requests().await.unwrap_or_default() {
            let header = |n: &str| request.headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let timestamp: i64 = header("x-wafleet-timestamp").parse().unwrap_or_default();
            assert_eq!(
                header("x-wafleet-signature"),
                sign(secret.expose_secret().as_bytes(), timestamp, &request.body)
            );
        }
    }

    #[test]
    fn empty_or_too_many_replies_are_a_permanent_failure() {
        assert!(matches!(
            replies_from(answer(r#"{"replies":[{"text":"  "}]}"#), "1555000111", false),
            Err(BotError::Permanent(_))
        ));
        let many = format!(r#"{{"replies":[{}]}}"#, [r#"{"text":"a"}"#; MAX_REPLIES + 1].join(","));
        assert!(matches!(replies_from(answer(&many), "1555000111", false), Err(BotError::Permanent(_))));
        assert!(replies_from(answer("{}"), "1555000111", false).unwrap_or_default().is_empty());
    }
}

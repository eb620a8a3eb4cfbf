//! Typed client for the WA Bridges API. One `reqwest::Client`, built at start with timeouts, no
//! redirects and no proxy from the environment.
//!
//! ISOLATION: sending takes a `&TenantBridge`, which only the tenant repository can make, so a
//! bridge key from a request or payload cannot reach this client.

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::tenant::TenantBridge;

/// Everything but the RFC 3986 unreserved characters is encoded, so a bridge key is always
/// exactly one path segment (a `/` or `..` in a key cannot change the route).
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// How a send attempt ended, classified for the outbox state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// 2xx: the bridge accepted the message.
    Sent {
        /// The provider message id, when the response had one.
        message_id: Option<String>,
    },
    /// The request surely did not reach the person: connect error, 429 or 503. Retry later.
    Retry {
        /// The status, if a response came back.
        status: Option<u16>,
        /// `Retry-After` in seconds, from a 429.
        retry_after: Option<u64>,
    },
    /// 500, 502, 504 or a timeout after the request was sent: it may have reached the person.
    Unknown {
        /// What happened, without the message body.
        reason: String,
    },
    /// Another 4xx: resending would not help.
    Failed {
        /// The status.
        status: u16,
    },
}

/// The WA Bridges API client for one account.
#[derive(Clone)]
pub struct BridgeClient {
    http: reqwest::Client,
    base_url: String,
    api_key: std::sync::Arc<SecretString>,
}

#[derive(Serialize)]
struct SendText<'a> {
    chat: &'a str,
    body: &'a str,
}

#[derive(Deserialize)]
struct SendResponse {
    message_id: Option<String>,
}

impl BridgeClient {
    /// Builds the client. `timeout` bounds each whole request.
    pub fn new(base_url: &str, api_key: SecretString, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(Self { http, base_url: base_url.trim_end_matches('/').to_owned(), api_key: std::sync::Arc::new(api_key) })
    }

    fn proxy_url(&self, bridge: &TenantBridge, tail: &str) -> String {
        format!("{}/api/instances/{}/proxy/{tail}", self.base_url, utf8_percent_encode(bridge.key(), PATH_SEGMENT))
    }

    /// `POST /api/instances/{bridge}/proxy/send/text`.
    pub async fn send_text(&self, bridge: &TenantBridge, chat: &str, body: &str) -> SendOutcome {
        let request = self
            .http
            .post(self.proxy_url(bridge, "send/text"))
            .bearer_auth(self.api_key.expose_secret())
            .json(&SendText { chat, body });
        let response = match request.send().await {
            Ok(r) => r,
            // A connect error means nothing left this host: safe to retry.
            Err(e) if e.is_connect() => return SendOutcome::Retry { status: None, retry_after: None },
            Err(e) if e.is_timeout() => return SendOutcome::Unknown { reason: "timeout".into() },
            Err(_) => return SendOutcome::Unknown { reason: "request error".into() },
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        classify(status, retry_after, response).await
    }

    /// `GET /api/instances/{bridge}/proxy/status`: the session status string.
    pub async fn status(&self, bridge: &TenantBridge) -> Result<String, reqwest::Error> {
        #[derive(Deserialize)]
        struct Status {
            status: String,
        }
        let response = self
            .http
            .get(self.proxy_url(bridge, "status"))
            .bearer_auth(self.api_key.expose_secret())
            .send()
            .await?
            .error_for_status()?;
        Ok(response.json::<Status>().await?.status)
    }
}

async fn classify(status: u16, retry_after: Option<u64>, response: reqwest::Response) -> SendOutcome {
    match status {
        200..=299 => {
            let message_id = response.json::<SendResponse>().await.ok().and_then(|r| r.message_id);
            SendOutcome::Sent { message_id }
        }
        429 | 503 => SendOutcome::Retry { status: Some(status), retry_after },
        500 | 502 | 504 => SendOutcome::Unknown { reason: format!("http {status}") },
        _ => SendOutcome::Failed { status },
    }
}

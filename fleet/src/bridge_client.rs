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

mod error;

pub use error::ApiError;

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
    /// The request surely did not reach the person: connect error, 401 or 429. Retry later.
    Retry {
        /// The status, if a response came back.
        status: Option<u16>,
        /// `Retry-After` in seconds, from a 429.
        retry_after: Option<u64>,
    },
    /// 503 or a 5xx other than 500, 502 and 504: the API says it could not take the send, but the
    /// reference does not promise that nothing went out. Resent only after the bridge's
    /// `from_me` echo window has passed without an echo of it.
    Unavailable {
        /// The status.
        status: u16,
    },
    /// 409: the bridge is not connected, so nothing was sent. The reply is held until the
    /// bridge is connected again.
    NotConnected,
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

    /// `GET /api/instances/{bridge}/proxy/status`: the session status string. A proxy call: the
    /// caller takes a proxy token first.
    pub async fn status(&self, bridge: &TenantBridge) -> Result<String, ApiError> {
        #[derive(Deserialize)]
        struct Status {
            status: String,
        }
        let response =
            self.http.get(self.proxy_url(bridge, "status")).bearer_auth(self.api_key.expose_secret()).send().await;
        Ok(expect_json::<Status>(response).await?.status)
    }

    /// `POST /api/instances` for the tenant's bridge key (its `customer_ref` at WA Bridges).
    /// Idempotent at WA Bridges: an existing bridge is returned unchanged. A provisioning call.
    pub async fn provision(&self, bridge: &TenantBridge, webhook_url: &str) -> Result<Instance, ApiError> {
        let response = self
            .http
            .post(format!("{}/api/instances", self.base_url))
            .bearer_auth(self.api_key.expose_secret())
            .json(&serde_json::json!({ "customer_ref": bridge.key(), "webhook_url": webhook_url }))
            .send()
            .await;
        expect_json(response).await
    }

    /// `GET /api/instances`: every bridge of this account (the API returns no webhook URLs).
    pub async fn list_instances(&self) -> Result<Vec<Instance>, ApiError> {
        let response = self
            .http
            .get(format!("{}/api/instances", self.base_url))
            .bearer_auth(self.api_key.expose_secret())
            .send()
            .await;
        expect_json(response).await
    }

    /// `DELETE /api/instances/{id}` with the numeric id. `Ok(false)` when the API refuses it
    /// with a 4xx other than 401 and 429 (404 in a conventional API; the reference documents no
    /// error code), which may also mean it takes another identifier there: the reference does
    /// not say, so a caller proves a delete by listing the bridges again.
    pub async fn delete_instance(&self, id: i64) -> Result<bool, ApiError> {
        self.delete_instance_at(id.to_string()).await
    }

    /// `DELETE /api/instances/{customer_ref}`, naming the bridge by its own key; see
    /// [`Self::delete_instance`].
    pub async fn delete_instance_by_key(&self, bridge: &TenantBridge) -> Result<bool, ApiError> {
        self.delete_instance_at(utf8_percent_encode(bridge.key(), PATH_SEGMENT).to_string()).await
    }

    async fn delete_instance_at(&self, segment: String) -> Result<bool, ApiError> {
        let response = self
            .http
            .delete(format!("{}/api/instances/{segment}", self.base_url))
            .bearer_auth(self.api_key.expose_secret())
            .send()
            .await
            .map_err(ApiError::Transport)?;
        match response.status().as_u16() {
            200..=299 => Ok(true),
            // The key was refused or the budget is spent: nothing was tried, so say so.
            401 | 429 => Err(api_error(response).await),
            400..=499 => Ok(false),
            _ => Err(api_error(response).await),
        }
    }
}

/// A bridge as `GET /api/instances` and `POST /api/instances` return it.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct Instance {
    /// Numeric id assigned by WA Bridges.
    pub id: i64,
    /// The bridge's `customer_ref` (our tenant's bridge key).
    pub customer_ref: String,
    /// Instance state (`running`; other values undocumented).
    #[serde(default)]
    pub state: Option<String>,
}

fn retry_after_of(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

async fn api_error(response: reqwest::Response) -> ApiError {
    let status = response.status().as_u16();
    if status == 429 {
        return ApiError::RateLimited { retry_after: retry_after_of(&response) };
    }
    #[derive(Deserialize)]
    struct Body {
        error: Option<String>,
    }
    let message = response.json::<Body>().await.ok().and_then(|b| b.error).unwrap_or_default();
    ApiError::Status { status, message: message.chars().take(200).collect() }
}

async fn expect_json<T: serde::de::DeserializeOwned>(
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<T, ApiError> {
    let response = response.map_err(ApiError::Transport)?;
    if !response.status().is_success() {
        return Err(api_error(response).await);
    }
    response.json::<T>().await.map_err(ApiError::Transport)
}

async fn classify(status: u16, retry_after: Option<u64>, response: reqwest::Response) -> SendOutcome {
    match status {
        200..=299 => {
            let message_id = response.json::<SendResponse>().await.ok().and_then(|r| r.message_id);
            SendOutcome::Sent { message_id }
        }
        // 401: the account's key was refused before anything was sent (a key being rotated, or
        // a file: reference not re-read yet), so the reply waits and is retried with backoff
        // instead of failing for good; it expires after its TTL if the key is never fixed.
        401 | 429 => SendOutcome::Retry { status: Some(status), retry_after },
        // The reference documents no 409; a bridge whose session is down is the conflict a send
        // can meet, and resending before it reconnects would only spend budget.
        409 => SendOutcome::NotConnected,
        500 | 502 | 504 => SendOutcome::Unknown { reason: format!("http {status}") },
        501..=599 => SendOutcome::Unavailable { status },
        _ => SendOutcome::Failed { status },
    }
}

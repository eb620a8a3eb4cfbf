//! The isolation canary: every `WAFLEET_CANARY_INTERVAL_SECS`, one synthetic `message` event per
//! canary tenant goes through the real path from ingest on (a POST to the tenant's signed webhook
//! URL, with a unique nonce in the body), and the canary checks that the reply came back on that
//! tenant only.
//!
//! Verdict of one probe, from the canary tenants' own rows (each read in its own RLS scope):
//! * pass: exactly one outbox row of the probed tenant carries the nonce, for the canary chat, and
//!   it reached `sent` (sent on the bridge of that tenant's row, the only bridge the sender uses);
//!   with `WAFLEET_CANARY_REQUIRE_ECHO`, the bridge's own `from_me` copy of the reply also came back
//!   through that tenant's webhook;
//! * fail `misrouted`: any other canary tenant has an outbox or message-log row with the nonce
//!   (checked on every poll and once more after the pass);
//! * fail `not_sent` (the row ended `failed`, `expired` or `cancelled`), `duplicate`, `wrong_chat`,
//!   `timeout` (no pass within `WAFLEET_CANARY_TIMEOUT_SECS`) or `setup` (the tenant is not an
//!   active echo tenant, or ingest did not accept the event).
//!
//! Canary tenants must run the `echo` bot. Each probe costs one send of the account's budget. One
//! replica runs the canary: the holder of a Postgres advisory lock on a direct connection.
//! It must never write tenant data: it only posts to ingest and reads, and records each canary
//! tenant's last verdict in `canary_results` (no message content), which the console shows.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use wafleet_shared::{CustomerRef, Keyring};

use wafleet_fleet::db;
use wafleet_fleet::error::{Error, Result};
use wafleet_fleet::outbox::{self, reply_chat, NonceRow};
use wafleet_fleet::tenant::{self, BotKind, TenantId, TenantStatus};

/// Sender name of canary events, so they are recognisable in logs and exports.
pub const CANARY_SENDER: &str = "wafleet canary";
/// Prefix of the canary's message text and of its message ids.
pub const CANARY_PREFIX: &str = "wafleet-canary";

/// Settings of the canary; `None` in the worker config when `WAFLEET_CANARY_TENANTS` is unset.
#[derive(Clone, Debug)]
pub struct CanaryConfig {
    /// `WAFLEET_CANARY_TENANTS`: refs of the canary tenants (echo bot, dedicated bridges).
    pub tenants: Vec<CustomerRef>,
    /// `WAFLEET_CANARY_INTERVAL_SECS` (default 300): time between rounds.
    pub interval: Duration,
    /// `WAFLEET_CANARY_INGEST_URL`: public base URL of ingest, as WA Bridges calls it.
    pub ingest_url: String,
    /// `WAFLEET_SIGNING_KEY`: signs the canary tenants' webhook URLs.
    pub signing_key: SecretString,
    /// `WAFLEET_CANARY_CHAT`: the chat the canary event comes from, so the chat the echo is sent
    /// to on each canary bridge: 6-20 digits (a number you control) or a group JID `…@g.us`.
    pub chat: String,
    /// `WAFLEET_CANARY_TIMEOUT_SECS` (default 120): how long a probe may take to pass.
    pub timeout: Duration,
    /// `WAFLEET_CANARY_REQUIRE_ECHO` (default false): also require the bridge's `from_me` copy.
    pub require_echo: bool,
    /// How often a probe's rows are re-read while it waits.
    pub poll_interval: Duration,
}

impl CanaryConfig {
    /// Checks the settings once at start.
    pub fn validate(&self) -> Result<()> {
        if self.tenants.is_empty() {
            return Err(Error::Config("WAFLEET_CANARY_TENANTS names no tenant".into()));
        }
        if self.interval.is_zero() || self.timeout.is_zero() {
            return Err(Error::Config(
                "WAFLEET_CANARY_INTERVAL_SECS and WAFLEET_CANARY_TIMEOUT_SECS must be > 0".into(),
            ));
        }
        if !(self.ingest_url.starts_with("http://") || self.ingest_url.starts_with("https://")) {
            return Err(Error::Config("WAFLEET_CANARY_INGEST_URL must be an http(s) URL".into()));
        }
        Keyring::parse(&self.signing_key).map_err(|e| Error::Config(format!("WAFLEET_SIGNING_KEY: {e}")))?;
        let digits = (6..=20).contains(&self.chat.len()) && self.chat.bytes().all(|b| b.is_ascii_digit());
        let group = self
            .chat
            .strip_suffix("@g.us")
            .is_some_and(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit() || b == b'-'));
        if !(digits || group) {
            return Err(Error::Config("WAFLEET_CANARY_CHAT must be 6-20 digits or a group JID ending in @g.us".into()));
        }
        Ok(())
    }

    /// The chat id of the canary event (`<digits>@s.whatsapp.net`, or the group JID).
    fn chat_id(&self) -> String {
        if self.chat.ends_with("@g.us") {
            self.chat.clone()
        } else {
            format!("{}@s.whatsapp.net", self.chat)
        }
    }
}

/// Parses `WAFLEET_CANARY_TENANTS` (comma-separated refs, duplicates dropped).
pub fn parse_tenants(raw: &str) -> Result<Vec<CustomerRef>> {
    let mut tenants: Vec<CustomerRef> = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let r = CustomerRef::parse(part).map_err(|e| Error::Config(format!("WAFLEET_CANARY_TENANTS: {e}")))?;
        if !tenants.contains(&r) {
            tenants.push(r);
        }
    }
    Ok(tenants)
}

/// One synthetic event on its way.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The canary tenant it was sent for.
    pub tenant: CustomerRef,
    /// Unique token carried in the message text.
    pub nonce: String,
    tenant_id: TenantId,
    /// Database time just before the POST (rows of the probe are not older).
    started_at: DateTime<Utc>,
    started: Instant,
}

/// The outcome of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The reply came back on the probed tenant only.
    Passed {
        /// From the POST to the `sent` row (or to the `from_me` copy, when required).
        latency: Duration,
    },
    /// Anything else; `reason` is a metric label, `detail` names no message content.
    Failed {
        /// `misrouted`, `not_sent`, `duplicate`, `wrong_chat`, `timeout` or `setup`.
        reason: &'static str,
        /// What was seen.
        detail: String,
    },
}

impl Verdict {
    fn failed(reason: &'static str, detail: impl Into<String>) -> Self {
        Self::Failed { reason, detail: detail.into() }
    }

    /// Whether the probe passed.
    pub fn passed(&self) -> bool {
        matches!(self, Self::Passed { .. })
    }
}

/// The canary: settings, the application pool and one HTTP client for ingest.
pub struct Canary {
    pool: PgPool,
    config: CanaryConfig,
    client: reqwest::Client,
}

impl Canary {
    /// A canary reading through `pool` (the worker's role).
    pub fn new(pool: PgPool, config: CanaryConfig) -> Result<Self> {
        config.validate()?;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(Self { pool, config, client })
    }

    /// One round: a probe per canary tenant, verified and recorded in the metrics.
    pub async fn run_round(&self) -> Vec<(CustomerRef, Verdict)> {
        let rounds = self.config.tenants.iter().map(|t| async move {
            let verdict = match self.send_probe(t).await {
                Ok(probe) => self.verify(&probe).await,
                Err(failed) => failed,
            };
            self.record(t, &verdict);
            self.store(t, &verdict).await;
            (t.clone(), verdict)
        });
        futures::future::join_all(rounds).await
    }

    /// Posts one canary event for `tenant` to ingest. `Err` is the failed verdict.
    pub async fn send_probe(&self, tenant: &CustomerRef) -> std::result::Result<Probe, Verdict> {
        let setup = |e: Error| Verdict::failed("setup", e.to_string());
        let row = tenant::load_by_ref(&self.pool, tenant).await.map_err(setup)?;
        if row.status() != TenantStatus::Active {
            return Err(Verdict::failed("setup", format!("canary tenant {tenant} is {}", row.status().as_str())));
        }
        if row.bot_kind() != BotKind::Echo {
            return Err(Verdict::failed("setup", format!("canary tenant {tenant} must run the echo bot")));
        }
        let (url, _) =
            wafleet_fleet::service::webhook_url(&self.pool, &self.config.signing_key, tenant, &self.config.ingest_url)
                .await
                .map_err(setup)?;
        let nonce = nonce();
        let started_at: DateTime<Utc> =
            sqlx::query_scalar("select clock_timestamp()").fetch_one(&self.pool).await.map_err(|e| setup(e.into()))?;
        let chat_id = self.config.chat_id();
        let event = serde_json::json!({
            "event": "message",
            "customer_ref": tenant.as_str(),
            "message_id": format!("WAFLEETCANARY{}", nonce.to_uppercase()),
            "contact_id": chat_id,
            "chat_id": chat_id,
            "phone": self.config.chat.trim_end_matches("@g.us"),
            "name": CANARY_SENDER,
            "body": format!("{CANARY_PREFIX} {nonce}"),
            "type": "text",
            "is_group": self.config.chat.ends_with("@g.us"),
            "from_me": false,
            "timestamp": Utc::now().timestamp(),
        });
        let started = Instant::now();
        // One POST per probe, never retried within a round: the budget pays one send per canary.
        match self.client.post(&url).json(&event).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => return Err(Verdict::failed("setup", format!("ingest answered {} for {tenant}", r.status()))),
            Err(e) => {
                return Err(Verdict::failed("setup", format!("cannot reach ingest for {tenant}: {}", e.without_url())))
            }
        }
        Ok(Probe { tenant: tenant.clone(), nonce, tenant_id: row.id(), started_at, started })
    }

    /// Waits for the probe's verdict (at most `WAFLEET_CANARY_TIMEOUT_SECS`).
    pub async fn verify(&self, probe: &Probe) -> Verdict {
        let deadline = probe.started + self.config.timeout;
        loop {
            let last = match self.check_once(probe).await {
                Ok(Check::Done(verdict)) => {
                    // A row under another canary tenant may be written just after ours: look once more.
                    if verdict.passed() {
                        if let Ok(Some(misrouted)) = self.misrouted(probe).await {
                            return misrouted;
                        }
                    }
                    return verdict;
                }
                Ok(Check::Waiting(state)) => state,
                Err(e) => format!("cannot read the canary rows: {e}"),
            };
            if Instant::now() >= deadline {
                return Verdict::failed(
                    "timeout",
                    format!("no pass within {} s: {last}", self.config.timeout.as_secs()),
                );
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }

    async fn check_once(&self, probe: &Probe) -> Result<Check> {
        if let Some(misrouted) = self.misrouted(probe).await? {
            return Ok(Check::Done(misrouted));
        }
        // ISOLATION: the probed tenant's rows, read in its own scope.
        let mut tx = db::begin_tenant_read_only(&self.pool, probe.tenant_id).await?;
        let rows = outbox::nonce_rows(&mut tx, probe.tenant_id, probe.started_at, &probe.nonce).await?;
        let echo_at: Option<DateTime<Utc>> = sqlx::query_scalar(
            "select max(m.created_at) from message_log m join processed_events p \
             on p.tenant_id = m.tenant_id and p.ingest_id = m.ingest_id \
             where m.tenant_id = $1 and m.created_at >= $2 and p.from_me and strpos(m.body, $3) > 0",
        )
        .bind(probe.tenant_id.get())
        .bind(probe.started_at)
        .bind(&probe.nonce)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let [NonceRow { status, chat, sent_at }] = rows.as_slice() else {
            return Ok(match rows.len() {
                0 => Check::Waiting("no reply row yet".into()),
                n => Check::Done(Verdict::failed("duplicate", format!("{n} reply rows for one canary event"))),
            });
        };
        if *chat != reply_chat(&self.config.chat_id()) {
            return Ok(Check::Done(Verdict::failed("wrong_chat", "the reply row names another chat")));
        }
        match (status.as_str(), sent_at) {
            ("sent", Some(sent_at)) => {
                let finished = match (self.config.require_echo, echo_at) {
                    (false, _) => *sent_at,
                    (true, Some(echo_at)) => echo_at.max(*sent_at),
                    (true, None) => return Ok(Check::Waiting("sent, waiting for the bridge's from_me copy".into())),
                };
                let latency = (finished - probe.started_at).to_std().unwrap_or_default();
                Ok(Check::Done(Verdict::Passed { latency }))
            }
            ("failed" | "expired" | "cancelled", _) => {
                Ok(Check::Done(Verdict::failed("not_sent", format!("the reply row ended {status}"))))
            }
            // pending, sending, unknown (may still be reconciled by the from_me copy)
            (other, _) => Ok(Check::Waiting(format!("reply row is {other}"))),
        }
    }

    /// A failed verdict if another canary tenant has a row carrying the probe's nonce.
    async fn misrouted(&self, probe: &Probe) -> Result<Option<Verdict>> {
        for other in self.config.tenants.iter().filter(|t| **t != probe.tenant) {
            let Some(meta) = tenant::lookup(&self.pool, other).await? else { continue };
            // ISOLATION: each other canary tenant is read in its own scope, never across tenants.
            let mut tx = db::begin_tenant_read_only(&self.pool, meta.id).await?;
            let (outbox, log) = outbox::nonce_counts(&mut tx, meta.id, probe.started_at, &probe.nonce).await?;
            tx.commit().await?;
            if outbox + log > 0 {
                return Ok(Some(Verdict::failed(
                    "misrouted",
                    format!(
                        "the canary event of {} was seen under canary tenant {other} ({outbox} outbox, {log} message log rows)",
                        probe.tenant
                    ),
                )));
            }
        }
        Ok(None)
    }

    /// Stores the verdict of `tenant` for the console; a failure to store is logged, the metrics
    /// and the log line already carry the verdict.
    pub async fn store(&self, tenant: &CustomerRef, verdict: &Verdict) {
        let (reason, latency) = match verdict {
            Verdict::Passed { latency } => (None, Some(*latency)),
            Verdict::Failed { reason, .. } => (Some(*reason), None),
        };
        if let Err(e) = wafleet_fleet::console::record_canary(&self.pool, tenant, reason, latency).await {
            warn!(tenant = %tenant, error = %e, "the canary verdict was not stored for the console");
        }
    }

    /// Sets the metrics and logs the verdict of `tenant`.
    pub fn record(&self, tenant: &CustomerRef, verdict: &Verdict) {
        let label = tenant.as_str().to_owned();
        match verdict {
            Verdict::Passed { latency } => {
                metrics::gauge!(crate::metric::CANARY_SUCCESS, "tenant" => label.clone()).set(1.0);
                metrics::gauge!(crate::metric::CANARY_LAST_SUCCESS_TIMESTAMP_SECONDS, "tenant" => label.clone())
                    .set(Utc::now().timestamp() as f64);
                metrics::gauge!(crate::metric::CANARY_LATENCY_SECONDS, "tenant" => label.clone())
                    .set(latency.as_secs_f64());
                metrics::counter!(crate::metric::CANARY_RUNS_TOTAL, "tenant" => label, "result" => "passed")
                    .increment(1);
                info!(tenant = %tenant, latency_ms = latency.as_millis() as u64, "isolation canary passed");
            }
            Verdict::Failed { reason, detail } => {
                metrics::gauge!(crate::metric::CANARY_SUCCESS, "tenant" => label.clone()).set(0.0);
                metrics::counter!(crate::metric::CANARY_RUNS_TOTAL, "tenant" => label, "result" => *reason)
                    .increment(1);
                if *reason == "misrouted" {
                    error!(tenant = %tenant, reason, detail = %detail, "ISOLATION CANARY: a canary event reached another tenant");
                } else {
                    warn!(tenant = %tenant, reason, detail = %detail, "isolation canary failed");
                }
            }
        }
    }
}

enum Check {
    Done(Verdict),
    Waiting(String),
}

/// 128 random bits, hex.
fn nonce() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the canary until `shutdown` on the replica holding the canary lock.
pub async fn run(database_url: String, pool: PgPool, config: CanaryConfig, shutdown: CancellationToken) {
    let canary = match Canary::new(pool, config) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "isolation canary disabled");
            return;
        }
    };
    let retry = canary.config.interval.min(Duration::from_secs(60));
    loop {
        let leader = wafleet_fleet::db::try_lead(&database_url, wafleet_fleet::locks::CANARY.key);
        let conn = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = leader => r,
        };
        match conn {
            Ok(Some(mut conn)) => {
                info!(tenants = canary.config.tenants.len(), "isolation canary running on this replica");
                metrics::gauge!(crate::metric::CANARY_LEADER).set(1.0);
                lead(&canary, &mut conn, &shutdown).await;
                metrics::gauge!(crate::metric::CANARY_LEADER).set(0.0);
                let _ = conn.close().await;
            }
            Ok(None) => metrics::gauge!(crate::metric::CANARY_LEADER).set(0.0),
            Err(e) => warn!(error = %e, "isolation canary cannot reach Postgres"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

/// Rounds while the lock connection lives.
async fn lead(canary: &Canary, lock: &mut PgConnection, shutdown: &CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = canary.run_round() => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(canary.config.interval) => {}
        }
        if let Err(e) = sqlx::query("select 1").execute(&mut *lock).await {
            warn!(error = %e, "isolation canary lost its lock connection");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(chat: &str) -> CanaryConfig {
        CanaryConfig {
            tenants: parse_tenants("canary_a, canary_b,canary_a").unwrap_or_default(),
            interval: Duration::from_secs(300),
            ingest_url: "https://hooks.example.com".into(),
            signing_key: SecretString::from("k1:0123456789abcdef0123456789abcdef-canary"),
            chat: chat.into(),
            timeout: Duration::from_secs(120),
            require_echo: false,
            poll_interval: Duration::from_millis(500),
        }
    }

    #[test]
    fn canary_tenants_are_deduplicated_and_the_chat_must_be_a_number_or_a_group() {
        let c = config("15550001234");
        assert_eq!(c.tenants.len(), 2);
        assert!(c.validate().is_ok());
        assert_eq!(c.chat_id(), "15550001234@s.whatsapp.net");
        assert_eq!(reply_chat(&c.chat_id()), "15550001234");
        let group = config("120363000000000000@g.us");
        assert!(group.validate().is_ok());
        assert_eq!(reply_chat(&group.chat_id()), "120363000000000000@g.us");
        assert!(config("+1555").validate().is_err());
        assert!(config("someone@s.whatsapp.net").validate().is_err());
        let mut bad_key = config("15550001234");
        bad_key.signing_key = SecretString::from("short");
        assert!(bad_key.validate().is_err());
    }

    #[test]
    fn nonces_are_unique_hex() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}

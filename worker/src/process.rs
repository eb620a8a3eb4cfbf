//! Handling of one delivered message, independent of AMQP so it can be tested directly:
//! check the envelope against its queue, resolve the tenant (from the row the tenant's last
//! message read, for the built-in bots; see `tenants`), run the bot in a fresh scope outside any
//! transaction, then, in one short transaction, check the row still holds and record the event
//! (its dedupe row) and its replies. The returned [`Disposition`] tells the consumer what to do
//! with the delivery.

use std::sync::Arc;
use std::time::Duration;
use wafleet_fleet::outbox::{self, reply_chat};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tracing::{debug, info, warn};
use wafleet_shared::{CustomerRef, DecodeError, Envelope, EnvelopeV1};

mod failure;

pub use failure::Failure;

use crate::bots::{BotError, BotFactory, HttpBotClient, InboundMessage, MessageKind, Reply, TenantScope};
use wafleet_fleet::db;
use wafleet_fleet::error::{Error, Result};
use wafleet_fleet::labels::TenantLabels;
use wafleet_fleet::tenant::{self, BotKind, Tenant, TenantId, TenantSnapshot};

mod fields;
mod retries;
mod tenants;

use fields::EventFields;

use tenants::{TenantIds, TenantRows};

/// What the consumer must do with a delivery.
#[derive(Debug, Clone)]
pub enum Disposition {
    /// Done (processed, deliberately dropped, or a duplicate).
    Ack,
    /// The envelope names another tenant than its queue: move it to `wa.quarantine`.
    Quarantine,
    /// A failure worth another attempt later (bot timeout, transient bot error, panic,
    /// serialization failure): republish to the next retry tier, or dead-letter when exhausted.
    Retry(Failure),
    /// A failure retrying cannot fix: publish to the tenant's dead-letter queue.
    DeadLetter(Failure),
    /// Written by a newer release: put it back and let a newer worker take it.
    LeaveForNewerWorker,
    /// Postgres is unreachable: put it back and hold consumption until it returns.
    HoldDatabaseDown,
}

/// Settings of message processing.
#[derive(Clone, Debug)]
pub struct ProcessConfig {
    /// Upper bound on one bot run.
    pub bot_timeout: Duration,
    /// How long a reply may wait in the outbox before it expires.
    pub reply_ttl: Duration,
    /// Messages received longer ago than this are recorded without an auto-reply.
    pub stale_after: Duration,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            bot_timeout: Duration::from_secs(10),
            reply_ttl: Duration::from_secs(3600),
            stale_after: Duration::from_secs(15 * 60),
        }
    }
}

/// Shared state of message processing.
#[derive(Clone)]
pub struct Processor {
    pool: PgPool,
    config: ProcessConfig,
    outbox_ready: Arc<tokio::sync::Notify>,
    bots: Arc<dyn BotFactory>,
    labels: Arc<TenantLabels>,
    http_bot: Option<HttpBotClient>,
    tenant_ids: Arc<TenantIds>,
    tenant_rows: Arc<TenantRows>,
}

/// Pool timeouts one message rides out (each up to the pool's acquire timeout) before the
/// worker holds its consumers anyway.
const POOL_TIMEOUT_RETRIES: u32 = 6;

/// Bound of the health probe that tells a busy pool from a database that is away.
const POOL_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Rounds of one message whose tenant row changes while its bot runs, before a later retry.
const TENANT_CHANGED_ROUNDS: u32 = 3;

/// Why a built-in bot does not see this message, if it does not: the built-in bots answer text
/// only, and in a group only where the tenant allows it. An http bot receives every message with
/// its type and decides for itself.
fn built_in_bot_declines(tenant: &Tenant, kind: &MessageKind, fields: &EventFields) -> Option<&'static str> {
    if tenant.bot_kind() == BotKind::Http {
        return None;
    }
    if *kind != MessageKind::Text || fields.body.is_none() {
        return Some("no_text");
    }
    (fields.is_group && !tenant.replies_in_groups()).then_some("group")
}

impl Processor {
    /// A processor writing to `pool`; `outbox_ready` wakes the sender after a commit.
    pub fn new(
        pool: PgPool,
        config: ProcessConfig,
        outbox_ready: Arc<tokio::sync::Notify>,
        bots: Arc<dyn BotFactory>,
        labels: Arc<TenantLabels>,
    ) -> Self {
        Self {
            pool,
            config,
            outbox_ready,
            bots,
            labels,
            http_bot: None,
            tenant_ids: Arc::default(),
            tenant_rows: Arc::default(),
        }
    }

    /// Lends `client` (the worker's one SSRF-guarded client) to every `http` bot run.
    pub fn with_http_bot_client(mut self, client: HttpBotClient) -> Self {
        self.http_bot = Some(client);
        self
    }

    /// The bounded tenant label for metrics.
    pub fn tenant_label(&self, customer_ref: &CustomerRef) -> String {
        self.labels.label(customer_ref)
    }

    /// The tenant's metric label without counting activity (for gauges set on a timer).
    pub fn tenant_label_peek(&self, customer_ref: &CustomerRef) -> String {
        self.labels.peek(customer_ref)
    }

    /// Handles one message taken from the queue of `queue_tenant`.
    pub async fn handle(&self, queue_tenant: &CustomerRef, body: &[u8]) -> Disposition {
        let envelope = match Envelope::decode(body) {
            Ok(e) => e,
            Err(DecodeError::UnknownVersion(v)) => {
                warn!(tenant = %queue_tenant, version = %v, "envelope version unknown to this worker; leaving it for a newer one");
                return Disposition::LeaveForNewerWorker;
            }
            Err(DecodeError::Malformed(_)) => {
                warn!(tenant = %queue_tenant, "undecodable message; dead-lettering");
                metrics::counter!(crate::metric::WORKER_FAILED_TOTAL, "reason" => "undecodable").increment(1);
                return Disposition::DeadLetter(Failure::Undecodable);
            }
        };
        // ISOLATION: double check at the worker. The broker routed this message by ref; if the
        // envelope names anyone else, something upstream is broken, and it must not be processed.
        if envelope.customer_ref() != queue_tenant {
            warn!(tenant = %queue_tenant, envelope_tenant = %envelope.customer_ref(), "envelope/queue tenant mismatch; quarantining");
            metrics::counter!(crate::metric::WORKER_QUARANTINED_TOTAL).increment(1);
            return Disposition::Quarantine;
        }
        let envelope = envelope.into_v1();
        let label = self.labels.label(queue_tenant);
        match self.process_under_back_pressure(envelope, &label).await {
            Ok(None) => Disposition::Ack,
            Ok(Some(failure)) => Disposition::Retry(failure),
            // A pool timeout gets here only when the probe failed too (or it lasted too long).
            Err(e) if e.is_database_unavailable() || e.is_pool_timeout() => Disposition::HoldDatabaseDown,
            Err(e) if e.is_serialization_failure() => {
                metrics::counter!(crate::metric::WORKER_FAILED_TOTAL, "reason" => "serialization").increment(1);
                Disposition::Retry(Failure::Serialization)
            }
            Err(e) => {
                // Not an outage: requeueing would loop, so the tenant's DLQ takes it, visibly.
                warn!(tenant = %queue_tenant, error = %e, "processing failed; dead-lettering");
                metrics::counter!(crate::metric::WORKER_FAILED_TOTAL, "reason" => "processing_error").increment(1);
                Disposition::DeadLetter(Failure::Processing(Arc::new(e)))
            }
        }
    }

    /// [`Processor::process`], tried again while the pool is only busy: a pool timeout is
    /// back-pressure, not an outage. Only when the health probe (a fresh connection, not the
    /// pool) fails too is the error returned, and the caller holds the consumers.
    async fn process_under_back_pressure(&self, envelope: EnvelopeV1, label: &str) -> Result<Option<Failure>> {
        let mut tries = 0;
        loop {
            match self.process(envelope.clone(), label).await {
                Err(e) if e.is_pool_timeout() && tries < POOL_TIMEOUT_RETRIES => {
                    if !db::probe_writable(&self.pool, POOL_PROBE_TIMEOUT).await {
                        return Err(e);
                    }
                    tries += 1;
                    metrics::counter!(crate::metric::WORKER_FAILED_TOTAL, "reason" => "pool_busy").increment(1);
                    debug!(tries, "database pool busy but the database answers; processing again");
                }
                other => return other,
            }
        }
    }

    /// Processes the envelope; `Ok(Some(failure))` asks for a later retry. The tenant's row
    /// comes from the last message's read when there is one; if it changed before the record
    /// commits, the message goes round again with a fresh read (the bot runs again).
    #[tracing::instrument(skip_all, fields(tenant = %envelope.customer_ref, ingest_id = %envelope.ingest_id))]
    async fn process(&self, envelope: EnvelopeV1, label: &str) -> Result<Option<Failure>> {
        let fields = EventFields::from_payload(&envelope.payload);
        for round in 0..TENANT_CHANGED_ROUNDS {
            let Some((snapshot, tenant)) = self.tenant_for(&envelope, &fields, round == 0).await? else {
                return Ok(None);
            };
            let (outcome, replies) = match self.run_bot_if_due(tenant, &envelope, &fields, label).await {
                Ok(done) => done,
                Err(failure) => return Ok(Some(failure)),
            };
            if self.record(&snapshot, &envelope, &fields, outcome, &replies, label).await? {
                return Ok(None);
            }
            self.tenant_rows.forget(&envelope.customer_ref);
            debug!(round, "tenant row changed while the bot ran; processing again");
        }
        // The row changed under every round: a later retry reads it once things settle.
        Ok(Some(Failure::Serialization))
    }

    /// The tenant to run the message with, and the row it was read from; `None` when the message
    /// is dropped (no usable tenant) or skipped (a duplicate seen before the bot runs).
    async fn tenant_for(
        &self,
        envelope: &EnvelopeV1,
        fields: &EventFields,
        remembered: bool,
    ) -> Result<Option<(Arc<TenantSnapshot>, Tenant)>> {
        if remembered {
            if let Some(snapshot) = self.tenant_rows.get(&envelope.customer_ref) {
                // A refusal by a remembered row is not trusted: the row may have changed since
                // (a rotated URL), so it is read again below.
                if let Ok(tenant) = snapshot.usable_for(envelope.generation, envelope.auth) {
                    return Ok(Some((snapshot, tenant)));
                }
            }
        }
        let resolved = match self.tenant_ids.get(&self.pool, &envelope.customer_ref).await? {
            None => (Err(tenant::Rejection::UnknownTenant), false),
            Some(id) => {
                let dedupe = tenant::DedupeKey {
                    ingest_id: envelope.ingest_id.as_uuid(),
                    provider_message_id: envelope.provider_message_id.as_deref(),
                    chat_id: fields.chat_id.as_deref(),
                    from_me: fields.from_me,
                };
                tenant::resolve_for_message(
                    &self.pool,
                    id,
                    &envelope.customer_ref,
                    envelope.generation,
                    envelope.auth,
                    dedupe,
                )
                .await?
            }
        };
        match resolved {
            (Ok(snapshot), false) => {
                let snapshot = Arc::new(snapshot);
                self.tenant_rows.keep(&snapshot);
                // Checked by the read just made; a refusal here cannot happen and drops the message.
                match snapshot.usable_for(envelope.generation, envelope.auth) {
                    Ok(tenant) => Ok(Some((snapshot, tenant))),
                    Err(rejection) => Ok(self.drop_message(rejection)),
                }
            }
            (Ok(_), true) => {
                debug!("duplicate event; skipping");
                metrics::counter!(crate::metric::WORKER_DUPLICATES_TOTAL).increment(1);
                Ok(None)
            }
            (Err(rejection), _) => {
                self.tenant_rows.forget(&envelope.customer_ref);
                Ok(self.drop_message(rejection))
            }
        }
    }

    fn drop_message<T>(&self, rejection: tenant::Rejection) -> Option<T> {
        // ISOLATION: no fallback tenant, ever. The message is dropped, warned and counted.
        warn!(reason = rejection.as_str(), "dropping message: no usable tenant");
        metrics::counter!(crate::metric::WORKER_DROPPED_TOTAL, "reason" => rejection.as_str()).increment(1);
        None
    }

    async fn run_bot_if_due(
        &self,
        tenant: Tenant,
        envelope: &EnvelopeV1,
        fields: &EventFields,
        label: &str,
    ) -> std::result::Result<(&'static str, Vec<Reply>), Failure> {
        if envelope.event_type != "message" {
            debug!(event = %envelope.event_type, "non-message event recorded without a bot run");
            return Ok(("recorded", Vec::new()));
        }
        if fields.from_me {
            // Our own outgoing messages come back as events; a bot must never answer them.
            return Ok(("from_me", Vec::new()));
        }
        let Some(chat_id) = fields.chat_id.clone() else {
            return Ok(("no_text", Vec::new()));
        };
        let kind = MessageKind::parse(fields.kind.as_deref());
        if let Some(outcome) = built_in_bot_declines(&tenant, &kind, fields) {
            return Ok((outcome, Vec::new()));
        }
        let age = Utc::now().signed_duration_since(envelope.received_at);
        if age.to_std().map(|a| a > self.config.stale_after).unwrap_or(false) {
            info!("stale message recorded without an auto-reply");
            metrics::counter!(crate::metric::WORKER_STALE_TOTAL).increment(1);
            return Ok(("stale", Vec::new()));
        }
        let message = InboundMessage {
            chat_id,
            body: fields.body.clone().unwrap_or_default(),
            kind,
            media_type: fields.media_type.clone(),
            contact_id: fields.contact_id.clone(),
            sender_name: fields.name.clone(),
            is_group: fields.is_group,
            message_id: envelope.provider_message_id.clone(),
        };
        // ISOLATION: a fresh bot and scope for this message only.
        let scope = TenantScope::new(tenant, self.pool.clone()).with_http_client(self.http_bot.clone());
        let bot = self.bots.bot_for(scope.tenant());
        let started = std::time::Instant::now();
        // The bot runs on its own task so a panic is caught as a JoinError instead of unwinding
        // through the consumer, and under a timeout so a hung bot holds only its own slot.
        let task = tokio::spawn(async move { bot.handle(&scope, &message).await });
        let abort = task.abort_handle();
        let outcome = tokio::time::timeout(self.config.bot_timeout, task).await;
        metrics::histogram!(crate::metric::WORKER_BOT_SECONDS).record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(Ok(replies))) => Ok(("replied", replies)),
            Ok(Ok(Err(BotError::Permanent(e)))) => {
                // The bot itself says retrying is pointless: record the failure, no reply.
                warn!(error = %e, "bot failed permanently");
                metrics::counter!(crate::metric::WORKER_FAILED_TOTAL, "tenant" => label.to_owned(), "reason" => "bot_error")
                    .increment(1);
                Ok(("bot_failed", Vec::new()))
            }
            Ok(Ok(Err(e @ BotError::Transient(_)))) => {
                warn!(error = %e, "bot failed; will retry");
                metrics::counter!(crate::metric::WORKER_FAILED_TOTAL, "tenant" => label.to_owned(), "reason" => "bot_transient").increment(1);
                Err(Failure::BotTransient(Arc::new(e)))
            }
            Ok(Err(join)) => {
                warn!(panicked = join.is_panic(), "bot panicked; will retry");
                metrics::counter!(crate::metric::WORKER_FAILED_TOTAL, "tenant" => label.to_owned(), "reason" => "bot_panic")
                    .increment(1);
                Err(Failure::BotPanic)
            }
            Err(_) => {
                abort.abort();
                warn!(timeout_ms = self.config.bot_timeout.as_millis() as u64, "bot timed out; will retry");
                metrics::counter!(crate::metric::WORKER_FAILED_TOTAL, "tenant" => label.to_owned(), "reason" => "bot_timeout").increment(1);
                Err(Failure::BotTimeout(self.config.bot_timeout))
            }
        }
    }

    // layout: the message path's one transaction (dedupe row, log, every reply, bridge state, echo
    // settlement) reads top to bottom in commit order; pieces would each need the open transaction.
    /// Records the message and its replies; `false` (nothing written) when the tenant's row is
    /// no longer the one the bot ran with.
    async fn record(
        &self,
        snapshot: &TenantSnapshot,
        envelope: &EnvelopeV1,
        fields: &EventFields,
        outcome: &str,
        replies: &[Reply],
        label: &str,
    ) -> Result<bool> {
        let tenant = snapshot.tenant().id();
        let chat = fields.chat_id.as_deref().map(reply_chat);
        // ISOLATION: `reply.chat` is set only by the http bot of a tenant that allows other
        // chats; either way the reply leaves on this tenant's own bridge.
        let targets: Vec<(&str, &str)> = replies
            .iter()
            .map_while(|reply| Some((reply.chat.as_deref().or(chat.as_deref())?, reply.body.as_str())))
            .collect();
        let expires_at =
            Utc::now() + chrono::Duration::from_std(self.config.reply_ttl).unwrap_or(chrono::Duration::hours(1));
        let traceparent = wafleet_shared::trace::current_traceparent();
        let mut tx = db::begin_tenant(&self.pool, tenant).await?;
        if !tenant::still_current(&mut tx, snapshot).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let event = outbox::InboundRecord {
            ingest_id: envelope.ingest_id.as_uuid(),
            event_type: &envelope.event_type,
            chat_id: fields.chat_id.as_deref(),
            from_me: fields.from_me,
            provider_message_id: envelope.provider_message_id.as_deref(),
            outcome,
            received_at: envelope.received_at,
            body: fields.body.as_deref(),
        };
        let queued = outbox::Replies { targets: &targets, expires_at, traceparent: traceparent.as_deref() };
        if !outbox::insert_with_event(&mut tx, tenant, &event, &queued).await? {
            tx.rollback().await?;
            metrics::counter!(crate::metric::WORKER_DUPLICATES_TOTAL).increment(1);
            return Ok(true);
        }
        self.update_bridge_state(&mut tx, tenant, envelope).await?;
        if envelope.event_type == "message" && fields.from_me {
            // The bridge's own copy of a reply settles an `unknown` outbox row of this tenant.
            outbox::reconcile_from_me(
                &mut tx,
                tenant,
                fields.chat_id.as_deref(),
                fields.body.as_deref(),
                envelope.provider_message_id.as_deref(),
            )
            .await?;
        }
        tx.commit().await?;
        metrics::counter!(crate::metric::WORKER_PROCESSED_TOTAL, "tenant" => label.to_owned(), "outcome" => outcome.to_owned())
            .increment(1);
        if !replies.is_empty() {
            self.outbox_ready.notify_one();
        }
        Ok(true)
    }

    /// `connected` / `disconnected` update the tenant's bridge state, last writer wins by
    /// received-at, so a late, older event cannot overwrite a newer state.
    async fn update_bridge_state(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        tenant: TenantId,
        envelope: &EnvelopeV1,
    ) -> Result<()> {
        let state = match envelope.event_type.as_str() {
            "connected" => "connected",
            "disconnected" => "disconnected",
            _ => return Ok(()),
        };
        let at: DateTime<Utc> = envelope.received_at;
        sqlx::query(
            // A new state starts the re-check backoff of a disconnected bridge afresh.
            "update tenants set bridge_state = $2, bridge_state_at = $3, bridge_recheck_at = null, \
             bridge_recheck_failures = 0, updated_at = now() \
             where tenant_id = $1 and (bridge_state_at is null or bridge_state_at < $3)",
        )
        .bind(tenant.get())
        .bind(state)
        .bind(at)
        .execute(&mut **tx)
        .await
        .map_err(Error::from)?;
        Ok(())
    }
}

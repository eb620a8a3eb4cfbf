//! The shared state of the admin API: the application-role pool, the CLI's endpoints and fleet
//! context, the signing key, the budget settings and the rate limiters (per token, per client address). Small and
//! `Clone`; nothing in it belongs to one tenant.

use std::net::IpAddr;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::task::TaskTracker;
use uuid::Uuid;
use wafleet_fleet::budget::BudgetConfig;
use wafleet_fleet::service::{Endpoints, Fleet};

/// Longest wait for a budget token in a background operation: the CLI's.
const BACKGROUND_BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

/// The parts of [`AppState`].
pub struct Inner {
    /// The administration role's pool (checked by `db::check_role` at start).
    pub pool: PgPool,
    /// Broker and management endpoints.
    pub endpoints: Endpoints,
    /// Lifecycle context (accounts, budget) for provision and bridge status, which wait at most
    /// `WAFLEET_ADMIN_BUDGET_WAIT_SECS` for a budget token inside a request.
    pub fleet: Arc<Fleet>,
    /// The same context for background operations (offboarding), which wait like the CLI.
    pub background_fleet: Arc<Fleet>,
    /// `WAFLEET_SIGNING_KEY`, when set.
    pub signing_key: Option<SecretString>,
    /// Budget settings, for the outbox summary.
    pub budget: BudgetConfig,
    /// Requests per token.
    pub limiter: DefaultKeyedRateLimiter<Uuid>,
    /// Requests per client address, checked before the token is (so a flood of bad tokens
    /// never reaches the database).
    pub address_limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// Background operations (offboarding), awaited for a bounded time at shutdown.
    pub tasks: TaskTracker,
    /// The console's session settings.
    pub console: ConsoleSettings,
    /// The console's live charts.
    pub samples: crate::console::samples::Samples,
}

/// How the console's sessions behave.
#[derive(Clone, Copy, Debug)]
pub struct ConsoleSettings {
    /// How long a sign-in lasts.
    pub session_lifetime: std::time::Duration,
    /// Whether the session cookie is `Secure` (off only for an admin listening on loopback).
    pub secure_cookie: bool,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self { session_lifetime: std::time::Duration::from_secs(30 * 60), secure_cookie: true }
    }
}

/// A rate limit (per token, or per client address).
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: std::num::NonZeroU32,
    /// Requests allowed at once.
    pub burst: std::num::NonZeroU32,
}

impl AppState {
    /// Assembles the state.
    pub fn new(
        pool: PgPool,
        endpoints: Endpoints,
        fleet: Fleet,
        signing_key: Option<SecretString>,
        budget: BudgetConfig,
        (rate, address_rate): (RateLimit, RateLimit),
    ) -> Self {
        let limiter = RateLimiter::keyed(Quota::per_second(rate.per_second).allow_burst(rate.burst));
        let address_limiter =
            RateLimiter::keyed(Quota::per_second(address_rate.per_second).allow_burst(address_rate.burst));
        let background_fleet = Fleet {
            pool: fleet.pool.clone(),
            accounts: fleet.accounts.clone(),
            endpoints: fleet.endpoints.clone(),
            clock: fleet.clock.clone(),
            max_budget_wait: BACKGROUND_BUDGET_WAIT.max(fleet.max_budget_wait),
        };
        let inner = Inner {
            pool,
            endpoints,
            fleet: Arc::new(fleet),
            background_fleet: Arc::new(background_fleet),
            signing_key,
            budget,
            limiter,
            address_limiter,
            tasks: TaskTracker::new(),
            console: ConsoleSettings::default(),
            samples: crate::console::samples::Samples::default(),
        };
        Self { inner: Arc::new(inner) }
    }

    /// This state with the console's `settings`; only before the state is shared (its clones
    /// keep the settings they were made with).
    pub fn with_console(mut self, settings: ConsoleSettings) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.console = settings,
            None => tracing::warn!("console settings set on a shared state; the defaults stay"),
        }
        self
    }

    /// The signing key, or a configuration error (503 `not-configured`), like the CLI's.
    pub fn signing_key(&self) -> wafleet_fleet::Result<&SecretString> {
        self.signing_key.as_ref().ok_or(wafleet_fleet::error::SetupError::NoSigningKey.into())
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

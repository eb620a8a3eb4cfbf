//! The simulator's mutable world behind one lock: bridges, the send log, rejected cross-account
//! attempts, per-bridge attempt counters, injected faults, the rate limiter and the API call log.
//! Everything here is synchronous and short; nothing may `.await` while holding the lock.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use tokio::time::Instant;

use crate::calls::CallLog;
use crate::error::{Error, Result};
use crate::limiter::{Bucket, RateLimiter};
use crate::model::{Bridge, Fault, RecordedSend, RejectedAttempt};
use crate::{InstanceIdKind, SimConfig};

/// Ids start here so they look like the documented example (`"id": 42`).
const FIRST_BRIDGE_ID: i64 = 42;

#[derive(Debug)]
pub(crate) struct SimState {
    pub(crate) config: SimConfig,
    pub(crate) limiter: RateLimiter,
    /// Keyed by `customer_ref`, the proxy path key.
    bridges: BTreeMap<String, Bridge>,
    next_id: i64,
    pub(crate) sends: Vec<RecordedSend>,
    pub(crate) rejected: Vec<RejectedAttempt>,
    pub(crate) attempts: HashMap<String, u64>,
    pub(crate) fault: Option<Fault>,
    pub(crate) bridge_faults: HashMap<String, Fault>,
    /// Requests the rate limiter answered 429 (per-key buckets and the per-IP floor).
    pub(crate) rejected_429: u64,
    pub(crate) calls: CallLog,
    pub(crate) faulted: u64,
    /// Send requests being answered right now, in all and per bridge, and the most seen at once
    /// (tests check that a sender overlaps sends, but never two of one bridge).
    pub(crate) sends_in_flight: usize,
    pub(crate) max_sends_in_flight: usize,
    pub(crate) bridge_sends_in_flight: HashMap<String, usize>,
    pub(crate) max_bridge_sends_in_flight: HashMap<String, usize>,
}

impl SimState {
    pub(crate) fn new(config: SimConfig, epoch: Instant) -> Self {
        Self {
            limiter: RateLimiter::new(&config, epoch),
            config,
            bridges: BTreeMap::new(),
            next_id: FIRST_BRIDGE_ID,
            sends: Vec::new(),
            rejected: Vec::new(),
            attempts: HashMap::new(),
            fault: None,
            bridge_faults: HashMap::new(),
            rejected_429: 0,
            calls: CallLog::default(),
            faulted: 0,
            sends_in_flight: 0,
            max_sends_in_flight: 0,
            bridge_sends_in_flight: HashMap::new(),
            max_bridge_sends_in_flight: HashMap::new(),
        }
    }

    /// Whether `key` is one of the configured accounts.
    pub(crate) fn is_known_key(&self, key: &str) -> bool {
        self.config.api_keys.iter().any(|k| k == key)
    }

    /// Count a request against `bucket`, turning an exhausted bucket into a 429.
    pub(crate) fn admit(&mut self, api_key: &str, bucket: Bucket) -> Result<()> {
        self.limiter.admit(api_key, bucket, Instant::now()).map_err(|retry_after_secs| {
            self.rejected_429 += 1;
            Error::RateLimited { retry_after_secs }
        })
    }

    /// Count a request from `client` against the per-IP floor, turning an exhausted floor into
    /// a 429.
    pub(crate) fn admit_ip(&mut self, client: &str, bucket: Bucket, arrived: Instant) -> Result<()> {
        self.limiter.admit_ip(client, bucket, arrived).map_err(|retry_after_secs| {
            self.rejected_429 += 1;
            Error::RateLimited { retry_after_secs }
        })
    }

    fn insert_new(&mut self, customer_ref: &str, webhook_url: Option<String>, api_key: String) -> Bridge {
        let bridge = Bridge {
            id: self.next_id,
            customer_ref: customer_ref.to_owned(),
            webhook_url,
            api_key,
            status: "connected".to_owned(),
            created_at: Utc::now(),
        };
        self.next_id += 1;
        self.bridges.insert(customer_ref.to_owned(), bridge.clone());
        bridge
    }

    /// Control-plane register-or-update: `webhook_url` is always replaced, `api_key` and `status`
    /// only when given (a new bridge gets the first configured key and `"connected"`).
    pub(crate) fn upsert_bridge(
        &mut self,
        customer_ref: &str,
        webhook_url: Option<String>,
        api_key: Option<String>,
        status: Option<String>,
    ) -> Bridge {
        let default_key = self.config.default_api_key().unwrap_or_default().to_owned();
        let bridge = match self.bridges.get_mut(customer_ref) {
            Some(existing) => {
                existing.webhook_url = webhook_url;
                if let Some(key) = api_key {
                    existing.api_key = key;
                }
                existing.clone()
            }
            None => self.insert_new(customer_ref, webhook_url, api_key.unwrap_or(default_key)),
        };
        match status {
            Some(status) => self.set_status(customer_ref, &status).unwrap_or(bridge),
            None => bridge,
        }
    }

    /// Set a bridge's session status; `None` if the bridge does not exist.
    pub(crate) fn set_status(&mut self, customer_ref: &str, status: &str) -> Option<Bridge> {
        let bridge = self.bridges.get_mut(customer_ref)?;
        status.clone_into(&mut bridge.status);
        Some(bridge.clone())
    }

    /// `POST /api/instances`: idempotent on `customer_ref` within one account. The existing record
    /// is returned unchanged (whether the real API updates `webhook_url` is undocumented).
    pub(crate) fn provision(
        &mut self,
        api_key: &str,
        customer_ref: &str,
        webhook_url: Option<String>,
    ) -> Result<Bridge> {
        match self.bridges.get(customer_ref) {
            // ISOLATION: a ref owned by another account is never handed out or modified.
            Some(existing) if existing.api_key != api_key => Err(Error::Conflict("customer_ref taken".to_owned())),
            Some(existing) => Ok(existing.clone()),
            None => Ok(self.insert_new(customer_ref, webhook_url, api_key.to_owned())),
        }
    }

    /// The caller's bridges, ordered by id.
    pub(crate) fn list_owned(&self, api_key: &str) -> Vec<Bridge> {
        let mut owned: Vec<Bridge> = self.bridges.values().filter(|b| b.api_key == api_key).cloned().collect();
        owned.sort_by_key(|b| b.id);
        owned
    }

    /// All bridges, ordered by id.
    pub(crate) fn list_all(&self) -> Vec<Bridge> {
        let mut all: Vec<Bridge> = self.bridges.values().cloned().collect();
        all.sort_by_key(|b| b.id);
        all
    }

    pub(crate) fn get(&self, customer_ref: &str) -> Option<&Bridge> {
        self.bridges.get(customer_ref)
    }

    /// `GET`/`DELETE /api/instances/{id}`, resolved as the `instance_id` setting says. Another
    /// account's bridge is reported as absent, not forbidden, so its existence does not leak.
    pub(crate) fn find_owned(&self, api_key: &str, id_or_ref: &str) -> Result<Bridge> {
        let by_id = || id_or_ref.parse::<i64>().ok().and_then(|id| self.bridges.values().find(|b| b.id == id));
        let by_ref = || self.bridges.get(id_or_ref);
        let found = match self.config.instance_id {
            InstanceIdKind::Either => by_id().or_else(by_ref),
            InstanceIdKind::Id => by_id(),
            InstanceIdKind::Ref => by_ref(),
        };
        found.filter(|b| b.api_key == api_key).cloned().ok_or(Error::NotFound("instance not found"))
    }

    pub(crate) fn remove(&mut self, customer_ref: &str) -> Option<Bridge> {
        self.bridge_faults.remove(customer_ref);
        self.bridges.remove(customer_ref)
    }

    /// Resolve a proxy path key for `api_key`: 404 when unknown, 403 (and logged as a rejected
    /// attempt) when the bridge belongs to another account.
    pub(crate) fn proxy_bridge(&mut self, api_key: &str, key: &str, endpoint: &str) -> Result<Bridge> {
        let bridge = self.bridges.get(key).cloned().ok_or(Error::NotFound("instance not found"))?;
        if bridge.api_key != api_key {
            // ISOLATION: the attempt is kept so tests can prove it never happened in practice.
            self.rejected.push(RejectedAttempt {
                bridge: key.to_owned(),
                api_key: api_key.to_owned(),
                endpoint: endpoint.to_owned(),
                at: Utc::now(),
            });
            return Err(Error::Forbidden);
        }
        Ok(bridge)
    }

    /// Take the fault that applies to `bridge` (its own one first, then the global one),
    /// consuming one unit of `remaining` and clearing it when used up.
    pub(crate) fn take_fault(&mut self, bridge: &str) -> Option<Fault> {
        if let Some(fault) = self.bridge_faults.get_mut(bridge) {
            let taken = fault.clone();
            if consume(fault) {
                self.bridge_faults.remove(bridge);
            }
            return Some(taken);
        }
        let fault = self.fault.as_mut()?;
        let taken = fault.clone();
        if consume(fault) {
            self.fault = None;
        }
        Some(taken)
    }

    pub(crate) fn sends_for(&self, bridge: &str) -> Vec<RecordedSend> {
        self.sends.iter().filter(|s| s.bridge == bridge).cloned().collect()
    }
}

/// Use up one request of a count-limited fault; `true` when it is now exhausted.
fn consume(fault: &mut Fault) -> bool {
    match fault.remaining.as_mut() {
        Some(n) => {
            *n = n.saturating_sub(1);
            *n == 0
        }
        None => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn state() -> SimState {
        let config = SimConfig { api_keys: vec!["sk_a".into(), "sk_b".into()], ..SimConfig::default() };
        SimState::new(config, Instant::now())
    }

    #[test]
    fn provisioning_the_same_ref_twice_returns_the_same_bridge() {
        let mut st = state();
        let first = st.provision("sk_a", "cust_1", Some("http://hook".into())).unwrap();
        let again = st.provision("sk_a", "cust_1", Some("http://other".into())).unwrap();
        assert_eq!(first, again);
        assert_eq!(first.id, FIRST_BRIDGE_ID);
        assert_eq!(st.list_all().len(), 1);
    }

    #[test]
    fn provisioning_a_ref_owned_by_another_key_is_a_conflict() {
        let mut st = state();
        st.provision("sk_a", "cust_1", None).unwrap();
        assert!(matches!(st.provision("sk_b", "cust_1", None), Err(Error::Conflict(_))));
    }

    #[test]
    fn another_accounts_bridge_is_not_found_by_id_or_ref() {
        let mut st = state();
        let bridge = st.provision("sk_a", "cust_1", None).unwrap();
        assert!(st.find_owned("sk_a", &bridge.id.to_string()).is_ok());
        assert!(st.find_owned("sk_a", "cust_1").is_ok());
        assert!(matches!(st.find_owned("sk_b", "cust_1"), Err(Error::NotFound(_))));
        assert!(matches!(st.find_owned("sk_b", &bridge.id.to_string()), Err(Error::NotFound(_))));
    }

    #[test]
    fn proxy_call_on_another_accounts_bridge_is_forbidden_and_recorded() {
        let mut st = state();
        st.upsert_bridge("cust_b", None, Some("sk_b".into()), None);
        assert!(matches!(st.proxy_bridge("sk_a", "cust_b", "send/text"), Err(Error::Forbidden)));
        assert_eq!(st.rejected.len(), 1);
        assert_eq!(st.rejected[0].api_key, "sk_a");
        assert!(matches!(st.proxy_bridge("sk_a", "nope", "status"), Err(Error::NotFound(_))));
        assert_eq!(st.rejected.len(), 1);
    }

    #[test]
    fn upsert_keeps_owner_and_status_unless_given() {
        let mut st = state();
        let created = st.upsert_bridge("cust_1", None, Some("sk_b".into()), Some("disconnected".into()));
        assert_eq!((created.api_key.as_str(), created.status.as_str()), ("sk_b", "disconnected"));
        let updated = st.upsert_bridge("cust_1", Some("http://hook".into()), None, None);
        assert_eq!(updated.id, created.id);
        assert_eq!((updated.api_key.as_str(), updated.status.as_str()), ("sk_b", "disconnected"));
        assert_eq!(updated.webhook_url.as_deref(), Some("http://hook"));
        let defaulted = st.upsert_bridge("cust_2", None, None, None);
        assert_eq!((defaulted.api_key.as_str(), defaulted.status.as_str()), ("sk_a", "connected"));
    }

    #[test]
    fn count_limited_fault_is_cleared_after_its_last_use() {
        let mut st = state();
        st.fault = Some(Fault::new(503).with_remaining(2));
        assert_eq!(st.take_fault("x").map(|f| f.status), Some(503));
        assert_eq!(st.take_fault("x").map(|f| f.status), Some(503));
        assert_eq!(st.take_fault("x"), None);
    }

    #[test]
    fn bridge_fault_wins_over_the_global_fault_and_only_for_that_bridge() {
        let mut st = state();
        st.fault = Some(Fault::new(500));
        st.bridge_faults.insert("a".into(), Fault::new(429).with_remaining(1));
        assert_eq!(st.take_fault("a").map(|f| f.status), Some(429));
        assert_eq!(st.take_fault("a").map(|f| f.status), Some(500));
        assert_eq!(st.take_fault("b").map(|f| f.status), Some(500));
    }
}

//! Bounded per-tenant metric labels. A fleet of thousands of tenants must not explode
//! Prometheus, and series must not churn: a fixed set of at most N tenants (the busiest, refreshed
//! rarely) keep their own label; every other tenant is reported as `other`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wafleet_shared::CustomerRef;

/// The label used for tenants outside the top N.
pub const OTHER: &str = "other";

struct State {
    labelled: HashSet<String>,
    counts: HashMap<String, u64>,
    refreshed_at: Instant,
}

/// Chooses the `tenant` label value for metrics.
pub struct TenantLabels {
    capacity: usize,
    refresh_every: Duration,
    state: Mutex<State>,
}

impl TenantLabels {
    /// At most `capacity` labelled tenants, re-ranked every `refresh_every`.
    pub fn new(capacity: usize, refresh_every: Duration) -> Self {
        Self {
            capacity,
            refresh_every,
            state: Mutex::new(State { labelled: HashSet::new(), counts: HashMap::new(), refreshed_at: Instant::now() }),
        }
    }

    /// The label for `customer_ref`, counting the activity that ranks tenants.
    pub fn label(&self, customer_ref: &CustomerRef) -> String {
        let Ok(mut state) = self.state.lock() else { return OTHER.to_owned() };
        let key = customer_ref.as_str();
        *state.counts.entry(key.to_owned()).or_insert(0) += 1;
        if state.refreshed_at.elapsed() >= self.refresh_every {
            self.rerank(&mut state);
        }
        if state.labelled.contains(key) {
            return key.to_owned();
        }
        // Until the set is full, the first tenants seen get their own label.
        if state.labelled.len() < self.capacity {
            state.labelled.insert(key.to_owned());
            return key.to_owned();
        }
        OTHER.to_owned()
    }

    /// The label for `customer_ref` without counting activity, for state gauges set on a timer
    /// (they must not rank every tenant as busy). Like [`Self::label`], a tenant gets its own
    /// label while the set has room.
    pub fn peek(&self, customer_ref: &CustomerRef) -> String {
        let Ok(mut state) = self.state.lock() else { return OTHER.to_owned() };
        let key = customer_ref.as_str();
        if state.labelled.contains(key) {
            return key.to_owned();
        }
        if state.labelled.len() < self.capacity {
            state.labelled.insert(key.to_owned());
            return key.to_owned();
        }
        OTHER.to_owned()
    }

    /// Re-ranks now (normally done on the interval).
    pub fn refresh(&self) {
        if let Ok(mut state) = self.state.lock() {
            self.rerank(&mut state);
        }
    }

    fn rerank(&self, state: &mut State) {
        let mut ranked: Vec<(&String, &u64)> = state.counts.iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let top: HashSet<String> = ranked.into_iter().take(self.capacity).map(|(k, _)| k.clone()).collect();
        state.labelled = top;
        state.counts.clear();
        state.refreshed_at = Instant::now();
    }
}

impl Default for TenantLabels {
    /// 50 labelled tenants, re-ranked every 15 minutes.
    fn default() -> Self {
        Self::new(50, Duration::from_secs(15 * 60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> CustomerRef {
        CustomerRef::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn at_most_capacity_tenants_get_their_own_label() {
        let labels = TenantLabels::new(2, Duration::from_secs(3600));
        assert_eq!(labels.label(&r("a")), "a");
        assert_eq!(labels.label(&r("b")), "b");
        assert_eq!(labels.label(&r("c")), OTHER);
        assert_eq!(labels.label(&r("a")), "a", "labels are stable between refreshes");
    }

    #[test]
    fn peeking_a_label_does_not_rank_the_tenant() {
        let labels = TenantLabels::new(1, Duration::from_secs(3600));
        assert_eq!(labels.label(&r("busy")), "busy");
        for _ in 0..5 {
            assert_eq!(labels.peek(&r("idle")), OTHER);
        }
        labels.refresh();
        assert_eq!(labels.peek(&r("busy")), "busy", "peeks never outrank real activity");
    }

    #[test]
    fn refresh_promotes_the_busiest_tenants() {
        let labels = TenantLabels::new(1, Duration::from_secs(3600));
        assert_eq!(labels.label(&r("quiet")), "quiet");
        for _ in 0..3 {
            assert_eq!(labels.label(&r("busy")), OTHER, "the set is full until the next refresh");
        }
        labels.refresh();
        assert_eq!(labels.label(&r("busy")), "busy");
        assert_eq!(labels.label(&r("quiet")), OTHER);
    }
}

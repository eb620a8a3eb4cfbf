//! The budget's settings: the default account's rate, burst and window, the egress group, and the
//! settings of one bucket. Plain values, so the accounts module can build an account's buckets
//! without reaching into the token bucket's database code.

use std::time::Duration;

use super::{API_LIMIT_PER_MIN, PROVISION_LIMIT_PER_MIN};
use crate::error::{Error, Result};
use wafleet_shared::settings::BudgetSettings;

/// Budget settings of the default account, and the window of every bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetConfig {
    /// `WAFLEET_SEND_RATE_PER_MIN`: proxy tokens per window for accounts without their own rate
    /// (default 110).
    pub rate_per_window: u32,
    /// `WAFLEET_SEND_BURST`: bucket capacity for accounts without their own (default 5).
    pub burst: u32,
    /// `WAFLEET_BUDGET_WINDOW_SECS`: the API's "minute" (default 60; tests compress it).
    pub window: Duration,
    /// The egress group every call of this process also spends from (`WAFLEET_EGRESS_*`).
    pub egress: EgressConfig,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self { rate_per_window: 110, burst: 5, window: Duration::from_secs(60), egress: EgressConfig::default() }
    }
}

/// Rate, capacity and window of one bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketSettings {
    /// Tokens added per window.
    pub rate_per_window: f64,
    /// Capacity.
    pub burst: f64,
    /// Window length in seconds.
    pub window_secs: f64,
}

impl BucketSettings {
    /// Tokens per minute of wall time (for backlog arithmetic).
    pub fn per_minute(&self) -> f64 {
        self.rate_per_window * 60.0 / self.window_secs
    }
}

impl From<&BudgetSettings> for BudgetConfig {
    /// The budget the binaries parsed (`WAFLEET_SEND_RATE_PER_MIN`, `WAFLEET_SEND_BURST`,
    /// `WAFLEET_BUDGET_WINDOW_SECS`; each already checked to be > 0).
    fn from(settings: &BudgetSettings) -> Self {
        Self {
            rate_per_window: settings.send_rate_per_min,
            burst: settings.send_burst,
            window: Duration::from_secs(settings.budget_window_secs),
            egress: EgressConfig {
                group: settings.egress_group.clone(),
                rate_per_window: settings.egress_rate_per_min,
                burst: settings.egress_burst,
            },
        }
    }
}

impl BudgetConfig {
    /// Refuses values the bucket cannot work with.
    pub fn validate(&self) -> Result<()> {
        if self.rate_per_window == 0 || self.burst == 0 || self.window.is_zero() {
            return Err(Error::Config(
                "WAFLEET_SEND_RATE_PER_MIN, WAFLEET_SEND_BURST and WAFLEET_BUDGET_WINDOW_SECS must be > 0".into(),
            ));
        }
        self.egress.validate()
    }

    /// Startup warnings: a default budget or an egress group that does not fit the documented
    /// limits.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = self.account_warnings("default", &self.proxy(None, None));
        warnings.extend(self.egress.warnings());
        warnings
    }

    /// The egress group's bucket over this budget's window.
    pub fn egress_bucket(&self) -> EgressBucket {
        self.egress.bucket(self.window)
    }

    /// Warnings for one account's proxy bucket.
    pub fn account_warnings(&self, account: &str, proxy: &BucketSettings) -> Vec<String> {
        let total = proxy.rate_per_window + proxy.burst;
        if total > f64::from(API_LIMIT_PER_MIN) {
            vec![format!(
                "account {account}: send rate {} + burst {} = {total} per window exceeds the documented {API_LIMIT_PER_MIN} \
                 /proxy/* calls per minute; expect 429s (which pause the account)",
                proxy.rate_per_window, proxy.burst
            )]
        } else {
            Vec::new()
        }
    }

    fn window_secs(&self) -> f64 {
        self.window.as_secs_f64()
    }

    /// The proxy bucket of an account with optional own rate and burst.
    pub fn proxy(&self, rate: Option<i32>, burst: Option<i32>) -> BucketSettings {
        BucketSettings {
            rate_per_window: rate.map_or(f64::from(self.rate_per_window), f64::from),
            burst: burst.map_or(f64::from(self.burst), f64::from),
            window_secs: self.window_secs(),
        }
    }

    /// The provisioning bucket: 9 per window plus 1, inside the documented 10.
    pub fn provision(&self) -> BucketSettings {
        BucketSettings {
            rate_per_window: f64::from(PROVISION_LIMIT_PER_MIN - 1),
            burst: 1.0,
            window_secs: self.window_secs(),
        }
    }

    /// The bucket of other API calls: 110 per window plus 5, inside the documented 120.
    pub fn other(&self) -> BucketSettings {
        BucketSettings { rate_per_window: 110.0, burst: 5.0, window_secs: self.window_secs() }
    }
}

/// Documented WA Bridges floor: requests per minute per client IP, across all keys.
pub const PER_IP_LIMIT_PER_MIN: u32 = 300;

/// The group of a process and its bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct EgressBucket {
    /// `WAFLEET_EGRESS_GROUP`: the name every process behind the same public IP shares.
    pub group: String,
    /// Rate, capacity and window of the group's bucket.
    pub bucket: BucketSettings,
}

/// Egress settings as the binaries parse them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressConfig {
    /// `WAFLEET_EGRESS_GROUP` (default `default`).
    pub group: String,
    /// `WAFLEET_EGRESS_RATE_PER_MIN`: calls per window of the whole group (default 290).
    pub rate_per_window: u32,
    /// `WAFLEET_EGRESS_BURST`: the group bucket's capacity (default 5).
    pub burst: u32,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self { group: "default".to_owned(), rate_per_window: 290, burst: 5 }
    }
}

impl EgressConfig {
    /// Refuses a group name the database would refuse, and a zero rate or burst.
    pub fn validate(&self) -> Result<()> {
        let name_ok = self.group.len() <= 64
            && self.group.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && self.group.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if !name_ok {
            return Err(Error::Config(format!(
                "WAFLEET_EGRESS_GROUP {:?} must be 1-64 characters of a-z, 0-9, '_', '.' or '-', starting with a letter or digit",
                self.group
            )));
        }
        if self.rate_per_window == 0 || self.burst == 0 {
            return Err(Error::Config("WAFLEET_EGRESS_RATE_PER_MIN and WAFLEET_EGRESS_BURST must be > 0".into()));
        }
        Ok(())
    }

    /// A startup warning when rate + burst exceed the documented per-IP floor.
    pub fn warnings(&self) -> Vec<String> {
        let total = self.rate_per_window + self.burst;
        if total > PER_IP_LIMIT_PER_MIN {
            vec![format!(
                "egress group {}: rate {} + burst {} = {total} per window exceeds the documented {PER_IP_LIMIT_PER_MIN} \
                 requests per minute per IP; expect 429s unless this group has more than one public IP",
                self.group, self.rate_per_window, self.burst
            )]
        } else {
            Vec::new()
        }
    }

    /// The group's bucket over `window`.
    pub fn bucket(&self, window: Duration) -> EgressBucket {
        EgressBucket {
            group: self.group.clone(),
            bucket: BucketSettings {
                rate_per_window: f64::from(self.rate_per_window),
                burst: f64::from(self.burst),
                window_secs: window.as_secs_f64(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_budget_fits_the_documented_proxy_limit_and_larger_ones_warn() {
        let config = BudgetConfig::default();
        let proxy = config.proxy(None, None);
        assert!(proxy.rate_per_window + proxy.burst <= f64::from(API_LIMIT_PER_MIN));
        assert!(config.warnings().is_empty());
        let greedy = BudgetConfig { rate_per_window: 120, burst: 5, ..BudgetConfig::default() };
        assert_eq!(greedy.warnings().len(), 1);
        assert!(greedy.warnings()[0].contains("exceeds"));
    }

    #[test]
    fn provisioning_and_other_buckets_fit_their_own_limits() {
        let config = BudgetConfig::default();
        let p = config.provision();
        assert!(p.rate_per_window + p.burst <= f64::from(PROVISION_LIMIT_PER_MIN));
        let o = config.other();
        assert!(o.rate_per_window + o.burst <= f64::from(API_LIMIT_PER_MIN));
    }

    #[test]
    fn account_rate_overrides_the_default_and_the_window_scales_the_rate() {
        let config = BudgetConfig { window: Duration::from_secs(6), ..BudgetConfig::default() };
        let own = config.proxy(Some(60), Some(2));
        assert_eq!((own.rate_per_window, own.burst, own.window_secs), (60.0, 2.0, 6.0));
        assert!((own.per_minute() - 600.0).abs() < 1e-9);
    }

    #[test]
    fn zero_rate_or_window_is_refused() {
        assert!(BudgetConfig { rate_per_window: 0, ..BudgetConfig::default() }.validate().is_err());
        assert!(BudgetConfig { window: Duration::ZERO, ..BudgetConfig::default() }.validate().is_err());
    }

    #[test]
    fn the_default_group_fits_the_documented_per_ip_floor() {
        let config = EgressConfig::default();
        assert_eq!((config.group.as_str(), config.rate_per_window, config.burst), ("default", 290, 5));
        assert!(config.rate_per_window + config.burst <= PER_IP_LIMIT_PER_MIN);
        assert!(config.warnings().is_empty());
        let greedy = EgressConfig { rate_per_window: 300, ..EgressConfig::default() };
        assert!(greedy.warnings()[0].contains("per IP"), "{:?}", greedy.warnings());
    }

    #[test]
    fn group_names_outside_the_database_format_and_zero_rates_are_refused() {
        for bad in ["", "Nat-A", "-a", "a b", &"x".repeat(65)] {
            let config = EgressConfig { group: bad.to_owned(), ..EgressConfig::default() };
            assert!(config.validate().is_err(), "{bad:?} accepted");
        }
        for good in ["default", "nat-a", "pool_2.eu"] {
            assert!(EgressConfig { group: good.to_owned(), ..EgressConfig::default() }.validate().is_ok());
        }
        assert!(EgressConfig { rate_per_window: 0, ..EgressConfig::default() }.validate().is_err());
    }

    #[test]
    fn the_bucket_uses_the_budget_window() {
        let bucket = EgressConfig::default().bucket(Duration::from_secs(6)).bucket;
        assert_eq!((bucket.rate_per_window, bucket.burst, bucket.window_secs), (290.0, 5.0, 6.0));
    }
}

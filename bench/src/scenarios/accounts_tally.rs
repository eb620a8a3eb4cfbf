//! Counting what scenario 10 measured: the sends the simulators recorded, per egress group (one
//! simulator each), per account (summed over every simulator, as WA Bridges counts a key) and per
//! tenant, in windows of the measured span, and the rows judged from those counts.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::ratio;
use crate::report::{Row, Verdict};
use crate::stack::Send;

/// The budgets the scenario ran with, all per window.
#[derive(Clone, Copy, Debug)]
pub struct Budgets {
    /// The compressed "minute", seconds.
    pub window_secs: u64,
    /// `WAFLEET_EGRESS_RATE_PER_MIN` of every group.
    pub group_rate: f64,
    /// `WAFLEET_EGRESS_BURST`.
    pub group_burst: f64,
    /// The simulators' `--per-ip-per-window`.
    pub per_ip_floor: u32,
    /// The API's proxy calls per key and window (`--proxy-per-window`).
    pub per_key: f64,
}

/// One account: its name, API key and send budget (rate and burst per window).
#[derive(Clone, Debug)]
pub struct AccountSpec {
    /// Name (`a01`).
    pub name: String,
    /// Its API key at the simulators.
    pub key: String,
    /// Send rate per window.
    pub rate: f64,
    /// Bucket capacity.
    pub burst: f64,
    /// Whether it runs on its own budget below its fair share of the groups (so its own bucket,
    /// not the groups, bounds it).
    pub own_budget: bool,
    /// Its tenants' refs (also their bridge keys).
    pub tenants: Vec<String>,
}

/// What one egress group's simulator recorded and answered.
pub struct GroupRecord {
    /// The group (`g1`).
    pub name: String,
    /// Every send it recorded.
    pub sends: Vec<Send>,
    /// Requests its limiter answered 429 (per-key buckets and the per-IP floor).
    pub rejected_429: u64,
    /// Most proxy calls in one of its own (fixed, start-aligned) windows.
    pub busiest_window: u64,
}

/// The measured span: `windows` windows of `window_secs` from `from`.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    /// Start.
    pub from: DateTime<Utc>,
    /// End (`from` + `windows` windows, as slept).
    pub to: DateTime<Utc>,
    /// Number of whole windows.
    pub windows: usize,
    /// Window length, seconds.
    pub window_secs: u64,
}

impl Span {
    /// Sends per window of the span (windows aligned to its start; sends outside are ignored).
    fn per_window<'a>(&self, sends: impl Iterator<Item = &'a Send>) -> Vec<f64> {
        let mut counts = vec![0f64; self.windows];
        for s in sends.filter(|s| s.at >= self.from && s.at < self.to) {
            let secs = (s.at - self.from).num_milliseconds() as f64 / 1000.0;
            if let Some(c) = counts.get_mut((secs / self.window_secs as f64) as usize) {
                *c += 1.0;
            }
        }
        counts
    }
}

fn mean_of(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn busiest_of(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

/// One row per egress group: its simulator saw at least 0.95× of the group's rate per window
/// (every group has more demand than budget), never more than rate + burst in a measured window,
/// nothing over the per-IP floor in its own windows, and no 429.
pub fn group_rows(budgets: &Budgets, span: &Span, groups: &[GroupRecord]) -> Vec<Row> {
    let ceiling = budgets.group_rate + budgets.group_burst;
    groups
        .iter()
        .map(|g| {
            let windows = span.per_window(g.sends.iter());
            let (mean, busiest) = (mean_of(&windows), busiest_of(&windows));
            let floor = u64::from(budgets.per_ip_floor);
            Row {
                metric: format!(
                    "egress group {} (its own simulator): sends per window, mean / busiest; busiest simulator window; 429s",
                    g.name
                ),
                value: format!("{mean:.1} / {busiest:.0}; {}; {}", g.busiest_window, g.rejected_429),
                ceiling: format!("group {:.0} + {:.0}; per-IP floor {floor}", budgets.group_rate, budgets.group_burst),
                ratio: ratio(mean, budgets.group_rate),
                target: format!("≥ 0.95×, ≤ {ceiling:.0}, no 429"),
                verdict: Verdict::from_bool(
                    mean >= 0.95 * budgets.group_rate
                        && busiest <= ceiling
                        && g.busiest_window <= floor
                        && g.rejected_429 == 0,
                ),
            }
        })
        .collect()
}

/// Sends per window of every account, summed over all simulators (WA Bridges counts a key
/// wherever its calls come from).
pub fn account_windows(span: &Span, groups: &[GroupRecord], accounts: &[AccountSpec]) -> Vec<Vec<f64>> {
    accounts
        .iter()
        .map(|a| span.per_window(groups.iter().flat_map(|g| g.sends.iter()).filter(|s| s.api_key == a.key)))
        .collect()
}

/// One row per account: never more than its rate + burst (nor the API's 120) in a measured
/// window; an account on its own budget below its fair share also sends at ≥ 0.95× that budget.
/// The ratio of an account bounded by the groups is to its fair share of them (`fair_share`).
pub fn account_rows(budgets: &Budgets, accounts: &[AccountSpec], windows: &[Vec<f64>], fair_share: f64) -> Vec<Row> {
    accounts
        .iter()
        .zip(windows)
        .map(|(a, w)| {
            let (mean, busiest) = (mean_of(w), busiest_of(w));
            let ceiling = (a.rate + a.burst).min(budgets.per_key);
            let (expected, bound_by) =
                if a.own_budget { (a.rate, "own rate") } else { (fair_share, "fair share of the groups") };
            let reaches = !a.own_budget || mean >= 0.95 * a.rate;
            Row {
                metric: format!(
                    "account {} (budget {:.0} + {:.0}): sends per window over all simulators, mean / busiest",
                    a.name, a.rate, a.burst
                ),
                value: format!("{mean:.1} / {busiest:.0}"),
                ceiling: format!("{bound_by} {expected:.1}; API {:.0}/key", budgets.per_key),
                ratio: ratio(mean, expected),
                target: if a.own_budget {
                    format!("≥ 0.95×, ≤ {ceiling:.0}")
                } else {
                    format!("≤ {ceiling:.0}")
                },
                verdict: Verdict::from_bool(reaches && busiest <= ceiling),
            }
        })
        .collect()
}

/// Fairness among the accounts bounded by the groups (equal weights): each one's mean per window
/// within ±`tolerance` of their fair share.
pub fn accounts_fairness_row(accounts: &[AccountSpec], windows: &[Vec<f64>], fair_share: f64, tolerance: f64) -> Row {
    let means: Vec<(&str, f64)> = accounts
        .iter()
        .zip(windows)
        .filter(|(a, _)| !a.own_budget)
        .map(|(a, w)| (a.name.as_str(), mean_of(w)))
        .collect();
    let (lo, hi) = means.iter().fold((f64::MAX, 0.0f64), |(lo, hi), (_, m)| (lo.min(*m), hi.max(*m)));
    let names: Vec<&str> = means.iter().map(|(n, _)| *n).collect();
    let worst = means.iter().map(|(_, m)| (m / fair_share - 1.0).abs()).fold(0.0, f64::max);
    Row {
        metric: format!(
            "fairness across accounts: sends per window of the {} accounts bounded by the groups ({}–{}), min–max",
            means.len(),
            names.first().unwrap_or(&"?"),
            names.last().unwrap_or(&"?")
        ),
        value: format!("{lo:.1}–{hi:.1}"),
        ceiling: format!("fair share {fair_share:.1}"),
        ratio: format!("{:.2}–{:.2}×", lo / fair_share, hi / fair_share),
        target: format!("each within ±{:.0}%", tolerance * 100.0),
        verdict: Verdict::from_bool(!means.is_empty() && worst <= tolerance),
    }
}

/// Fairness within each group (its stride scheduling, equal weights): the sends of each account
/// bounded by the groups through that group over the span, the widest deviation from the group's
/// mean of them.
pub fn group_fairness_row(span: &Span, groups: &[GroupRecord], accounts: &[AccountSpec], tolerance: f64) -> Row {
    let shared: Vec<&AccountSpec> = accounts.iter().filter(|a| !a.own_budget).collect();
    let mut worst = (String::from("?"), 0.0, 0.0, 0.0);
    for g in groups {
        let counts: Vec<f64> = shared
            .iter()
            .map(|a| span.per_window(g.sends.iter().filter(|s| s.api_key == a.key)).iter().sum())
            .collect();
        let mean = mean_of(&counts);
        let (lo, hi) = counts.iter().fold((f64::MAX, 0.0f64), |(lo, hi), c| (lo.min(*c), hi.max(*c)));
        let deviation = ((hi - mean).max(mean - lo)) / mean.max(1.0);
        if deviation >= worst.3 {
            worst = (g.name.clone(), lo, hi, deviation);
        }
    }
    Row {
        metric: format!(
            "fairness within each group: sends of each of the {} accounts bounded by the groups through one group, widest group",
            shared.len()
        ),
        value: format!("{}: min {:.0}, max {:.0}", worst.0, worst.1, worst.2),
        ceiling: "the group's mean of them".into(),
        ratio: format!("±{:.0}%", worst.3 * 100.0),
        target: format!("within ±{:.0}%", tolerance * 100.0),
        verdict: Verdict::from_bool(!shared.is_empty() && worst.3 <= tolerance),
    }
}

/// Fairness within each account: sends per tenant from the backlog's start to the end of the
/// span (every recorded send up to `to`), largest spread over the accounts. Round robin gives
/// every tenant of an account k or k + 1 sends at any moment, so the bound is 1.
pub fn tenants_fairness_row(accounts: &[AccountSpec], groups: &[GroupRecord], to: DateTime<Utc>) -> Row {
    let mut per_bridge: HashMap<&str, f64> = HashMap::new();
    for s in groups.iter().flat_map(|g| g.sends.iter()).filter(|s| s.at < to) {
        *per_bridge.entry(s.bridge.as_str()).or_default() += 1.0;
    }
    let mut worst = (String::from("?"), 0.0, 0.0);
    let mut spread_max = -1.0;
    for a in accounts {
        let counts: Vec<f64> = a.tenants.iter().map(|t| per_bridge.get(t.as_str()).copied().unwrap_or(0.0)).collect();
        let (lo, hi) = counts.iter().fold((f64::MAX, 0.0f64), |(lo, hi), c| (lo.min(*c), hi.max(*c)));
        if hi - lo > spread_max {
            spread_max = hi - lo;
            worst = (a.name.clone(), lo, hi);
        }
    }
    let tenants = accounts.first().map_or(0, |a| a.tenants.len());
    Row {
        metric: format!(
            "fairness within each account: sends per tenant ({tenants} per account, weight 1) from the backlog's start \
             to the end of the span, widest account"
        ),
        value: format!("{}: min {:.0}, max {:.0}", worst.0, worst.1, worst.2),
        ceiling: "round robin: k or k + 1 each".into(),
        ratio: format!("max−min = {spread_max:.0}"),
        target: "max − min ≤ 1".into(),
        verdict: Verdict::from_bool((0.0..=1.0).contains(&spread_max)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGETS: Budgets =
        Budgets { window_secs: 6, group_rate: 200.0, group_burst: 5.0, per_ip_floor: 210, per_key: 120.0 };

    fn span() -> Span {
        let from = DateTime::<Utc>::from_timestamp(1_000_000, 0).unwrap_or_default();
        Span { from, to: from + chrono::Duration::seconds(12), windows: 2, window_secs: 6 }
    }

    /// `count` sends by `key` on `bridges` in turn, spread evenly over window `window` of the span.
    fn sends(key: &str, bridges: &[&str], window: i64, count: usize) -> Vec<Send> {
        let start = span().from + chrono::Duration::seconds(6 * window);
        (0..count)
            .map(|i| Send {
                bridge: bridges[i % bridges.len()].to_owned(),
                api_key: key.to_owned(),
                body: String::new(),
                at: start + chrono::Duration::milliseconds((6000 * i / count) as i64),
            })
            .collect()
    }

    fn account(name: &str, tenants: &[&str]) -> AccountSpec {
        AccountSpec {
            name: name.to_owned(),
            key: format!("sk_{name}"),
            rate: 110.0,
            burst: 5.0,
            own_budget: false,
            tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    fn group(sends: Vec<Send>, rejected_429: u64, busiest_window: u64) -> GroupRecord {
        GroupRecord { name: "g1".into(), sends, rejected_429, busiest_window }
    }

    #[test]
    fn a_group_at_its_rate_passes_and_one_over_its_budget_or_refused_fails() {
        let at_rate = [sends("sk_a", &["t1"], 0, 200), sends("sk_a", &["t1"], 1, 200)].concat();
        let over = [sends("sk_a", &["t1"], 0, 206), sends("sk_a", &["t1"], 1, 200)].concat();
        let verdicts: Vec<Verdict> = [group(at_rate.clone(), 0, 200), group(over, 0, 206), group(at_rate, 3, 200)]
            .iter()
            .flat_map(|g| group_rows(&BUDGETS, &span(), std::slice::from_ref(g)))
            .map(|r| r.verdict)
            .collect();
        assert_eq!(verdicts, [Verdict::Pass, Verdict::Fail, Verdict::Fail]);
        let short = [sends("sk_a", &["t1"], 0, 180), sends("sk_a", &["t1"], 1, 180)].concat();
        assert_eq!(group_rows(&BUDGETS, &span(), &[group(short, 0, 180)])[0].verdict, Verdict::Fail);
    }

    #[test]
    fn an_account_is_counted_over_every_simulator_against_its_own_budget() {
        let accounts = [account("a", &["t1"])];
        // 60 + 60 in one window through two groups: 120 > 110 + 5, though each group saw only 60.
        let groups = [group(sends("sk_a", &["t1"], 0, 60), 0, 60), group(sends("sk_a", &["t1"], 0, 60), 0, 60)];
        let windows = account_windows(&span(), &groups, &accounts);
        assert_eq!(windows, [vec![120.0, 0.0]]);
        assert_eq!(account_rows(&BUDGETS, &accounts, &windows, 60.0)[0].verdict, Verdict::Fail);
    }

    #[test]
    fn tenants_served_by_age_instead_of_round_robin_fail_the_fairness_row() {
        let accounts = [account("a", &["t1", "t2", "t3"])];
        let round_robin = group(sends("sk_a", &["t1", "t2", "t3"], 0, 7), 0, 7);
        assert_eq!(tenants_fairness_row(&accounts, &[round_robin], span().to).verdict, Verdict::Pass);
        // Oldest first: both of t1's replies before t3's first.
        let by_age = group(sends("sk_a", &["t1", "t1", "t2"], 0, 3), 0, 3);
        assert_eq!(tenants_fairness_row(&accounts, &[by_age], span().to).verdict, Verdict::Fail);
    }

    #[test]
    fn accounts_far_from_their_share_fail_the_fairness_rows() {
        let accounts = [account("a", &["ta"]), account("b", &["tb"])];
        let fair = [sends("sk_a", &["ta"], 0, 100), sends("sk_b", &["tb"], 0, 96)].concat();
        let unfair = [sends("sk_a", &["ta"], 0, 120), sends("sk_b", &["tb"], 0, 76)].concat();
        for (all, verdict) in [(fair, Verdict::Pass), (unfair, Verdict::Fail)] {
            let groups = [group(all, 0, 196)];
            let windows = account_windows(&span(), &groups, &accounts);
            assert_eq!(accounts_fairness_row(&accounts, &windows, 49.0, 0.1).verdict, verdict);
            assert_eq!(group_fairness_row(&span(), &groups, &accounts, 0.1).verdict, verdict);
        }
    }
}

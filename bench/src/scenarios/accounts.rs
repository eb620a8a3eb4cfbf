//! Scenario 10: Several accounts and egress groups, on a compressed 6 s "minute". Ten accounts,
//! each with its own API key and its tenants, send through three egress groups; each group is one
//! worker process (`WAFLEET_EGRESS_GROUP`) whose default base URL is a simulator of its own, so
//! each simulator stands for one public IP and its per-IP floor sees exactly one group's calls.
//! With a pending reply backlog on every tenant, each group must send at its budget and never
//! over it, each account never over its own (summed over every simulator, as WA Bridges counts a
//! key), the accounts sharing the groups must get equal shares, and the tenants of each account
//! equal shares.

use std::time::{Duration, Instant};

use wafleet_fleet::accounts::{AccountPolicy, KeyRef, NewAccount};
use wafleet_shared::topology::QueueType;

use super::accounts_tally::{
    account_rows, account_windows, accounts_fairness_row, group_fairness_row, group_rows, tenants_fairness_row,
    AccountSpec, Budgets, GroupRecord, Span,
};
use super::{budget, Ctx};
use crate::env::{register_owned_bridges, BenchEnv, BenchTenant, API_KEY};
use crate::procs::Proc;
use crate::report::{Row, Section};
use crate::stack::{start_worker, Sim};

const TITLE: &str = "10. Several accounts and egress groups (6 s window)";
/// The compressed "minute" of the simulators and the workers.
const WINDOW_SECS: u64 = 6;
/// Accounts, and how many of them run on a budget of their own below their fair share.
const ACCOUNTS: usize = 10;
const OWN_BUDGET_ACCOUNTS: usize = 3;
/// The worker's default account budget (110 + 5, inside the API's 120 per key).
const ACCOUNT_RATE: f64 = 110.0;
const ACCOUNT_BURST: f64 = 5.0;
/// The budget of the accounts on their own: below their fair share of the groups, so their own
/// bucket bounds them while the others are bounded by the groups.
const OWN_RATE: i32 = 30;
const OWN_BURST: i32 = 5;
/// Egress groups, one worker and one simulator each, and every group's budget. 200 + 5 rather
/// than the default 290 + 5: three groups at 290 carry 870 calls a window, close to the 1,100
/// the ten accounts' default budgets allow, so the groups would hardly bound them; at 200, seven
/// accounts share what is left after the three small ones at ~73 a window, well under 110.
const GROUPS: usize = 3;
const GROUP_RATE: f64 = 200.0;
const GROUP_BURST: f64 = 5.0;
/// The simulators' per-IP floor: the group's rate + burst plus the same 5-call margin production
/// keeps (290 + 5 under 300), so a group over its budget is refused with 429s.
const PER_IP_FLOOR: u32 = 210;
/// The API's proxy calls per key and window (the simulator's default).
const PER_KEY: f64 = 120.0;
/// How far each account bounded by the groups may be from its fair share, overall and through
/// each group. Each group gives its next token to the waiting account that has had the fewest, so
/// equal accounts stay a few tokens apart; 10% of the ~24 sends an account makes through one
/// group per window leaves room for the span cutting a round of grants.
const SHARE_TOLERANCE: f64 = 0.10;

/// Runs the scenario.
// layout: a benchmark scenario reads as one script (set up, drive, measure, report) whose steps
// share the measured locals and timings; splitting it would pass them all around.
pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Section> {
    if !budget::present(&ctx.repo) {
        return Ok(Section::not_run("accounts", TITLE, "not run: send budget not present in worker/src"));
    }
    let started = Instant::now();
    let mut section = Section::new("accounts", TITLE);
    let per_account = if ctx.quick { 20 } else { 1000 };
    let windows = if ctx.quick { 1 } else { 6 };
    let env = BenchEnv::recreate(&ctx.services).await?;
    let set_up = Instant::now();
    let mut accounts = add_accounts(&env).await?;
    let names: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
    let tenants = env.add_tenants_in(per_account * ACCOUNTS, QueueType::Classic, &names).await?;
    for (i, a) in accounts.iter_mut().enumerate() {
        a.tenants =
            tenants[i * per_account..(i + 1) * per_account].iter().map(|t| t.customer_ref.to_string()).collect();
    }
    let sims = start_simulators(ctx, &accounts, &tenants, per_account).await?;
    let set_up = set_up.elapsed();
    let (workers, slowest_start) = start_workers(ctx, &env, &sims, &accounts).await?;
    // Queued once every worker consumes, so the span starts with all groups sending; enough that
    // every tenant stays backlogged to the end even if its account sent at rate + burst all along.
    let run_windows = windows + 2;
    let per_tenant = (run_windows as f64 * (ACCOUNT_RATE + ACCOUNT_BURST) / per_account as f64).ceil() as usize + 1;
    queue_backlog(&env, per_tenant).await?;
    // One window to fill the senders, then the measured windows.
    tokio::time::sleep(Duration::from_secs(WINDOW_SECS)).await;
    let from = chrono::Utc::now();
    tokio::time::sleep(Duration::from_secs(WINDOW_SECS * windows as u64)).await;
    let to = chrono::Utc::now();
    let mut groups = Vec::with_capacity(GROUPS);
    for (i, sim) in sims.iter().enumerate() {
        let (busiest_window, rejected_429) = sim.limit_counts().await?;
        groups.push(GroupRecord { name: group_name(i), sends: sim.sends().await?, rejected_429, busiest_window });
    }
    for worker in workers {
        worker.stop(Duration::from_secs(15)).await?;
    }
    for sim in sims {
        sim.proc.stop(Duration::from_secs(5)).await?;
    }

    let budgets = Budgets {
        window_secs: WINDOW_SECS,
        group_rate: GROUP_RATE,
        group_burst: GROUP_BURST,
        per_ip_floor: PER_IP_FLOOR,
        per_key: PER_KEY,
    };
    let span = Span { from, to, windows, window_secs: WINDOW_SECS };
    let own_total: f64 = accounts.iter().filter(|a| a.own_budget).map(|a| a.rate).sum();
    let shared = accounts.iter().filter(|a| !a.own_budget).count().max(1);
    let fair_share = (GROUPS as f64 * GROUP_RATE - own_total) / shared as f64;
    let per_account_windows = account_windows(&span, &groups, &accounts);
    section.rows.extend(group_rows(&budgets, &span, &groups));
    section.rows.extend(account_rows(&budgets, &accounts, &per_account_windows, fair_share));
    section.rows.push(accounts_fairness_row(&accounts, &per_account_windows, fair_share, SHARE_TOLERANCE));
    section.rows.push(group_fairness_row(&span, &groups, &accounts, SHARE_TOLERANCE));
    section.rows.push(tenants_fairness_row(&accounts, &groups, to));
    section.rows.push(Row::info(
        format!("setup ({} tenants, their queues and bridges) / slowest of {GROUPS} workers' start", tenants.len()),
        format!("{:.1} s / {:.1} s", set_up.as_secs_f64(), slowest_start.as_secs_f64()),
    ));
    section.notes.push(notes(&budgets, per_account, per_tenant, windows));
    env.teardown().await?;
    section.seconds = started.elapsed().as_secs_f64();
    Ok(section)
}

/// `g1`, `g2`, ...
fn group_name(i: usize) -> String {
    format!("g{}", i + 1)
}

/// The environment variable holding account `name`'s key in the workers (`WA_API_KEY_A01`).
fn key_variable(name: &str) -> String {
    format!("WA_API_KEY_{}", name.to_ascii_uppercase())
}

/// Adds accounts `a01`..`a10` through the same repository function as `wafleet accounts add`:
/// the first [`OWN_BUDGET_ACCOUNTS`] with a budget of their own, the others on the workers'
/// default; none with a base URL, so each worker sends every account to its own simulator.
async fn add_accounts(env: &BenchEnv) -> anyhow::Result<Vec<AccountSpec>> {
    let pool = wafleet_fleet::db::app_pool(&env.admin_url, 2)?;
    let policy = AccountPolicy::new(
        wafleet_fleet::accounts::DEFAULT_SECRETS_DIR,
        wafleet_fleet::accounts::DEFAULT_API_HOSTS.split(',').map(str::to_owned),
    );
    let mut accounts = Vec::with_capacity(ACCOUNTS);
    for i in 0..ACCOUNTS {
        let name = format!("a{:02}", i + 1);
        let own_budget = i < OWN_BUDGET_ACCOUNTS;
        let new = NewAccount {
            name: name.clone(),
            key_ref: KeyRef::parse(&format!("env:{}", key_variable(&name)))?,
            base_url: None,
            rate_per_min: own_budget.then_some(OWN_RATE),
            burst: own_budget.then_some(OWN_BURST),
            test_account: false,
        };
        wafleet_fleet::accounts::add(&pool, &new, &policy).await?;
        let (rate, burst) =
            if own_budget { (f64::from(OWN_RATE), f64::from(OWN_BURST)) } else { (ACCOUNT_RATE, ACCOUNT_BURST) };
        accounts.push(AccountSpec {
            key: format!("sk_test_{name}"),
            name,
            rate,
            burst,
            own_budget,
            tenants: Vec::new(),
        });
    }
    pool.close().await;
    Ok(accounts)
}

/// One simulator per egress group, each knowing every account's key and holding every tenant's
/// bridge under its account's key; registered in parallel.
async fn start_simulators(
    ctx: &Ctx,
    accounts: &[AccountSpec],
    tenants: &[BenchTenant],
    per_account: usize,
) -> anyhow::Result<Vec<Sim>> {
    let keys: Vec<&str> = std::iter::once(API_KEY).chain(accounts.iter().map(|a| a.key.as_str())).collect();
    let (keys, window, floor) = (keys.join(","), WINDOW_SECS.to_string(), PER_IP_FLOOR.to_string());
    let args: [&str; 6] = ["--api-key", &keys, "--window-secs", &window, "--per-ip-per-window", &floor];
    let mut sims = Vec::with_capacity(GROUPS);
    for _ in 0..GROUPS {
        sims.push(Sim::start(&ctx.bins, &args, &[]).await?);
    }
    let owned: Vec<(&BenchTenant, Option<&str>)> =
        tenants.iter().enumerate().map(|(i, t)| (t, Some(accounts[i / per_account].key.as_str()))).collect();
    let registered = futures::future::join_all(sims.iter().map(|s| register_owned_bridges(&s.base, &owned))).await;
    registered.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(sims)
}

/// The settings of group `i`'s worker: its group and that group's budget, the account budget
/// (the defaults, spelled out so the section names what ran), the window and every account's key.
fn worker_env(i: usize, accounts: &[AccountSpec]) -> Vec<(String, String)> {
    let mut vars = vec![
        ("WAFLEET_EGRESS_GROUP".to_owned(), group_name(i)),
        ("WAFLEET_EGRESS_RATE_PER_MIN".to_owned(), GROUP_RATE.to_string()),
        ("WAFLEET_EGRESS_BURST".to_owned(), GROUP_BURST.to_string()),
        ("WAFLEET_SEND_RATE_PER_MIN".to_owned(), ACCOUNT_RATE.to_string()),
        ("WAFLEET_SEND_BURST".to_owned(), ACCOUNT_BURST.to_string()),
        ("WAFLEET_BUDGET_WINDOW_SECS".to_owned(), WINDOW_SECS.to_string()),
    ];
    vars.extend(accounts.iter().map(|a| (key_variable(&a.name), a.key.clone())));
    vars
}

/// Starts one worker per group at once, each pointed at its group's simulator; returns them and
/// the slowest start (spawn until every tenant is consumed).
async fn start_workers(
    ctx: &Ctx,
    env: &BenchEnv,
    sims: &[Sim],
    accounts: &[AccountSpec],
) -> anyhow::Result<(Vec<Proc>, Duration)> {
    let envs: Vec<Vec<(String, String)>> = (0..sims.len()).map(|i| worker_env(i, accounts)).collect();
    let starts = sims.iter().zip(&envs).map(|(sim, vars)| start_worker(&ctx.bins, env, &sim.base, vars, START_TIMEOUT));
    let mut workers = Vec::with_capacity(sims.len());
    let mut slowest = Duration::ZERO;
    // On an error the started ones are dropped, which kills them.
    for started in futures::future::join_all(starts).await {
        let (worker, _, took) = started?;
        slowest = slowest.max(took);
        workers.push(worker);
    }
    Ok((workers, slowest))
}

/// Bound of one worker's start: in a full run three workers each subscribe 10,000 classic tenant
/// queues at once (one worker alone takes ~30 s, scenario 4).
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// Queues `per_tenant` pending replies for every tenant straight into the outbox (as the owner,
/// like the tests' `queue_replies`), created in tenant order: a scheduler serving by age instead
/// of round robin would send the first tenants' replies first and fail the fairness row.
async fn queue_backlog(env: &BenchEnv, per_tenant: usize) -> anyhow::Result<()> {
    let owner = env.owner_pool(1).await?;
    sqlx::query(
        "insert into outbox (tenant_id, ingest_id, chat, body, created_at, next_attempt_at, expires_at) \
         select tenant_id, gen_random_uuid(), '15550001234', 'accounts ' || customer_ref || ' ' || n, \
                created, created, now() + interval '1 hour' \
         from (select t.tenant_id, t.customer_ref, n, now() - interval '10 minutes' \
                      + (row_number() over (order by t.tenant_id, n)) * interval '1 millisecond' as created \
               from tenants t cross join generate_series(1, $1) n) replies",
    )
    .bind(per_tenant as i32)
    .execute(&owner)
    .await?;
    owner.close().await;
    Ok(())
}

/// The method and every budget the scenario ran with.
fn notes(budgets: &Budgets, per_account: usize, per_tenant: usize, windows: usize) -> String {
    let own: Vec<String> = (1..=OWN_BUDGET_ACCOUNTS).map(|i| format!("a{i:02}")).collect();
    format!(
        "{ACCOUNTS} accounts × {per_account} classic tenants (echo bot), {GROUPS} egress groups g1–g{GROUPS}, each one \
         worker (WAFLEET_EGRESS_GROUP) whose WA_API_BASE_URL is a simulator of its own (one public IP each); no account \
         has a base URL, so every worker sends every account to its group's simulator. Budgets per {w} s window \
         (WAFLEET_BUDGET_WINDOW_SECS={w}, simulators --window-secs {w}): accounts WAFLEET_SEND_RATE_PER_MIN={ar} + \
         WAFLEET_SEND_BURST={ab} (the defaults), except {own} on their own {OWN_RATE} + {OWN_BURST} (accounts add \
         --rate-per-min --burst), below their fair share so their own bucket bounds them; each group \
         WAFLEET_EGRESS_RATE_PER_MIN={gr} + WAFLEET_EGRESS_BURST={gb}; simulators --per-ip-per-window {floor} \
         (rate + burst + 5, the margin production keeps under 300) and {pk} proxy calls per key. Backlog: {per_tenant} \
         pending replies per tenant inserted into the outbox once every worker was ready, created in tenant order; \
         measured over {windows} window(s) after one window of fill, from the sends the simulators recorded. Fair \
         share of an account bounded by the groups: ({GROUPS} × {gr} − the own-budget accounts' rates) / the others.",
        w = budgets.window_secs,
        ar = ACCOUNT_RATE,
        ab = ACCOUNT_BURST,
        own = own.join(", "),
        gr = budgets.group_rate,
        gb = budgets.group_burst,
        floor = budgets.per_ip_floor,
        pk = budgets.per_key,
    )
}

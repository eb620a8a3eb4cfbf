//! `wafleet-bench`: the benchmark harness. A Rust load generator that runs the real
//! release binaries (`wafleet-ingest`, `wafleet-worker`, `wafleet-sim`) as child processes
//! against a fixed vhost and database `wafleet_bench`, measures every figure beside a ceiling
//! or baseline taken in the same run, prints a table and writes BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p wafleet-bench -- all            # every scenario (≈ 45 min on 2 cores)
//! cargo run --release -p wafleet-bench -- ingest e2e     # some scenarios
//! cargo run --release -p wafleet-bench -- --quick all    # smoke test (≈ 2 min), not for targets
//! ```

mod charts;
mod env;
mod fifo;
mod load;
mod payload;
mod procs;
mod proxy;
mod raw;
mod report;
mod scenarios;
mod serve;
mod stack;
mod stats;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};

use report::{Row, Section};
use scenarios::Ctx;

/// Load generator and benchmarks for wafleet (see bench/README.md).
#[derive(Debug, Parser)]
#[command(name = "wafleet-bench", version, about)]
struct Cli {
    /// Scenarios to run (default: all).
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
    /// Smoke-test sizes (100 queues, short runs, one repeat): for CI, not for targets.
    #[arg(long)]
    quick: bool,
    /// Where to write the results (default: BENCHMARKS.md at the workspace root; with --quick,
    /// target/bench/BENCHMARKS.quick.md).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not build the binaries first (`cargo build --release --bins`; a debug bench builds debug ones).
    #[arg(long)]
    no_build: bool,
    /// Directory of the binaries (default: the directory of this executable, so the same profile).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Exit with status 2 when a target is missed (default: only errors fail the run).
    #[arg(long)]
    strict: bool,
    /// Extra `KEY=VALUE` for every child process, for experiments (e.g. MALLOC_ARENA_MAX=2);
    /// repeatable. Results written with it are not the production configuration.
    #[arg(long = "child-env", value_parser = parse_key_value)]
    child_env: Vec<(String, String)>,
    /// Let a full run measure a working tree with uncommitted changes to tracked files; the
    /// results then name the commit and a hash of the diff (a full run refuses one otherwise, so
    /// every figure of BENCHMARKS.md can be tied to code).
    #[arg(long)]
    allow_dirty: bool,
}

fn parse_key_value(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| "expected KEY=VALUE".to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    All,
    Ingest,
    E2e,
    Noisy,
    Fleet,
    Memory,
    Spool,
    Budget,
    Console,
    Slowbridge,
    Accounts,
}

const ORDER: [Scenario; 10] = [
    Scenario::Ingest,
    Scenario::E2e,
    Scenario::Noisy,
    Scenario::Fleet,
    Scenario::Memory,
    Scenario::Spool,
    Scenario::Budget,
    Scenario::Console,
    Scenario::Slowbridge,
    Scenario::Accounts,
];

fn title(s: Scenario) -> &'static str {
    match s {
        Scenario::All => "all",
        Scenario::Ingest => "1. Ingest durable accept",
        Scenario::E2e => "2. End to end",
        Scenario::Noisy => "3. Noisy tenant",
        Scenario::Fleet => "4. Fleet size",
        Scenario::Memory => "5. Memory",
        Scenario::Spool => "6. Spool",
        Scenario::Budget => "7. Send budget",
        Scenario::Console => "8. Console pages against the admin API",
        Scenario::Slowbridge => "9. Slow bridge and a seed-style synchronous handler",
        Scenario::Accounts => "10. Several accounts and egress groups",
    }
}

fn key(s: Scenario) -> &'static str {
    match s {
        Scenario::All => "all",
        Scenario::Ingest => "ingest",
        Scenario::E2e => "e2e",
        Scenario::Noisy => "noisy",
        Scenario::Fleet => "fleet",
        Scenario::Memory => "memory",
        Scenario::Spool => "spool",
        Scenario::Budget => "budget",
        Scenario::Console => "console",
        Scenario::Slowbridge => "slowbridge",
        Scenario::Accounts => "accounts",
    }
}

/// Workspace root: the parent of this crate's manifest directory.
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// The Cargo profile this bench was built with; the binaries it runs are built with the same one.
/// Only a smoke run (`--quick`, as CI does after its test build) may use `debug`.
const PROFILE: &str = if cfg!(debug_assertions) { "debug" } else { "release" };

fn build_binaries(root: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec![
        "build",
        "--bins",
        "-p",
        "wafleet-ingest",
        "-p",
        "wafleet-worker",
        "-p",
        "wafleet-sim",
        "-p",
        "wafleet-admin",
    ];
    if PROFILE == "release" {
        args.insert(1, "--release");
    }
    eprintln!("[bench] cargo {}", args.join(" "));
    let status =
        std::process::Command::new(cargo).current_dir(root).args(&args).status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn read_first(path: &str, prefix: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| "?".into())
}

/// The commit, and the SHA-256 (first 12 hex digits) of `git diff HEAD` when tracked files differ
/// from it (results then describe code that is in no commit; untracked files do not count).
fn git_commit(root: &Path) -> (String, Option<String>) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "?".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_none_or(|changes| !changes.is_empty());
    let diff = dirty.then(|| {
        use sha2::Digest as _;
        let diff = git(&["diff", "HEAD"]).unwrap_or_default();
        let digest = sha2::Sha256::digest(diff.as_bytes());
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect::<String>()
    });
    (commit, diff)
}

/// The filesystem the bench works in (`df`), e.g. `/dev/vda1 ext4 98G`.
fn disk_of(dir: &Path) -> String {
    std::process::Command::new("df")
        .args(["--output=source,fstype,size", "-h"])
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "?".into())
}

/// Machine, versions and date, for the env block and each section's header line.
async fn environment(ctx: &Ctx, root: &Path) -> (String, String) {
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = read_first("/proc/meminfo", "MemTotal");
    let cpu = read_first("/proc/cpuinfo", "model name");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    let (rabbit, erlang, broker_files) = match env::Mgmt::new(&ctx.services.rabbit_api) {
        Ok(m) => {
            let (rabbit, erlang) = m.versions().await.unwrap_or_else(|_| ("?".into(), "?".into()));
            let files = m.file_descriptors().await.map_or_else(|_| "?".into(), |(total, _)| total.to_string());
            (rabbit, erlang, files)
        }
        Err(_) => ("?".into(), "?".into(), "?".into()),
    };
    let postgres = async {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&ctx.services.pg_admin_url).await?;
        let mut settings = Vec::new();
        for name in ["server_version", "fsync", "synchronous_commit"] {
            settings.push(sqlx::query_scalar::<_, String>(&format!("show {name}")).fetch_one(&pool).await?);
        }
        pool.close().await;
        anyhow::Ok(format!("{}, fsync {}, synchronous_commit {}", settings[0], settings[1], settings[2]))
    }
    .await
    .unwrap_or_else(|_| "?".into());
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let (commit, diff) = git_commit(root);
    let (tree, tree_note) = match &diff {
        Some(hash) => (
            format!(" + working tree (diff {hash})"),
            format!(" plus uncommitted changes (SHA-256 of `git diff HEAD` begins {hash})"),
        ),
        None => (String::new(), String::new()),
    };
    let disk = disk_of(&root.join("target"));
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into());
    let mode = if ctx.quick { "quick (smoke test, not for targets)" } else { "full" };
    let short = format!(
        "Run {date}, {mode}, commit {commit}{tree}; {nproc} CPUs ({cpu}), {mem} RAM; RabbitMQ {rabbit}, \
         PostgreSQL {postgres}"
    );
    let block = format!(
        "## Environment of the last run\n\n\
         | | |\n| --- | --- |\n\
         | Date | {date} |\n\
         | Mode | {mode} |\n\
         | Commit | {commit}{tree_note} |\n\
         | CPU | {nproc} × {cpu} |\n\
         | Memory | {mem} |\n\
         | Kernel | {kernel} |\n\
         | Disk (bench work directory) | {disk} |\n\
         | Load average at the start (1, 5, 15 min) | {load} |\n\
         | RabbitMQ | {rabbit} (Erlang {erlang}), single node, loopback, open-files limit {broker_files} |\n\
         | PostgreSQL | {postgres}, loopback |\n\
         | Binaries | `target/{PROFILE}`, run as child processes with production defaults |\n"
    );
    (short, block)
}

async fn run_one(ctx: &mut Ctx, s: Scenario) -> Section {
    let started = Instant::now();
    let result = match s {
        Scenario::Ingest => scenarios::ingest::run(ctx).await,
        Scenario::E2e => scenarios::e2e::run(ctx).await,
        Scenario::Noisy => scenarios::noisy::run(ctx).await,
        Scenario::Fleet => scenarios::fleet::run(ctx).await,
        Scenario::Memory => scenarios::memory::run(ctx).await,
        Scenario::Spool => scenarios::spool::run(ctx).await,
        Scenario::Budget => scenarios::budget::run(ctx).await,
        Scenario::Console => scenarios::console::run(ctx).await,
        Scenario::Slowbridge => scenarios::slowbridge::run(ctx).await,
        Scenario::Accounts => scenarios::accounts::run(ctx).await,
        Scenario::All => Ok(Section::new("all", "all")),
    };
    match result {
        Ok(section) => section,
        Err(e) => {
            let mut section = Section::new(key(s), title(s));
            section.rows.push(Row::info("error", format!("{e:#}")));
            section.seconds = started.elapsed().as_secs_f64();
            section
        }
    }
}

/// The note naming the send and egress budgets the scenario's workers ran with, so no figure is
/// read without the limits behind it.
fn budgets_note(budgets: &[String]) -> String {
    match budgets {
        [] => "Send and egress budgets: none apply (no worker ran).".to_owned(),
        [one] => format!("Send and egress budgets of the worker(s): {one}."),
        several => format!("Send and egress budgets of the workers: {}.", several.join("; ")),
    }
}

/// `--out`, or BENCHMARKS.md at the root (a quick run: `BENCHMARKS.quick.md` in the work directory).
fn results_path(cli: &Cli, root: &Path, work_dir: &Path) -> PathBuf {
    cli.out.clone().unwrap_or_else(|| {
        if cli.quick {
            work_dir.join("BENCHMARKS.quick.md")
        } else {
            root.join("BENCHMARKS.md")
        }
    })
}

/// Draws every ratio the results file `out` now holds (earlier runs of other scenarios
/// included) against its target; a chart that cannot be drawn is reported, not fatal.
fn draw_ratios(dir: &Path, out: &Path) {
    let ratios = std::fs::read_to_string(out).map_err(anyhow::Error::from);
    match ratios.and_then(|text| charts::ratios(dir, &text)) {
        Ok(files) => eprintln!("[bench] ratio chart: {files}"),
        Err(e) => eprintln!("[bench] ratio chart not written: {e:#}"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if PROFILE == "debug" && !cli.quick {
        bail!("unoptimised binaries measure nothing: run the benchmark with `cargo run --release` (only --quick may use a debug build)");
    }
    let root = workspace_root();
    if !cli.quick && !cli.allow_dirty && git_commit(&root).1.is_some() {
        bail!("the working tree has uncommitted changes: commit them so the results name the code, or pass --allow-dirty (the results then record a hash of the diff)");
    }
    procs::set_extra_child_env(cli.child_env.clone());
    if !cli.no_build {
        build_binaries(&root)?;
    }
    let bin_dir = match &cli.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?.parent().map(Path::to_path_buf).context("executable directory")?,
    };
    let work_dir = root.join("target").join("bench");
    std::fs::create_dir_all(&work_dir)?;
    let bins = stack::Bins::in_dir(&bin_dir, work_dir.clone())?;
    let out = results_path(&cli, &root, &work_dir);
    let mut ctx = Ctx {
        quick: cli.quick,
        bins,
        services: env::Services::from_env(),
        repo: root.clone(),
        shared: Default::default(),
        charts_dir: charts::dir_for(&root, &out),
    };
    let wanted: Vec<Scenario> = if cli.scenarios.is_empty() || cli.scenarios.contains(&Scenario::All) {
        ORDER.to_vec()
    } else {
        ORDER.iter().copied().filter(|s| cli.scenarios.contains(s)).collect()
    };
    let (short, env_block) = environment(&ctx, &root).await;
    eprintln!("[bench] {short}");
    let started = Instant::now();
    // Every scenario bounds its own loops; this is the backstop for the whole run.
    let budget = Duration::from_secs(if cli.quick { 600 } else { 90 * 60 });
    let mut failures = 0;
    let mut errors = 0;
    for s in wanted {
        eprintln!("[bench] {} ...", title(s));
        let background = procs::wait_quiet(Duration::from_secs(if cli.quick { 2 } else { 60 })).await;
        let remaining = budget.saturating_sub(started.elapsed());
        let mut section = match tokio::time::timeout(remaining, run_one(&mut ctx, s)).await {
            Ok(section) => section,
            Err(_) => Section::not_run(key(s), title(s), "not run: the run's time budget was used up"),
        };
        section.notes.push(budgets_note(&stack::take_worker_budgets()));
        section.notes.push(format!(
            "Machine {:.0}% busy just before the scenario started (other work on this shared box adds noise).",
            background * 100.0
        ));
        failures += section.failures();
        errors += section.rows.iter().filter(|r| r.metric == "error").count();
        print!("{}", section.to_text());
        report::write_block(&out, section.key, &section.to_markdown(&short))?;
    }
    let total = started.elapsed().as_secs_f64();
    let env_block = format!("{env_block}| Wall time of the run | {:.1} min |\n", total / 60.0);
    report::write_block(&out, "env", &env_block)?;
    draw_ratios(&ctx.charts_dir, &out);
    // Leave nothing behind: the scenarios tear down, this catches an interrupted one.
    if let Ok(m) = env::Mgmt::new(&ctx.services.rabbit_api) {
        let _ = m.delete_vhost(env::BENCH_NAME, &ctx.services.amqp_url()).await;
    }
    eprintln!("[bench] done in {:.1} min; {failures} target(s) missed; results in {}", total / 60.0, out.display());
    if errors > 0 {
        bail!("{errors} scenario(s) failed to run");
    }
    if cli.strict && failures > 0 {
        std::process::exit(2);
    }
    Ok(())
}

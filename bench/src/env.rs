//! The benchmark environment: the fixed Postgres database and RabbitMQ vhost `wafleet_bench`,
//! recreated for each scenario and removed at the end, tenants with fixed names
//! (`bench_t00001`, ...) so quorum queue names (broker atoms, never freed) are reused across runs,
//! and a small client of the RabbitMQ management API.

use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::StreamExt as _;
use secrecy::SecretString;
use sqlx::postgres::PgPoolOptions;
use wafleet_fleet::service::Endpoints;
use wafleet_fleet::tenant::{BotKind, NewTenant};
use wafleet_shared::topology::QueueType;
use wafleet_shared::{AuthMode, CustomerRef, Generation, Keyring};

/// Name of the database and of the vhost.
pub const BENCH_NAME: &str = "wafleet_bench";
/// Signing key given to ingest and used to sign the tenants' URLs.
pub const SIGNING_KEY: &str = "bench:0123456789abcdef0123456789abcdef-wafleet-bench";
/// WA Bridges API key the simulator accepts and the worker uses.
pub const API_KEY: &str = "sk_test_default";

/// Where the services are (same variables and defaults as the test harness).
#[derive(Clone, Debug)]
pub struct Services {
    /// A Postgres role that may create databases.
    pub pg_admin_url: String,
    /// AMQP URL without vhost.
    pub amqp_base: String,
    /// Management API URL with credentials.
    pub rabbit_api: String,
}

impl Services {
    /// `WAFLEET_TEST_PG_ADMIN_URL`, `WAFLEET_TEST_AMQP_BASE`, `RABBITMQ_API_URL`.
    pub fn from_env() -> Self {
        let var = |k: &str, d: &str| std::env::var(k).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| d.to_owned());
        Self {
            pg_admin_url: var("WAFLEET_TEST_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/test"),
            amqp_base: var("WAFLEET_TEST_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672"),
            rabbit_api: var("RABBITMQ_API_URL", "http://guest:guest@127.0.0.1:15672"),
        }
    }

    /// The AMQP URL of the bench vhost.
    pub fn amqp_url(&self) -> String {
        format!("{}/{BENCH_NAME}", self.amqp_base.trim_end_matches('/'))
    }
}

/// The ref of bench tenant `i` (1-based): `bench_t00001`.
pub fn tenant_ref(i: usize) -> String {
    format!("bench_t{i:05}")
}

/// Replaces the database of a Postgres URL.
pub fn with_database(url: &str, db: &str) -> anyhow::Result<String> {
    let mut u = url::Url::parse(url).context("postgres url")?;
    u.set_path(&format!("/{db}"));
    Ok(u.to_string())
}

/// Minimal management API client (long timeouts: deleting thousands of queues takes a while).
#[derive(Clone)]
pub struct Mgmt {
    http: reqwest::Client,
    base: url::Url,
    user: String,
    pass: String,
}

impl Mgmt {
    /// From `http://user:pass@host:port`.
    pub fn new(api_url: &str) -> anyhow::Result<Self> {
        let mut base = url::Url::parse(api_url).context("RABBITMQ_API_URL")?;
        let user = base.username().to_owned();
        let pass = base.password().unwrap_or("").to_owned();
        let _ = base.set_username("");
        let _ = base.set_password(None);
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(600)).build()?;
        Ok(Self { http, base, user, pass })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/{path}", self.base.as_str().trim_end_matches('/'))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self.http.request(method, self.url(path)).basic_auth(&self.user, Some(&self.pass));
        if let Some(b) = body {
            req = req.json(&b);
        }
        Ok(req.send().await?)
    }

    /// GET a JSON document.
    pub async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let r = self.send(reqwest::Method::GET, path, None).await?;
        if !r.status().is_success() {
            bail!("GET /api/{path} -> {}", r.status());
        }
        Ok(r.json().await?)
    }

    /// Deletes a vhost (absent is fine). With thousands of queues one DELETE outlives the
    /// management API's connection timeout, so the queues are deleted over AMQP first (8
    /// channels), then the vhost; a DELETE that times out is followed by polling until the vhost
    /// is gone (bounded).
    pub async fn delete_vhost(&self, vhost: &str, amqp_url: &str) -> anyhow::Result<()> {
        let exists = self.send(reqwest::Method::GET, &format!("vhosts/{vhost}"), None).await?;
        if exists.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        // A vhost deletion cut earlier may have removed the permissions already.
        let perms = serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"});
        let _ = self.send(reqwest::Method::PUT, &format!("permissions/{vhost}/{}", self.user), Some(perms)).await;
        let queues: Vec<String> = self
            .get(&format!("queues/{vhost}?columns=name"))
            .await
            .ok()
            .and_then(|v| {
                v.as_array().map(|a| a.iter().filter_map(|q| q["name"].as_str().map(str::to_owned)).collect())
            })
            .unwrap_or_default();
        if queues.len() > 50 {
            let deleting = delete_queues(amqp_url, &queues);
            match tokio::time::timeout(Duration::from_secs(600), deleting).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("[bench] deleting {} queues over AMQP failed: {e:#}", queues.len()),
                Err(_) => eprintln!("[bench] deleting {} queues over AMQP timed out", queues.len()),
            }
        }
        let deleted = self.send(reqwest::Method::DELETE, &format!("vhosts/{vhost}"), None).await;
        if let Ok(r) = &deleted {
            if r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND {
                return Ok(());
            }
        }
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(300) {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if let Ok(r) = self.send(reqwest::Method::GET, &format!("vhosts/{vhost}"), None).await {
                if r.status() == reqwest::StatusCode::NOT_FOUND {
                    return Ok(());
                }
            }
        }
        match deleted {
            Ok(r) => bail!("DELETE vhost {vhost} -> {}", r.status()),
            Err(e) => Err(e).context(format!("DELETE vhost {vhost}")),
        }
    }

    /// `fd_total` and `fd_used` of the first node.
    pub async fn file_descriptors(&self) -> anyhow::Result<(u64, u64)> {
        let nodes = self.get("nodes?columns=fd_total,fd_used").await?;
        let node = nodes.get(0).context("no broker node")?;
        Ok((node["fd_total"].as_u64().unwrap_or(0), node["fd_used"].as_u64().unwrap_or(0)))
    }

    /// Creates a vhost and gives `user` every right on it.
    pub async fn create_vhost(&self, vhost: &str) -> anyhow::Result<()> {
        let r = self.send(reqwest::Method::PUT, &format!("vhosts/{vhost}"), Some(serde_json::json!({}))).await?;
        if !r.status().is_success() {
            bail!("PUT vhost {vhost} -> {}", r.status());
        }
        let perms = serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"});
        let r = self.send(reqwest::Method::PUT, &format!("permissions/{vhost}/{}", self.user), Some(perms)).await?;
        if !r.status().is_success() {
            bail!("PUT permissions {vhost} -> {}", r.status());
        }
        Ok(())
    }

    /// Sum of `mem_used` over the nodes, bytes (the broker refreshes it every few seconds).
    pub async fn mem_used(&self) -> anyhow::Result<u64> {
        let nodes = self.get("nodes?columns=name,mem_used").await?;
        Ok(nodes.as_array().map(|a| a.iter().filter_map(|n| n["mem_used"].as_u64()).sum()).unwrap_or(0))
    }

    /// Consumers in `vhost`.
    pub async fn consumers(&self, vhost: &str) -> anyhow::Result<usize> {
        let list = self.get(&format!("consumers/{vhost}?columns=consumer_tag")).await?;
        Ok(list.as_array().map(Vec::len).unwrap_or(0))
    }

    /// Polls the consumer count of `vhost` (the management API lags by its stats interval)
    /// until it reaches `at_least` or `timeout` passes; returns the last count.
    pub async fn wait_consumers(&self, vhost: &str, at_least: usize, timeout: Duration) -> usize {
        let started = std::time::Instant::now();
        let mut count = 0;
        while started.elapsed() < timeout {
            count = self.consumers(vhost).await.unwrap_or(count);
            if count >= at_least {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        count
    }

    /// Queues in `vhost`.
    pub async fn queue_count(&self, vhost: &str) -> anyhow::Result<usize> {
        let list = self.get(&format!("queues/{vhost}?columns=name")).await?;
        Ok(list.as_array().map(Vec::len).unwrap_or(0))
    }

    /// RabbitMQ and Erlang versions.
    pub async fn versions(&self) -> anyhow::Result<(String, String)> {
        let o = self.get("overview?columns=rabbitmq_version,erlang_version").await?;
        Ok((
            o["rabbitmq_version"].as_str().unwrap_or("?").to_owned(),
            o["erlang_version"].as_str().unwrap_or("?").to_owned(),
        ))
    }
}

/// One bench tenant.
#[derive(Clone, Debug)]
pub struct BenchTenant {
    /// Its ref (also its bridge key).
    pub customer_ref: CustomerRef,
    /// `/webhook/<ref>/<token>`.
    pub path: String,
    /// URL generation (envelopes published directly must carry it).
    pub generation: Generation,
}

/// The recreated database and vhost.
pub struct BenchEnv {
    /// Service locations.
    pub services: Services,
    /// Owner URL of the bench database.
    pub owner_url: String,
    /// The worker's role on the bench database.
    pub worker_url: String,
    /// The administration role on the bench database (tenant setup).
    pub admin_url: String,
    /// AMQP URL of the bench vhost.
    pub amqp_url: String,
    /// Management API.
    pub mgmt: Mgmt,
    keyring: Keyring,
}

impl BenchEnv {
    /// Drops and recreates the database and the vhost, then runs `wafleet migrate` against
    /// them (schema, role, exchanges, retry tiers, policies).
    pub async fn recreate(services: &Services) -> anyhow::Result<Self> {
        let mgmt = Mgmt::new(&services.rabbit_api)?;
        mgmt.delete_vhost(BENCH_NAME, &services.amqp_url()).await.context("deleting the bench vhost")?;
        mgmt.create_vhost(BENCH_NAME).await.context("creating the bench vhost (is rabbitmq_management enabled?)")?;
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&services.pg_admin_url)
            .await
            .context("cannot reach Postgres (WAFLEET_TEST_PG_ADMIN_URL)")?;
        sqlx::query(&format!("drop database if exists {BENCH_NAME} with (force)")).execute(&admin).await?;
        sqlx::query(&format!("create database {BENCH_NAME}")).execute(&admin).await?;
        admin.close().await;
        let owner_url = with_database(&services.pg_admin_url, BENCH_NAME)?;
        let as_role = |role: &str| -> anyhow::Result<String> {
            let mut url = url::Url::parse(&owner_url)?;
            url.set_username(role).map_err(|_| anyhow::anyhow!("postgres url"))?;
            url.set_password(None).map_err(|_| anyhow::anyhow!("postgres url"))?;
            Ok(url.to_string())
        };
        let worker_url = as_role(wafleet_fleet::db::Duty::Worker.default_role())?;
        let admin_url = as_role(wafleet_fleet::db::Duty::Admin.default_role())?;
        let env = Self {
            services: services.clone(),
            owner_url,
            worker_url,
            admin_url,
            amqp_url: services.amqp_url(),
            mgmt,
            keyring: Keyring::parse(&SecretString::from(SIGNING_KEY))?,
        };
        let tiers = wafleet_fleet::topology::RetryTier::parse_tiers(wafleet_fleet::topology::DEFAULT_RETRY_TIERS)?;
        let roles = wafleet_fleet::db::DutyRoles::from_urls(&env.worker_url, &env.admin_url)?;
        wafleet_fleet::service::migrate(&env.owner_url, &roles, &env.endpoints(), &tiers)
            .await
            .context("wafleet migrate")?;
        Ok(env)
    }

    /// Endpoints for `wafleet_fleet::service`.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            database_url: self.admin_url.clone(),
            amqp_url: self.amqp_url.clone(),
            rabbitmq_api_url: self.services.rabbit_api.clone(),
        }
    }

    /// Adds tenants `1..=count` (echo bot, signed URLs) to the default account: rows through the
    /// same repository function as `wafleet tenants add`, queues declared on 8 channels in parallel.
    pub async fn add_tenants(&self, count: usize, queue_type: QueueType) -> anyhow::Result<Vec<BenchTenant>> {
        self.add_tenants_in(count, queue_type, &[wafleet_fleet::accounts::DEFAULT_ACCOUNT]).await
    }

    /// Like [`Self::add_tenants`], the tenants split over `accounts` in consecutive blocks of
    /// equal size (tenant `i` of `count` goes to `accounts[i * accounts.len() / count]`), as
    /// `wafleet tenants add --account` does.
    pub async fn add_tenants_in(
        &self,
        count: usize,
        queue_type: QueueType,
        accounts: &[&str],
    ) -> anyhow::Result<Vec<BenchTenant>> {
        let refs: Vec<CustomerRef> =
            (1..=count).map(|i| CustomerRef::parse(&tenant_ref(i))).collect::<Result<_, _>>()?;
        let connection = wafleet_shared::amqp::connect(&self.amqp_url, "wafleet-bench-setup").await?;
        let chunk = count.div_ceil(8).max(1);
        let declares = refs.chunks(chunk).map(|part| {
            let connection = &connection;
            async move {
                let channel = connection.create_channel().await?;
                for r in part {
                    wafleet_fleet::topology::declare_tenant(connection, &channel, r, queue_type).await?;
                }
                let _ = channel.close(200, "done").await;
                anyhow::Ok(())
            }
        });
        for result in futures::future::join_all(declares).await {
            result.context("declaring tenant queues")?;
        }
        let _ = connection.close(200, "done").await;
        let pool = wafleet_fleet::db::app_pool(&self.admin_url, 2)?;
        for (block, part) in refs.chunks(500).enumerate() {
            let mut tx = pool.begin().await?;
            for (offset, r) in part.iter().enumerate() {
                let account = accounts[(block * 500 + offset) * accounts.len() / count];
                let new = NewTenant {
                    customer_ref: r.clone(),
                    bridge: r.as_str().to_owned(),
                    bot_kind: BotKind::Echo,
                    auth_mode: AuthMode::Token,
                    queue_type,
                };
                wafleet_fleet::tenant::insert_in_account(&mut tx, &new, account).await.context("adding a tenant")?;
            }
            tx.commit().await?;
        }
        let summaries = wafleet_fleet::tenant::list(&pool).await?;
        pool.close().await;
        let mut out = Vec::with_capacity(count);
        for r in refs {
            let generation = summaries
                .iter()
                .find(|s| s.customer_ref == r)
                .map(|s| s.generation)
                .context("tenant missing after insert")?;
            let token = self.keyring.sign(&r, generation);
            out.push(BenchTenant { path: format!("/webhook/{r}/{token}"), customer_ref: r, generation });
        }
        Ok(out)
    }

    /// Purges the tenant queues of `tenants`.
    pub async fn purge(&self, tenants: &[BenchTenant]) -> anyhow::Result<()> {
        let connection = wafleet_shared::amqp::connect(&self.amqp_url, "wafleet-bench-purge").await?;
        let channel = connection.create_channel().await?;
        for t in tenants {
            let queue = wafleet_shared::topology::tenant_queue(&t.customer_ref);
            channel.queue_purge(&queue, lapin::options::QueuePurgeOptions::default()).await?;
        }
        let _ = connection.close(200, "done").await;
        Ok(())
    }

    /// Messages ready in the tenants' queues, exact (passive declares; the management API's
    /// counts lag by its stats interval).
    pub async fn ready_messages(&self, tenants: &[BenchTenant]) -> anyhow::Result<u64> {
        let connection = wafleet_shared::amqp::connect(&self.amqp_url, "wafleet-bench-depth").await?;
        let channel = connection.create_channel().await?;
        let mut total = 0u64;
        for t in tenants {
            let queue = wafleet_shared::topology::tenant_queue(&t.customer_ref);
            let options = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
            let q = channel.queue_declare(&queue, options, lapin::types::FieldTable::default()).await?;
            total += u64::from(q.message_count());
        }
        let _ = connection.close(200, "done").await;
        Ok(total)
    }

    /// A pool as the owner (bypasses RLS: counts and raw-loop tables only).
    pub async fn owner_pool(&self, size: u32) -> anyhow::Result<sqlx::PgPool> {
        Ok(PgPoolOptions::new().max_connections(size).connect(&self.owner_url).await?)
    }

    /// Removes the vhost (every queue) and the database.
    pub async fn teardown(self) -> anyhow::Result<()> {
        self.mgmt.delete_vhost(BENCH_NAME, &self.amqp_url).await?;
        let admin = PgPoolOptions::new().max_connections(1).connect(&self.services.pg_admin_url).await?;
        sqlx::query(&format!("drop database if exists {BENCH_NAME} with (force)")).execute(&admin).await?;
        admin.close().await;
        Ok(())
    }
}

/// Deletes `queues` of the vhost of `amqp_url` on 8 channels in parallel.
async fn delete_queues(amqp_url: &str, queues: &[String]) -> anyhow::Result<()> {
    let connection = wafleet_shared::amqp::connect(amqp_url, "wafleet-bench-cleanup").await?;
    let chunk = queues.len().div_ceil(8).max(1);
    let jobs = queues.chunks(chunk).map(|part| {
        let connection = &connection;
        async move {
            let channel = connection.create_channel().await?;
            for q in part {
                channel.queue_delete(q, lapin::options::QueueDeleteOptions::default()).await?;
            }
            let _ = channel.close(200, "done").await;
            anyhow::Ok(())
        }
    });
    let results = futures::future::join_all(jobs).await;
    let _ = connection.close(200, "done").await;
    results.into_iter().collect()
}

/// Registers bridges at a running simulator (16 requests at a time), owned by its first key.
pub async fn register_bridges(sim_base: &str, tenants: &[BenchTenant]) -> anyhow::Result<()> {
    let owned: Vec<(&BenchTenant, Option<&str>)> = tenants.iter().map(|t| (t, None)).collect();
    register_owned_bridges(sim_base, &owned).await
}

/// Registers bridges at a running simulator (16 requests at a time), each owned by the given API
/// key (the simulator's first key when `None`): a bridge answers only the key that owns it.
pub async fn register_owned_bridges(sim_base: &str, owned: &[(&BenchTenant, Option<&str>)]) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build()?;
    let url = format!("{sim_base}/_sim/bridges");
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(owned.iter())
        .map(|(t, api_key)| {
            let http = &http;
            let url = &url;
            async move {
                let bridge = serde_json::json!({"customer_ref": t.customer_ref.as_str(), "api_key": api_key});
                let r = http.post(url).json(&bridge).send().await?;
                if !r.status().is_success() {
                    bail!("registering bridge {} -> {}", t.customer_ref, r.status());
                }
                Ok(())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect()
}

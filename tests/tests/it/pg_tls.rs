//! Postgres over TLS. A throwaway cluster (scripts/pg-tls-cluster.sh) on its own
//! loopback port accepts only `hostssl` connections, with a CA and a server certificate made at
//! test time. The worker's pool, a leader's connection, `migrate` and the CLI connect with
//! `sslmode=verify-full`; plaintext and a wrong CA are refused with errors that say why.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wafleet_fleet::error::Error;
use wafleet_fleet::{db, locks};
use wafleet_tests::wafleet_cli_path;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("scripts/pg-tls-cluster.sh")
}

/// The extra cluster; dropping it stops it and removes its folder, even when the test fails.
struct TlsCluster {
    dir: PathBuf,
    port: u16,
}

impl TlsCluster {
    fn up() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("wafleet-tls-{}", uuid::Uuid::now_v7().simple()));
        // The guard exists before `up`, so a half-made cluster is removed too.
        let cluster = Self { dir, port };
        let out = Command::new(script()).arg("up").arg(&cluster.dir).arg(port.to_string()).output().unwrap();
        assert!(out.status.success(), "pg-tls-cluster.sh up: {}", String::from_utf8_lossy(&out.stderr));
        cluster
    }

    fn url(&self, user: &str, query: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/postgres?{query}", self.port)
    }

    fn verify_full(&self, user: &str, ca: &str) -> String {
        self.url(user, &format!("sslmode=verify-full&sslrootcert={}", self.dir.join(ca).display()))
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("down").arg(&self.dir).output();
    }
}

fn cli(database_url: &str) -> Output {
    Command::new(wafleet_cli_path())
        .args(["accounts", "list", "--json"])
        .env("ADMIN_DATABASE_URL", database_url)
        .env_remove("PGSSLMODE")
        .env_remove("WAFLEET_ALLOW_UNSAFE_DB_ROLE")
        .output()
        .unwrap()
}

/// The error and its sources, as the binaries print them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_pool_and_the_cli_connect_with_verify_full_and_are_refused_without_tls_or_with_a_wrong_ca() {
    let cluster = TlsCluster::up();
    let app = cluster.verify_full("wafleet_worker", "ca.crt");
    let admin = cluster.verify_full("wafleet_admin", "ca.crt");
    let roles = db::DutyRoles::from_urls(&app, &admin).unwrap();
    let setup = db::migrate(&cluster.verify_full("postgres", "ca.crt"), &roles).await.unwrap();
    assert_eq!(setup, db::RoleSetup::Granted);

    // The pool the worker and the sender make, and a leader's direct connection.
    let pool = db::app_pool(&app, 2).unwrap();
    db::check_role(&pool, db::Duty::Worker, false).await.unwrap();
    let ssl: bool =
        sqlx::query_scalar("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetch_one(&pool).await.unwrap();
    assert!(ssl, "the pool's connection is encrypted");
    assert!(db::try_lead(&app, locks::RECONCILER.key).await.unwrap().is_some());
    let out = cli(&admin);
    assert!(out.status.success(), "CLI over verify-full: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"default\""));

    // Plaintext: the server has no pg_hba entry without encryption (28000).
    let plaintext = cluster.url("wafleet_admin", "sslmode=disable");
    let err = db::check_role(&db::app_pool(&plaintext, 1).unwrap(), db::Duty::Admin, false).await.unwrap_err();
    let refused_by_server =
        matches!(&err, Error::Database(sqlx::Error::Database(e)) if e.code().as_deref() == Some("28000"));
    assert!(refused_by_server && chain(&err).contains("no encryption"), "{}", chain(&err));
    // A CA that did not sign the server's certificate: the TLS handshake fails on our side.
    let wrong_ca = cluster.verify_full("wafleet_admin", "wrong-ca.crt");
    let err = db::check_role(&db::app_pool(&wrong_ca, 1).unwrap(), db::Duty::Admin, false).await.unwrap_err();
    // (rustls reports it through the stream, so sqlx surfaces it as an I/O error.)
    let handshake = matches!(&err, Error::Database(sqlx::Error::Io(_) | sqlx::Error::Tls(_)));
    assert!(handshake && chain(&err).contains("invalid peer certificate: UnknownIssuer"), "{}", chain(&err));

    for (url, expected) in [(&plaintext, "no encryption"), (&wrong_ca, "invalid peer certificate")] {
        let out = cli(url);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expected), "CLI with {url}: {stderr}");
    }
    pool.close().await;
}

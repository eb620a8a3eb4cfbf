//! Connection options from a database URL, with the TLS default applied in the one
//! place every pool and leader connection is made.
//!
//! sqlx parses `sslmode` (`disable`, `allow`, `prefer`, `require`, `verify-ca`, `verify-full`),
//! `sslrootcert`, `sslcert` and `sslkey` from the URL itself. What it does not do is refuse a
//! plaintext fallback: its default, `prefer`, silently talks plaintext to a server that offers no
//! TLS. A URL naming a host other than loopback without an `sslmode` (and without `PGSSLMODE`)
//! therefore gets `require`, so credentials and tenant data never cross a network in the clear
//! because someone forgot a query parameter.

use std::net::IpAddr;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::error::Result;

/// Parses `database_url` into connection options, raising a missing `sslmode` to `require` for a
/// host that is not loopback (and not a Unix socket). An explicit `sslmode`, in the URL or in
/// `PGSSLMODE`, is kept as given.
pub fn connect_options(database_url: &str) -> Result<PgConnectOptions> {
    let options: PgConnectOptions = database_url.parse()?;
    if names_ssl_mode(database_url) || std::env::var_os("PGSSLMODE").is_some() || is_local(options.get_host()) {
        return Ok(options);
    }
    Ok(options.ssl_mode(PgSslMode::Require))
}

/// Whether the URL's query sets the TLS mode (sqlx accepts both spellings).
fn names_ssl_mode(database_url: &str) -> bool {
    url::Url::parse(database_url)
        .map(|u| u.query_pairs().any(|(k, _)| k == "sslmode" || k == "ssl-mode"))
        .unwrap_or(false)
}

/// Loopback names and addresses, and Unix socket directories (a host starting with `/`).
fn is_local(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.starts_with('/')
        || bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> PgSslMode {
        match connect_options(url) {
            Ok(options) => options.get_ssl_mode(),
            Err(e) => panic!("{url}: {e}"),
        }
    }

    #[test]
    fn a_remote_host_without_sslmode_requires_tls() {
        if std::env::var_os("PGSSLMODE").is_some() {
            return;
        }
        assert!(matches!(mode("postgres://app@db.example.com/wafleet"), PgSslMode::Require));
        assert!(matches!(mode("postgres://app@10.0.0.7:5432/wafleet"), PgSslMode::Require));
    }

    #[test]
    fn an_explicit_sslmode_is_kept_as_given() {
        assert!(matches!(mode("postgres://app@db.example.com/w?sslmode=verify-full"), PgSslMode::VerifyFull));
        assert!(matches!(mode("postgres://app@db.example.com/w?sslmode=disable"), PgSslMode::Disable));
        assert!(matches!(mode("postgres://app@127.0.0.1/w?sslmode=verify-ca"), PgSslMode::VerifyCa));
    }

    #[test]
    fn loopback_hosts_keep_the_sqlx_default() {
        if std::env::var_os("PGSSLMODE").is_some() {
            return;
        }
        for url in ["postgres://a@127.0.0.1/w", "postgres://a@localhost/w", "postgres://a@[::1]:5432/w"] {
            assert!(matches!(mode(url), PgSslMode::Prefer), "{url}");
        }
    }

    #[test]
    fn the_root_certificate_comes_from_the_url() {
        let options = connect_options("postgres://a@db.example.com/w?sslmode=verify-full&sslrootcert=/run/ca.crt");
        assert!(options.is_ok_and(|o| format!("{o:?}").contains("/run/ca.crt")));
    }
}

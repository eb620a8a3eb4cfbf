//! What an account may name: whoever can add an account decides which secret the
//! worker sends as a bearer token and to which host, so both come from allow-lists.
//!
//! * `key_ref`: `env:WA_API_KEY` or `env:WA_API_KEY_<SUFFIX>` (enforced by [`super::KeyRef::parse`],
//!   so a stored row naming another variable is refused when the worker resolves it too), or
//!   `file:` inside the secrets folder (`WAFLEET_SECRETS_DIR`);
//! * `base_url`: `https://` to a host of `WAFLEET_WA_API_HOSTS`, or a loopback `http(s)://` URL
//!   for an account marked as a test account (the simulator).

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use super::KeyRef;
use crate::error::{InvalidInput, Result};

/// Default of `WAFLEET_SECRETS_DIR`.
pub const DEFAULT_SECRETS_DIR: &str = wafleet_shared::config::DEFAULT_SECRETS_DIR;
/// Default of `WAFLEET_WA_API_HOSTS`: the documented WA Bridges host.
pub const DEFAULT_API_HOSTS: &str = wafleet_shared::config::DEFAULT_WA_API_HOSTS;

/// The allow-lists accounts are checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountPolicy {
    secrets_dir: PathBuf,
    api_hosts: Vec<String>,
}

impl AccountPolicy {
    /// `secrets_dir`: the one folder `file:` references may point into; `api_hosts`: the hosts
    /// an account's `base_url` may name (case-insensitive).
    pub fn new(secrets_dir: impl Into<PathBuf>, api_hosts: impl IntoIterator<Item = String>) -> Self {
        let api_hosts =
            api_hosts.into_iter().map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect();
        Self { secrets_dir: secrets_dir.into(), api_hosts }
    }

    /// The allow-lists of `WAFLEET_SECRETS_DIR` and `WAFLEET_WA_API_HOSTS`.
    pub fn from_settings(settings: &wafleet_shared::settings::WaApiSettings) -> Self {
        Self::new(settings.secrets_dir.clone(), settings.wa_api_hosts.clone())
    }

    /// Refuses a key reference or base URL outside the allow-lists.
    pub fn check(&self, key_ref: &KeyRef, base_url: Option<&str>, test_account: bool) -> Result<()> {
        if let KeyRef::File(path) = key_ref {
            self.check_file(path)?;
        }
        match base_url {
            Some(url) => self.check_base_url(url, test_account),
            None => Ok(()),
        }
    }

    /// The file must lie inside the secrets folder: lexically (no `..`), and, where it exists
    /// here, once every symlink is resolved.
    fn check_file(&self, path: &Path) -> Result<()> {
        let outside =
            || InvalidInput::KeyFileOutsideSecretsDir { path: path.to_owned(), dir: self.secrets_dir.clone() };
        let lexical =
            path.components().all(|c| !matches!(c, Component::ParentDir)) && path.starts_with(&self.secrets_dir);
        if !lexical || path == self.secrets_dir {
            return Err(outside().into());
        }
        // The CLI may run where the secret is not mounted; the worker re-reads it in its pod.
        if let (Ok(real), Ok(dir)) = (path.canonicalize(), self.secrets_dir.canonicalize()) {
            if !real.starts_with(&dir) || real == dir {
                return Err(outside().into());
            }
        }
        Ok(())
    }

    fn check_base_url(&self, raw: &str, test_account: bool) -> Result<()> {
        let refused = |why: &str| InvalidInput::AccountBaseUrlRefused { url: raw.to_owned(), why: why.to_owned() };
        let url = url::Url::parse(raw).map_err(|_| refused("not a URL"))?;
        let host =
            url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refused("credentials in the URL").into());
        }
        match url.scheme() {
            "https" if self.api_hosts.contains(&host) => Ok(()),
            "http" | "https" if loopback && test_account => Ok(()),
            "http" | "https" if loopback => Err(refused("loopback only for a test account (--test-account)").into()),
            "https" => Err(refused("host is not in WAFLEET_WA_API_HOSTS").into()),
            _ => Err(refused("must be https").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AccountPolicy {
        AccountPolicy::new("/run/secrets/wafleet", vec!["wabridges.com".to_owned()])
    }

    #[test]
    fn files_are_allowed_only_inside_the_secrets_folder() {
        let p = policy();
        assert!(p.check(&KeyRef::File("/run/secrets/wafleet/eu2".into()), None, false).is_ok());
        for bad in [
            "/etc/passwd",
            "/run/secrets/wafleet/../wafleet-signing",
            "/run/secrets/wafleetx/k",
            "/run/secrets/wafleet",
        ] {
            assert!(p.check(&KeyRef::File(bad.into()), None, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_symlink_out_of_the_secrets_folder_is_refused() {
        let Ok(dir) = tempfile::tempdir() else { panic!("no temp dir") };
        let link = dir.path().join("key");
        assert!(std::os::unix::fs::symlink("/etc/hostname", &link).is_ok());
        let p = AccountPolicy::new(dir.path(), vec![]);
        assert!(p.check(&KeyRef::File(link), None, false).is_err());
        // The same folder's own file passes, so the refusal above is the symlink's.
        assert!(std::fs::write(dir.path().join("real"), "k").is_ok());
        assert!(p.check(&KeyRef::File(dir.path().join("real")), None, false).is_ok());
    }

    #[test]
    fn base_urls_must_be_https_to_an_allowed_host_or_loopback_for_a_test_account() {
        let p = policy();
        assert!(p.check(&KeyRef::Env("WA_API_KEY".into()), Some("https://WABridges.com/"), false).is_ok());
        assert!(p.check(&KeyRef::Env("WA_API_KEY".into()), Some("http://127.0.0.1:9/"), true).is_ok());
        for (url, test) in [
            ("https://evil.example/", false),
            ("http://wabridges.com/", false),
            ("http://127.0.0.1:9/", false),
            ("https://evil.example/", true),
            ("https://user:pw@wabridges.com/", false),
        ] {
            assert!(p.check(&KeyRef::Env("WA_API_KEY".into()), Some(url), test).is_err(), "{url} test={test}");
        }
    }
}

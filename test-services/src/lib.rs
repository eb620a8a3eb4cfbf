//! Where the tests find PostgreSQL and RabbitMQ (with the management plugin). Each service is
//! resolved once per test binary, in this order:
//!
//! 1. the environment: `WAFLEET_TEST_PG_ADMIN_URL`; `WAFLEET_TEST_AMQP_BASE` and/or
//!    `RABBITMQ_API_URL` (an unset one of the two keeps its local default);
//! 2. the local services, when they answer on 127.0.0.1 (5432; 5672 and the management API on
//!    15672);
//! 3. a Docker engine, when one answers: the service is started once in a container through
//!    `testcontainers` (`postgres:16` with fsync on; `rabbitmq:4.1-management`), on mapped ports;
//! 4. otherwise every test that needs the service fails at once with the same message, which says
//!    what was tried and what to start.
//!
//! The choice is [`decide`], a pure function of the probes, so it is unit-tested; the probes and
//! the containers are in [`probe`] and [`docker`]. `ingest`'s and the integration suites' tests all
//! go through here (the benchmark does not: it measures the local services only).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::OnceLock;

pub mod docker;
pub mod probe;

/// `WAFLEET_TEST_PG_ADMIN_URL`: a PostgreSQL role that may create databases.
pub const PG_ADMIN_URL_VAR: &str = "WAFLEET_TEST_PG_ADMIN_URL";
/// `WAFLEET_TEST_AMQP_BASE`: the AMQP URL without a vhost (tests append their own).
pub const AMQP_BASE_VAR: &str = "WAFLEET_TEST_AMQP_BASE";
/// `RABBITMQ_API_URL`: the management API, with credentials.
pub const RABBITMQ_API_URL_VAR: &str = "RABBITMQ_API_URL";

/// The local PostgreSQL's admin URL.
pub const LOCAL_PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The local broker's AMQP URL, without a vhost.
pub const LOCAL_AMQP_BASE: &str = "amqp://guest:guest@127.0.0.1:5672";
/// The local broker's management API.
pub const LOCAL_RABBITMQ_API_URL: &str = "http://guest:guest@127.0.0.1:15672";

/// A service the tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// PostgreSQL, as a role that may create databases.
    Postgres,
    /// RabbitMQ with the management plugin.
    RabbitMq,
}

impl Service {
    /// How messages name it.
    pub fn label(self) -> &'static str {
        match self {
            Service::Postgres => "PostgreSQL",
            Service::RabbitMq => "RabbitMQ (with the management plugin)",
        }
    }

    /// The variables that point the tests at a running instance.
    pub fn env_vars(self) -> &'static [&'static str] {
        match self {
            Service::Postgres => &[PG_ADMIN_URL_VAR],
            Service::RabbitMq => &[AMQP_BASE_VAR, RABBITMQ_API_URL_VAR],
        }
    }

    /// The loopback ports that must answer for the local service to count.
    pub fn local_ports(self) -> &'static [(u16, &'static str)] {
        match self {
            Service::Postgres => &[(5432, "PostgreSQL")],
            Service::RabbitMq => &[(5672, "AMQP"), (15672, "the management API")],
        }
    }
}

/// Where a service came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The environment variables.
    Env,
    /// The local service on 127.0.0.1.
    Local,
    /// A container this test binary started.
    Docker,
}

/// Picks the source of `service`: the environment when one of its variables is set, else the
/// local service when `local` answers, else Docker when `docker` answers. Each probe runs only
/// when the earlier ones failed; `Err` carries why, and a failure is the message for the user.
pub fn decide(
    service: Service,
    env_set: bool,
    local: impl FnOnce() -> Result<(), String>,
    docker: impl FnOnce() -> Result<(), String>,
) -> Result<Source, String> {
    if env_set {
        return Ok(Source::Env);
    }
    let local = match local() {
        Ok(()) => return Ok(Source::Local),
        Err(why) => why,
    };
    match docker() {
        Ok(()) => Ok(Source::Docker),
        Err(why) => Err(unavailable(service, &local, &why)),
    }
}

/// The message when nothing provides `service`: what was tried, and what to start.
pub fn unavailable(service: Service, local: &str, docker: &str) -> String {
    let vars = service.env_vars().join(" / ");
    format!(
        "no {what} for the tests. Tried, in order:\n  \
         1. the environment: {vars} not set\n  \
         2. the local service: {local}\n  \
         3. a Docker engine (to start it in a container): {docker}\n\
         Start one of them: the local PostgreSQL and RabbitMQ (scripts/ensure-services.sh starts \
         the Debian packages and enables the management plugin), or set {vars} to running \
         services, or start a Docker engine and the tests start both in containers. \
         See docs/testing.md, \"Running the tests\".",
        what = service.label(),
    )
}

/// The value of `name`, when set and not empty.
fn non_empty(lookup: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    lookup(name).filter(|value| !value.trim().is_empty())
}

/// PostgreSQL's admin URL from the environment, if set.
pub fn postgres_from_env(lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    non_empty(&lookup, PG_ADMIN_URL_VAR)
}

/// RabbitMQ's (AMQP base, management API) from the environment, if either is set; the other keeps
/// its local default.
pub fn rabbitmq_from_env(lookup: impl Fn(&str) -> Option<String>) -> Option<(String, String)> {
    let amqp = non_empty(&lookup, AMQP_BASE_VAR);
    let api = non_empty(&lookup, RABBITMQ_API_URL_VAR);
    if amqp.is_none() && api.is_none() {
        return None;
    }
    Some((amqp.unwrap_or_else(|| LOCAL_AMQP_BASE.to_owned()), api.unwrap_or_else(|| LOCAL_RABBITMQ_API_URL.to_owned())))
}

/// The PostgreSQL the tests use.
#[derive(Debug, Clone)]
pub struct Postgres {
    /// A role that may create databases; its database part is replaced by each test's own.
    pub admin_url: String,
    /// Where it came from.
    pub source: Source,
}

impl Postgres {
    /// Its TCP address (for fault proxies in front of it).
    pub fn socket_addr(&self) -> SocketAddr {
        socket_addr(&self.admin_url, 5432)
    }
}

/// The RabbitMQ the tests use.
#[derive(Debug, Clone)]
pub struct RabbitMq {
    /// AMQP URL without a vhost, with credentials.
    pub amqp_base: String,
    /// Management API URL, with credentials.
    pub api_url: String,
    /// Where it came from.
    pub source: Source,
}

impl RabbitMq {
    /// The AMQP TCP address (for fault proxies in front of it).
    pub fn amqp_socket_addr(&self) -> SocketAddr {
        socket_addr(&self.amqp_base, 5672)
    }
}

/// The host and port of `url`, resolved (IPv4 first).
fn socket_addr(url: &str, default_port: u16) -> SocketAddr {
    let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let host = parsed.host_str().unwrap_or("127.0.0.1").trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = parsed.port().unwrap_or(default_port);
    let addrs: Vec<SocketAddr> =
        (host.as_str(), port).to_socket_addrs().unwrap_or_else(|e| panic!("resolve {host}:{port}: {e}")).collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .unwrap_or_else(|| panic!("{host}:{port} resolves to no address"))
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The PostgreSQL of this test binary, resolved on first use. Panics, in every test that needs it,
/// with one message saying what to start when nothing provides it.
pub fn postgres() -> &'static Postgres {
    static RESOLVED: OnceLock<Result<Postgres, String>> = OnceLock::new();
    let resolved = RESOLVED.get_or_init(|| {
        let from_env = postgres_from_env(env_lookup);
        let source = decide(Service::Postgres, from_env.is_some(), || probe::local(Service::Postgres), docker::engine)?;
        Ok(match source {
            Source::Env => Postgres { admin_url: from_env.unwrap_or_default(), source },
            Source::Local => Postgres { admin_url: LOCAL_PG_ADMIN_URL.to_owned(), source },
            Source::Docker => docker::start_postgres()?,
        })
    });
    match resolved {
        Ok(postgres) => postgres,
        Err(message) => panic!("{message}"),
    }
}

/// The RabbitMQ of this test binary, resolved on first use. Panics, in every test that needs it,
/// with one message saying what to start when nothing provides it.
pub fn rabbitmq() -> &'static RabbitMq {
    static RESOLVED: OnceLock<Result<RabbitMq, String>> = OnceLock::new();
    let resolved = RESOLVED.get_or_init(|| {
        let from_env = rabbitmq_from_env(env_lookup);
        let source = decide(Service::RabbitMq, from_env.is_some(), || probe::local(Service::RabbitMq), docker::engine)?;
        Ok(match (source, from_env) {
            (Source::Env, Some((amqp_base, api_url))) => RabbitMq { amqp_base, api_url, source },
            (Source::Docker, _) => docker::start_rabbitmq()?,
            _ => RabbitMq {
                amqp_base: LOCAL_AMQP_BASE.to_owned(),
                api_url: LOCAL_RABBITMQ_API_URL.to_owned(),
                source: Source::Local,
            },
        })
    });
    match resolved {
        Ok(rabbitmq) => rabbitmq,
        Err(message) => panic!("{message}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn answers() -> Result<(), String> {
        Ok(())
    }

    fn must_not_probe() -> Result<(), String> {
        panic!("this probe must not run")
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn the_environment_wins_and_nothing_is_probed() {
        for service in [Service::Postgres, Service::RabbitMq] {
            assert_eq!(decide(service, true, must_not_probe, must_not_probe), Ok(Source::Env));
        }
    }

    #[test]
    fn answering_local_services_win_over_docker_which_is_not_probed() {
        assert_eq!(decide(Service::Postgres, false, answers, must_not_probe), Ok(Source::Local));
        assert_eq!(decide(Service::RabbitMq, false, answers, must_not_probe), Ok(Source::Local));
    }

    #[test]
    fn docker_is_used_only_when_the_local_service_does_not_answer() {
        let local = || Err("connection refused".to_owned());
        assert_eq!(decide(Service::Postgres, false, local, answers), Ok(Source::Docker));
        assert_eq!(decide(Service::RabbitMq, false, local, answers), Ok(Source::Docker));
    }

    #[test]
    fn nothing_available_is_one_message_with_what_was_tried_and_what_to_start() {
        let local = || Err("PostgreSQL on 127.0.0.1:5432: connection refused".to_owned());
        let docker = || Err("no Docker socket (DOCKER_HOST is not set)".to_owned());
        let message = decide(Service::Postgres, false, local, docker).unwrap_err();
        assert!(message.starts_with("no PostgreSQL for the tests"), "{message}");
        for needle in [
            "WAFLEET_TEST_PG_ADMIN_URL not set",
            "2. the local service: PostgreSQL on 127.0.0.1:5432: connection refused",
            "no Docker socket (DOCKER_HOST is not set)",
            "scripts/ensure-services.sh",
            "start a Docker engine",
            "Running the tests",
        ] {
            assert!(message.contains(needle), "{needle:?} missing from:\n{message}");
        }
        // In the order they were tried.
        let at = |needle: &str| message.find(needle).unwrap();
        assert!(at("1. the environment") < at("2. the local service") && at("2. the local") < at("3. a Docker"));

        let message =
            decide(Service::RabbitMq, false, || Err("AMQP on 127.0.0.1:5672: refused".into()), || Err("off".into()))
                .unwrap_err();
        assert!(message.starts_with("no RabbitMQ (with the management plugin) for the tests"), "{message}");
        assert!(message.contains("WAFLEET_TEST_AMQP_BASE / RABBITMQ_API_URL not set"), "{message}");
        assert!(message.contains("2. the local service: AMQP on 127.0.0.1:5672: refused\n"), "{message}");
        assert!(message.contains("3. a Docker engine (to start it in a container): off\n"), "{message}");
    }

    #[test]
    fn postgres_comes_from_its_variable_when_set_and_not_empty() {
        assert_eq!(postgres_from_env(env(&[])), None);
        assert_eq!(postgres_from_env(env(&[(PG_ADMIN_URL_VAR, " ")])), None);
        assert_eq!(
            postgres_from_env(env(&[(PG_ADMIN_URL_VAR, "postgres://x@db/y")])).as_deref(),
            Some("postgres://x@db/y")
        );
    }

    #[test]
    fn one_rabbitmq_variable_is_enough_and_the_other_keeps_its_local_default() {
        assert_eq!(rabbitmq_from_env(env(&[])), None);
        assert_eq!(rabbitmq_from_env(env(&[(AMQP_BASE_VAR, ""), (RABBITMQ_API_URL_VAR, "")])), None);
        assert_eq!(
            rabbitmq_from_env(env(&[(AMQP_BASE_VAR, "amqp://u:p@mq:5672")])),
            Some(("amqp://u:p@mq:5672".to_owned(), LOCAL_RABBITMQ_API_URL.to_owned()))
        );
        assert_eq!(
            rabbitmq_from_env(env(&[(RABBITMQ_API_URL_VAR, "http://u:p@mq:15672")])),
            Some((LOCAL_AMQP_BASE.to_owned(), "http://u:p@mq:15672".to_owned()))
        );
    }

    #[test]
    fn socket_addresses_come_from_the_urls() {
        let pg = Postgres { admin_url: "postgres://postgres@127.0.0.1:49153/postgres".into(), source: Source::Docker };
        assert_eq!(pg.socket_addr(), "127.0.0.1:49153".parse().unwrap());
        let mq =
            RabbitMq { amqp_base: "amqp://guest:guest@127.0.0.1".into(), api_url: String::new(), source: Source::Env };
        assert_eq!(mq.amqp_socket_addr(), "127.0.0.1:5672".parse().unwrap());
    }
}

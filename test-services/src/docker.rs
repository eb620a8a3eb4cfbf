//! The Docker path: whether an engine answers, and PostgreSQL and RabbitMQ started in containers
//! through `testcontainers`, once per test binary.
//!
//! The containers live as long as the test process. testcontainers removes a container when its
//! handle is dropped, but these handles sit in a static, which Rust never drops; testcontainers-rs
//! has no reaper (Ryuk) either. So each container gets a watcher: a detached `sh` that ignores
//! Ctrl-C, waits for the test process to end and then runs `docker rm -f -v` on it. Without a
//! `docker` CLI (or with `TESTCONTAINERS_COMMAND=keep`) the containers stay; they carry the label
//! [`LABEL`], so `docker rm -f -v $(docker ps -aq --filter label=org.wafleet.tests)` removes them.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use testcontainers_modules::postgres::Postgres as PostgresImage;
use testcontainers_modules::rabbitmq::RabbitMq as RabbitMqImage;
use testcontainers_modules::testcontainers::core::WaitFor;
use testcontainers_modules::testcontainers::runners::SyncRunner;
use testcontainers_modules::testcontainers::{Container, ContainerRequest, Image, ImageExt};

use crate::{probe, Postgres, RabbitMq, Source};

/// Label on every container the tests start; its value is the test process id.
pub const LABEL: &str = "org.wafleet.tests";
/// PostgreSQL image tag (the `postgres` image), as in `deploy/compose.yaml`.
pub const POSTGRES_TAG: &str = "16";
/// RabbitMQ image tag (the `rabbitmq` image, with the management plugin), as in
/// `deploy/compose.yaml`. The image also enables `rabbitmq_prometheus` (port 15692).
pub const RABBITMQ_TAG: &str = "4.1-management";
/// PostgreSQL's server options: the production defaults, stated, as in `deploy/compose.yaml`.
/// The testcontainers module turns fsync off unless told otherwise; the tests need the real thing.
pub const POSTGRES_CMD: [&str; 7] =
    ["postgres", "-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "max_connections=200"];
/// Image pull and start-up may take this long on a first run.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(300);

/// How the Docker engine is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine {
    /// A Unix socket.
    Unix(PathBuf),
    /// TCP (`tcp://`, `http://`, `https://`); `tls` when the engine expects TLS.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
        /// TLS (`https://` or `DOCKER_TLS_VERIFY=1`).
        tls: bool,
    },
}

/// The engine testcontainers would use, found as it finds it: `DOCKER_HOST`, else the first
/// existing socket of `/var/run/docker.sock`, `$XDG_RUNTIME_DIR/.docker/run/docker.sock`,
/// `~/.docker/run/docker.sock`, `~/.docker/desktop/docker.sock`. `Err` says why there is none.
pub fn find_engine(lookup: impl Fn(&str) -> Option<String>, exists: impl Fn(&Path) -> bool) -> Result<Engine, String> {
    let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    if let Some(host) = set("DOCKER_HOST") {
        let tls_verify = set("DOCKER_TLS_VERIFY").is_some_and(|v| v == "1");
        return parse_docker_host(&host, tls_verify);
    }
    let mut candidates = vec![PathBuf::from("/var/run/docker.sock")];
    if let Some(runtime) = set("XDG_RUNTIME_DIR") {
        candidates.push(Path::new(&runtime).join(".docker/run/docker.sock"));
    }
    if let Some(home) = set("HOME") {
        candidates.push(Path::new(&home).join(".docker/run/docker.sock"));
        candidates.push(Path::new(&home).join(".docker/desktop/docker.sock"));
    }
    match candidates.iter().find(|p| exists(p)) {
        Some(path) => Ok(Engine::Unix(path.clone())),
        None => {
            let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            Err(format!("DOCKER_HOST is not set and there is no socket at {}", tried.join(", ")))
        }
    }
}

fn parse_docker_host(host: &str, tls_verify: bool) -> Result<Engine, String> {
    let url = url::Url::parse(host).map_err(|e| format!("DOCKER_HOST={host}: {e}"))?;
    match url.scheme() {
        "unix" => Ok(Engine::Unix(PathBuf::from(url.path()))),
        scheme @ ("tcp" | "http" | "https") => Ok(Engine::Tcp {
            host: url.host_str().ok_or_else(|| format!("DOCKER_HOST={host} names no host"))?.to_owned(),
            port: url.port().unwrap_or(if scheme == "https" || tls_verify { 2376 } else { 2375 }),
            tls: scheme == "https" || tls_verify,
        }),
        other => Err(format!("DOCKER_HOST={host}: scheme {other} is not supported here")),
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Engine::Unix(path) => write!(f, "unix://{}", path.display()),
            Engine::Tcp { host, port, tls } => write!(f, "{}://{host}:{port}", if *tls { "https" } else { "tcp" }),
        }
    }
}

/// Whether a Docker engine answers (`GET /_ping`; a TLS engine only by a TCP connect). Probed
/// once per process.
pub fn engine() -> Result<(), String> {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    ANSWER
        .get_or_init(|| {
            let engine = find_engine(|name| std::env::var(name).ok(), Path::exists)?;
            ping(&engine).map_err(|why| format!("{engine}: {why}"))
        })
        .clone()
}

fn ping(engine: &Engine) -> Result<(), String> {
    let timeout = Some(Duration::from_secs(3));
    match engine {
        Engine::Unix(path) => {
            let stream = UnixStream::connect(path).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(timeout)
                .and_then(|()| stream.set_write_timeout(timeout))
                .map_err(|e| e.to_string())?;
            http_ping(stream)
        }
        Engine::Tcp { host, port, tls } => {
            let addr = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| e.to_string())?
                .next()
                .ok_or_else(|| "resolves to no address".to_owned())?;
            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
            if *tls {
                return Ok(());
            }
            stream
                .set_read_timeout(timeout)
                .and_then(|()| stream.set_write_timeout(timeout))
                .map_err(|e| e.to_string())?;
            http_ping(stream)
        }
    }
}

/// `GET /_ping` over a plain connection; the engine answers `200 OK`.
fn http_ping(mut stream: impl Read + Write) -> Result<(), String> {
    stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n").map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| e.to_string())?;
    ping_answered(&head[..n])
}

/// Whether the first bytes of an answer are an HTTP 200.
fn ping_answered(head: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(head);
    let status_line = text.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(version), Some("200")) if version.starts_with("HTTP/") => Ok(()),
        _ => Err(format!("not a Docker engine (answered {status_line:?})")),
    }
}

/// Handles of the containers of this process: never dropped, so never removed by testcontainers.
static CONTAINERS: Mutex<Vec<Box<dyn std::any::Any + Send>>> = Mutex::new(Vec::new());

/// What a started container exposes.
struct Started {
    id: String,
    host: String,
    ports: Vec<u16>,
}

/// Starts `request` on a thread of its own (the sync runner blocks on a runtime of its own, which
/// must not happen inside a test's tokio runtime), keeps its handle and returns host and ports.
fn start<I: Image + 'static>(
    what: &'static str,
    request: impl SyncRunner<I> + Send + 'static,
    ports: &'static [u16],
) -> Result<Started, String> {
    say(&format!("starting {what} in Docker (pulling the image if it is missing)"));
    let started = std::thread::spawn(move || -> Result<(Started, Container<I>), String> {
        let container = request.start().map_err(|e| e.to_string())?;
        let host = match container.get_host().map_err(|e| e.to_string())? {
            url::Host::Domain(name) if name == "localhost" => "127.0.0.1".to_owned(),
            host => host.to_string(),
        };
        let ports = ports
            .iter()
            .map(|p| container.get_host_port_ipv4(*p).map_err(|e| format!("port {p}: {e}")))
            .collect::<Result<Vec<u16>, String>>()?;
        Ok((Started { id: container.id().to_owned(), host, ports }, container))
    })
    .join()
    .map_err(|_| format!("starting {what} panicked"))?;
    let (started, container) = started.map_err(|why| {
        format!(
            "a Docker engine answers, but {what} did not start in it: {why}. Start the local services or set the \
             test variables instead (see docs/testing.md, \"Running the tests\")."
        )
    })?;
    CONTAINERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(Box::new(container));
    remove_on_exit(&started.id);
    for port in &started.ports {
        let addr = (started.host.trim_start_matches('[').trim_end_matches(']'), *port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("{what}: cannot resolve {}:{port}", started.host))?;
        probe::wait_tcp(addr, Duration::from_secs(30)).map_err(|why| format!("{what}: {why}"))?;
    }
    say(&format!(
        "{what} is up: container {}, host {}, ports {:?}",
        &started.id[..12.min(started.id.len())],
        started.host,
        started.ports
    ));
    Ok(started)
}

/// The PostgreSQL container: `postgres:16`, fsync on, trusting connections (like the local test
/// server), labelled with this process.
pub fn postgres_request() -> ContainerRequest<PostgresImage> {
    PostgresImage::default()
        .with_host_auth()
        .with_fsync_enabled()
        .with_tag(POSTGRES_TAG)
        .with_cmd(POSTGRES_CMD)
        .with_label(LABEL, std::process::id().to_string())
        .with_startup_timeout(STARTUP_TIMEOUT)
}

/// The RabbitMQ container: `rabbitmq:4.1-management` (guest/guest, which the image allows from
/// outside the container), labelled with this process.
pub fn rabbitmq_request() -> ContainerRequest<RabbitMqImage> {
    RabbitMqImage::default()
        .with_tag(RABBITMQ_TAG)
        // The module waits for the exact plugin count of its own, older, tag.
        .with_ready_conditions(vec![WaitFor::message_on_stdout("Server startup complete")])
        .with_label(LABEL, std::process::id().to_string())
        .with_startup_timeout(STARTUP_TIMEOUT)
}

/// Starts PostgreSQL in Docker, once per process (the caller's `OnceLock`).
pub fn start_postgres() -> Result<Postgres, String> {
    let started = start("PostgreSQL (postgres:16)", postgres_request(), &[5432])?;
    Ok(Postgres {
        admin_url: format!("postgres://postgres@{}:{}/postgres", started.host, started.ports[0]),
        source: Source::Docker,
    })
}

/// Starts RabbitMQ in Docker, once per process (the caller's `OnceLock`).
pub fn start_rabbitmq() -> Result<RabbitMq, String> {
    let started = start("RabbitMQ (rabbitmq:4.1-management)", rabbitmq_request(), &[5672, 15672])?;
    let host = &started.host;
    Ok(RabbitMq {
        amqp_base: format!("amqp://guest:guest@{host}:{}", started.ports[0]),
        api_url: format!("http://guest:guest@{host}:{}", started.ports[1]),
        source: Source::Docker,
    })
}

/// The watcher that removes container `id` once this process has ended (see the module docs).
fn remove_on_exit(id: &str) {
    if std::env::var("TESTCONTAINERS_COMMAND").is_ok_and(|v| v.trim() == "keep") {
        return;
    }
    let mut command = watcher(std::process::id(), id);
    // The CLI must talk to the engine the containers are on.
    if std::env::var_os("DOCKER_HOST").is_none() {
        if let Ok(engine @ Engine::Unix(_)) = find_engine(|name| std::env::var(name).ok(), Path::exists) {
            command.env("DOCKER_HOST", engine.to_string());
        }
    }
    let on_path = |name: &str| {
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
    };
    if !on_path("docker") {
        say(&format!(
            "no `docker` CLI to remove container {id} when the tests end: \
             `docker rm -f -v $(docker ps -aq --filter label={LABEL})` does it"
        ));
        return;
    }
    static WATCHERS: Mutex<Vec<std::process::Child>> = Mutex::new(Vec::new());
    match command.spawn() {
        Ok(child) => WATCHERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(child),
        Err(e) => {
            say(&format!("cannot watch container {id} ({e}): remove it after the tests with `docker rm -f -v {id}`"))
        }
    }
}

/// `sh` that ignores Ctrl-C and hang-ups, waits until process `pid` is gone, then removes
/// container `id` and its anonymous volumes. Detached from the test's output.
fn watcher(pid: u32, id: &str) -> std::process::Command {
    const SCRIPT: &str = r#"trap '' HUP INT TERM
while kill -0 "$1" 2>/dev/null; do sleep 1; done
docker rm -f -v "$2" >/dev/null 2>&1"#;
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", SCRIPT, "wafleet-test-reaper", &pid.to_string(), id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

/// A line on the real stderr (not captured by the test harness): container start-up is slow.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "wafleet tests: {line}");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn docker_host_wins_over_sockets() {
        let found = find_engine(vars(&[("DOCKER_HOST", "unix:///run/user/1000/docker.sock")]), |_| true);
        assert_eq!(found, Ok(Engine::Unix("/run/user/1000/docker.sock".into())));
        let found = find_engine(vars(&[("DOCKER_HOST", "tcp://10.0.0.5:2375")]), |_| true);
        assert_eq!(found, Ok(Engine::Tcp { host: "10.0.0.5".into(), port: 2375, tls: false }));
        let found = find_engine(vars(&[("DOCKER_HOST", "tcp://dockerd"), ("DOCKER_TLS_VERIFY", "1")]), |_| true);
        assert_eq!(found, Ok(Engine::Tcp { host: "dockerd".into(), port: 2376, tls: true }));
        assert!(find_engine(vars(&[("DOCKER_HOST", "ssh://me@box")]), |_| true).unwrap_err().contains("ssh"));
    }

    #[test]
    fn sockets_are_tried_in_testcontainers_order() {
        let env = vars(&[("HOME", "/home/me"), ("XDG_RUNTIME_DIR", "/run/user/1000")]);
        assert_eq!(find_engine(&env, |_| true), Ok(Engine::Unix("/var/run/docker.sock".into())));
        let desktop = |p: &Path| p == Path::new("/home/me/.docker/desktop/docker.sock");
        assert_eq!(find_engine(&env, desktop), Ok(Engine::Unix("/home/me/.docker/desktop/docker.sock".into())));
        let none = find_engine(&env, |_| false).unwrap_err();
        assert!(none.contains("DOCKER_HOST is not set"), "{none}");
        assert!(none.contains("/var/run/docker.sock") && none.contains("/home/me/.docker/run/docker.sock"), "{none}");
    }

    #[test]
    fn only_an_http_200_counts_as_an_engine() {
        assert_eq!(ping_answered(b"HTTP/1.1 200 OK\r\nApi-Version: 1.47\r\n\r\nOK"), Ok(()));
        assert_eq!(ping_answered(b"HTTP/1.0 200 OK\r\n"), Ok(()));
        assert!(ping_answered(b"HTTP/1.1 404 Not Found\r\n").is_err());
        assert!(ping_answered(b"SSH-2.0-OpenSSH_9.6\r\n").is_err());
        assert!(ping_answered(b"").is_err());
    }

    #[test]
    fn a_fake_engine_on_a_socket_answers_the_ping() {
        let dir = std::env::temp_dir().join(format!("wafleet-docker-ping-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("docker.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 128];
            let n = stream.read(&mut request).unwrap();
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK").unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        assert_eq!(ping(&Engine::Unix(path.clone())), Ok(()));
        assert!(server.join().unwrap().starts_with("GET /_ping HTTP/1.0\r\n"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(ping(&Engine::Unix(path)).is_err(), "a missing socket is no engine");
    }

    #[test]
    fn the_watcher_removes_the_container_once_the_process_is_gone() {
        let dir = std::env::temp_dir().join(format!("wafleet-watcher-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let record = dir.join("docker-args");
        let fake = dir.join("docker");
        std::fs::write(&fake, format!("#!/bin/sh\necho \"$@\" > '{}'\n", record.display())).unwrap();
        std::process::Command::new("chmod").arg("+x").arg(&fake).status().unwrap();

        let mut owner = std::process::Command::new("sleep").arg("1").spawn().unwrap();
        let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
        let mut watcher = watcher(owner.id(), "c0ffee").env("PATH", path).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(!record.exists(), "nothing is removed while the process lives");
        owner.wait().unwrap();
        assert!(watcher.wait().unwrap().success());
        assert_eq!(std::fs::read_to_string(&record).unwrap().trim(), "rm -f -v c0ffee");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn postgres_is_version_16_with_fsync_on_and_labelled() {
        let request = postgres_request();
        assert_eq!(request.descriptor(), "postgres:16");
        let cmd: Vec<String> = request.cmd().map(|a| a.into_owned()).collect();
        assert!(cmd.windows(2).any(|w| w == ["-c", "fsync=on"]), "{cmd:?}");
        assert!(!cmd.iter().any(|a| a.contains("fsync=off")), "the module's fsync=off must not survive: {cmd:?}");
        let env: Vec<(String, String)> = request.env_vars().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        assert!(env.contains(&("POSTGRES_HOST_AUTH_METHOD".into(), "trust".into())), "{env:?}");
        assert_eq!(request.labels().get(LABEL), Some(&std::process::id().to_string()));
    }

    #[test]
    fn rabbitmq_has_the_management_plugin_and_waits_for_start_up() {
        let request = rabbitmq_request();
        assert_eq!(request.descriptor(), "rabbitmq:4.1-management");
        let ready = format!("{:?}", request.ready_conditions());
        assert!(ready.contains("Server startup complete") && !ready.contains("4 plugins"), "{ready}");
        assert_eq!(request.labels().get(LABEL), Some(&std::process::id().to_string()));
    }
}

//! Whether the local services answer: a TCP connect to each of their loopback ports.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::Service;

/// How long one connect may take before the port counts as not answering.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// `Ok` when every local port of `service` accepts a connection; else which ones did not, and why.
pub fn local(service: Service) -> Result<(), String> {
    let down: Vec<(&'static str, SocketAddr, String)> = service
        .local_ports()
        .iter()
        .filter_map(|(port, what)| {
            let addr = SocketAddr::from(([127, 0, 0, 1], *port));
            tcp(addr).err().map(|why| (*what, addr, why))
        })
        .collect();
    verdict(service, &down)
}

/// The local probe's answer from the ports that did not answer.
fn verdict(service: Service, down: &[(&'static str, SocketAddr, String)]) -> Result<(), String> {
    if down.is_empty() {
        return Ok(());
    }
    let mut message =
        down.iter().map(|(what, addr, why)| format!("{what} on {addr}: {why}")).collect::<Vec<_>>().join("; ");
    if service == Service::RabbitMq && down.len() == 1 && down[0].1.port() == 15672 {
        message.push_str(" (AMQP answers: `rabbitmq-plugins enable rabbitmq_management`)");
    }
    Err(message)
}

/// `Ok` when `addr` accepts a TCP connection within [`CONNECT_TIMEOUT`].
pub fn tcp(addr: SocketAddr) -> Result<(), String> {
    TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map(drop).map_err(|e| e.to_string())
}

/// Waits until `addr` accepts a TCP connection (a container's mapped port can lag its log line).
pub fn wait_tcp(addr: SocketAddr, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        match tcp(addr) {
            Ok(()) => return Ok(()),
            Err(why) if Instant::now() >= deadline => {
                return Err(format!("{addr} did not answer within {within:?}: {why}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_port_answers_and_a_closed_one_says_why() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(tcp(addr), Ok(()));
        // A freed port can be taken again at once by a parallel test: try a few until one stays
        // closed for the whole check.
        let closed = (0..10).find_map(|_| {
            let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
            let refused = tcp(addr).err()?;
            let waited = wait_tcp(addr, Duration::from_millis(300)).err()?;
            Some((refused, waited))
        });
        let (refused, waited) = closed.expect("no freed port stayed closed in 10 tries");
        assert!(!refused.is_empty());
        assert!(waited.contains("did not answer"), "{waited}");
        drop(listener);
    }

    #[test]
    fn a_broker_without_its_management_api_is_not_local_and_the_fix_is_named() {
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(verdict(Service::RabbitMq, &[]), Ok(()));
        let management = verdict(Service::RabbitMq, &[("the management API", at(15672), "refused".into())]);
        assert_eq!(
            management.unwrap_err(),
            "the management API on 127.0.0.1:15672: refused (AMQP answers: `rabbitmq-plugins enable rabbitmq_management`)"
        );
        let both = verdict(
            Service::RabbitMq,
            &[("AMQP", at(5672), "refused".into()), ("the management API", at(15672), "refused".into())],
        )
        .unwrap_err();
        assert_eq!(both, "AMQP on 127.0.0.1:5672: refused; the management API on 127.0.0.1:15672: refused");
        let pg = verdict(Service::Postgres, &[("PostgreSQL", at(5432), "refused".into())]).unwrap_err();
        assert_eq!(pg, "PostgreSQL on 127.0.0.1:5432: refused");
    }
}

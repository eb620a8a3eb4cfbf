//! The HTTP accept loop of every wafleet server that faces clients (ingest, the admin API).
//! `axum::serve` sets no header-read timer, so a client that sends half its headers could hold a
//! connection forever (slowloris); this loop serves each connection with hyper's
//! `header_read_timeout` and bounds the number of open connections.
//! It must not know anything about routes, the broker or axum: it serves any tower service,
//! made per connection so the service can be told the peer's address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// An error a service or a body may return.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Limits of the accept loop.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// A client must send its request headers within this time.
    pub header_read_timeout: Duration,
    /// Open connections at most; further clients wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

/// Serves the service `make(peer)` makes for each connection on `listener` until `shutdown`,
/// then lets in-flight requests finish.
pub async fn serve<M, S, B>(listener: TcpListener, make: M, limits: ServerLimits, shutdown: CancellationToken)
where
    M: Fn(SocketAddr) -> S,
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(make(peer));
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!("in-flight requests did not finish within the drain timeout");
    }
}

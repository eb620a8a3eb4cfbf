//! A TCP fault proxy for outage tests on loopback: it forwards to an upstream service and can
//! refuse (drop every connection, old and new), blackhole (accept but never forward), stall (keep
//! every connection open but forward nothing, old and new: a network that drops packets while
//! both ends live on) or restore.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const PASS: u8 = 0;
const REFUSE: u8 = 1;
const BLACKHOLE: u8 = 2;
const STALL: u8 = 3;

/// A running proxy. Dropping it does not stop it; call [`FaultProxy::stop`].
#[derive(Clone)]
pub struct FaultProxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    connections: Arc<AtomicU64>,
    live: Arc<Mutex<CancellationToken>>,
    stalled: Arc<Mutex<CancellationToken>>,
    upstream: Arc<Mutex<SocketAddr>>,
    stop: CancellationToken,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1:0 forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let proxy = Self {
            addr: listener.local_addr()?,
            mode: Arc::new(AtomicU8::new(PASS)),
            connections: Arc::new(AtomicU64::new(0)),
            live: Arc::new(Mutex::new(CancellationToken::new())),
            stalled: Arc::new(Mutex::new(CancellationToken::new())),
            upstream: Arc::new(Mutex::new(upstream)),
            stop: CancellationToken::new(),
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = p.stop.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((client, _)) = accepted else { continue };
                p.connections.fetch_add(1, Ordering::Relaxed);
                let live = p.live.lock().map(|t| t.clone()).unwrap_or_default();
                let stalled = p.stalled.lock().map(|t| t.clone()).unwrap_or_default();
                match p.mode.load(Ordering::Relaxed) {
                    REFUSE => drop(client),
                    BLACKHOLE | STALL => {
                        tokio::spawn(async move {
                            live.cancelled().await;
                            drop(client);
                        });
                    }
                    _ => {
                        let upstream = p.upstream.lock().map(|u| *u).unwrap_or(upstream);
                        tokio::spawn(forward(client, upstream, live, stalled));
                    }
                }
            }
        });
        Ok(proxy)
    }

    /// The address clients should use.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far (a reconnect storm shows up here).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    fn kill_live(&self) {
        if let Ok(mut live) = self.live.lock() {
            live.cancel();
            *live = CancellationToken::new();
        }
    }

    /// Drops every open connection and refuses new ones.
    pub fn refuse(&self) {
        self.mode.store(REFUSE, Ordering::Relaxed);
        self.kill_live();
    }

    /// Drops every open connection; new ones are accepted but nothing is forwarded.
    pub fn blackhole(&self) {
        self.mode.store(BLACKHOLE, Ordering::Relaxed);
        self.kill_live();
    }

    /// Points the proxy at `upstream` and drops every open connection: the read-write Service
    /// moving to a promoted standby.
    pub fn switch_to(&self, upstream: SocketAddr) {
        if let Ok(mut u) = self.upstream.lock() {
            *u = upstream;
        }
        self.kill_live();
    }

    /// Stops forwarding on every connection, old and new, but keeps them open: neither end sees
    /// a reset, only silence (a black-holed network).
    pub fn stall(&self) {
        self.mode.store(STALL, Ordering::Relaxed);
        if let Ok(mut stalled) = self.stalled.lock() {
            stalled.cancel();
            *stalled = CancellationToken::new();
        }
    }

    /// Forwards again (stalled connections are dropped, as after a long partition).
    pub fn restore(&self) {
        self.kill_live();
        self.mode.store(PASS, Ordering::Relaxed);
    }

    /// Stops accepting and drops every connection.
    pub fn stop(&self) {
        self.stop.cancel();
        self.kill_live();
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr, live: CancellationToken, stalled: CancellationToken) {
    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
    tokio::select! {
        _ = live.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = stalled.cancelled() => {
            // Both sockets stay open and unread until the proxy drops its connections.
            live.cancelled().await;
        }
    }
}

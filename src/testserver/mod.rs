//! An in-process FTP server for `ftpseg demo`, the integration tests and the benchmarks.
//!
//! [`TestServer::start`] serves a local folder with libunftp on a loopback address and an
//! ephemeral port. It accepts its control connections itself (libunftp's own listener cannot
//! report an ephemeral port) and hands each one to a fresh libunftp `Server` through
//! `Server::service`; that also lets it enforce a connection limit (`421 Too many connections`),
//! which libunftp lacks. Downloads can be degraded on purpose through [`Faults`]: per-transfer
//! throttling, one slow transfer (the one starting at offset 0), stalls, I/O errors after a
//! number of bytes, and refusal of `REST`. Uploads are written in place at the `REST` offset
//! (or, with [`Faults::truncating_rest_store`], truncated there first) and can be throttled.
//! [`Stats`] tells what the server saw.
//!
//! Passive mode (`PASV` for IPv4, `EPSV` for IPv4 and IPv6); data connections are bound
//! on the control connection's local (loopback) address, ports 49152–65535. With
//! [`ServerConfig::with_active`], active mode too: libunftp's `PORT` (IPv4 only; libunftp 0.24
//! has no `EPRT`), which connects to the client's address at once and answers 200.
//!
//! [`write_pattern_file`] and [`fill_pattern`] make reproducible test files and the expected
//! bytes of any range of them.
//!
//! FTPS ([`ServerConfig::with_tls`], [`TlsFiles`]): explicit (`AUTH TLS`, libunftp's own) or
//! implicit (TLS from the first byte, done by the test server in front of libunftp), with a TLS
//! session cache per control connection, as vsftpd has; [`Stats`] counts the handshakes and
//! the resumptions.

mod auth;
mod backend;
mod config;
mod conn;
mod pattern;
mod tls;

#[cfg(test)]
mod tests;

pub use config::{Faults, ServerConfig, Stats};
pub use pattern::{fill_pattern, pattern_bytes, write_pattern_file};
pub use tls::TlsFiles;

use std::{
    fmt,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use auth::TestAuthenticator;
use conn::accept_loop;
use tls::ServerTls;

/// Longest time [`TestServer::shutdown`] waits for its sessions to be torn down.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Live counters behind [`Stats`].
#[derive(Debug, Default)]
struct Counters {
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    retrs: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_sent_from_zero: AtomicU64,
    max_live_connections: AtomicU64,
    /// Control connections being served now.
    live_connections: AtomicU64,
    login_attempts: Arc<AtomicU64>,
    tls_handshakes: AtomicU64,
    tls_resumed: AtomicU64,
    stores: AtomicU64,
    bytes_received: AtomicU64,
}

/// The current faults, with the number of RETRs started since they were set.
#[derive(Debug)]
struct FaultState {
    faults: Faults,
    retrs_started: AtomicUsize,
}

/// State shared by the accept loop, the sessions' storage back-ends and [`TestServer`].
#[derive(Debug)]
struct Shared {
    counters: Counters,
    faults: RwLock<Arc<FaultState>>,
    /// Set when the server stops: every RETR reader then fails at its next read.
    stopping: AtomicBool,
    /// Live control connections allowed (`u64::MAX`: no limit); changeable while running.
    max_connections: AtomicU64,
    /// Every control connection accepted so far (for per-connection counters).
    conns: std::sync::Mutex<Vec<Arc<ConnState>>>,
}

impl Shared {
    fn new(faults: Faults) -> Self {
        Shared {
            max_connections: AtomicU64::new(u64::MAX),
            conns: std::sync::Mutex::new(Vec::new()),
            counters: Counters::default(),
            faults: RwLock::new(Arc::new(FaultState {
                faults,
                retrs_started: AtomicUsize::new(0),
            })),
            stopping: AtomicBool::new(false),
        }
    }

    fn fault_state(&self) -> Arc<FaultState> {
        self.faults
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_faults(&self, faults: Faults) {
        let state = Arc::new(FaultState {
            faults,
            retrs_started: AtomicUsize::new(0),
        });
        *self
            .faults
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = state;
    }

    fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            connections_accepted: c.connections_accepted.load(Ordering::Relaxed),
            connections_refused: c.connections_refused.load(Ordering::Relaxed),
            retrs: c.retrs.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            bytes_sent_from_zero: c.bytes_sent_from_zero.load(Ordering::Relaxed),
            max_live_connections: c.max_live_connections.load(Ordering::Relaxed),
            login_attempts: c.login_attempts.load(Ordering::Relaxed),
            tls_handshakes: c.tls_handshakes.load(Ordering::Relaxed),
            tls_resumed: c.tls_resumed.load(Ordering::Relaxed),
            bytes_by_connection: {
                let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
                let mut v: Vec<(u64, u64)> = conns
                    .iter()
                    .map(|c| (c.index, c.bytes_sent.load(Ordering::Relaxed)))
                    .collect();
                v.sort_unstable();
                v.into_iter().map(|(_, b)| b).collect()
            },
            stores: c.stores.load(Ordering::Relaxed),
            bytes_received: c.bytes_received.load(Ordering::Relaxed),
        }
    }
}

/// Per control connection state seen by its storage back-end.
#[derive(Debug, Default)]
struct ConnState {
    /// Set when the control connection's session has ended.
    closed: AtomicBool,
    /// The connection's number in order of acceptance, from 0 (picks its `session_rates`).
    index: u64,
    /// Bytes its RETRs sent.
    bytes_sent: AtomicU64,
}

/// Settings the accept loop needs for each session.
struct SessionSettings {
    root: PathBuf,
    authenticator: Arc<TestAuthenticator>,
    tls: Option<ServerTls>,
    active: bool,
    latency: Option<Duration>,
    idle_timeout: Option<Duration>,
}

/// Counts a live control connection for as long as it exists; marks the connection closed and
/// decrements the count when dropped (also when the session task is aborted).
struct LiveGuard {
    shared: Arc<Shared>,
    conn: Arc<ConnState>,
}

impl LiveGuard {
    /// Takes a connection slot if fewer than `max` connections are live (no limit: always).
    fn try_claim(shared: &Arc<Shared>, max: Option<usize>) -> Option<Self> {
        let c = &shared.counters;
        let max = max.map_or(u64::MAX, |m| u64::try_from(m).unwrap_or(u64::MAX));
        let before = c
            .live_connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                (live < max).then_some(live + 1)
            })
            .ok()?;
        c.max_live_connections
            .fetch_max(before + 1, Ordering::AcqRel);
        let index = c.connections_accepted.fetch_add(1, Ordering::Relaxed);
        Some(LiveGuard {
            shared: shared.clone(),
            conn: {
                let conn = Arc::new(ConnState {
                    closed: AtomicBool::new(false),
                    index,
                    bytes_sent: AtomicU64::new(0),
                });
                shared
                    .conns
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(conn.clone());
                conn
            },
        })
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.conn.closed.store(true, Ordering::Relaxed);
        self.shared
            .counters
            .live_connections
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// A running in-process FTP server. Dropping it stops accepting connections and aborts the
/// live sessions (without waiting); [`TestServer::shutdown`] does the same and waits.
pub struct TestServer {
    addr: SocketAddr,
    /// "ftp", "ftpes" (explicit FTPS) or "ftps" (implicit FTPS).
    scheme: &'static str,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    accept_task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Binds `cfg.bind` on an ephemeral port and starts serving `cfg.root`.
    ///
    /// Must be called inside a (multi-thread) tokio runtime. Fails if the root folder does not
    /// exist, if `cfg.bind` is not a loopback address, or if binding fails.
    pub async fn start(cfg: ServerConfig) -> std::io::Result<TestServer> {
        if !cfg.bind.is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "the test server only binds loopback addresses, not {}",
                    cfg.bind
                ),
            ));
        }
        let meta = tokio::fs::metadata(&cfg.root).await?;
        if !meta.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("test server root {} is not a folder", cfg.root.display()),
            ));
        }
        let root = std::path::absolute(&cfg.root)?;
        let tls = cfg.tls.as_ref().map(ServerTls::load).transpose()?;
        if cfg.latency.is_some() && tls.as_ref().is_some_and(|t| t.implicit) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the test server cannot add latency to implicit FTPS",
            ));
        }
        let scheme = match &tls {
            None => "ftp",
            Some(t) if t.implicit => "ftps",
            Some(_) => "ftpes",
        };

        let listener = TcpListener::bind(SocketAddr::new(cfg.bind, cfg.port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(cfg.faults));
        if let Some(max) = cfg.max_connections {
            shared.max_connections.store(max as u64, Ordering::Release);
        }
        let authenticator = TestAuthenticator::new(cfg.anonymous, cfg.users)
            .counting(shared.counters.login_attempts.clone());
        let settings = Arc::new(SessionSettings {
            root,
            authenticator: Arc::new(authenticator),
            tls,
            active: cfg.active,
            latency: cfg.latency,
            idle_timeout: cfg.idle_timeout,
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let accept_task = tokio::spawn(accept_loop(listener, settings, shared.clone(), stop_rx));
        Ok(TestServer {
            addr,
            scheme,
            shared,
            stop: Some(stop_tx),
            accept_task: Some(accept_task),
        })
    }

    /// The control connection address (loopback IP, ephemeral port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ftp://127.0.0.1:PORT/path` (IPv6: `ftp://[::1]:PORT/path`); `ftpes://` for an explicit
    /// FTPS server, `ftps://` for an implicit one. `path` is given without a leading `/`;
    /// characters not allowed in a URL path (space, `%`, `#`, `?`, non-ASCII...) are
    /// percent-encoded.
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}://{}/{}",
            self.scheme,
            self.addr,
            encode_path(path.trim_start_matches('/'))
        )
    }

    /// Changes the connection limit for connections accepted from now on (`None`: no limit).
    pub fn set_max_connections(&self, max: Option<usize>) {
        let v = max.map_or(u64::MAX, |m| m as u64);
        self.shared.max_connections.store(v, Ordering::Release);
    }

    /// Replaces the faults. Takes effect for RETRs started afterwards (and, for `refuse_rest`,
    /// for control connections opened afterwards); restarts the `faulty_transfers` count.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Stops accepting connections, aborts the live sessions (their transfers fail) and waits
    /// (at most a few seconds) for the sessions to be torn down.
    pub async fn shutdown(mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.accept_task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(SHUTDOWN_TIMEOUT, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        if let Some(task) = self.accept_task.take() {
            // Dropping the task drops its `JoinSet`, which aborts every session.
            task.abort();
        }
    }
}

/// Percent-encodes what may not appear literally in a URL path (keeps `/` as the separator).
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b);
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

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
mod pattern;
mod tls;

pub use pattern::{fill_pattern, pattern_bytes, write_pattern_file};
pub use tls::TlsFiles;

use auth::TestAuthenticator;
use backend::FaultyFs;
use libunftp::{
    ServerBuilder,
    options::{ActivePassiveMode, FtpsRequired, PassiveHost},
};
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    ops::RangeInclusive,
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};
use tls::ServerTls;
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::{JoinHandle, JoinSet},
};

/// Ports used for passive data connections. Wide, because many servers run at once in tests.
const PASSIVE_PORTS: RangeInclusive<u16> = 49152..=65535;

/// Greeting sent on new control connections.
const GREETING: &str = "ftpseg test server ready";

/// Reply sent, before closing, to a connection over the limit.
const TOO_MANY_CONNECTIONS: &[u8] = b"421 Too many connections\r\n";

/// Longest time spent sending the 421 reply to a refused connection.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection over the limit waits up to `ADMIT_GRACE_POLLS * ADMIT_GRACE_POLL` (200 ms) for a
/// slot before being refused.
const ADMIT_GRACE_POLLS: u32 = 40;
const ADMIT_GRACE_POLL: Duration = Duration::from_millis(5);

/// Pause after a failed `accept()` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(20);

/// Longest time an implicit-FTPS client may take to complete its handshake.
const IMPLICIT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest time [`TestServer::shutdown`] waits for its sessions to be torn down.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Configuration of a [`TestServer`].
#[derive(Clone)]
pub struct ServerConfig {
    /// Folder served (read and write). Must exist.
    pub root: PathBuf,
    /// Address to bind. Must be a loopback address; default 127.0.0.1.
    pub bind: IpAddr,
    /// Port to bind; default 0, chosen by the system (see [`TestServer::addr`]).
    pub port: u16,
    /// Accept users `anonymous` and `ftp` with any password; default true.
    pub anonymous: bool,
    /// Accepted user/password pairs.
    pub users: Vec<(String, String)>,
    /// Maximum number of live control connections; extra ones get `421 Too many connections`
    /// (after waiting up to 200 ms for a slot, as a client that has just closed a connection
    /// may reconnect before the server has noticed the close).
    pub max_connections: Option<usize>,
    /// Faults applied to downloads (can be changed later with [`TestServer::set_faults`]).
    pub faults: Faults,
    /// FTPS: certificate, key, explicit or implicit. None: plain FTP only (`AUTH TLS` is
    /// answered 502).
    pub tls: Option<TlsFiles>,
    /// Also accept `PORT` (active mode); default false (`PORT` answered 502).
    pub active: bool,
    /// A long network path on the control connections: this round-trip time is added to every
    /// exchange (half each way) and to the connection's setup (the greeting arrives two
    /// round trips after the connect, as over a real link: handshake, then greeting). Data
    /// connections are not delayed. Not with implicit FTPS.
    pub latency: Option<Duration>,
}

impl ServerConfig {
    /// Serves `root` on 127.0.0.1, anonymous access allowed, no users, no limit, no faults.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ServerConfig {
            root: root.into(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            anonymous: true,
            users: Vec::new(),
            max_connections: None,
            faults: Faults::default(),
            tls: None,
            active: false,
            latency: None,
        }
    }

    /// Adds `rtt` to every control-connection round trip (see [`ServerConfig::latency`]).
    pub fn with_latency(mut self, rtt: Duration) -> Self {
        self.latency = Some(rtt);
        self
    }

    /// Accepts `PORT` (active mode) as well as `PASV`/`EPSV`.
    pub fn with_active(mut self) -> Self {
        self.active = true;
        self
    }

    /// Offers FTPS with these files (see [`TlsFiles`]).
    pub fn with_tls(mut self, tls: TlsFiles) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Adds an accepted user/password pair.
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.push((user.into(), password.into()));
        self
    }

    /// Allows or refuses anonymous logins.
    pub fn with_anonymous(mut self, anonymous: bool) -> Self {
        self.anonymous = anonymous;
        self
    }

    /// Sets the initial faults.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Sets the connection limit.
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = Some(max);
        self
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the passwords.
        let users: Vec<&str> = self.users.iter().map(|(user, _)| user.as_str()).collect();
        f.debug_struct("ServerConfig")
            .field("root", &self.root)
            .field("bind", &self.bind)
            .field("anonymous", &self.anonymous)
            .field("users", &users)
            .field("max_connections", &self.max_connections)
            .field("faults", &self.faults)
            .field("tls", &self.tls)
            .field("active", &self.active)
            .field("latency", &self.latency)
            .finish()
    }
}

/// Faults injected into downloads (`RETR` data streams).
///
/// A transfer's faults are fixed when it starts. `stall_after` and `error_after` count bytes from
/// the transfer's start offset; when both are reached at once the error wins. A file shorter
/// than the threshold is sent whole. `refuse_rest` is read when a control connection is opened
/// (libunftp asks the storage back-end for its features only then), so it applies to the
/// connections opened after it was set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Bytes/s cap applied to each RETR data stream separately (a per-connection throttle).
    pub rate_per_transfer: Option<u64>,
    /// A RETR that starts at offset 0 gets this rate instead (models one slow connection).
    pub slow_rate_at_zero: Option<u64>,
    /// Uneven connections: the k-th control connection accepted (counting from 0) caps each of
    /// its RETR streams at `session_rates[k % len]` bytes/s, overriding `rate_per_transfer`
    /// (`slow_rate_at_zero` still wins for a RETR from offset 0). Empty: off.
    pub session_rates: Vec<u64>,
    /// A RETR stops sending forever after this many bytes (counted from its start offset).
    /// The stalled stream ends when its control connection closes or the server shuts down.
    pub stall_after: Option<u64>,
    /// A RETR fails with an I/O error after this many bytes (client sees EOF, then 451).
    pub error_after: Option<u64>,
    /// Stall/error apply only to the first M RETRs since the faults were set (None = all).
    pub faulty_transfers: Option<usize>,
    /// REST answered with 502.
    pub refuse_rest: bool,
    /// Bytes/s cap applied to each upload (STOR/APPE data stream) separately.
    pub upload_rate: Option<u64>,
    /// `REST n` + `STOR` truncates the file at `n` before writing, as the stock libunftp
    /// filesystem back-end (and pure-ftpd) do. Off: the bytes are written in place, past the
    /// end too, as vsftpd does; only a `STOR` from byte 0 replaces the file.
    pub truncating_rest_store: bool,
}

/// What the server has seen since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Control connections served.
    pub connections_accepted: u64,
    /// Control connections answered 421 by the limit.
    pub connections_refused: u64,
    /// RETR data streams opened (backend `get()` calls that found the file).
    pub retrs: u64,
    /// Total bytes handed to the data connections by all RETR readers.
    pub bytes_sent: u64,
    /// Bytes sent by RETRs that started at offset 0.
    pub bytes_sent_from_zero: u64,
    /// Peak number of concurrent control connections.
    pub max_live_connections: u64,
    /// Login attempts (`PASS` commands checked), successful or not.
    pub login_attempts: u64,
    /// TLS handshakes, control and data connections, resumed or not.
    pub tls_handshakes: u64,
    /// TLS handshakes that resumed a session of the same control connection.
    pub tls_resumed: u64,
    /// Bytes sent by RETRs on each control connection, in order of acceptance.
    pub bytes_by_connection: Vec<u64>,
    /// Uploads (STOR and APPE data streams) started.
    pub stores: u64,
    /// Bytes received by all uploads.
    pub bytes_received: u64,
}

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

/// Accepts control connections until told to stop (or aborted), then tears the sessions down.
async fn accept_loop(
    listener: TcpListener,
    settings: Arc<SessionSettings>,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut sessions: JoinSet<()> = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            // Either an explicit stop or the `TestServer` being dropped.
            _ = &mut stop => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    sessions.spawn(admit(stream, settings.clone(), shared.clone()));
                }
                Err(_) => tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await,
            },
        }
    }
    drop(listener);
    shared.stopping.store(true, Ordering::Relaxed);
    // Aborting a session drops its libunftp `service()` future, which drops that session's
    // shutdown notifier: its control loop then exits and closes the control connection.
    sessions.shutdown().await;
}

/// Serves a new control connection if a slot is free, or frees up within a short grace period
/// (a client that has just closed a connection may reconnect before the server has noticed);
/// otherwise answers 421 and closes it.
async fn admit(stream: TcpStream, settings: Arc<SessionSettings>, shared: Arc<Shared>) {
    let limit = || match shared.max_connections.load(Ordering::Acquire) {
        u64::MAX => None,
        n => Some(n as usize),
    };
    let mut guard = LiveGuard::try_claim(&shared, limit());
    for _ in 0..ADMIT_GRACE_POLLS {
        if guard.is_some() {
            break;
        }
        tokio::time::sleep(ADMIT_GRACE_POLL).await;
        guard = LiveGuard::try_claim(&shared, limit());
    }
    match guard {
        Some(guard) => serve(stream, settings, guard).await,
        None => {
            shared
                .counters
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            refuse(stream).await;
        }
    }
}

/// Tells a connection over the limit to go away.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        stream.write_all(TOO_MANY_CONNECTIONS).await?;
        stream.shutdown().await
    })
    .await;
}

/// Serves one control connection with a libunftp server of its own.
async fn serve(stream: TcpStream, settings: Arc<SessionSettings>, guard: LiveGuard) {
    let shared = guard.shared.clone();
    let conn = guard.conn.clone();
    let root = settings.root.clone();
    // libunftp calls the generator once per `service()`, when the session starts.
    let generator = Box::new(move || FaultyFs::new(&root, shared.clone(), conn.clone()));
    let mut builder = ServerBuilder::with_authenticator(generator, settings.authenticator.clone())
        .greeting(GREETING)
        .passive_ports(PASSIVE_PORTS)
        .passive_host(PassiveHost::FromConnection);
    if settings.active {
        builder = builder.active_passive_mode(ActivePassiveMode::ActiveAndPassive);
    }
    // One rustls config (and session cache) per control connection, as vsftpd has.
    let tls = match &settings.tls {
        Some(t) => match t.connection_config(&guard.shared) {
            Ok(config) => Some((config, t.implicit)),
            Err(_) => None,
        },
        None => None,
    };
    if let Some((config, _)) = &tls {
        builder = builder.ftps_manual::<PathBuf>(config.clone());
    }
    if settings.tls.as_ref().is_some_and(|t| t.required) {
        builder = builder.ftps_required(FtpsRequired::All, FtpsRequired::All);
    }
    match builder.build() {
        Ok(server) => match (tls, settings.latency) {
            (Some((config, true)), _) => serve_implicit(stream, config, server).await,
            (_, Some(rtt)) => serve_delayed(stream, rtt, server).await,
            // Errors are logged by libunftp; the connection is closed either way.
            _ => {
                let _ = server.service(stream).await;
            }
        },
        Err(_) => {
            let mut stream = stream;
            let _ = tokio::time::timeout(
                REFUSAL_TIMEOUT,
                stream.write_all(b"421 Service not available\r\n"),
            )
            .await;
        }
    }
    drop(guard);
}

/// Implicit FTPS: the TLS handshake on the client's connection, then the decrypted control
/// channel relayed to libunftp (which serves TCP streams only) over a loopback connection on
/// the same address, so its passive replies name the address the client connected to.
async fn serve_implicit(
    client: TcpStream,
    config: Arc<suppaftp::tokio_rustls::rustls::ServerConfig>,
    server: libunftp::Server<FaultyFs, unftp_core::auth::DefaultUser>,
) {
    let acceptor = suppaftp::tokio_rustls::TlsAcceptor::from(config);
    let Ok(local) = client.local_addr() else {
        return;
    };
    let Ok(Ok(mut tls)) =
        tokio::time::timeout(IMPLICIT_HANDSHAKE_TIMEOUT, acceptor.accept(client)).await
    else {
        return;
    };
    let Some((mut outer, inner)) = loopback_pair(local.ip()).await else {
        return;
    };
    let relay = async move {
        let _ = tokio::io::copy_bidirectional(&mut tls, &mut outer).await;
        // Dropping `outer` closes libunftp's control connection when the client goes away.
        drop(outer);
    };
    let _ = tokio::join!(server.service(inner), relay);
}

/// A connected pair of TCP streams on `ip` (the relay's end, libunftp's end), for serving a
/// control connection through a relay: libunftp's passive replies then name `ip`, the address
/// the client connected to.
async fn loopback_pair(ip: IpAddr) -> Option<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.ok()?;
    let addr = listener.local_addr().ok()?;
    let (outer, inner) = tokio::join!(TcpStream::connect(addr), listener.accept());
    Some((outer.ok()?, inner.ok()?.0))
}

/// [`ServerConfig::latency`]: the control connection relayed to libunftp over a loopback
/// connection on the same address (so its passive replies name the address the client
/// connected to), every chunk delivered half a round trip after it was sent, the greeting
/// two round trips after the connect.
async fn serve_delayed(
    client: TcpStream,
    rtt: Duration,
    server: libunftp::Server<FaultyFs, unftp_core::auth::DefaultUser>,
) {
    let Ok(local) = client.local_addr() else {
        return;
    };
    let Some((outer, inner)) = loopback_pair(local.ip()).await else {
        return;
    };
    let relay = async move {
        // The handshake's round trip, and half of the greeting's (the other half below).
        tokio::time::sleep(rtt + rtt / 2).await;
        let (client_read, client_write) = client.into_split();
        let (outer_read, outer_write) = outer.into_split();
        // When either direction ends, its write side is shut down: libunftp sees the client
        // go away, the client sees the server close.
        tokio::join!(
            delayed_copy(client_read, outer_write, rtt / 2),
            delayed_copy(outer_read, client_write, rtt / 2)
        );
    };
    let _ = tokio::join!(server.service(inner), relay);
}

/// Copies `from` to `to`, each chunk written `delay` after it was read, in order (a link's
/// one-way latency); shuts `to` down when `from` ends or fails.
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::AsyncReadExt;
    // Control traffic is small; the bound only keeps a flooding client from growing it.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(1024);
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            let due = tokio::time::Instant::now() + delay;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
        // Dropping `tx` lets the writer finish what is queued, then stop.
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_offset_consistent() {
        let dir = std::env::temp_dir().join(format!("ftpseg-pattern-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.bin");
        let b = dir.join("b.bin");
        let c = dir.join("c.bin");
        let len = 3 * 1024 * 1024 + 13;
        write_pattern_file(&a, len, 42).unwrap();
        write_pattern_file(&b, len, 42).unwrap();
        write_pattern_file(&c, len, 43).unwrap();
        let a = std::fs::read(&a).unwrap();
        let b = std::fs::read(&b).unwrap();
        let c = std::fs::read(&c).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(a.len() as u64, len);
        assert_eq!(a, b, "same seed, same bytes");
        assert_ne!(a, c, "different seeds, different bytes");
        // Neighbouring seeds give unrelated streams, not shifted ones.
        let same = a.iter().zip(&c).filter(|(x, y)| x == y).count();
        assert!(
            same < a.len() / 100,
            "{same} equal bytes between seeds 42 and 43"
        );
        // Any range can be regenerated alone, at any alignment.
        for (off, n) in [
            (0u64, 1usize),
            (1, 7),
            (5, 64),
            (8, 8),
            (1_000_003, 70_001),
            (len - 3, 3),
        ] {
            assert_eq!(
                pattern_bytes(42, off, n as u64),
                a[off as usize..off as usize + n],
                "range {off}+{n}"
            );
        }
        // Shifting by one byte changes the data: offset errors are visible.
        assert_ne!(pattern_bytes(42, 1, 4096), pattern_bytes(42, 0, 4096));
        // Not a trivially repeating stream.
        assert_ne!(a[..4096], a[4096..8192]);
    }

    #[test]
    fn empty_pattern_file() {
        let path =
            std::env::temp_dir().join(format!("ftpseg-pattern-empty-{}", std::process::id()));
        write_pattern_file(&path, 0, 1).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn url_encoding() {
        assert_eq!(encode_path("dir/a b%#?.bin"), "dir/a%20b%25%23%3F.bin");
        assert_eq!(encode_path("é"), "%C3%A9");
        assert_eq!(encode_path("plain-file_1.txt"), "plain-file_1.txt");
    }

    #[test]
    fn config_debug_hides_passwords() {
        let cfg = ServerConfig::new("/tmp").with_user("alice", "hunter2");
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn start_url_and_shutdown() {
        let dir = std::env::temp_dir().join(format!("ftpseg-ts-start-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let server = TestServer::start(ServerConfig::new(&dir)).await.unwrap();
        let addr = server.addr();
        assert!(addr.ip().is_loopback());
        assert_eq!(
            server.url("x/y.bin"),
            format!("ftp://127.0.0.1:{}/x/y.bin", addr.port())
        );
        assert_eq!(
            server.url("/y.bin"),
            format!("ftp://127.0.0.1:{}/y.bin", addr.port())
        );

        // A raw client gets the greeting.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(
            buf[..n].starts_with(b"220"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        assert_eq!(server.stats().connections_accepted, 1);

        server.shutdown().await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "still accepting after shutdown"
        );
        std::fs::remove_dir_all(&dir).unwrap();

        let bad = TestServer::start(ServerConfig {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ..ServerConfig::new(std::env::temp_dir())
        })
        .await;
        assert!(bad.is_err(), "non-loopback bind accepted");
        assert!(
            TestServer::start(ServerConfig::new("/nonexistent/ftpseg"))
                .await
                .is_err()
        );
    }
}

//! How a test server is set up ([`ServerConfig`]), the faults it injects ([`Faults`]) and
//! what it counts ([`Stats`]).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::Duration,
};

use super::TlsFiles;

/// Configuration of a [`TestServer`](super::TestServer).
#[derive(Clone)]
pub struct ServerConfig {
    /// Folder served (read and write). Must exist.
    pub root: PathBuf,
    /// Address to bind. Must be a loopback address; default 127.0.0.1.
    pub bind: IpAddr,
    /// Port to bind; default 0, chosen by the system (see
    /// [`TestServer::addr`](super::TestServer::addr)).
    pub port: u16,
    /// Accept users `anonymous` and `ftp` with any password; default true.
    pub anonymous: bool,
    /// Accepted user/password pairs.
    pub users: Vec<(String, String)>,
    /// Maximum number of live control connections; extra ones get `421 Too many connections`
    /// (after waiting up to 200 ms for a slot, as a client that has just closed a connection
    /// may reconnect before the server has noticed the close).
    pub max_connections: Option<usize>,
    /// Faults applied to downloads (can be changed later with
    /// [`TestServer::set_faults`](super::TestServer::set_faults)).
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
    /// Sessions idle on their control connection this long are closed (as vsftpd's
    /// `idle_session_timeout`); `None`: libunftp's default.
    pub idle_timeout: Option<Duration>,
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
            idle_timeout: None,
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

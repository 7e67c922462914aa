//! One FTP control session: connect, log in, probe, and ranged transfers that stop early.
//!
//! Built on `suppaftp` (tokio), with the rules measured against real servers:
//! * Every step has a timeout (connect, each reply, each data read). A session that timed out is
//!   never reused: the caller drops it and connects again.
//! * `TYPE I` is sent before `SIZE` (proftpd and pyftpdlib refuse SIZE in ASCII mode).
//! * `REST` is sent before every `RETR`, including `REST 0` (libunftp and pure-ftpd keep a stale
//!   offset after a failed transfer). suppaftp defers `REST n` to just before `RETR`, after
//!   `EPSV`/`PASV`, as RFC 3659 wants.
//! * Data connections go to the control connection's peer address: EPSV carries only a port, and
//!   for PASV the address in the reply is ignored (suppaftp's NAT workaround).
//! * Active mode (`--active`, [`Session::set_active`]): suppaftp's own. For each transfer it
//!   listens on the control connection's local address (port 0), sends `PORT` (IPv4) or `EPRT`
//!   (IPv6), sends the command, reads its 150, then accepts only a connection from the control
//!   connection's peer (others are closed and ignored), within the connect timeout; the whole
//!   step is also under the reply timeout. Each session has its own listener, so N connections
//!   have N listeners at once. The accepted socket gets the same tuning as a passive one
//!   (keepalive, no Nagle, the receive low-water mark on plain sessions) and, over FTPS, the
//!   same TLS client handshake resuming the control connection's session.
//! * A range is ended by closing the data connection and reading the server's one reply
//!   (`TransferStream::finish`), then `NOOP` and reading until its `200`, which swallows the
//!   extra replies some servers send (426 then 226, pure-ftpd's second 150). `ABOR` is never used:
//!   it desynchronises the control channel on some servers.
//! * FTPS ([`super::tls`]): explicit (`AUTH TLS`, `PBSZ 0`, `PROT P`, before `USER`, so a server
//!   that refuses TLS never sees the password) or implicit (TLS from the first byte, then `PBSZ 0`
//!   and `PROT P`). Every data connection is TLS too, resuming the control connection's session.
//!   There is one session type for plain and TLS sessions: a plain session simply has no TLS
//!   connector. A TLS failure is never answered by falling back to plain FTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use suppaftp::tokio::{AsyncDataStream, AsyncRustlsFtpStream, AsyncRustlsStream, TransferStream};
use suppaftp::{FtpError, Mode, Status};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::reply::{self, Features, Mdtm};
use super::tls::{TlsClient, TlsCounters, TlsError};

/// The suppaftp client of every session, plain or TLS.
type Ftp = AsyncRustlsFtpStream;

/// Time limits of one session.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// TCP connect (control and data connections).
    pub connect: Duration,
    /// Waiting for any one reply on the control connection.
    pub reply: Duration,
    /// No byte at all on a data connection for this long is a stall.
    pub data_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(15),
            reply: Duration::from_secs(30),
            data_idle: Duration::from_secs(30),
        }
    }
}

/// Who to log in as.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl Credentials {
    /// The conventional anonymous login.
    pub fn anonymous() -> Credentials {
        Credentials {
            user: "anonymous".into(),
            password: "ftpseg@".into(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <password hidden>)", self.user)
    }
}

/// Why a session step failed. The engine decides from this whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0} timed out")]
    Timeout(String),
    /// The server answered `command` with a reply we cannot go on with.
    #[error("{command}: {text}")]
    Reply {
        command: String,
        code: u16,
        text: String,
    },
    /// A connection (control or data) failed: reset, closed, refused, ended early.
    #[error("connection lost during {command}: {source}")]
    Io {
        command: String,
        source: std::io::Error,
    },
    /// Something we cannot go on with on any connection (e.g. no REST when we need it).
    #[error("{0}")]
    Protocol(String),
    /// The control channel is out of step (a reply that belongs to an earlier command, a reply
    /// that cannot be parsed): this session is finished, a new one may work.
    #[error("{0}")]
    Desync(String),
    /// The file is changing on the server (more bytes than SIZE announced).
    #[error("{0}")]
    Changed(String),
    /// TLS failed: AUTH TLS refused, certificate not trusted, handshake failed.
    #[error("{0}")]
    Tls(TlsError),
}

impl SessionError {
    /// The reply code, when the server sent one.
    pub fn code(&self) -> Option<u16> {
        match self {
            SessionError::Reply { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when trying again on a new session can help: timeouts, lost connections, an
    /// out-of-step control channel (including a 1xx-3xx reply where none was due), 4xx
    /// replies, and "too many connections/users" in whatever code the server chose (proftpd
    /// says it with 530).
    pub fn is_transient(&self) -> bool {
        match self {
            SessionError::Connect { .. }
            | SessionError::Timeout(_)
            | SessionError::Io { .. }
            | SessionError::Desync(_) => true,
            SessionError::Reply { code, .. } if *code < 500 => true,
            SessionError::Reply { .. } => self.is_busy(),
            SessionError::Protocol(_) | SessionError::Changed(_) => false,
            SessionError::Tls(e) => e.is_transient(),
        }
    }

    /// True when the server says it has too many connections or users (421, or a 530 whose text
    /// says so): a reason to use fewer connections, not a bad password.
    pub fn is_busy(&self) -> bool {
        match self {
            SessionError::Reply { code, text, .. } => {
                let t = text.to_ascii_lowercase();
                *code == 421
                    || ((*code == 530 || *code == 550)
                        && (t.contains("too many") || t.contains("maximum") || t.contains("limit")))
            }
            _ => false,
        }
    }

    pub(super) fn from_ftp(command: &str, e: FtpError) -> SessionError {
        match e {
            FtpError::UnexpectedResponse(r) => SessionError::from_reply(command, &r.body),
            FtpError::ConnectionError(source)
                if source
                    .get_ref()
                    .is_some_and(|inner| inner.is::<suppaftp::ReplyTooLarge>()) =>
            {
                // Out of step for this session (a new one may be fine); at startup the engine
                // reports it as a protocol error.
                SessionError::Desync(format!(
                    "{command}: the server sent a reply larger than 256 KiB"
                ))
            }
            FtpError::ConnectionError(source) => SessionError::Io {
                command: command.to_owned(),
                source,
            },
            other => SessionError::Desync(format!("{command}: {other}")),
        }
    }

    /// A reply we did not expect, with its code; code 0 when it has none in 100..=599
    /// (`999 what`). Such a reply is complete, so the channel is still in step: optional
    /// commands (FEAT, MDTM) ignore it, a worker retries on a new session, and at startup it
    /// is a protocol error.
    pub(super) fn from_reply(command: &str, body: &[u8]) -> SessionError {
        SessionError::Reply {
            command: command.to_owned(),
            code: reply::reply_code(body).unwrap_or(0),
            text: reply::reply_text(body),
        }
    }
}

/// The data connection of one transfer, read straight into the caller's buffer.
pub type DataStream = TransferStream<AsyncRustlsStream>;

/// A `RETR` under way.
pub struct Transfer {
    pub stream: DataStream,
    /// The size the server announced in its 150 reply ("(N bytes)"), if it did.
    pub announced_size: Option<u64>,
    /// Where the server will end this transfer by itself: `Some(end)` when it was asked for
    /// exactly `[offset, end)` with `RANG`; `None` when it streams to the end of the file.
    pub ends_at: Option<u64>,
}

/// A logged-in control session.
pub struct Session {
    pub(super) ftp: Ftp,
    /// This session's TLS, if it uses TLS: the client (for messages) and what its connector saw.
    tls: Option<(Arc<TlsClient>, Arc<TlsCounters>)>,
    pub(super) timeouts: Timeouts,
    peer: SocketAddr,
    pub(super) features: Features,
    pub(super) rest: bool,
    /// The server accepts `REST 0` (most do; NcFTPd is said not to).
    pub(super) rest0: bool,
    /// The server sends exact byte ranges (`RANG start end` + `RETR`, FEAT `RANG STREAM`).
    rang: bool,
    /// A `REST n` may still be pending on a server that refuses `REST 0`: a transfer from byte
    /// 0 must not start on this session.
    pub(super) offset_dirty: bool,
    pub(super) epsv: bool,
    /// Active mode: the server connects to us (`PORT`/`EPRT`), no EPSV/PASV.
    active: bool,
}

impl Session {
    /// Connects to the first address that answers, reads the greeting, logs in and sets binary
    /// mode. The whole sequence is bounded by the timeouts. Plain FTP.
    pub async fn connect(
        addrs: &[SocketAddr],
        creds: &Credentials,
        timeouts: Timeouts,
    ) -> Result<Session, SessionError> {
        Self::connect_with(addrs, creds, timeouts, None).await
    }

    /// Like [`Session::connect`], over TLS when `tls` is given (explicit or implicit, as the
    /// client says). Each session gets its own TLS client config (see [`super::tls`]).
    pub async fn connect_with(
        addrs: &[SocketAddr],
        creds: &Credentials,
        timeouts: Timeouts,
        tls: Option<&Arc<TlsClient>>,
    ) -> Result<Session, SessionError> {
        let mut last = None;
        for &addr in addrs {
            match Self::connect_one(addr, creds, timeouts, tls).await {
                Ok(s) => return Ok(s),
                Err(e @ SessionError::Connect { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| SessionError::Protocol("no address to connect to".into())))
    }

    async fn connect_one(
        addr: SocketAddr,
        creds: &Credentials,
        timeouts: Timeouts,
        tls: Option<&Arc<TlsClient>>,
    ) -> Result<Session, SessionError> {
        let Some(client) = tls else {
            let ftp = Self::connect_plain(addr, timeouts).await?;
            return Self::finish_connect(ftp, None, addr, creds, timeouts).await;
        };
        // This session's own TLS config and resumption cache (see `super::tls`).
        let (connector, counters) = client.session();
        let ftp = if client.implicit() {
            Self::connect_implicit(addr, timeouts, client, &counters, connector).await?
        } else {
            let ftp = Self::connect_plain(addr, timeouts).await?;
            Self::secure(ftp, timeouts, client, &counters, connector).await?
        };
        let tls = Some((client.clone(), counters));
        Self::finish_connect(ftp, tls, addr, creds, timeouts).await
    }

    /// TCP connection and greeting, in plain text.
    async fn connect_plain(addr: SocketAddr, timeouts: Timeouts) -> Result<Ftp, SessionError> {
        let tcp = connect_tcp(addr, timeouts.connect)
            .await
            .map_err(|source| SessionError::Connect { addr, source })?;
        timeout(timeouts.reply, Ftp::connect_with_stream(tcp))
            .await
            .map_err(|_| late("waiting for the server's greeting", timeouts.reply))?
            .map_err(|e| SessionError::from_ftp("greeting", e))
    }

    /// Explicit TLS: `AUTH TLS`, the handshake, `PBSZ 0`, `PROT P` (suppaftp's `into_secure`),
    /// before anything else is sent. A refusal is an error, never a reason to go on in plain text.
    async fn secure(
        ftp: Ftp,
        timeouts: Timeouts,
        client: &TlsClient,
        counters: &TlsCounters,
        connector: super::tls::Connector,
    ) -> Result<Ftp, SessionError> {
        let secured = timeout(timeouts.reply, ftp.into_secure(connector, client.host()))
            .await
            .map_err(|_| late("TLS negotiation (AUTH TLS)", timeouts.reply))?;
        match secured {
            Ok(ftp) => Ok(ftp),
            Err(FtpError::UnexpectedResponse(r)) => {
                // The text starts with the code.
                let code = reply::reply_code(&r.body).unwrap_or(0);
                let text = reply::reply_text(&r.body);
                if !counters.started() {
                    let refusal = SessionError::Reply {
                        command: "AUTH TLS".into(),
                        code,
                        text: text.clone(),
                    };
                    if refusal.is_busy() {
                        // "421 Too many connections" is not an answer about TLS.
                        return Err(refusal);
                    }
                    Err(SessionError::Tls(TlsError::NotOffered {
                        host: client.host().to_owned(),
                        reply: text,
                    }))
                } else {
                    Err(SessionError::Tls(TlsError::NoProtection {
                        host: client.host().to_owned(),
                        command: "PBSZ 0/PROT P".into(),
                        reply: text,
                    }))
                }
            }
            Err(FtpError::SecureError(detail)) => Err(SessionError::Tls(
                client.handshake_error(counters, "control", detail, None),
            )),
            Err(e) => Err(SessionError::from_ftp("AUTH TLS", e)),
        }
    }

    /// Implicit TLS: the handshake right after connecting, then the greeting, `PBSZ 0`, `PROT P`.
    ///
    /// suppaftp's `connect_secure_implicit` (behind its `deprecated` feature) opens the TCP
    /// connection itself, so the connect and the handshake share one limit here, and TCP
    /// keepalive and no-Nagle are set on the control socket only once it is up.
    async fn connect_implicit(
        addr: SocketAddr,
        timeouts: Timeouts,
        client: &TlsClient,
        counters: &TlsCounters,
        connector: super::tls::Connector,
    ) -> Result<Ftp, SessionError> {
        let limit = timeouts.connect + timeouts.reply;
        let connected = timeout(
            limit,
            Ftp::connect_secure_implicit(addr, connector, client.host()),
        )
        .await
        .map_err(|_| late("connecting with TLS and waiting for the greeting", limit))?;
        let mut ftp = match connected {
            Ok(ftp) => ftp,
            Err(FtpError::ConnectionError(source)) if !counters.started() => {
                return Err(SessionError::Connect { addr, source });
            }
            Err(FtpError::SecureError(detail)) => {
                return Err(SessionError::Tls(
                    client.handshake_error(counters, "control", detail, None),
                ));
            }
            Err(e) => return Err(SessionError::from_ftp("greeting", e)),
        };
        {
            let socket = ftp.get_ref().await;
            tune_control_socket(&socket)
                .map_err(|source| SessionError::Connect { addr, source })?;
        }
        // As after AUTH TLS: the data protection level is Clear until PROT P (RFC 2228), also
        // on an implicit TLS control connection; suppaftp does not send these here.
        for command in ["PBSZ 0", "PROT P"] {
            let r = timeout(
                timeouts.reply,
                ftp.custom_command(command, &[Status::CommandOk]),
            )
            .await
            .map_err(|_| late(command, timeouts.reply))?;
            match r {
                Ok(_) => {}
                Err(FtpError::UnexpectedResponse(r)) => {
                    return Err(SessionError::Tls(TlsError::NoProtection {
                        host: client.host().to_owned(),
                        command: command.to_owned(),
                        reply: reply::reply_text(&r.body),
                    }));
                }
                Err(e) => return Err(SessionError::from_ftp(command, e)),
            }
        }
        Ok(ftp)
    }

    /// Data connections, passive mode, login and binary mode: the same for plain and TLS.
    async fn finish_connect(
        ftp: Ftp,
        tls: Option<(Arc<TlsClient>, Arc<TlsCounters>)>,
        addr: SocketAddr,
        creds: &Credentials,
        timeouts: Timeouts,
    ) -> Result<Session, SessionError> {
        let connect_timeout = timeouts.connect;
        // The receive low-water mark only on plain data sockets: on a TLS socket the bytes are
        // records that rustls must decrypt whole, and read_data never bypasses it there.
        let lowat = tls.is_none();
        let mut ftp = ftp.passive_stream_builder(move |addr| {
            Box::pin(async move {
                connect_data(addr, connect_timeout, lowat)
                    .await
                    .map_err(FtpError::ConnectionError)
            })
        });
        // Use the control peer's address for PASV data connections, never the one in the reply.
        ftp.set_passive_nat_workaround(true);
        // Active mode, when asked for later, accepts the server's data connection within the
        // connect timeout (and only from the control peer: suppaftp's default check).
        let mut ftp = ftp.active_mode(connect_timeout);
        ftp.set_mode(Mode::ExtendedPassive);
        let mut session = Session {
            ftp,
            tls,
            timeouts,
            peer: addr,
            features: Features::default(),
            rest: true,
            rest0: true,
            rang: false,
            offset_dirty: false,
            epsv: true,
            active: false,
        };
        let (user, pass) = (creds.user.as_str(), creds.password.as_str());
        session
            .bounded("login", |ftp| Box::pin(ftp.login(user, pass)))
            .await?;
        session
            .bounded("TYPE I", |ftp| {
                Box::pin(ftp.transfer_type(suppaftp::types::FileType::Binary))
            })
            .await?;
        Ok(session)
    }

    /// Whether this session uses TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// TLS handshakes of this session so far, the control connection's included, and how many
    /// of them resumed an earlier session: `None` for a plain session. Every data connection
    /// should resume (vsftpd's `require_ssl_reuse` refuses those that do not).
    pub fn tls_handshakes(&self) -> Option<(u64, u64)> {
        self.tls.as_ref().map(|(_, c)| c.handshakes())
    }

    /// The server address this session is connected to.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Asks `FEAT` and checks `REST` for real: some servers list it and refuse it, others answer
    /// it without listing it. `REST 0` first (harmless, and sent before every transfer from
    /// byte 0); only if that is refused, `REST 1` (as axel does). Only a 5xx means "no REST": a
    /// 4xx is a transient refusal and fails the probe. Returns what the server can do.
    pub async fn probe(&mut self) -> Result<&Features, SessionError> {
        match self.raw("FEAT", &[211]).await {
            Ok(body) => self.features = reply::parse_features(&body),
            Err(e @ SessionError::Reply { .. }) => {
                // No FEAT (500/502): assume nothing, test what matters.
                let _ = e;
                self.features = Features::default();
            }
            Err(e) => return Err(e),
        }
        self.epsv = self.features.epsv || !self.features.pasv;
        self.rang = self.features.rang_stream;
        self.apply_mode();
        match self.raw("REST 0", &[350]).await {
            Ok(_) => {
                self.rest = true;
                self.rest0 = true;
            }
            Err(SessionError::Reply { code, .. }) if code >= 500 => {
                self.rest0 = false;
                match self.raw("REST 1", &[350]).await {
                    Ok(_) => {
                        self.rest = true;
                        self.offset_dirty = true;
                    }
                    Err(SessionError::Reply { code, .. }) if code >= 500 => self.rest = false,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        Ok(&self.features)
    }

    /// What the last [`Session::probe`] found.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// Whether `REST` works on this server (from [`Session::probe`]).
    pub fn supports_rest(&self) -> bool {
        self.rest
    }

    /// What the probe session learned about `REST` (`rest`, `rest0`), for the other sessions.
    pub fn rest_support(&self) -> (bool, bool) {
        (self.rest, self.rest0)
    }

    /// Applies what another session of the same server learned about `REST`.
    pub fn set_rest_support(&mut self, (rest, rest0): (bool, bool)) {
        self.rest = rest;
        self.rest0 = rest0;
    }

    /// For PASV: connect to the address the server names (true), or to the control
    /// connection's peer (false, the default).
    pub fn set_use_pasv_address(&mut self, yes: bool) {
        self.ftp.set_passive_nat_workaround(!yes);
    }

    /// Whether ranged transfers use `RANG` (the probe found FEAT `RANG STREAM`, and no `RANG`
    /// was refused since).
    pub fn uses_rang(&self) -> bool {
        self.rang
    }

    /// Turns `RANG` on or off (what another session of the same server learned).
    pub fn set_rang(&mut self, rang: bool) {
        self.rang = rang;
    }

    /// Uses PASV instead of EPSV from now on (in passive mode).
    pub fn set_epsv(&mut self, epsv: bool) {
        self.epsv = epsv;
        self.apply_mode();
    }

    /// Active mode (`--active`): the server opens every data connection to us, after `PORT`
    /// (IPv4) or `EPRT` (IPv6) naming a listener on this connection's local address.
    pub fn set_active(&mut self, active: bool) {
        self.active = active;
        self.apply_mode();
    }

    /// Whether this session uses active mode.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Tells suppaftp how to open data connections: active, EPSV or PASV.
    fn apply_mode(&mut self) {
        self.ftp.set_mode(if self.active {
            Mode::Active
        } else if self.epsv {
            Mode::ExtendedPassive
        } else {
            Mode::Passive
        });
    }

    /// Whether this session uses EPSV.
    pub fn uses_epsv(&self) -> bool {
        self.epsv
    }

    /// The file's size from `SIZE`, or `None` when the server does not implement `SIZE`. A 550
    /// (no such file, or not a plain file) is an error.
    pub async fn size(&mut self, path: &str) -> Result<Option<u64>, SessionError> {
        let command = format!("SIZE {path}");
        match self.raw(&command, &[213]).await {
            Ok(body) => reply::parse_size(&body)
                .map(Some)
                .map_err(|e| SessionError::Protocol(e.to_string())),
            Err(SessionError::Reply {
                code: 500 | 501 | 502 | 504,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The file's modification time from `MDTM`, or `None` when the server cannot tell.
    pub async fn mdtm(&mut self, path: &str) -> Result<Option<Mdtm>, SessionError> {
        let command = format!("MDTM {path}");
        match self.raw(&command, &[213]).await {
            Ok(body) => Ok(reply::parse_mdtm(&body).ok()),
            Err(SessionError::Reply { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Starts `RETR path` at `offset` (`REST offset` first, `REST 0` too, when the server
    /// supports REST). Falls back from EPSV to PASV once if the server refuses EPSV.
    /// If PASV fails too, the error names both failures, so neither hides the real cause.
    pub async fn retr(&mut self, path: &str, offset: u64) -> Result<Transfer, SessionError> {
        self.retr_range(path, offset, None).await
    }

    /// Like [`Session::retr`], for the bytes `[offset, end)`: where the server offers `RANG`
    /// (proftpd), it is asked for exactly those bytes and ends the transfer itself with 226, so
    /// nothing is sent past `end` and nothing needs stopping early. Elsewhere, `REST offset`.
    pub async fn retr_range(
        &mut self,
        path: &str,
        offset: u64,
        end: Option<u64>,
    ) -> Result<Transfer, SessionError> {
        match self.retr_once(path, offset, end).await {
            Err(SessionError::Reply {
                code: code @ (500 | 501 | 502 | 504),
                text,
                command,
            }) if self.epsv && !self.active => {
                self.set_epsv(false);
                match self.retr_once(path, offset, end).await {
                    Ok(t) => Ok(t),
                    Err(second) => {
                        self.set_epsv(true);
                        Err(SessionError::Reply {
                            command,
                            code,
                            text: format!("{text}; with PASV instead: {second}"),
                        })
                    }
                }
            }
            Err(SessionError::Reply {
                code: code @ (500 | 501 | 502 | 504),
                text,
                command,
            }) if self.active => Err(SessionError::Reply {
                command: format!("PORT/EPRT or {command}"),
                code,
                text: format!(
                    "{text} (the server may not allow active mode: try without --active)"
                ),
            }),
            other => other,
        }
    }

    async fn retr_once(
        &mut self,
        path: &str,
        offset: u64,
        end: Option<u64>,
    ) -> Result<Transfer, SessionError> {
        let mut ends_at = None;
        if let Some(end) = end.filter(|&e| self.rang && e > offset) {
            // RANG's end is inclusive; it applies to the next RETR only (proftpd).
            match self
                .raw(&format!("RANG {offset} {}", end - 1), &[350])
                .await
            {
                Ok(_) => ends_at = Some(end),
                Err(SessionError::Reply { code, .. }) if code >= 500 => self.rang = false,
                Err(e) => return Err(e),
            }
        }
        if ends_at.is_some() {
            // The range replaces REST.
        } else if offset > 0 && !self.rest {
            return Err(SessionError::Protocol(
                "cannot resume: the server does not support REST".into(),
            ));
        } else if self.rest {
            if offset == 0 {
                if self.rest0 {
                    self.raw("REST 0", &[350]).await?;
                } else if self.offset_dirty {
                    return Err(SessionError::Desync(
                        "a REST offset may still be pending on this session (the server \
                         refuses REST 0); reconnecting"
                            .into(),
                    ));
                }
            } else {
                if !self.rest0 {
                    self.offset_dirty = true;
                }
                let offset = usize::try_from(offset)
                    .map_err(|_| SessionError::Protocol("offset too large".into()))?;
                self.ftp
                    .resume_transfer(offset)
                    .await
                    .map_err(|e| SessionError::from_ftp("REST", e))?;
            }
        }
        let command = format!("RETR {path}");
        let opened = timeout(
            self.timeouts.reply,
            self.ftp.custom_data_command(
                command.as_str(),
                &[Status::AboutToSend, Status::AlreadyOpen],
            ),
        )
        .await
        .map_err(|_| late(&command, self.timeouts.reply))?;
        let (resp, stream) = match opened {
            Ok(opened) => opened,
            Err(FtpError::SecureError(detail)) => return Err(self.data_tls_error(detail).await),
            Err(e) => return Err(SessionError::from_ftp(&command, e)),
        };
        let mut stream = stream;
        if self.active {
            // suppaftp accepted this socket itself: tune it as `connect_data` tunes ours.
            self.tune_accepted(&mut stream)?;
        }
        Ok(Transfer {
            stream,
            announced_size: reply::parse_transfer_size(&resp.body),
            ends_at,
        })
    }

    /// Keepalive, no Nagle and (plain sessions only) the receive low-water mark on a data
    /// connection accepted in active mode, as [`connect_data`] sets them on a passive one.
    fn tune_accepted(&self, stream: &mut DataStream) -> Result<(), SessionError> {
        let io_err = |source| SessionError::Io {
            command: "active-mode data connection".into(),
            source,
        };
        let tcp: &TcpStream = stream.get_mut().get_ref();
        tune_control_socket(tcp).map_err(io_err)?;
        if self.tls.is_none() {
            set_rcvlowat(tcp, DATA_LOWAT).map_err(io_err)?;
        }
        Ok(())
    }

    /// The error for a failed TLS handshake on a data connection, with the server's explanation
    /// when it sends one at once (vsftpd: "522 SSL connection failed; session reuse required").
    /// The session is dropped after this, so waiting for that reply costs nothing else.
    pub(super) async fn data_tls_error(&mut self, detail: String) -> SessionError {
        let Some((client, counters)) = self.tls.clone() else {
            return SessionError::Protocol(format!("TLS error on a plain session: {detail}"));
        };
        let wait = self.timeouts.reply.min(SERVER_EXPLANATION_WAIT);
        let said = match timeout(wait, self.ftp.read_response_in(&[])).await {
            Ok(Err(FtpError::UnexpectedResponse(r))) | Ok(Ok(r)) => {
                let code = reply::reply_code(&r.body).unwrap_or(0);
                // Only a refusal explains the failure; a late 150/226 does not.
                (code >= 400).then(|| reply::reply_text(&r.body))
            }
            _ => None,
        };
        SessionError::Tls(client.handshake_error(&counters, "data", detail, said))
    }

    /// A TLS session whose server refused a data connection with 522 (RFC 4217: the data
    /// connection must be protected; vsftpd: "522 SSL connection failed: session reuse
    /// required") gets a TLS error instead of `e`, with `detail` saying what happened.
    pub fn tls_refusal(&self, e: &SessionError, detail: String) -> Option<SessionError> {
        let (client, counters) = self.tls.as_ref()?;
        match e {
            SessionError::Reply {
                code: 522, text, ..
            } => Some(SessionError::Tls(client.handshake_error(
                counters,
                "data",
                detail,
                Some(text.clone()),
            ))),
            _ => None,
        }
    }

    /// Ends a transfer: closes the data connection and reads the server's reply.
    ///
    /// `to_eof` says the data connection was read to its end (the server sent everything it
    /// meant to): then the reply must report success. Otherwise we stopped early, any reply is
    /// expected (426, 451, 226, 150...), and the control channel is resynchronised with `NOOP`.
    pub async fn end_transfer(
        &mut self,
        stream: DataStream,
        to_eof: bool,
    ) -> Result<(), SessionError> {
        let reply = timeout(self.timeouts.reply, stream.finish())
            .await
            .map_err(|_| late("waiting for the end-of-transfer reply", self.timeouts.reply))?;
        match reply {
            Ok(()) => {
                if !to_eof {
                    self.resync().await?;
                }
                Ok(())
            }
            Err(FtpError::UnexpectedResponse(r)) => {
                if to_eof {
                    Err(SessionError::from_reply("RETR", &r.body))
                } else {
                    self.resync().await
                }
            }
            Err(e) => Err(SessionError::from_ftp("end of transfer", e)),
        }
    }

    /// Sends `NOOP` and reads replies until its `200`, discarding late replies of an ended
    /// transfer. Bounded: at most 8 replies, each within the reply timeout.
    async fn resync(&mut self) -> Result<(), SessionError> {
        let first = timeout(
            self.timeouts.reply,
            self.ftp.custom_command("NOOP", &[Status::CommandOk]),
        )
        .await
        .map_err(|_| late("NOOP after an early stop", self.timeouts.reply))?;
        match first {
            Ok(_) => return Ok(()),
            Err(FtpError::UnexpectedResponse(_)) => {}
            Err(e) => return Err(SessionError::from_ftp("NOOP", e)),
        }
        for _ in 0..8 {
            let r = timeout(
                self.timeouts.reply,
                self.ftp.read_response_in(&[Status::CommandOk]),
            )
            .await
            .map_err(|_| late("NOOP reply after an early stop", self.timeouts.reply))?;
            match r {
                Ok(_) => return Ok(()),
                Err(FtpError::UnexpectedResponse(_)) => continue,
                Err(e) => return Err(SessionError::from_ftp("NOOP", e)),
            }
        }
        Err(SessionError::Protocol(
            "the server kept sending replies after an early stop".into(),
        ))
    }

    /// Reads from a data stream: `Ok(0)` is the end of the data.
    ///
    /// Plain data sockets have a receive low-water mark ([`DATA_LOWAT`]), so the thread wakes
    /// when a useful batch has arrived instead of for every small segment a throttled or distant
    /// server sends (measured: 64 MiB from a 16 MiB/s-capped server took 125,000 reads of
    /// ~530 bytes and 3 CPU-seconds without it). If less than a batch arrives within
    /// [`BATCH_WINDOW`], whatever is queued is read directly, so a slow server is never
    /// mistaken for a stalled one. Only `data_idle` without a single byte is a stall.
    ///
    /// TLS data sockets have no low-water mark and are never read around rustls (that would
    /// put ciphertext into the file): they are read through TLS, with the same stall limit. A
    /// TLS stream closed without `close_notify` reads as the end of the data: the byte count
    /// and the server's reply on the (TLS) control connection decide whether it was complete.
    pub async fn read_data(
        &self,
        stream: &mut DataStream,
        buf: &mut [u8],
    ) -> Result<usize, SessionError> {
        let io_err = |source| SessionError::Io {
            command: "data transfer".into(),
            source,
        };
        let stalled = || {
            SessionError::Timeout(format!(
                "data connection (no byte for {} s)",
                self.timeouts.data_idle.as_secs_f64()
            ))
        };
        if matches!(stream.get_mut(), AsyncDataStream::Ssl(_)) {
            return match timeout(self.timeouts.data_idle, stream.read(buf)).await {
                Ok(Ok(n)) => Ok(n),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
                Ok(Err(source)) => Err(io_err(source)),
                Err(_) => Err(stalled()),
            };
        }
        let mut idle = Duration::ZERO;
        loop {
            match timeout(BATCH_WINDOW, stream.read(buf)).await {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(source)) => return Err(io_err(source)),
                Err(_) => {
                    let AsyncDataStream::Tcp(tcp) = stream.get_mut() else {
                        unreachable!("TLS streams return above");
                    };
                    if let Some(n) = recv_queued(tcp, buf).map_err(io_err)? {
                        return Ok(n);
                    }
                    idle += BATCH_WINDOW;
                    if idle >= self.timeouts.data_idle {
                        return Err(stalled());
                    }
                }
            }
        }
    }

    /// Whether `stream` can be read with [`Session::splice_data`]: plain TCP, not TLS.
    pub fn can_splice(stream: &mut DataStream) -> bool {
        matches!(stream.get_mut(), AsyncDataStream::Tcp(_))
    }

    /// Like [`Session::read_data`] on a plain data connection, but the bytes (up to `max`, at
    /// most the pipe's capacity) go into `pipe` instead of a buffer ([`crate::ftp::pipe`]): the
    /// caller then moves exactly the returned count on into the file. `Ok(0)` is the end of
    /// the data. Same waiting rules as `read_data`: readable at the low-water mark, whatever
    /// is queued after [`BATCH_WINDOW`], a stall after `data_idle` without a byte.
    pub async fn splice_data(
        &self,
        stream: &mut DataStream,
        pipe: &crate::ftp::pipe::Pipe,
        max: usize,
    ) -> Result<usize, SessionError> {
        let io_err = |source| SessionError::Io {
            command: "data transfer".into(),
            source,
        };
        let AsyncDataStream::Tcp(tcp) = stream.get_mut() else {
            return Err(SessionError::Protocol(
                "internal: splice on a TLS data connection".into(),
            ));
        };
        let max = max.clamp(1, pipe.capacity());
        let move_queued = || -> std::io::Result<usize> {
            use rustix::pipe::{SpliceFlags, splice};
            Ok(splice(
                &*tcp,
                None,
                pipe.write_end(),
                None,
                max,
                SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
            )?)
        };
        let mut idle = Duration::ZERO;
        loop {
            match timeout(BATCH_WINDOW, tcp.readable()).await {
                Ok(Ok(())) => match tcp.try_io(tokio::io::Interest::READABLE, move_queued) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(source) => return Err(io_err(source)),
                },
                Ok(Err(source)) => return Err(io_err(source)),
                Err(_) => match move_queued() {
                    Ok(n) => return Ok(n),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                        ) =>
                    {
                        idle += BATCH_WINDOW;
                        if idle >= self.timeouts.data_idle {
                            return Err(SessionError::Timeout(format!(
                                "data connection (no byte for {} s)",
                                self.timeouts.data_idle.as_secs_f64()
                            )));
                        }
                    }
                    Err(source) => return Err(io_err(source)),
                },
            }
        }
    }

    /// Says goodbye politely, within the reply timeout; errors do not matter any more.
    pub async fn quit(mut self) {
        let _ = timeout(Duration::from_secs(2), self.ftp.quit()).await;
    }

    /// [`Session::quit`] in a task of its own: the caller does not wait a round trip for the
    /// server's goodbye. The task ends with the runtime if that comes first (the connection is
    /// then closed without it).
    pub fn quit_later(self) {
        tokio::spawn(self.quit());
    }

    /// Sends a raw command and returns the whole reply if its code is one of `ok`.
    ///
    /// The codes are checked here, from the reply's own digits: suppaftp maps codes it does not
    /// know (522, 554...) to `Unknown`, and when 211 is expected it returns after the first line
    /// of a multi-line reply, leaving the rest unread. Asking it for no code at all makes it read
    /// the whole reply and hand it back.
    pub(super) async fn raw(&mut self, command: &str, ok: &[u16]) -> Result<Vec<u8>, SessionError> {
        let reply = timeout(self.timeouts.reply, self.ftp.custom_command(command, &[]))
            .await
            .map_err(|_| late(command, self.timeouts.reply))?;
        let body = match reply {
            Ok(r) => r.body,
            Err(FtpError::UnexpectedResponse(r)) => r.body,
            Err(e) => return Err(SessionError::from_ftp(command, e)),
        };
        match reply::reply_code(&body) {
            Some(code) if ok.contains(&code) => Ok(body),
            _ => Err(SessionError::from_reply(command, &body)),
        }
    }

    /// Runs one suppaftp call under the reply timeout.
    async fn bounded<'a, T>(
        &'a mut self,
        what: &str,
        f: impl FnOnce(
            &'a mut Ftp,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, FtpError>> + Send + 'a>,
        >,
    ) -> Result<T, SessionError> {
        timeout(self.timeouts.reply, f(&mut self.ftp))
            .await
            .map_err(|_| late(what, self.timeouts.reply))?
            .map_err(|e| SessionError::from_ftp(what, e))
    }
}

/// A step that took longer than `limit`.
pub(super) fn late(what: impl std::fmt::Display, limit: Duration) -> SessionError {
    SessionError::Timeout(format!(
        "{what} (no answer within {} s)",
        limit.as_secs_f64()
    ))
}

/// Receive low-water mark of data sockets: readable once this many bytes are queued (or at EOF).
pub const DATA_LOWAT: usize = 128 << 10;
/// Longest wait for a low-water batch before reading whatever has arrived.
pub const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Longest wait for the server's reply explaining a failed data-connection handshake.
const SERVER_EXPLANATION_WAIT: Duration = Duration::from_secs(3);

/// Non-blocking read of whatever the socket has queued, bypassing tokio's readiness (which only
/// reports readable at the low-water mark). `None` when nothing is queued.
fn recv_queued(tcp: &TcpStream, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
    use std::os::fd::AsRawFd;
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; the fd is an open TCP socket owned
    // by `tcp` for the duration of the call.
    let n = unsafe {
        libc::recv(
            tcp.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = std::io::Error::last_os_error();
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(None),
        _ => Err(e),
    }
}

/// Sets the receive low-water mark of a data socket (see [`Session::read_data`]).
fn set_rcvlowat(tcp: &TcpStream, bytes: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: a plain setsockopt with a pointer to a live c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A data connection: [`connect_tcp`], plus the receive low-water mark when `lowat` (plain
/// sessions only, see [`Session::read_data`]).
async fn connect_data(
    addr: SocketAddr,
    limit: Duration,
    lowat: bool,
) -> std::io::Result<TcpStream> {
    let stream = connect_tcp(addr, limit).await?;
    if lowat {
        set_rcvlowat(&stream, DATA_LOWAT)?;
    }
    Ok(stream)
}

/// A TCP connection with a connect timeout, TCP keepalive (so a dead peer is noticed even when
/// the application is idle) and no Nagle delay.
async fn connect_tcp(addr: SocketAddr, limit: Duration) -> std::io::Result<TcpStream> {
    let stream = timeout(limit, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    tune_control_socket(&stream)?;
    Ok(stream)
}

/// TCP keepalive (so a dead peer is noticed even when the application is idle) and no Nagle
/// delay.
fn tune_control_socket(stream: &TcpStream) -> std::io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    let sock = socket2::SockRef::from(stream);
    sock.set_tcp_keepalive(&keepalive)?;
    stream.set_nodelay(true)
}
